using CsCheck;
using System.Text;
using Vdisk.Options;
using Vdisk.Server.Qmp;
using Xunit;
using static Vdisk.Server.Qmp.QmpJson;

namespace Vdisk.Tests.Server;

/// <summary>QMP's JSON: QEMU's key order, spacing and escapes, and how the input stream is cut.</summary>
public class QmpJsonTests
{
    private static string Round(string json) => Serialize(Parse(Encoding.UTF8.GetBytes(json)));

    [Theory]
    // Each line was printed by qemu-storage-daemon 7.2 for a value built in the order on the left.
    [InlineData("{\"major\": 7, \"minor\": 2, \"micro\": 22}", "{\"micro\": 22, \"minor\": 2, \"major\": 7}")]
    [InlineData("{\"return\": {}, \"id\": 7}", "{\"return\": {}, \"id\": 7}")]
    [InlineData("{\"error\": {\"class\": \"GenericError\", \"desc\": \"x\"}, \"id\": 1}", "{\"id\": 1, \"error\": {\"class\": \"GenericError\", \"desc\": \"x\"}}")]
    [InlineData("{\"id\": \"e1\", \"type\": \"nbd\", \"node-name\": \"q1\", \"shutting-down\": false}", "{\"node-name\": \"q1\", \"shutting-down\": false, \"type\": \"nbd\", \"id\": \"e1\"}")]
    [InlineData("{\"writeback\": true, \"direct\": false, \"no-flush\": false}", "{\"no-flush\": false, \"direct\": false, \"writeback\": true}")]
    [InlineData("{\"a\": null, \"b\": true, \"c\": -5, \"d\": 1.5, \"e\": \"\\u00e9\\n\"}", "{\"d\": 1.5, \"e\": \"\\u00E9\\n\", \"a\": null, \"b\": true, \"c\": -5}")]
    public void Output_MatchesQemuByteForByte(string input, string qemu) => Assert.Equal(qemu, Round(input));

    [Fact]
    public void Greeting_MatchesQemusLayout() =>
        Assert.Equal("{\"QMP\": {\"version\": {\"qemu\": {\"micro\": 0, \"minor\": 2, \"major\": 7}, \"package\": \"p\"}, \"capabilities\": [\"oob\"]}}",
            Serialize(Dict(("QMP", Dict(("version", Dict(("qemu", Dict(("major", Int(7)), ("minor", Int(2)), ("micro", Int(0)))), ("package", Str("p")))),
                ("capabilities", List([Str("oob")])))))));

    [Fact]
    public void Strings_EscapeLikeQemu() =>
        Assert.Equal("\"q\\\"b\\\\s\\b\\f\\r\\t\\u0001\\u007F\\u20AC\\uD83D\\uDE00/\"", Serialize(Str("q\"b\\s\b\f\r\t\u0001\u007f€😀/")));

    [Fact]
    public void Numbers_PrintAsQemuDoes()
    {
        Assert.Equal("[18446744073709551615, -9223372036854775808, 0.10000000000000001, 1e+20]",
            Round("[18446744073709551615, -9223372036854775808, 0.1, 1e20]"));
    }

    [Theory]
    [InlineData("{\"execute\": }", "JSON parse error, expecting value")]
    [InlineData("nonsense", "JSON parse error, invalid keyword 'nonsense'")]
    [InlineData("{\"execute\":\"x\",}", "JSON parse error, expecting value")]
    [InlineData("{\"driver\":\"file\"", "JSON parse error, premature EOI")]
    public void MalformedInput_GetsQemusMessage(string json, string message) =>
        Assert.Equal(message, Assert.Throws<QmpException>(() => Parse(Encoding.UTF8.GetBytes(json))).Message);

    /// <summary>QEMU's lexer takes single-quoted strings, as the iotests send QMP (checked with qemu-storage-daemon 7.2).</summary>
    [Fact]
    public void SingleQuotedInput_IsACommand()
    {
        var command = Assert.IsType<OptionDict>(Parse(Encoding.UTF8.GetBytes("{'execute':'x'}")));
        Assert.Equal("x", ((OptionScalar)command["execute"]!).Text);
    }

    private static List<string> Cut(params string[] pieces)
    {
        var splitter = new QmpInputSplitter();
        var output = new List<string>();
        foreach (var piece in pieces)
            foreach (var input in splitter.Feed(Encoding.UTF8.GetBytes(piece)))
                output.Add(input.Error is { } e ? $"error({e.Message}{(input.Fatal ? ",fatal" : "")})" : Encoding.UTF8.GetString(input.Json!));
        return output;
    }

    [Fact]
    public void Splitter_NeedsNoNewlines_AndWaitsForUnfinishedValues()
    {
        Assert.Equal(["{\"a\":1}", "{\"b\":[2]}"], Cut("{\"a\":1} {\"b\":[2]}"));
        Assert.Empty(Cut("{\"a\":", "  {\"b\": \"}\""));
        Assert.Equal(["{\"a\": \"}{\\\"\"}"], Cut("{\"a\": \"}{", "\\\"\"}"));
    }

    [Fact]
    public void Splitter_ReportsStrayClosersAndCutsBareWords()
    {
        Assert.Equal(["error(JSON parse error, expecting value)", "{}"], Cut("] {}"));
        Assert.Equal(["nonsense", "\"abc\"", "{}"], Cut("nonsense \"abc\"{}"));
    }

    [Fact]
    public void Splitter_ResetsOn0xFF()
    {
        var splitter = new QmpInputSplitter();
        Assert.Empty(splitter.Feed(Encoding.UTF8.GetBytes("{\"execute\": \"qu")));
        var after = splitter.Feed([0xFF, .. Encoding.UTF8.GetBytes("{\"x\":1}")]);
        Assert.Equal("{\"x\":1}", Encoding.UTF8.GetString(Assert.Single(after).Json!));
    }

    [Fact]
    public void Splitter_OversizedOrTooDeepInput_IsFatal()
    {
        var big = "{\"a\": \"" + new string('x', QmpInputSplitter.MaxMessageLength) + "\"}";
        Assert.Contains("error(JSON token size limit exceeded,fatal)", Cut(big));
        Assert.Contains("error(JSON nesting depth limit exceeded,fatal)", Cut(new string('[', JsonOptions.MaxNesting + 1)));
    }
}

public class QDictOrderTests
{
    [Fact]
    public void Entries_GoBucketByBucket_NewestFirstWithinABucket()
    {
        // Keys of any count, with repeats of a bucket likely among many keys: the order is the
        // bucket's, and within one bucket the later insertion comes first (QDict prepends).
        Gen.Int[0, 5000].Array[0, 40].Sample(numbers =>
        {
            var dict = new OptionDict();
            foreach (int n in numbers.Distinct()) dict.Set("key-" + n, "v");
            var expected = dict.Entries.Select((e, i) => (e.Key, Bucket: QDictOrder.Bucket(e.Key), Index: i))
                .OrderBy(e => e.Bucket).ThenByDescending(e => e.Index).Select(e => e.Key);
            Assert.Equal(expected, QDictOrder.Entries(dict).Select(e => e.Key));
        });
    }
}
