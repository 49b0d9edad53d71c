using System.Text;
using Vdisk.Options;

namespace Vdisk.Drivers.Nbd;

/// <summary>
/// QEMU's nbd_parse_filename: turns <c>nbd://host[:port]/export</c>,
/// <c>nbd+unix:///export?socket=PATH</c> and the legacy <c>nbd:host:port[:exportname=X]</c> /
/// <c>nbd:unix:PATH[:exportname=X]</c> into the options <c>server.type</c>, <c>server.path</c> or
/// <c>server.host</c>/<c>server.port</c>, and <c>export</c>. Errors carry QEMU 7.2's wording.
/// </summary>
public static class NbdFilename
{
    private const string ExportNameOption = ":exportname=";

    /// <summary>The protocol prefixes the nbd driver answers to.</summary>
    public static readonly string[] Protocols = ["nbd", "nbd+tcp", "nbd+unix"];

    /// <summary>Adds the options <paramref name="filename"/> stands for to <paramref name="options"/>.</summary>
    /// <exception cref="OptionException">QEMU's message for a malformed filename.</exception>
    public static void Parse(string filename, OptionDict options)
    {
        foreach (var (key, _) in options.Flatten())
        {
            if (key is "host" or "port" or "path" or "export" || key.StartsWith("server.", StringComparison.Ordinal))
                throw new OptionException($"Option '{key}' cannot be used with a file name");
        }

        if (filename.Contains("://", StringComparison.Ordinal))
        {
            if (!TryParseUri(filename, options)) throw new OptionException("No valid URL specified");
            return;
        }

        string file = filename;
        int exportAt = file.IndexOf(ExportNameOption, StringComparison.Ordinal);
        if (exportAt >= 0)
        {
            string export = file[(exportAt + ExportNameOption.Length)..];
            if (export.Length == 0) return;
            file = file[..exportAt];
            options.Set("export", export);
        }
        if (!file.StartsWith("nbd:", StringComparison.Ordinal))
            throw new OptionException("File name string for NBD must start with 'nbd:'");
        string hostSpec = file["nbd:".Length..];
        if (hostSpec.Length == 0) return;
        if (hostSpec.StartsWith("unix:", StringComparison.Ordinal))
        {
            options.Set("server.type", "unix");
            options.Set("server.path", hostSpec["unix:".Length..]);
            return;
        }
        var (host, port) = ParseInet(hostSpec);
        options.Set("server.type", "inet");
        options.Set("server.host", host);
        options.Set("server.port", port);
    }

    /// <summary>inet_parse: <c>host:port</c>, <c>[v6]:port</c> or <c>:port</c>; options after a comma are not used.</summary>
    private static (string Host, string Port) ParseInet(string spec)
    {
        string host, rest;
        if (spec.StartsWith(':'))
        {
            host = "";
            rest = spec[1..];
            if (TakeUntilComma(rest).Length == 0) throw new OptionException($"error parsing port in address '{spec}'");
        }
        else if (spec.StartsWith('['))
        {
            int close = spec.IndexOf(']');
            if (close < 2 || close + 1 >= spec.Length || spec[close + 1] != ':' || TakeUntilComma(spec[(close + 2)..]).Length == 0)
                throw new OptionException($"error parsing IPv6 address '{spec}'");
            host = spec[1..close];
            rest = spec[(close + 2)..];
        }
        else
        {
            int colon = spec.IndexOf(':');
            if (colon <= 0 || TakeUntilComma(spec[(colon + 1)..]).Length == 0)
                throw new OptionException($"error parsing address '{spec}'");
            host = spec[..colon];
            rest = spec[(colon + 1)..];
        }
        return (host, TakeUntilComma(rest));
    }

    private static string TakeUntilComma(string s)
    {
        int comma = s.IndexOf(',');
        return comma < 0 ? s : s[..comma];
    }

    /// <summary>nbd_parse_uri over an RFC 3986 split like QEMU's util/uri.c.</summary>
    private static bool TryParseUri(string text, OptionDict options)
    {
        int colon = text.IndexOf(':');
        if (colon <= 0 || !char.IsAsciiLetter(text[0])) return false;
        string scheme = text[..colon];
        foreach (char c in scheme)
            if (!(char.IsAsciiLetterOrDigit(c) || c is '+' or '-' or '.')) return false;
        bool isUnix;
        switch (scheme)
        {
            case "nbd":
            case "nbd+tcp":
                isUnix = false;
                break;
            case "nbd+unix":
                isUnix = true;
                break;
            default:
                return false;
        }

        string rest = text[(colon + 1)..];
        int hash = rest.IndexOf('#');
        if (hash >= 0) rest = rest[..hash];
        string? query = null;
        int question = rest.IndexOf('?');
        if (question >= 0)
        {
            query = rest[(question + 1)..];
            rest = rest[..question];
        }
        string? authority = null;
        if (rest.StartsWith("//", StringComparison.Ordinal))
        {
            int slash = rest.IndexOf('/', 2);
            authority = slash < 0 ? rest[2..] : rest[2..slash];
            rest = slash < 0 ? "" : rest[slash..];
        }

        string? server = null;
        int port = 0;
        if (authority is not null)
        {
            int at = authority.LastIndexOf('@');
            if (at >= 0) authority = authority[(at + 1)..];
            string hostPart = authority;
            string? portText = null;
            if (authority.StartsWith('['))
            {
                int close = authority.IndexOf(']');
                if (close < 0) return false;
                hostPart = authority[..(close + 1)];
                string after = authority[(close + 1)..];
                if (after.Length > 0)
                {
                    if (after[0] != ':') return false;
                    portText = after[1..];
                }
            }
            else
            {
                int portColon = authority.LastIndexOf(':');
                if (portColon >= 0)
                {
                    hostPart = authority[..portColon];
                    portText = authority[(portColon + 1)..];
                }
            }
            if (portText is not null)
            {
                if (portText.Length == 0) return false;
                foreach (char c in portText)
                {
                    if (!char.IsAsciiDigit(c)) return false;
                    port = port * 10 + (c - '0');
                    if (port > 65535) return false;
                }
            }
            if (!TryUnescape(hostPart, out server)) return false;
            if (server.Length == 0) server = null;
        }

        if (!TryUnescape(rest, out string path)) return false;
        if (path.StartsWith('/')) path = path[1..];
        if (path.Length > 0) options.Set("export", path);

        var parameters = new List<(string Name, string Value)>();
        if (!string.IsNullOrEmpty(query))
        {
            foreach (string pair in query.Split('&', ';'))
            {
                if (pair.Length == 0) continue;
                int eq = pair.IndexOf('=');
                // "?socket" without a value crashes QEMU 7.2's parser; here it is just not a valid URL.
                if (eq < 0) return false;
                if (!TryUnescape(pair[..eq], out string name) || !TryUnescape(pair[(eq + 1)..], out string value)) return false;
                parameters.Add((name, value));
            }
        }
        if (parameters.Count > 1 || (isUnix && parameters.Count == 0) || (!isUnix && parameters.Count > 0)) return false;

        if (isUnix)
        {
            if (server is not null || port != 0 || parameters[0].Name != "socket") return false;
            options.Set("server.type", "unix");
            options.Set("server.path", parameters[0].Value);
        }
        else
        {
            if (server is null) return false;
            if (server.StartsWith('[') && server.EndsWith(']')) server = server[1..^1];
            options.Set("server.type", "inet");
            options.Set("server.host", server);
            options.Set("server.port", (port != 0 ? port : 10809).ToString(System.Globalization.CultureInfo.InvariantCulture));
        }
        return true;
    }

    /// <summary>Percent-decoding; a '%' not followed by two hex digits makes the URL invalid.</summary>
    private static bool TryUnescape(string s, out string result)
    {
        if (!s.Contains('%'))
        {
            result = s;
            return true;
        }
        var bytes = new List<byte>(s.Length);
        for (int i = 0; i < s.Length; i++)
        {
            if (s[i] != '%')
            {
                bytes.AddRange(Encoding.UTF8.GetBytes(s[i].ToString()));
                continue;
            }
            if (i + 2 >= s.Length || !char.IsAsciiHexDigit(s[i + 1]) || !char.IsAsciiHexDigit(s[i + 2]))
            {
                result = "";
                return false;
            }
            bytes.Add(Convert.ToByte(s.Substring(i + 1, 2), 16));
            i += 2;
        }
        result = Encoding.UTF8.GetString(bytes.ToArray());
        return true;
    }

    /// <summary>
    /// nbd_refresh_filename: the pseudo-filename QEMU shows for a node
    /// (<c>nbd+unix:///EXPORT?socket=PATH</c>, <c>nbd://HOST:PORT/EXPORT</c>).
    /// </summary>
    public static string Describe(NbdServerAddress address, string? export)
    {
        if (address.IsUnix)
            return export is null ? $"nbd+unix://?socket={address.Path}" : $"nbd+unix:///{export}?socket={address.Path}";
        return export is null ? $"nbd://{address.Host}:{address.Port}" : $"nbd://{address.Host}:{address.Port}/{export}";
    }
}
