namespace Vdisk.Cli.Common;

/// <summary>Whether an option takes a value: never, always, or only when attached (<c>--wait=5</c>, <c>-Xvalue</c>).</summary>
internal enum OptionValue
{
    None,
    Required,
    Optional,
    /// <summary>
    /// vdisk's, not getopt's: optional, attached or the next word when that word holds '='
    /// (<c>vdisk locks --cluster endpoints=... ID</c>, where no operand holds '=').
    /// </summary>
    OptionalKeyValue,
}

/// <summary>An option getopt_long knows: a short letter and/or long names, and its value rule.</summary>
internal sealed record GetOptOption(char? Short, IReadOnlyList<string> Long, OptionValue Value, object? Tag = null)
{
    /// <summary>How the option is named in messages: <c>--name</c>, else <c>-c</c>.</summary>
    public string DisplayName => Long.Count > 0 ? "--" + Long[0] : "-" + Short;
}

/// <summary>What went wrong in a command line.</summary>
internal enum GetOptFailure
{
    /// <summary>A long option nobody has (or an abbreviation of several).</summary>
    UnrecognizedOption,
    /// <summary>A short option letter nobody has.</summary>
    InvalidOption,
    /// <summary>An option that needs a value came last.</summary>
    MissingArgument,
    /// <summary>An abbreviation of several long options.</summary>
    Ambiguous,
    /// <summary><c>--flag=value</c> for an option without a value.</summary>
    ArgumentNotAllowed,
}

/// <summary>A command-line error: the failure, the word it is in, and the option concerned.</summary>
internal sealed record GetOptError(GetOptFailure Failure, string Word, string Option, IReadOnlyList<string> Candidates)
{
    /// <summary>glibc's getopt text, which qemu-io prints (after the program or command name).</summary>
    public string GlibcMessage => Failure switch
    {
        GetOptFailure.UnrecognizedOption => $"unrecognized option '{Word}'",
        GetOptFailure.InvalidOption => $"invalid option -- '{Option[1..]}'",
        GetOptFailure.MissingArgument when Option.StartsWith("--", StringComparison.Ordinal) => $"option '{Option}' requires an argument",
        GetOptFailure.MissingArgument => $"option requires an argument -- '{Option[1..]}'",
        GetOptFailure.Ambiguous => $"option '{Word}' is ambiguous; possibilities:" + string.Concat(Candidates.Select(c => $" '{c}'")),
        GetOptFailure.ArgumentNotAllowed => $"option '{Option}' doesn't allow an argument",
        _ => Word,
    };

    /// <summary>
    /// qemu-img's text (its option strings start with ':', so it words errors itself): the
    /// whole word, e.g. <c>unrecognized option '--outptu=json'</c>.
    /// </summary>
    public string QemuImgMessage => Failure == GetOptFailure.MissingArgument
        ? $"missing argument for option '{Word}'"
        : $"unrecognized option '{Word}'";
}

/// <summary>What a command line holds: options in order with their values, the operands, or the first error.</summary>
internal sealed record GetOptResult(List<(GetOptOption Option, string? Value)> Options, List<string> Operands, GetOptError? Error);

/// <summary>
/// GNU getopt_long, as QEMU's tools read their command lines (and qemu-io the words of each
/// command): bundled short options (<c>-qv</c>), values attached or in the next word, long
/// options abbreviated to any unambiguous prefix, operands anywhere (they are collected in
/// order), <c>--</c> ends the options. A value of an optional-value option must be attached
/// (<c>--wait=5</c>): the next word is never taken.
/// </summary>
internal sealed class GetOpt(List<GetOptOption> options)
{
    /// <summary>Short options from a getopt string: <c>"bCl:P:"</c> (a colon after a letter: takes a value).</summary>
    public static GetOpt FromShortSpec(string spec)
    {
        var list = new List<GetOptOption>();
        for (int i = 0; i < spec.Length; i++)
        {
            bool value = i + 1 < spec.Length && spec[i + 1] == ':';
            list.Add(new GetOptOption(spec[i], [], value ? OptionValue.Required : OptionValue.None));
            if (value) i++;
        }
        return new GetOpt(list);
    }

    /// <summary>Reads <paramref name="args"/> from <paramref name="start"/>; stops at the first error.</summary>
    public GetOptResult Parse(string[] args, int start = 0)
    {
        var found = new List<(GetOptOption, string?)>();
        var operands = new List<string>();
        for (int i = start; i < args.Length; i++)
        {
            string word = args[i];
            if (word == "--")
            {
                for (i++; i < args.Length; i++) operands.Add(args[i]);
                break;
            }
            GetOptError? error;
            if (word.StartsWith("--", StringComparison.Ordinal))
                error = ParseLong(args, ref i, found);
            else if (word.Length > 1 && word[0] == '-')
                error = ParseShort(args, ref i, found);
            else
            {
                operands.Add(word);
                continue;
            }
            if (error is not null) return new GetOptResult(found, operands, error);
        }
        return new GetOptResult(found, operands, null);
    }

    private GetOptError? ParseLong(string[] args, ref int i, List<(GetOptOption, string?)> found)
    {
        string word = args[i];
        string body = word[2..];
        int eq = body.IndexOf('=');
        string name = eq < 0 ? body : body[..eq];
        string? value = eq < 0 ? null : body[(eq + 1)..];

        var option = options.FirstOrDefault(o => o.Long.Contains(name, StringComparer.Ordinal));
        if (option is null && name.Length > 0)
        {
            var candidates = options.Where(o => o.Long.Any(l => l.StartsWith(name, StringComparison.Ordinal))).ToList();
            if (candidates.Count > 1)
            {
                var names = candidates.SelectMany(o => o.Long.Where(l => l.StartsWith(name, StringComparison.Ordinal))).Select(l => "--" + l).ToList();
                return new GetOptError(GetOptFailure.Ambiguous, word, word, names);
            }
            option = candidates.SingleOrDefault();
        }
        if (option is null) return new GetOptError(GetOptFailure.UnrecognizedOption, word, word, []);
        string full = "--" + option.Long.First(l => l.StartsWith(name, StringComparison.Ordinal));
        switch (option.Value)
        {
            case OptionValue.None when value is not null:
                return new GetOptError(GetOptFailure.ArgumentNotAllowed, word, full, []);
            case OptionValue.Required when value is null:
                if (i + 1 >= args.Length) return new GetOptError(GetOptFailure.MissingArgument, word, full, []);
                value = args[++i];
                break;
            case OptionValue.OptionalKeyValue when value is null && i + 1 < args.Length && args[i + 1].Contains('='):
                value = args[++i];
                break;
        }
        found.Add((option, value));
        return null;
    }

    private GetOptError? ParseShort(string[] args, ref int i, List<(GetOptOption, string?)> found)
    {
        string word = args[i];
        for (int j = 1; j < word.Length; j++)
        {
            char c = word[j];
            var option = c == ':' ? null : FindShort(c);
            if (option is null) return new GetOptError(GetOptFailure.InvalidOption, word, "-" + c, []);
            if (option.Value == OptionValue.None)
            {
                found.Add((option, null));
                continue;
            }
            string? value = j + 1 < word.Length ? word[(j + 1)..] : null;
            if (value is null && option.Value == OptionValue.Required)
            {
                if (i + 1 >= args.Length) return new GetOptError(GetOptFailure.MissingArgument, word, "-" + c, []);
                value = args[++i];
            }
            found.Add((option, value));
            break;
        }
        return null;
    }

    private GetOptOption? FindShort(char c)
    {
        for (int k = 0; k < options.Count; k++)
            if (options[k].Short == c) return options[k];
        return null;
    }
}
