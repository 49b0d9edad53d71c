using System.Globalization;
using System.Text;
using Vdisk.Locking;
using Vdisk.Options;

namespace Vdisk.Drivers.Vmdk;

/// <summary>
/// qemu-img create's <c>-o</c> list for vmdk (vmdk_create_opts followed by the file protocol's
/// options), kept as QemuOpts keeps it: values as given, printed in list order with defaults
/// for the "Formatting" line.
/// </summary>
public sealed class VmdkCreateArguments
{
    /// <summary>One option: name, type (string, bool, size), help text, printed default.</summary>
    public sealed record Descriptor(string Name, string Type, string Help, string? Default = null);

    /// <summary>vmdk's create options, in vmdk_create_opts order.</summary>
    public static readonly Descriptor[] Vmdk =
    [
        new("size", "size", "Virtual disk size"),
        new("adapter_type", "str", "Virtual adapter type, can be one of ide (default), lsilogic, buslogic or legacyESX"),
        new("backing_file", "str", "File name of a base image"),
        new("backing_fmt", "str", "Must be 'vmdk' if present"),
        new("compat6", "bool", "VMDK version 6 image", "off"),
        new("hwversion", "str", "VMDK hardware version", "undefined"),
        new("toolsversion", "str", "VMware guest tools version"),
        new("subformat", "str", "VMDK flat extent format, can be one of {monolithicSparse (default) | monolithicFlat | twoGbMaxExtentSparse | twoGbMaxExtentFlat | streamOptimized} "),
        new("zeroed_grain", "bool", "Enable efficient zero writes using the zeroed-grain GTE feature"),
    ];

    /// <summary>The file protocol's create options appended after vmdk's (size is already listed).</summary>
    public static readonly Descriptor[] Protocol =
    [
        new("nocow", "bool", "Turn off copy-on-write (valid only on btrfs)"),
        new("preallocation", "str", "Preallocation mode (allowed values: off, falloc, full)"),
        new("extent_size_hint", "size", "Extent size hint for the image file, 0 to disable"),
    ];

    private readonly Dictionary<string, string> _values = new(StringComparer.Ordinal);

    private static Descriptor? Find(string key) => Vmdk.Concat(Protocol).FirstOrDefault(d => d.Name == key);

    /// <summary>Sets an option as qemu_opt_set does; returns QEMU's error, or null.</summary>
    public string? Set(string key, string value)
    {
        var d = Find(key);
        if (d is null) return $"Invalid parameter '{key}'";
        switch (d.Type)
        {
            case "bool" when NodeOptions.ParseBool(value) is null:
                return $"Parameter '{key}' expects 'on' or 'off'";
            case "size" when !SizeParser.TryParse(value, out _):
                return $"Parameter '{key}' expects a non-negative number below 2^64";
        }
        _values[key] = value;
        return null;
    }

    /// <summary>The value given for <paramref name="key"/>, or null.</summary>
    public string? Get(string key) => _values.GetValueOrDefault(key);

    /// <summary>True once <paramref name="key"/> was given.</summary>
    public bool Has(string key) => _values.ContainsKey(key);

    private bool Flag(string key) => _values.TryGetValue(key, out var v) && NodeOptions.ParseBool(v) == true;

    /// <summary>qemu_opts_print after "fmt=vmdk": every option with a value or a default, in list order.</summary>
    public string Print()
    {
        var parts = new List<string>();
        foreach (var d in Vmdk.Concat(Protocol))
        {
            string? value = _values.GetValueOrDefault(d.Name) ?? d.Default;
            if (value is not null) parts.Add($"{d.Name}={value}");
        }
        return string.Join(' ', parts);
    }

    /// <summary>The options the vmdk creator reads (size rounded up to sectors there).</summary>
    public VmdkCreateOptions ToOptions(string filename, LockingMode locking)
    {
        SizeParser.TryParse(Get("size") ?? "0", out ulong size);
        return new VmdkCreateOptions
        {
            Filename = filename,
            Size = (long)Math.Min(size, long.MaxValue - 511),
            Subformat = Get("subformat"),
            AdapterType = Get("adapter_type"),
            BackingFile = Get("backing_file"),
            BackingFormat = Get("backing_fmt"),
            HwVersion = Get("hwversion"),
            ToolsVersion = Get("toolsversion"),
            Compat6 = Flag("compat6"),
            ZeroedGrain = Flag("zeroed_grain"),
            Locking = locking,
        };
    }

    /// <summary>print_block_option_help for vmdk: the format's options, or all of them for a known target file.</summary>
    public static string Help(bool withProtocol)
    {
        var sb = new StringBuilder(withProtocol ? "Supported options:\n" : "Supported vmdk options:\n");
        var list = withProtocol ? Vmdk.Concat(Protocol).OrderBy(d => d.Name, StringComparer.Ordinal) : Vmdk.OrderBy(d => d.Name, StringComparer.Ordinal);
        foreach (var d in list)
        {
            string head = d.Type switch { "bool" => $"{d.Name}=<bool (on/off)>", _ => $"{d.Name}=<{d.Type}>" };
            sb.Append(CultureInfo.InvariantCulture, $"  {head,-22} - {d.Help}\n");
        }
        if (!withProtocol) sb.Append("\nThe protocol level may support further options.\nSpecify the target filename to include those options.\n");
        return sb.ToString();
    }
}
