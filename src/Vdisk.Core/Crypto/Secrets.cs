using System.Text;
using Vdisk.Options;

namespace Vdisk.Crypto;

/// <summary>
/// The process's secret objects (QEMU's <c>secret</c> QOM type under /objects): what
/// <c>--object secret,id=ID,data=...|file=...[,format=raw|base64]</c> defines and what
/// <c>key-secret=ID</c> and <c>encrypt.key-secret=ID</c> name. One table per process, as QEMU's
/// object root is.
/// </summary>
public static class Secrets
{
    private static readonly Dictionary<string, byte[]> s_secrets = new(StringComparer.Ordinal);

    /// <summary>
    /// The object types qemu-img 7.2 lists for <c>--object help</c>: a type vdisk does not
    /// implement gets vdisk's message, any other name QEMU's.
    /// </summary>
    private static readonly string[] s_qemuObjectTypes =
        ["authz-list", "authz-list-file", "authz-simple", "main-loop", "pr-manager-helper", "secret", "secret_keyring", "thread-context", "throttle-group"];

    /// <summary>
    /// user_creatable_process_cmdline for one <c>--object</c> argument: parses it (keyval, the
    /// leading word being <c>qom-type</c>) and adds the secret.
    /// </summary>
    /// <exception cref="OptionException">QEMU's message for a malformed object.</exception>
    public static void AddFromCommandLine(string text) => Add(KeyValParser.Parse(text, impliedKey: "qom-type"));

    /// <summary>Adds the object <paramref name="options"/> describe (qom-type, id and the type's properties).</summary>
    /// <exception cref="OptionException">QEMU's message for a malformed object.</exception>
    public static void Add(OptionDict options)
    {
        string? type = Scalar(options, "qom-type") ?? throw new OptionException("Parameter 'qom-type' is missing");
        if (!s_qemuObjectTypes.Contains(type)) throw new OptionException($"Parameter 'qom-type' does not accept value '{type}'");
        string id = Scalar(options, "id") ?? throw new OptionException("Parameter 'id' is missing");
        if (!IsIdentifier(id))
            throw new OptionException("Parameter 'id' expects an identifier\nIdentifiers consist of letters, digits, '-', '.', '_', starting with a letter.");
        if (type == Drivers.Throttle.ThrottleGroups.TypeName)
        {
            Drivers.Throttle.ThrottleGroups.Add(id, options);
            return;
        }
        if (type != "secret") throw new OptionException($"vdisk does not support objects of type '{type}'");

        string? data = null, file = null, format = null, keyId = null;
        foreach (var (key, value) in options.Entries)
        {
            if (key is "qom-type" or "id") continue;
            string text = value is OptionScalar s ? s.Text : throw new OptionException($"Invalid parameter type for '{key}', expected: string");
            switch (key)
            {
                case "data": data = text; break;
                case "file": file = text; break;
                case "format": format = text; break;
                case "keyid": keyId = text; break;
                case "iv": break;
                case "loaded": throw new OptionException("Property 'secret.loaded' is not writable");
                default: throw new OptionException($"Parameter '{key}' is unexpected");
            }
        }
        if (format is not (null or "raw" or "base64")) throw new OptionException($"Parameter 'format' does not accept value '{format}'");
        if (data is not null && file is not null) throw new OptionException("'file' and 'data' are mutually exclusive");
        if (data is null && file is null) throw new OptionException("Either 'file' or 'data' must be provided");

        byte[] bytes;
        if (file is not null)
        {
            try
            {
                bytes = File.ReadAllBytes(file);
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                string reason = e is FileNotFoundException or DirectoryNotFoundException ? "No such file or directory"
                    : e is UnauthorizedAccessException ? "Permission denied" : e.Message;
                throw new OptionException($"Unable to read {file}: Failed to open file \u201c{file}\u201d: {reason}");
            }
        }
        else
        {
            bytes = Encoding.UTF8.GetBytes(data!);
        }
        if (format == "base64") bytes = DecodeBase64(bytes);
        if (keyId is not null)
        {
            if (!Contains(keyId)) throw new OptionException($"No secret with id '{keyId}'");
            throw new OptionException("vdisk does not support encrypted secrets (keyid)");
        }
        lock (s_secrets)
        {
            // One namespace for every object, as QEMU's /objects container.
            if (Drivers.Throttle.ThrottleGroups.Contains(id) || !s_secrets.TryAdd(id, bytes))
                throw new OptionException(DuplicateIdMessage(id));
        }
    }

    /// <summary>object_property_try_add_child's refusal of an id already under /objects.</summary>
    public static string DuplicateIdMessage(string id) => $"attempt to add duplicate property '{id}' to object (type 'container')";

    /// <summary>True when a secret named <paramref name="id"/> exists.</summary>
    public static bool Contains(string id)
    {
        lock (s_secrets) return s_secrets.ContainsKey(id);
    }

    /// <summary>Removes the secret <paramref name="id"/> (QMP object-del); false when there was none.</summary>
    public static bool Remove(string id)
    {
        lock (s_secrets) return s_secrets.Remove(id);
    }

    /// <summary>qcrypto_secret_lookup: the secret's bytes.</summary>
    /// <exception cref="OptionException">No such secret (QEMU's words).</exception>
    public static byte[] Lookup(string id)
    {
        lock (s_secrets)
        {
            if (s_secrets.TryGetValue(id, out var bytes)) return (byte[])bytes.Clone();
        }
        throw new OptionException($"No secret with id '{id}'");
    }

    /// <summary>
    /// qcrypto_secret_lookup_as_utf8: the secret as a passphrase (its bytes, which must be
    /// UTF-8; a NUL ends it, as QEMU passes it on as a C string).
    /// </summary>
    /// <exception cref="OptionException">No such secret, or not UTF-8 (QEMU's words).</exception>
    public static byte[] LookupPassphrase(string id)
    {
        var bytes = Lookup(id);
        try
        {
            new UTF8Encoding(false, throwOnInvalidBytes: true).GetString(bytes);
        }
        catch (DecoderFallbackException)
        {
            throw new OptionException($"Data from secret {id} is not valid UTF-8");
        }
        int nul = Array.IndexOf(bytes, (byte)0);
        return nul < 0 ? bytes : bytes[..nul];
    }

    /// <summary>qbase64_decode: glib's lenient decoder after a check of the alphabet.</summary>
    private static byte[] DecodeBase64(byte[] text)
    {
        var sb = new StringBuilder(text.Length);
        foreach (byte b in text)
        {
            char c = (char)b;
            if (c is (>= 'A' and <= 'Z') or (>= 'a' and <= 'z') or (>= '0' and <= '9') or '+' or '/' or '=') sb.Append(c);
            else if (c is not ('\n' or '\r')) throw new OptionException("Base64 data contains invalid characters");
        }
        string s = sb.ToString().TrimEnd('=');
        if (s.Length % 4 == 1) s = s[..^1];
        s = s.PadRight((s.Length + 3) / 4 * 4, '=');
        try
        {
            return Convert.FromBase64String(s);
        }
        catch (FormatException)
        {
            throw new OptionException("Base64 data contains invalid characters");
        }
    }

    /// <summary>id_wellformed: a letter, then letters, digits, '-', '.', '_'.</summary>
    private static bool IsIdentifier(string id) =>
        id.Length > 0 && char.IsAsciiLetter(id[0]) && id.All(c => char.IsAsciiLetterOrDigit(c) || c is '-' or '.' or '_');

    private static string? Scalar(OptionDict options, string key) => options[key] switch
    {
        null => null,
        OptionScalar s => s.Text,
        _ => throw new OptionException($"Invalid parameter type for '{key}', expected: string"),
    };
}
