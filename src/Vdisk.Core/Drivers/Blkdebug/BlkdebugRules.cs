using Vdisk.Graph;
using Vdisk.Native;
using Vdisk.Options;

namespace Vdisk.Drivers.Blkdebug;

/// <summary>QEMU's BlkdebugIOType: the kinds of request an injected error may be limited to.</summary>
public enum BlkdebugIoType
{
    /// <summary>read</summary>
    Read,
    /// <summary>write</summary>
    Write,
    /// <summary>write-zeroes</summary>
    WriteZeroes,
    /// <summary>discard</summary>
    Discard,
    /// <summary>flush</summary>
    Flush,
    /// <summary>block-status</summary>
    BlockStatus,
}

/// <summary>One rule of a blkdebug node: what happens when its event fires in its state.</summary>
public abstract class BlkdebugRule
{
    private protected BlkdebugRule(BlkdebugEvent e, int state)
    {
        Event = e;
        State = state;
    }

    /// <summary>The event the rule reacts to.</summary>
    public BlkdebugEvent Event { get; }

    /// <summary>The state it applies in (0: any state).</summary>
    public int State { get; }
}

/// <summary>
/// <c>inject-error</c>: once the event fired, requests fail with <see cref="Errno"/> (those of
/// <see cref="IoTypes"/> that cover <see cref="Offset"/>, or all of them when it is -1) until a
/// later event activates other errors; <see cref="Once"/> fails only the first such request.
/// </summary>
public sealed class BlkdebugInjectError(BlkdebugEvent e, int state, int errno, bool once, bool immediately, long offset, int ioTypes)
    : BlkdebugRule(e, state)
{
    /// <summary>The errors of a rule without <c>iotype</c>: every kind but block-status.</summary>
    public const int DefaultIoTypes = (1 << (int)BlkdebugIoType.Read) | (1 << (int)BlkdebugIoType.Write)
        | (1 << (int)BlkdebugIoType.WriteZeroes) | (1 << (int)BlkdebugIoType.Discard) | (1 << (int)BlkdebugIoType.Flush);

    /// <summary>The errno the request fails with (0: none).</summary>
    public int Errno { get; } = errno;

    /// <summary>Fail one request only.</summary>
    public bool Once { get; } = once;

    /// <summary>Fail without first yielding (QEMU's coroutine detail; kept for completeness).</summary>
    public bool Immediately { get; } = immediately;

    /// <summary>The byte offset (<c>sector</c> × 512) a request must cover, or -1 for any request.</summary>
    public long Offset { get; } = offset;

    /// <summary>Bit mask over <see cref="BlkdebugIoType"/>.</summary>
    public int IoTypes { get; } = ioTypes;
}

/// <summary><c>set-state</c>: the event moves the node to <see cref="NewState"/>.</summary>
public sealed class BlkdebugSetState(BlkdebugEvent e, int state, int newState) : BlkdebugRule(e, state)
{
    /// <summary>The state after the event.</summary>
    public int NewState { get; } = newState;
}

/// <summary>A breakpoint (qemu-io <c>break</c>): the next request reaching the event is suspended under <see cref="Tag"/>.</summary>
public sealed class BlkdebugSuspend(BlkdebugEvent e, string tag) : BlkdebugRule(e, 0)
{
    /// <summary>The name the suspended request is resumed by.</summary>
    public string Tag { get; } = tag;
}

/// <summary>
/// The state machine of one blkdebug node (block/blkdebug.c without the I/O): rules per event,
/// newest first; the errors the last injecting event activated; the current state (1 at the
/// start). Not thread-safe: the node serialises calls.
/// </summary>
public sealed class BlkdebugRuleSet
{
    private readonly List<BlkdebugRule>[] _rules;
    private readonly List<BlkdebugInjectError> _active = new();

    /// <summary>Creates an empty rule set in state 1.</summary>
    public BlkdebugRuleSet()
    {
        _rules = new List<BlkdebugRule>[BlkdebugEvents.Count];
        for (int i = 0; i < _rules.Length; i++) _rules[i] = new();
    }

    /// <summary>The current state.</summary>
    public int State { get; private set; } = 1;

    /// <summary>Adds a rule in front of the others for its event (QLIST_INSERT_HEAD).</summary>
    public void Add(BlkdebugRule rule) => _rules[(int)rule.Event].Insert(0, rule);

    /// <summary>The rules for <paramref name="e"/>, in the order they are processed.</summary>
    public IReadOnlyList<BlkdebugRule> RulesFor(BlkdebugEvent e) => _rules[(int)e];

    /// <summary>
    /// blkdebug_debug_event: processes the rules of <paramref name="e"/> that apply in the current
    /// state. The first injecting rule replaces the active errors; set-state rules decide the next
    /// state (taken once all rules ran); breakpoints are removed and their tags returned, for the
    /// caller to suspend the request under.
    /// </summary>
    public IReadOnlyList<string> OnEvent(BlkdebugEvent e)
    {
        bool injected = false;
        int newState = State;
        List<string>? suspended = null;
        foreach (var rule in _rules[(int)e].ToArray())
        {
            if (rule.State != 0 && rule.State != State) continue;
            switch (rule)
            {
                case BlkdebugInjectError inject:
                    if (!injected)
                    {
                        _active.Clear();
                        injected = true;
                    }
                    _active.Insert(0, inject);
                    break;
                case BlkdebugSetState set:
                    newState = set.NewState;
                    break;
                case BlkdebugSuspend suspend:
                    _rules[(int)e].Remove(suspend);
                    (suspended ??= new()).Add(suspend.Tag);
                    break;
            }
        }
        State = newState;
        return (IReadOnlyList<string>?)suspended ?? [];
    }

    /// <summary>
    /// rule_check: the errno a request of <paramref name="type"/> over [offset, offset+bytes)
    /// fails with, 0 when it goes through. A matching <c>once</c> rule is used up.
    /// </summary>
    public int Check(long offset, long bytes, BlkdebugIoType type)
    {
        BlkdebugInjectError? hit = null;
        foreach (var rule in _active)
        {
            bool covers = rule.Offset == -1 || (bytes != 0 && rule.Offset >= offset && rule.Offset < offset + bytes);
            if (covers && (rule.IoTypes & (1 << (int)type)) != 0)
            {
                hit = rule;
                break;
            }
        }
        if (hit is null || hit.Errno == 0) return 0;
        if (hit.Once)
        {
            _active.Remove(hit);
            _rules[(int)hit.Event].Remove(hit);
        }
        return hit.Errno;
    }

    /// <summary>Removes every breakpoint with <paramref name="tag"/>; true when there was one.</summary>
    public bool RemoveBreakpoints(string tag)
    {
        bool removed = false;
        foreach (var list in _rules)
            removed |= list.RemoveAll(r => r is BlkdebugSuspend s && s.Tag == tag) > 0;
        return removed;
    }
}

/// <summary>One section of blkdebug's configuration (a QemuOpts of group inject-error or set-state).</summary>
/// <param name="Group">"inject-error" or "set-state".</param>
/// <param name="Values">The options in the order given (a repeated key: the last one counts).</param>
public sealed record BlkdebugSection(string Group, IReadOnlyList<KeyValuePair<string, string>> Values)
{
    /// <summary>The last value of <paramref name="key"/>, or null.</summary>
    public string? Get(string key)
    {
        for (int i = Values.Count - 1; i >= 0; i--)
        {
            if (Values[i].Key == key) return Values[i].Value;
        }
        return null;
    }
}

/// <summary>
/// blkdebug's rules from its two sources: the config file (qemu_config_parse over the groups
/// inject-error and set-state) and the <c>inject-error</c>/<c>set-state</c> options
/// (qemu_config_parse_qdict), with QEMU's error messages.
/// </summary>
public static class BlkdebugConfig
{
    private static readonly string[] s_injectErrorKeys = ["event", "state", "iotype", "errno", "sector", "once", "immediately"];
    private static readonly string[] s_setStateKeys = ["event", "state", "new_state"];
    private static readonly string[] s_numberKeys = ["state", "errno", "sector", "new_state"];
    private static readonly string[] s_boolKeys = ["once", "immediately"];
    private static readonly string[] s_ioTypes = ["read", "write", "write-zeroes", "discard", "flush", "block-status"];

    private static string[]? KeysOf(string group) => group switch
    {
        "inject-error" => s_injectErrorKeys,
        "set-state" => s_setStateKeys,
        _ => null,
    };

    /// <summary>
    /// qemu_config_parse: <c>[group]</c> lines open a section, <c>key = "value"</c> lines fill
    /// it, lines starting with '#' and empty lines are skipped. As in QEMU, a line whose first
    /// word is not followed by <c>= "..."</c> sets that word to the empty string.
    /// </summary>
    /// <exception cref="OptionException">QEMU's message for the first problem.</exception>
    public static List<BlkdebugSection> ParseFile(string text)
    {
        var sections = new List<BlkdebugSection>();
        string? group = null;
        List<KeyValuePair<string, string>>? values = null;
        void Close()
        {
            if (group is null) return;
            if (KeysOf(group) is null) throw new OptionException($"There is no option group '{group}'");
            var section = new BlkdebugSection(group, values!);
            foreach (var (key, value) in section.Values) CheckValue(key, value, group, unknownKey: k => $"Invalid parameter '{k}'");
            sections.Add(section);
        }
        foreach (string raw in SplitLines(text))
        {
            if (raw.Length == 0 || raw[0] == '#') continue;
            if (raw[0] == '[' && SectionName(raw) is { } name)
            {
                Close();
                group = name;
                values = new();
                continue;
            }
            if (KeyValue(raw) is not { } pair) throw new OptionException("parse error");
            if (group is null) throw new OptionException("no group defined");
            values!.Add(pair);
        }
        Close();
        return sections;
    }

    // fgets keeps the newline; QEMU skips lines that are only "\n". A last line without one is a line too.
    private static IEnumerable<string> SplitLines(string text)
    {
        int start = 0;
        while (start < text.Length)
        {
            int nl = text.IndexOf('\n', start);
            if (nl < 0)
            {
                yield return text[start..];
                yield break;
            }
            yield return text[start..nl];
            start = nl + 1;
        }
    }

    // sscanf "[%63s \"%63[^\"]\"]" or "[%63[^]]]": the group name, with or without an id.
    private static string? SectionName(string line)
    {
        int close = line.IndexOf(']', 1);
        string inner = close < 0 ? line[1..] : line[1..close];
        if (inner.Length == 0) return null;
        int space = inner.IndexOfAny([' ', '\t']);
        return space < 0 ? inner : inner[..space];
    }

    // sscanf " %63s = \"%1023[^\"]\"" or " %63s = \"\"": the key, and the value when quoted.
    private static KeyValuePair<string, string>? KeyValue(string line)
    {
        int i = 0;
        while (i < line.Length && char.IsWhiteSpace(line[i])) i++;
        int keyStart = i;
        while (i < line.Length && !char.IsWhiteSpace(line[i])) i++;
        if (i == keyStart) return null;
        string key = line[keyStart..i];
        while (i < line.Length && char.IsWhiteSpace(line[i])) i++;
        if (i >= line.Length || line[i] != '=') return new(key, "");
        i++;
        while (i < line.Length && char.IsWhiteSpace(line[i])) i++;
        if (i >= line.Length || line[i] != '"') return new(key, "");
        int valueStart = ++i;
        int quote = line.IndexOf('"', valueStart);
        return new(key, quote < 0 ? line[valueStart..] : line[valueStart..quote]);
    }

    /// <summary>
    /// qemu_config_parse_qdict for one group: <paramref name="value"/> is a list of sections, a
    /// dictionary numbered "0", "1", ... (from <c>inject-error.0.event=...</c>), or one section.
    /// </summary>
    /// <exception cref="OptionException">A key the group does not have, or a value of the wrong type.</exception>
    public static List<BlkdebugSection> FromOption(string group, OptionValue value)
    {
        var entries = value switch
        {
            OptionList list => list.Items,
            OptionDict dict when dict.Entries.Any() && dict.Entries.All(e => e.Key.All(char.IsAsciiDigit)) =>
                dict.Entries.OrderBy(e => int.Parse(e.Key, System.Globalization.CultureInfo.InvariantCulture)).Select(e => e.Value).ToList(),
            OptionDict dict => [dict],
            _ => throw new OptionException($"Invalid parameter type for '{group}', expected: array"),
        };
        var sections = new List<BlkdebugSection>();
        foreach (var entry in entries)
        {
            if (entry is not OptionDict dict) throw new OptionException($"Invalid parameter type for '{group}', expected: object");
            var values = new List<KeyValuePair<string, string>>();
            foreach (var (key, v) in dict.Flatten())
            {
                string text = v is OptionScalar s ? s.Text : v.ToString();
                CheckValue(key, text, group, unknownKey: k => $"[{group}] section doesn't support the option '{k}'");
                values.Add(new(key, text));
            }
            sections.Add(new BlkdebugSection(group, values));
        }
        return sections;
    }

    // qemu_opt_set's checks: the key exists in the group, numbers and booleans parse.
    private static void CheckValue(string key, string value, string group, Func<string, string> unknownKey)
    {
        if (!KeysOf(group)!.Contains(key)) throw new OptionException(unknownKey(key));
        if (s_numberKeys.Contains(key)) ParseNumber(key, value);
        if (s_boolKeys.Contains(key)) ParseBool(key, value);
    }

    private static long ParseNumber(string key, string value) =>
        QemuNumber.ParseUnsigned(value, 0, out ulong n) == QemuNumberStatus.Ok
            ? unchecked((long)n)
            : throw new OptionException($"Parameter '{key}' expects a number");

    private static bool ParseBool(string key, string value) =>
        NodeOptions.ParseBool(value) ?? throw new OptionException($"Parameter '{key}' expects 'on' or 'off'");

    /// <summary>
    /// add_rule for each section: inject-error sections first, then set-state ones, each added in
    /// front of the earlier rules of its event.
    /// </summary>
    /// <exception cref="OptionException">A missing or unknown event, an unknown iotype.</exception>
    public static void AddRules(BlkdebugRuleSet rules, IEnumerable<BlkdebugSection> sections)
    {
        var all = sections.ToList();
        foreach (var section in all.Where(s => s.Group == "inject-error").Concat(all.Where(s => s.Group == "set-state")))
            rules.Add(RuleFrom(section));
    }

    private static BlkdebugRule RuleFrom(BlkdebugSection section)
    {
        string name = section.Get("event") ?? throw new OptionException("Missing event name for rule");
        var e = BlkdebugEvents.Parse(name) ?? throw new OptionException($"invalid parameter value: {name}");
        int state = section.Get("state") is { } st ? unchecked((int)ParseNumber("state", st)) : 0;
        if (section.Group == "set-state")
        {
            int newState = section.Get("new_state") is { } ns ? unchecked((int)ParseNumber("new_state", ns)) : 0;
            return new BlkdebugSetState(e, state, newState);
        }
        int errno = section.Get("errno") is { } er ? unchecked((int)ParseNumber("errno", er)) : Errno.EIO;
        bool once = section.Get("once") is { } o && ParseBool("once", o);
        bool immediately = section.Get("immediately") is { } im && ParseBool("immediately", im);
        long sector = section.Get("sector") is { } sec ? ParseNumber("sector", sec) : -1;
        int ioTypes = BlkdebugInjectError.DefaultIoTypes;
        if (section.Get("iotype") is { } io)
        {
            int index = Array.IndexOf(s_ioTypes, io);
            if (index < 0) throw new OptionException($"invalid parameter value: {io}");
            ioTypes = 1 << index;
        }
        return new BlkdebugInjectError(e, state, errno, once, immediately, sector == -1 ? -1 : sector * 512, ioTypes);
    }
}
