using Vdisk.Cli.Info;
using Vdisk.Cli.Io;

namespace Vdisk.Cli.Common;

/// <summary>
/// The hot one-shot command lines read without System.CommandLine: <c>info IMG</c> and
/// <c>io IMG -c CMD...</c> (qemu-img info and qemu-io under their names) with their everyday
/// options. Building the verb's options, the getopt pass over them and System.CommandLine's parse
/// and invocation were a sixth of an <c>info</c> run's CPU time (docs/architecture.md, "Start-up").
/// Only exact spellings are read here: an option that is not in the list, an abbreviation, a
/// bundle, a value attached to a short option, a value or operand that is empty or starts with
/// '-', <c>--</c>, or an operand count the verb refuses make it return null, and the full parser
/// reads the line and prints whatever it always printed. <c>VDISK_FULL_PARSER=1</c> sends every
/// line there (the tests compare the two).
/// </summary>
internal static class OneShotCommandLine
{
    /// <summary>The run for <paramref name="args"/> (verb first), or null when the full parser must read them.</summary>
    public static Func<Task<int>>? TryRead(Tool tool, string[] args)
    {
        if (args.Length < 2) return null;
        return args[0] switch
        {
            InfoCommand.Name when tool != Tool.QemuIo => TryInfo(args),
            IoCommand.Name when tool != Tool.QemuImg => TryIo(args),
            _ => null,
        };
    }

    private static Func<Task<int>>? TryInfo(string[] args)
    {
        string? format = null, file = null;
        string output = "human";
        bool forceShare = false, backingChain = false;
        for (int i = 1; i < args.Length; i++)
        {
            string word = args[i];
            switch (word)
            {
                case "-f" or "--format":
                    if (!TryValue(args, ref i, out format)) return null;
                    break;
                case "-U" or "--force-share":
                    forceShare = true;
                    break;
                case "--output":
                    if (!TryValue(args, ref i, out output)) return null;
                    break;
                case "--backing-chain":
                    backingChain = true;
                    break;
                default:
                    if (word.StartsWith("--output=", StringComparison.Ordinal) && IsPlain(word["--output=".Length..]))
                    {
                        output = word["--output=".Length..];
                        break;
                    }
                    if (!IsPlain(word) || file is not null) return null;
                    file = word;
                    break;
            }
        }
        if (file is null) return null;
        var request = new InfoCommand.InfoRequest([file], format, ImageOpts: false, forceShare, output, backingChain, Wait: null, Cluster: null);
        return () => Task.FromResult(InfoCommand.Run(request));
    }

    private static Func<Task<int>>? TryIo(string[] args)
    {
        string? format = null, cache = null, file = null;
        bool forceShare = false, readOnly = false, noCache = false;
        var commands = new List<string>();
        for (int i = 1; i < args.Length; i++)
        {
            string word = args[i];
            switch (word)
            {
                case "-f" or "--format":
                    if (!TryValue(args, ref i, out format)) return null;
                    break;
                case "-c" or "--cmd":
                    if (!TryValue(args, ref i, out string command)) return null;
                    commands.Add(command);
                    break;
                case "-t" or "--cache":
                    if (!TryValue(args, ref i, out cache)) return null;
                    break;
                case "-U" or "--force-share":
                    forceShare = true;
                    break;
                case "-r" or "--read-only":
                    readOnly = true;
                    break;
                case "-n" or "--nocache":
                    noCache = true;
                    break;
                default:
                    if (!IsPlain(word) || file is not null) return null;
                    file = word;
                    break;
            }
        }
        if (file is null) return null;
        var request = new IoCommand.IoRequest(file, format, ImageOpts: false, forceShare, commands.ToArray(), readOnly, noCache,
            cache, Discard: null, Aio: null, NativeAio: false, Trace: [], Version: false, Wait: null, Cluster: null);
        return () => IoCommand.RunAsync(request);
    }

    /// <summary>The next word as the option's value (getopt's last value wins, as the assignments here do).</summary>
    private static bool TryValue(string[] args, ref int i, out string value)
    {
        value = "";
        if (i + 1 >= args.Length || !IsPlain(args[i + 1])) return false;
        value = args[++i];
        return true;
    }

    /// <summary>A word both parsers read the same way as a value or an operand.</summary>
    private static bool IsPlain(string word) => word.Length > 0 && word[0] != '-';
}
