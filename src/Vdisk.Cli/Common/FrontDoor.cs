using System.CommandLine;

namespace Vdisk.Cli.Common;

/// <summary>
/// The command line before System.CommandLine sees it. QEMU's tools read theirs with GNU
/// getopt_long: options and operands in any order, long options abbreviated to any unambiguous
/// prefix, <c>--</c> ending the options, a value of an optional-value option only attached with
/// <c>=</c> (<c>--wait=5</c>; <c>--wait 5 img</c> is a wait without limit on image "5" and an extra
/// operand "img"). This class reads the verb's options that way (from its System.CommandLine
/// definition), words unknown verbs and options as qemu-img and qemu-io do, and hands
/// System.CommandLine an argv with nothing left to guess: the verb, each option in canonical
/// form, <c>--</c>, the operands.
/// </summary>
internal static class FrontDoor
{
    /// <summary>The line qemu-img prints after a usage error.</summary>
    public static string TryHelp => $"Try '{Stdio.Program} --help' for more information\n";

    /// <summary>
    /// The argv for System.CommandLine, or null after printing the error (exit status in
    /// <paramref name="exitCode"/>). <paramref name="root"/> may hold only the verb that runs;
    /// <paramref name="fullTree"/> builds the whole tree when a usage text is printed.
    /// </summary>
    public static string[]? Rewrite(Command root, string[] args, Func<Command> fullTree, out int exitCode)
    {
        exitCode = 1;
        if (args.Length > 0 && args[0] == "--") args = args[1..];
        if (args.Length == 0) return Fail("Not enough arguments");
        if (args[0].Length > 1 && args[0][0] == '-')
        {
            // Options before any verb: only the root's own (--help, --version), as qemu-img's "+" getopt.
            var parsed = Table(root.Options).Parse([args[0]]);
            if (parsed.Error is { } error) return Fail(error.QemuImgMessage);
            return [((Option)parsed.Options[0].Option.Tag!).Name, .. args[1..]];
        }
        var verb = root.Subcommands.FirstOrDefault(c => c.Name == args[0] || c.Aliases.Contains(args[0]));
        if (verb is null) return Fail($"Command not found: {args[0]}");

        var rest = args[1..];
        string? size = null;
        // (A help request, however abbreviated, is vdisk's own help rather than qemu-img's size error.)
        if (verb.Name == "resize" && !rest.Any(a => a is "-h" or "-?" || (a.Length >= 3 && "--help".StartsWith(a, StringComparison.Ordinal))))
        {
            // qemu-img resize takes the size off the end before getopt, so "-1G" is a size, not an option.
            if (rest.Length < 2) return Fail("Not enough arguments");
            size = rest[^1];
            rest = rest[..^1];
        }

        var options = verb.Options.Concat(root.Options.Where(o => o.Recursive)).ToList();
        var result = Table(options).Parse(rest);
        if (result.Error is { } bad)
        {
            if (verb.Name == "locks")
            {
                // vdisk's own tool: one line, and its exit status for usage errors.
                Stdio.Error(bad.QemuImgMessage);
                exitCode = Locks.LocksCommand.ExitError;
                return null;
            }
            if (verb.Name != "io") return Fail(bad.QemuImgMessage);
            // qemu-io: glibc's message, then its usage on stdout.
            Stdio.Error(bad.GlibcMessage);
            return IoUsage();
        }

        var operands = result.Operands.ToList();
        if (size is not null) operands.Add(size);
        bool help = result.Options.Any(o => o.Option.Tag is System.CommandLine.Help.HelpOption);
        if (!help && verb.Name == "io" && operands.Count > 1) return IoUsage();
        return [verb.Name, .. Canonical(result.Options), "--", .. operands];

        string[]? IoUsage()
        {
            (root as RootCommand ?? fullTree()).Parse(["io", "--help"]).Invoke();
            return null;
        }

        string[]? Fail(string message)
        {
            Stdio.Error(message);
            Console.Error.Write(TryHelp);
            return null;
        }
    }

    /// <summary>
    /// Whether <paramref name="args"/> could ask for help as getopt reads them (before any
    /// <c>--</c>): <c>--help</c> or an abbreviation of it, or a bundle of short options holding
    /// <c>h</c> or <c>?</c>. Conservative (a value like <c>-ohelp</c> counts too): a false yes
    /// only costs building the whole tree; a no means the help option cannot be reached.
    /// </summary>
    public static bool MayAskForHelp(IReadOnlyList<string> args)
    {
        foreach (string word in args)
        {
            if (word == "--") return false;
            if (word.StartsWith("--", StringComparison.Ordinal))
            {
                int eq = word.IndexOf('=');
                string name = eq < 0 ? word[2..] : word[2..eq];
                if (name.Length > 0 && "help".StartsWith(name, StringComparison.Ordinal)) return true;
            }
            else if (word.Length > 1 && word[0] == '-' && word.AsSpan(1).IndexOfAny('h', '?') >= 0)
            {
                return true;
            }
        }
        return false;
    }

    /// <summary>
    /// The getopt table of System.CommandLine options: bool options take no value, zero-or-one
    /// arity an attached one. Plain loops: LINQ's Select on another operator's result is a
    /// generic virtual method, whose first call starts the runtime's type loader (3% of a
    /// one-shot command, docs/architecture.md "Start-up").
    /// </summary>
    private static GetOpt Table(IEnumerable<Option> options)
    {
        var table = new List<GetOptOption>();
        foreach (var o in options)
        {
            char? letter = null;
            var longNames = new List<string>();
            Name(o.Name);
            foreach (string alias in o.Aliases) Name(alias);
            var value = o.ValueType == typeof(bool) ? OptionValue.None
                : o is ClusterOption { IsFlag: true } ? OptionValue.OptionalKeyValue
                : o.Arity.MinimumNumberOfValues == 0 ? OptionValue.Optional
                : OptionValue.Required;
            table.Add(new GetOptOption(letter, longNames, value, o));

            // The first "-x" is the short letter; every "--name" a long name, in order.
            void Name(string n)
            {
                if (n.StartsWith("--", StringComparison.Ordinal)) longNames.Add(n[2..]);
                else if (letter is null && n.Length == 2 && n[0] == '-') letter = n[1];
            }
        }
        return new GetOpt(table);
    }

    /// <summary>
    /// Each option as System.CommandLine reads it without guessing: a flag once, a single-valued
    /// option once with its last value (getopt's last one wins), a list option every time.
    /// </summary>
    private static IEnumerable<string> Canonical(IReadOnlyList<(GetOptOption Option, string? Value)> found)
    {
        var last = new Dictionary<Option, int>();
        for (int i = 0; i < found.Count; i++) last[(Option)found[i].Option.Tag!] = i;
        for (int i = 0; i < found.Count; i++)
        {
            var (entry, value) = found[i];
            var option = (Option)entry.Tag!;
            bool list = option.Arity.MaximumNumberOfValues > 1;
            if (!list && last[option] != i) continue;
            switch (entry.Value)
            {
                case OptionValue.None:
                    yield return option.Name;
                    break;
                case OptionValue.Optional or OptionValue.OptionalKeyValue:
                    yield return value is null ? option.Name : option.Name + "=" + value;
                    break;
                default:
                    yield return option.Name;
                    yield return value!;
                    break;
            }
        }
    }
}
