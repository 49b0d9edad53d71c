using Vdisk.Drivers.Blkdebug;
using Vdisk.Graph;
using Vdisk.Options;
using Xunit;

namespace Vdisk.Tests.Drivers;

/// <summary>
/// blkdebug's pure parts: the config file parser and the option form of its rules (with the
/// messages qemu-io 7.2 prints for each mistake, checked by hand against it), the rule state
/// machine, the request limits and the filename split.
/// </summary>
public class BlkdebugTests
{
    private static BlkdebugRuleSet RulesFromFile(string text)
    {
        var rules = new BlkdebugRuleSet();
        BlkdebugConfig.AddRules(rules, BlkdebugConfig.ParseFile(text));
        return rules;
    }

    private static string ErrorOf(Action action) => Assert.Throws<OptionException>(action).Message;

    [Fact]
    public void EventNames_AreQemusEnumInOrder()
    {
        Assert.Equal(Enum.GetValues<BlkdebugEvent>().Length, BlkdebugEvents.Count);
        Assert.Equal("l1_update", BlkdebugEvents.Name(BlkdebugEvent.L1Update));
        Assert.Equal("write_aio", BlkdebugEvents.Name(BlkdebugEvent.WriteAio));
        Assert.Equal("pwritev_rmw_after_tail", BlkdebugEvents.Name(BlkdebugEvent.PwritevRmwAfterTail));
        Assert.Equal("cluster_alloc_space", BlkdebugEvents.Name(BlkdebugEvent.ClusterAllocSpace));
        Assert.Equal(BlkdebugEvent.None, BlkdebugEvents.Parse("none"));
        Assert.Null(BlkdebugEvents.Parse("pwritev_rmw.head"));
    }

    [Fact]
    public void ConfigFile_SectionsCommentsAndQuotedValues()
    {
        var sections = BlkdebugConfig.ParseFile("# comment\n[inject-error]\nevent = \"read_aio\"\nerrno = \"5\"\nonce =\"off\"\n\n[set-state]\n  event = \"l2_load\"\nnew_state = \"2\"\n");
        Assert.Equal(2, sections.Count);
        Assert.Equal("inject-error", sections[0].Group);
        Assert.Equal("read_aio", sections[0].Get("event"));
        Assert.Equal("off", sections[0].Get("once"));
        Assert.Equal("set-state", sections[1].Group);
        Assert.Equal("2", sections[1].Get("new_state"));
    }

    [Fact]
    public void ConfigFile_AWordWithoutQuotedValue_SetsItEmpty_AsQemusSscanfDoes()
    {
        // qemu-io: can't open device blkdebug:c5:t.qcow2: invalid parameter value: 
        Assert.Equal("invalid parameter value: ", ErrorOf(() => RulesFromFile("[inject-error]\nevent read_aio\n")));
    }

    [Theory]
    [InlineData("foo = \"bar\"\n", "no group defined")]
    [InlineData("[inject-error]\nevent = \"read_aio\"\nbogus = \"1\"\n", "Invalid parameter 'bogus'")]
    [InlineData("[nosuch]\nevent = \"read_aio\"\n", "There is no option group 'nosuch'")]
    [InlineData("[inject-error]\nevent = \"read_aio\"\nstate = \"x\"\n", "Parameter 'state' expects a number")]
    [InlineData("[inject-error]\nevent = \"read_aio\"\nonce = \"maybe\"\n", "Parameter 'once' expects 'on' or 'off'")]
    [InlineData("[inject-error]\nerrno = \"5\"\n", "Missing event name for rule")]
    [InlineData("[inject-error]\nevent = \"bogus\"\n", "invalid parameter value: bogus")]
    [InlineData("[inject-error]\nevent = \"read_aio\"\niotype = \"x\"\n", "invalid parameter value: x")]
    public void ConfigFile_Mistakes_GetQemusMessages(string text, string message) =>
        Assert.Equal(message, ErrorOf(() => RulesFromFile(text)));

    [Fact]
    public void Options_ListNumberedOrSingle_AllGiveSections()
    {
        var list = new OptionList();
        var a = new OptionDict();
        a.Set("event", "l2_load");
        a.Set("once", new OptionScalar("true", ScalarKind.Bool));
        list.Items.Add(a);
        Assert.Single(BlkdebugConfig.FromOption("inject-error", list));

        var numbered = new OptionDict();
        var first = new OptionDict();
        first.Set("event", "read_aio");
        var second = new OptionDict();
        second.Set("event", "write_aio");
        numbered.Set("1", second);
        numbered.Set("0", first);
        var sections = BlkdebugConfig.FromOption("inject-error", numbered);
        Assert.Equal(["read_aio", "write_aio"], sections.Select(s => s.Get("event")));

        var single = new OptionDict();
        single.Set("event", "none");
        Assert.Equal("none", Assert.Single(BlkdebugConfig.FromOption("set-state", single)).Get("event"));
    }

    [Fact]
    public void Options_UnknownKey_IsRefusedWithTheSectionName()
    {
        var d = new OptionDict();
        d.Set("event", "l2_load");
        d.Set("bogus", "1");
        Assert.Equal("[inject-error] section doesn't support the option 'bogus'",
            ErrorOf(() => BlkdebugConfig.FromOption("inject-error", d)));
    }

    [Fact]
    public void Inject_ActivatesOnItsEvent_AndFailsEveryLaterRequest()
    {
        var rules = RulesFromFile("[inject-error]\nevent = \"l2_load\"\n");
        Assert.Equal(0, rules.Check(0, 512, BlkdebugIoType.Read));
        rules.OnEvent(BlkdebugEvent.L2Load);
        Assert.Equal(5, rules.Check(0, 512, BlkdebugIoType.Read));
        Assert.Equal(5, rules.Check(4096, 512, BlkdebugIoType.Write));
        Assert.Equal(5, rules.Check(0, 0, BlkdebugIoType.Flush));
        // Block status is not among the default kinds.
        Assert.Equal(0, rules.Check(0, 512, BlkdebugIoType.BlockStatus));
    }

    [Fact]
    public void Inject_Once_FailsOneRequestOnly()
    {
        var rules = RulesFromFile("[inject-error]\nevent = \"write_aio\"\nerrno = \"28\"\nonce = \"on\"\n");
        rules.OnEvent(BlkdebugEvent.WriteAio);
        Assert.Equal(28, rules.Check(0, 512, BlkdebugIoType.Write));
        Assert.Equal(0, rules.Check(0, 512, BlkdebugIoType.Write));
        rules.OnEvent(BlkdebugEvent.WriteAio);
        Assert.Equal(0, rules.Check(0, 512, BlkdebugIoType.Write));
    }

    [Fact]
    public void Inject_SectorAndIoType_NarrowTheRequestsHit()
    {
        var rules = RulesFromFile("[inject-error]\nevent = \"none\"\nsector = \"8\"\niotype = \"read\"\n");
        rules.OnEvent(BlkdebugEvent.None);
        Assert.Equal(0, rules.Check(0, 4096, BlkdebugIoType.Read));
        Assert.Equal(5, rules.Check(4096, 512, BlkdebugIoType.Read));
        Assert.Equal(5, rules.Check(0, 4097, BlkdebugIoType.Read));
        Assert.Equal(0, rules.Check(4096, 512, BlkdebugIoType.Write));
    }

    [Fact]
    public void SetState_TakesEffectAfterTheEvent_SoAnInjectionForTheNewStateWaitsForTheNextOne()
    {
        // iotest 066: the first write_aio moves to state 2, only the second one fails.
        var rules = new BlkdebugRuleSet();
        var set = new OptionList();
        var s = new OptionDict();
        s.Set("event", "write_aio");
        s.Set("new_state", "2");
        set.Items.Add(s);
        var inject = new OptionList();
        var i = new OptionDict();
        i.Set("event", "write_aio");
        i.Set("state", "2");
        inject.Items.Add(i);
        BlkdebugConfig.AddRules(rules, BlkdebugConfig.FromOption("set-state", set).Concat(BlkdebugConfig.FromOption("inject-error", inject)));
        Assert.Equal(1, rules.State);
        rules.OnEvent(BlkdebugEvent.WriteAio);
        Assert.Equal(2, rules.State);
        Assert.Equal(0, rules.Check(0, 65536, BlkdebugIoType.Write));
        rules.OnEvent(BlkdebugEvent.WriteAio);
        Assert.Equal(5, rules.Check(65536, 65536, BlkdebugIoType.Write));
    }

    [Fact]
    public void Breakpoint_IsUsedUpByTheFirstEvent_AndRemovable()
    {
        var rules = new BlkdebugRuleSet();
        rules.Add(new BlkdebugSuspend(BlkdebugEvent.WriteAio, "A"));
        Assert.Empty(rules.OnEvent(BlkdebugEvent.ReadAio));
        Assert.Equal(["A"], rules.OnEvent(BlkdebugEvent.WriteAio));
        Assert.Empty(rules.OnEvent(BlkdebugEvent.WriteAio));
        rules.Add(new BlkdebugSuspend(BlkdebugEvent.WriteAio, "B"));
        Assert.True(rules.RemoveBreakpoints("B"));
        Assert.False(rules.RemoveBreakpoints("B"));
        Assert.Empty(rules.OnEvent(BlkdebugEvent.WriteAio));
    }

    [Theory]
    [InlineData("align", 3UL, "Cannot meet constraints with align 3")]
    [InlineData("align", 2147483648UL, "Cannot meet constraints with align 2147483648")]
    [InlineData("max-transfer", 1000UL, "Cannot meet constraints with max-transfer 1000")]
    [InlineData("opt-write-zero", 6144UL, "Cannot meet constraints with opt-write-zero 6144")]
    public void Limits_ThatCannotBeMet_AreRefused(string key, ulong value, string message)
    {
        var given = new Dictionary<string, ulong> { ["align"] = 4096, [key] = value };
        Assert.Equal(message, ErrorOf(() => BlkdebugLimits.Validate(given)));
    }

    [Fact]
    public void Limits_MaxWriteZero_MustBeAMultipleOfOptWriteZero()
    {
        var given = new Dictionary<string, ulong> { ["align"] = 512, ["opt-write-zero"] = 15 << 20, ["max-write-zero"] = 16 << 20 };
        Assert.Equal("Cannot meet constraints with max-write-zero 16777216", ErrorOf(() => BlkdebugLimits.Validate(given)));
        given["max-write-zero"] = 30 << 20;
        Assert.Equal(30 << 20, BlkdebugLimits.Validate(given).MaxWriteZero);
    }

    [Theory]
    [InlineData("blkdebug::img.qcow2", null, "img.qcow2")]
    [InlineData("blkdebug:conf:img.qcow2", "conf", "img.qcow2")]
    [InlineData("blkdebug:conf:nbd://h/x", "conf", "nbd://h/x")]
    [InlineData("plain.qcow2", null, "plain.qcow2")]
    public void Filename_SplitsIntoConfigAndImage(string filename, string? config, string image) =>
        Assert.Equal((config, image), BlkdebugDriver.SplitFilename(filename));

    [Fact]
    public void Filename_WithoutTheSecondColon_IsRefused() =>
        Assert.Equal("blkdebug requires both config file and image path", ErrorOf(() => BlkdebugDriver.SplitFilename("blkdebug:img.qcow2")));
}
