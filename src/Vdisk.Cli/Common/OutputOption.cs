using System.CommandLine;

namespace Vdisk.Cli.Common;

/// <summary>qemu-img's <c>--output human|json</c>, with its error for any other value.</summary>
internal sealed class OutputOption
{
    public Option<string> Option { get; } = new("--output") { Description = "human or json", DefaultValueFactory = _ => "human" };

    public void AddTo(Command command) => command.Options.Add(Option);

    /// <summary>True for json, false for human; null (after printing qemu-img's message) otherwise.</summary>
    public bool? IsJson(ParseResult result) => IsJson(result.GetValue(Option));

    /// <summary>The same for the option's value.</summary>
    public static bool? IsJson(string? value)
    {
        switch (value)
        {
            case "json": return true;
            case "human": return false;
            default:
                Stdio.Error("--output must be used with human or json as argument.");
                return null;
        }
    }
}
