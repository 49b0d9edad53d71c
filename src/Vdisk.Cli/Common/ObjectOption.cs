using System.CommandLine;
using Vdisk.Crypto;

namespace Vdisk.Cli.Common;

/// <summary>
/// <c>--object TYPE,id=ID,...</c> on every verb that opens images, as qemu-img and qemu-io take
/// it: each value defines an object (vdisk has secrets and throttle groups) before the verb runs.
/// </summary>
internal sealed class ObjectOption : Option<string[]>
{
    public ObjectOption() : base("--object")
    {
        Arity = ArgumentArity.OneOrMore;
        AllowMultipleArgumentsPerToken = false;
        HelpName = "secret,id=ID,data=TEXT|file=PATH[,format=raw|base64] | throttle-group,id=ID,limits.KEY=N";
        Description = "define a secret (named by key-secret=ID) or a throttle group (named by throttle-group=ID)";
    }

    /// <summary>Adds the option to a verb that opens images (one with --wait).</summary>
    public static Command AddTo(Command verb)
    {
        if (verb.Options.OfType<LockWaitOption>().Any()) verb.Options.Add(new ObjectOption());
        return verb;
    }

    /// <summary>
    /// Defines the verb's objects in command-line order. Returns an exit code when the run ends
    /// here (an error printed, or <c>--object help</c> answered), null to go on.
    /// </summary>
    public static int? Apply(ParseResult result)
    {
        var option = result.CommandResult.Command.Options.OfType<ObjectOption>().FirstOrDefault();
        if (option is null || result.GetValue(option) is not { Length: > 0 } texts) return null;
        foreach (string text in texts)
        {
            if (text is "help" or "?")
            {
                Stdio.Out.Write("List of user creatable objects:\n  secret\n  throttle-group\n");
                Stdio.Out.Flush();
                return 0;
            }
            try
            {
                Secrets.AddFromCommandLine(text);
            }
            catch (Options.OptionException e)
            {
                Stdio.Error(e.Message);
                return 1;
            }
        }
        return null;
    }
}
