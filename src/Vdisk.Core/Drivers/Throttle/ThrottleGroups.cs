using Vdisk.Options;

namespace Vdisk.Drivers.Throttle;

/// <summary>
/// The process's <c>throttle-group</c> objects (QEMU's throttle_groups list), defined by
/// <c>--object throttle-group,id=ID,limits.KEY=N</c> (or the legacy <c>x-KEY=N</c> properties)
/// and named by throttle nodes' <c>throttle-group=ID</c>.
/// </summary>
public static class ThrottleGroups
{
    /// <summary>The object type's name.</summary>
    public const string TypeName = "throttle-group";

    private static readonly Dictionary<string, ThrottleGroup> s_groups = new(StringComparer.Ordinal);

    /// <summary>The group named <paramref name="name"/>, or null.</summary>
    public static ThrottleGroup? Find(string name)
    {
        lock (s_groups) return s_groups.GetValueOrDefault(name);
    }

    /// <summary>True when a group named <paramref name="name"/> exists.</summary>
    public static bool Contains(string name) => Find(name) is not null;

    /// <summary>Removes the group <paramref name="name"/> unless a node uses it; false when there is none or it is in use.</summary>
    public static bool Remove(string name)
    {
        lock (s_groups)
        {
            if (!s_groups.TryGetValue(name, out var group) || group.MemberCount > 0) return false;
            return s_groups.Remove(name);
        }
    }

    /// <summary>
    /// user_creatable_add for a throttle-group: the properties of <paramref name="options"/> (all
    /// but qom-type and id) set as QEMU's setters do, then throttle_group_obj_complete's checks.
    /// </summary>
    /// <exception cref="OptionException">QEMU's message for the first bad property.</exception>
    public static ThrottleGroup Add(string id, OptionDict options, TimeProvider? time = null)
    {
        // user_creatable_add_type: the setters, then the id under /objects, then complete.
        var config = SetProperties(options);
        lock (s_groups)
        {
            if (s_groups.ContainsKey(id) || Crypto.Secrets.Contains(id)) throw new OptionException(Crypto.Secrets.DuplicateIdMessage(id));
            config.Validate();
            var group = new ThrottleGroup(id, config, time ?? TimeProvider.System);
            s_groups.Add(id, group);
            return group;
        }
    }

    /// <summary>
    /// The configuration the properties describe, validated as throttle_group_obj_complete does.
    /// </summary>
    /// <exception cref="OptionException">QEMU's message for the first bad property.</exception>
    public static ThrottleConfig ParseProperties(OptionDict options)
    {
        var config = SetProperties(options);
        config.Validate();
        return config;
    }

    /// <summary>
    /// The properties set on a new configuration: first the QAPI visit of ThrottleGroupProperties
    /// (types, unknown keys), then the setters (limits, validated on its own, then each x- property).
    /// </summary>
    private static ThrottleConfig SetProperties(OptionDict options)
    {
        OptionDict? limits = null;
        var legacy = new List<(ThrottleLimitKey Key, long Value)>();
        var limitValues = new List<(ThrottleLimitKey Key, long Value)>();
        foreach (var (name, value) in options.Entries)
        {
            if (name is "qom-type" or "id") continue;
            if (name == "limits")
            {
                limits = value as OptionDict ?? throw new OptionException("Invalid parameter type for 'limits', expected: object");
                continue;
            }
            if (!name.StartsWith("x-", StringComparison.Ordinal) || Key(name[2..]) is not { } key)
                throw new OptionException($"Parameter '{name}' is unexpected");
            legacy.Add((key, Integer(name, value)));
        }
        if (limits is not null)
        {
            foreach (var (name, value) in limits.Entries)
            {
                if (Key(name) is not { } key) throw new OptionException($"Parameter 'limits.{name}' is unexpected");
                limitValues.Add((key, Integer("limits." + name, value)));
            }
        }

        var config = new ThrottleConfig();
        if (limits is not null)
        {
            // throttle_group_set_limits: throttle_limits_to_config, which validates as well.
            foreach (var (key, value) in limitValues)
                key.Set(config, value, $"{key.Name} value must be in the range [0, {uint.MaxValue}]");
            config.Validate();
        }
        foreach (var (key, value) in legacy)
        {
            // throttle_group_set: its own checks (and its message, without a space in "therange").
            if (value < 0) throw new OptionException("Property values cannot be negative");
            key.Set(config, value, $"x-{key.Name} value must be in therange [0, {uint.MaxValue}]");
        }
        return config;
    }

    /// <summary>ThrottleLimits as qom-get shows it: every key with its value, in QAPI's order.</summary>
    public static IReadOnlyList<KeyValuePair<string, long>> ToLimits(ThrottleConfig config) =>
        ThrottleLimitKey.All.Select(k => new KeyValuePair<string, long>(k.Name, k.Get(config))).ToList();

    private static ThrottleLimitKey? Key(string name)
    {
        foreach (var key in ThrottleLimitKey.All)
        {
            if (key.Name == name) return key;
        }
        return null;
    }

    /// <summary>visit_type_int64: a keyval string parsed as qemu_strtoi64 does, a JSON number as it is.</summary>
    private static long Integer(string name, OptionValue value)
    {
        if (value is OptionScalar { Kind: ScalarKind.String or ScalarKind.Number } s
            && QemuNumber.ParseLong(s.Text, 0, out long n) == QemuNumberStatus.Ok)
            return n;
        if (value is OptionScalar { Kind: ScalarKind.String }) throw new OptionException($"Parameter '{name}' expects integer");
        throw new OptionException($"Invalid parameter type for '{name}', expected: integer");
    }
}
