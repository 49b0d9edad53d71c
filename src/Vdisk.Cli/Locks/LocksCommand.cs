using System.CommandLine;
using System.IO.Enumeration;
using System.Runtime.InteropServices;
using Vdisk.Cli.Common;
using Vdisk.Inspection;

namespace Vdisk.Cli.Locks;

/// <summary>
/// <c>vdisk locks [-r] [--for MODE] [-f FMT] [--output human|json] PATH...</c>: who holds each
/// image's locks, what they forbid, and whether an open in each mode would get past them. The
/// format the verdicts assume is <c>-f</c>'s, else each locked image's as QEMU would probe it.
/// Exit status: 0 admitted (or no mode asked), 1 blocked for the asked mode, 2 on error.
/// </summary>
internal static class LocksCommand
{
    public const string Name = "locks";
    public const int ExitAdmitted = 0;
    public const int ExitBlocked = 1;
    public const int ExitError = 2;

    public static Command Create()
    {
        var paths = new Argument<string[]>("path") { Arity = ArgumentArity.ZeroOrMore, Description = "image files, or directories whose files to examine (with --cluster: cluster-lock-ids)" };
        var cluster = ClusterOption.AsFlag();
        var recursive = new Option<bool>("--recursive", "-r") { Description = "examine directories recursively" };
        var mode = new Option<string?>("--for") { Description = "judge only this access mode, and exit 1 if it would be refused", HelpName = "read|write|resize|info|force-share" };
        mode.AcceptOnlyFromAmong([.. AccessModes.All.Select(AccessModes.Name)]);
        var format = new Option<string?>("--format", "-f") { Description = "image format the verdicts assume (qcow2 changes the request); without it, each image's format is probed as QEMU does" };
        format.AcceptOnlyFromAmong("raw", "qcow2");
        var output = new Option<string>("--output") { Description = "human or json", DefaultValueFactory = _ => "human" };
        output.AcceptOnlyFromAmong("human", "json");

        var command = new Command(Name, "Show who holds an image's locks, what they refuse to share, and whether an open would be admitted");
        command.Arguments.Add(paths);
        command.Options.Add(recursive);
        command.Options.Add(mode);
        command.Options.Add(format);
        command.Options.Add(output);
        command.Options.Add(cluster);
        command.Validators.Add(r =>
        {
            if (r.GetResult(cluster) is null && (r.GetValue(paths) ?? []).Length == 0)
                r.AddError("Required argument missing for command: 'locks'.");
        });
        command.SetAction(result =>
        {
            var asked = result.GetValue(mode) is { } m ? AccessModes.Parse(m) : null;
            if (ClusterOption.Given(result))
                return ClusterLocksView.Run(ClusterOption.Settings(result), result.GetValue(paths) ?? [], asked, result.GetValue(format) ?? "raw", result.GetValue(output) == "json");
            return Run(result.GetValue(paths)!, result.GetValue(recursive), asked, result.GetValue(format), result.GetValue(output) == "json");
        });
        return command;
    }

    private static int Run(string[] paths, bool recursive, AccessMode? asked, string? format, bool json)
    {
        var files = new List<string>();
        var explicitFiles = new HashSet<string>(StringComparer.Ordinal);
        var errors = new List<ImageLocks>();
        bool scannedDirectory = false;
        foreach (var path in paths)
        {
            if (Directory.Exists(path))
            {
                scannedDirectory = true;
                Expand(path, recursive, files, errors);
            }
            else
            {
                files.Add(path);
                explicitFiles.Add(path);
            }
        }

        IReadOnlyList<ImageLocks> images;
        try
        {
            images = new LockInspector().Inspect(files);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            Stdio.Error($"/proc/locks: {Reason(e)}");
            return ExitError;
        }
        var all = errors.Concat(images).ToList();
        foreach (var failed in all.Where(i => i.Error is not null))
            Stdio.Error($"{failed.Path}: {failed.Error}");

        // The format decides the request (a qcow2 opener refuses to share write and resize): the
        // one given, else the one QEMU would probe. Only locked images are probed: without locks
        // every mode is admitted whatever the format, and a directory scan stays cheap.
        var probed = new Dictionary<ImageLocks, string?>(ReferenceEqualityComparer.Instance);
        string? FormatOf(ImageLocks image)
        {
            if (format is not null) return format;
            if (image.Error is not null || image.Holders.Count == 0) return null;
            if (!probed.TryGetValue(image, out var found)) probed[image] = found = ImageFormatProbe.Probe(image.Path);
            return found;
        }
        string VerdictFormat(ImageLocks image) => FormatOf(image) ?? "raw";

        var modes = asked is { } one ? [one] : AccessModes.All;
        if (json)
        {
            LockReportJson.Write(Stdio.OutBytes, all, modes, format, FormatOf);
            Stdio.Out.Write('\n');
        }
        else
        {
            LocksView.Write(Stdio.Out, images.Where(i => i.Error is null && (i.Holders.Count > 0 || explicitFiles.Contains(i.Path))).ToList(), modes, VerdictFormat);
            if (scannedDirectory)
            {
                int ok = images.Count(i => i.Error is null);
                int locked = images.Count(i => i.Error is null && i.Holders.Count > 0);
                Stdio.Out.Write($"{ok} file(s) examined: {locked} with locks, {ok - locked} without\n");
            }
        }
        Stdio.Out.Flush();

        if (all.Any(i => i.Error is not null)) return ExitError;
        if (asked is { } wanted && images.Any(i => !i.Verdict(wanted, VerdictFormat(i)).Admitted)) return ExitBlocked;
        return ExitAdmitted;
    }

    /// <summary>Adds the files of <paramref name="root"/> (and its subdirectories with -r), reporting unreadable directories.</summary>
    private static void Expand(string root, bool recursive, List<string> files, List<ImageLocks> errors)
    {
        var options = new EnumerationOptions { IgnoreInaccessible = false, AttributesToSkip = 0, RecurseSubdirectories = false };
        var pending = new Stack<string>();
        pending.Push(root);
        while (pending.Count > 0)
        {
            string dir = pending.Pop();
            var entries = new List<(string Path, bool IsDirectory, bool IsLink)>();
            try
            {
                var enumerable = new FileSystemEnumerable<(string, bool, bool)>(dir,
                    // Attributes costs an lstat per entry, so ask only directories whether they are links.
                    (ref FileSystemEntry e) => (e.ToSpecifiedFullPath(), e.IsDirectory, e.IsDirectory && (e.Attributes & FileAttributes.ReparsePoint) != 0), options);
                entries.AddRange(enumerable);
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                errors.Add(ImageLocks.Failed(dir, Reason(e), 0));
                continue;
            }
            entries.Sort((a, b) => string.CompareOrdinal(a.Path, b.Path));
            var subdirectories = new List<string>();
            foreach (var (path, isDirectory, isLink) in entries)
            {
                if (!isDirectory) files.Add(path);
                else if (recursive && !isLink) subdirectories.Add(path); // links to directories could loop
            }
            for (int i = subdirectories.Count - 1; i >= 0; i--) pending.Push(subdirectories[i]);
        }
    }

    /// <summary>strerror-style text for .NET's file exceptions.</summary>
    private static string Reason(Exception e) => e switch
    {
        UnauthorizedAccessException => Marshal.GetPInvokeErrorMessage(13), // EACCES
        DirectoryNotFoundException or FileNotFoundException => Marshal.GetPInvokeErrorMessage(2), // ENOENT
        _ => e.Message,
    };
}
