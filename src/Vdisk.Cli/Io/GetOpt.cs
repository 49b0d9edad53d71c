namespace Vdisk.Cli.Io;

/// <summary>
/// GNU getopt for the words of one qemu-io command (<c>read -P 0xab 0 4k</c>): short options,
/// bundling (<c>-qv</c>), attached or separate values, permutation of operands, and getopt's
/// "invalid option" wording. The process command line uses System.CommandLine; these inner
/// commands are parsed by hand because qemu-io's exact per-command errors are part of its
/// interface and no library reproduces getopt's.
/// </summary>
internal sealed class GetOpt
{
    private readonly string _command;
    private readonly string _spec;

    public GetOpt(string command, string spec)
    {
        _command = command;
        _spec = spec;
    }

    /// <summary>Options found, in order, and the remaining operands; null (after printing) on an invalid option.</summary>
    public (List<(char Option, string? Value)> Options, List<string> Operands)? Parse(IReadOnlyList<string> words, TextWriter error)
    {
        var options = new List<(char, string?)>();
        var operands = new List<string>();
        for (int i = 1; i < words.Count; i++)
        {
            string w = words[i];
            if (w == "--")
            {
                for (i++; i < words.Count; i++) operands.Add(words[i]);
                break;
            }
            if (w.Length < 2 || w[0] != '-')
            {
                operands.Add(w);
                continue;
            }
            for (int j = 1; j < w.Length; j++)
            {
                char c = w[j];
                int at = _spec.IndexOf(c);
                if (at < 0 || c == ':')
                {
                    error.Write($"{_command}: invalid option -- '{c}'\n");
                    return null;
                }
                bool takesValue = at + 1 < _spec.Length && _spec[at + 1] == ':';
                if (!takesValue)
                {
                    options.Add((c, null));
                    continue;
                }
                string? value = j + 1 < w.Length ? w[(j + 1)..] : (i + 1 < words.Count ? words[++i] : null);
                if (value is null)
                {
                    error.Write($"{_command}: option requires an argument -- '{c}'\n");
                    return null;
                }
                options.Add((c, value));
                break;
            }
        }
        return (options, operands);
    }
}
