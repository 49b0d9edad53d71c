using System.CommandLine;
using System.CommandLine.Parsing;
using Vdisk.Cli.Common;
using Vdisk.Graph;
using Vdisk.Permissions;

namespace Vdisk.Cli.Img;

/// <summary>
/// <c>vdisk bitmap</c>: qemu-img bitmap. Adds, removes, clears, enables, disables and merges
/// persistent dirty bitmaps of an image, the operations in the order the command line gives them,
/// stopping at the first that fails (img_bitmap). The image is opened read-write without its
/// backing chain; the bitmaps reach the image when it closes.
/// </summary>
internal static class BitmapCommand
{
    private enum Action { Add, Remove, Clear, Enable, Disable, Merge }

    private sealed record Step(Action Action, string? Source = null);

    public static Command Create()
    {
        var image = new ImageArguments(longFormat: false);
        var add = new Option<bool>("--add") { Description = "create the bitmap (persistent, enabled unless --disable follows)" };
        var remove = new Option<bool>("--remove") { Description = "remove the bitmap" };
        var clear = new Option<bool>("--clear") { Description = "clear every bit of the bitmap" };
        var enable = new Option<bool>("--enable") { Description = "let the bitmap track writes" };
        var disable = new Option<bool>("--disable") { Description = "stop the bitmap tracking writes" };
        var merge = new Option<string[]>("--merge") { Description = "set the bits that bitmap SOURCE has set", AllowMultipleArgumentsPerToken = false };
        var granularity = new Option<string?>("--granularity", "-g") { Description = "bytes of disk one bit covers (with --add)" };
        var sourceFile = new Option<string?>("--source-file", "-b") { Description = "the image holding the --merge source bitmap" };
        var sourceFormat = new Option<string?>("--source-format", "-F") { Description = "the format of the -b image" };
        var files = new Argument<string[]>("filename bitmap") { Arity = ArgumentArity.ZeroOrMore, Description = "the image and the bitmap's name" };
        var command = new Command("bitmap", "Change the persistent dirty bitmaps of an image like qemu-img bitmap");
        image.AddTo(command, withForceShare: false);
        foreach (var o in new Option[] { add, remove, clear, enable, disable, merge, granularity, sourceFile, sourceFormat }) command.Options.Add(o);
        command.Arguments.Add(files);
        command.SetAction(async (result, ct) =>
        {
            var steps = Steps(result);
            long granularityValue = 0;
            if (result.GetValue(granularity) is { } g && !ImgOptions.TryCvtNum("granularity", g, out granularityValue)) return 1;
            string? srcFile = result.GetValue(sourceFile), srcFormat = result.GetValue(sourceFormat);
            if (steps.Count == 0) return Fail("Need at least one of --add, --remove, --clear, --enable, --disable, or --merge");
            if (granularityValue != 0 && !steps.Any(s => s.Action == Action.Add)) return Fail("granularity only supported with --add");
            if (srcFormat is not null && srcFile is null) return Fail("-F only supported with -b");
            if (srcFile is not null && !steps.Any(s => s.Action == Action.Merge)) return Fail("Merge bitmap source file only supported with --merge");
            var names = result.GetValue(files) ?? [];
            if (names.Length != 2) return Fail("Expecting filename and bitmap name");
            string bitmapName = names[1];

            using var disk = ImgOpen.Open(result, names[0], result.GetValue(image.Format), result.GetValue(image.ImageOpts), OpenFlags.ReadWrite | OpenFlags.NoBacking);
            if (disk is null) return 1;
            using var source = srcFile is null ? null : ImgOpen.Open(result, srcFile, srcFormat, false, OpenFlags.NoBacking);
            if (srcFile is not null && source is null) return 1;
            var node = disk.Root;
            var sourceNode = source?.Root ?? node;
            foreach (var step in steps)
            {
                try
                {
                    Apply(step, node, sourceNode, bitmapName, granularityValue);
                }
                catch (InvalidOperationException e)
                {
                    Stdio.Error($"Operation {step.Action.ToString().ToLowerInvariant()} on bitmap {bitmapName} failed: {e.Message}");
                    return 1;
                }
            }
            await Task.CompletedTask;
            return 0;
        });
        return command;
    }

    /// <summary>img_bitmap's error_report and exit 1 (no help hint, unlike a bad option).</summary>
    private static int Fail(string message)
    {
        Stdio.Error(message);
        return 1;
    }

    /// <summary>The actions in command-line order (QSIMPLEQ_INSERT_TAIL as getopt meets them).</summary>
    private static List<Step> Steps(ParseResult result)
    {
        var steps = new List<Step>();
        var tokens = result.Tokens;
        for (int i = 0; i < tokens.Count; i++)
        {
            if (tokens[i].Type != TokenType.Option) continue;
            switch (tokens[i].Value)
            {
                case "--add": steps.Add(new(Action.Add)); break;
                case "--remove": steps.Add(new(Action.Remove)); break;
                case "--clear": steps.Add(new(Action.Clear)); break;
                case "--enable": steps.Add(new(Action.Enable)); break;
                case "--disable": steps.Add(new(Action.Disable)); break;
                case "--merge" when i + 1 < tokens.Count: steps.Add(new(Action.Merge, tokens[i + 1].Value)); break;
            }
        }
        return steps;
    }

    /// <summary>The qmp_block_dirty_bitmap_* command of one step, with its checks and messages.</summary>
    private static void Apply(Step step, BlockNode node, BlockNode sourceNode, string name, long granularity)
    {
        switch (step.Action)
        {
            case Action.Add:
                if (name.Length == 0) throw new InvalidOperationException("Bitmap name cannot be empty");
                if (granularity != 0 && (granularity < 512 || (granularity & (granularity - 1)) != 0))
                    throw new InvalidOperationException("Granularity must be power of 2 and at least 512");
                if (granularity == 0)
                    granularity = node.ClusterSizeForCopy > 0 ? Math.Min(65536, Math.Max(4096, node.ClusterSizeForCopy)) : 65536;
                node.AddPersistentBitmap(name, granularity, disabled: false);
                break;
            case Action.Remove:
                node.RemovePersistentBitmap(Lookup(node, name));
                break;
            case Action.Clear:
                Usable(Lookup(node, name)).Clear();
                node.BitmapsChanged();
                break;
            case Action.Enable:
                Usable(Lookup(node, name)).Enabled = true;
                node.BitmapsChanged();
                break;
            case Action.Disable:
                Usable(Lookup(node, name)).Enabled = false;
                node.BitmapsChanged();
                break;
            case Action.Merge:
                var target = Usable(Lookup(node, name));
                var from = Usable(Lookup(sourceNode, step.Source!));
                target.MergeFrom(from);
                node.BitmapsChanged();
                break;
        }
    }

    /// <summary>block_dirty_bitmap_lookup.</summary>
    private static DirtyBitmap Lookup(BlockNode node, string name) =>
        node.DirtyBitmaps.FirstOrDefault(b => b.Name == name) ?? throw new InvalidOperationException($"Dirty bitmap '{name}' not found");

    /// <summary>bdrv_dirty_bitmap_check: an inconsistent bitmap can only be removed.</summary>
    private static DirtyBitmap Usable(DirtyBitmap bitmap) => bitmap.Inconsistent
        ? throw new InvalidOperationException($"Bitmap '{bitmap.Name}' is inconsistent and cannot be used\nTry block-dirty-bitmap-remove to delete this bitmap from disk")
        : bitmap;
}
