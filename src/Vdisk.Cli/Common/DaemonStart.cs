using Vdisk.Native;
using Vdisk.Server.Daemon;

namespace Vdisk.Cli.Common;

/// <summary>
/// The life of a daemon verb (<c>serve --daemonize</c>, <c>qemu-nbd --fork</c>), shared by both:
/// the detached start, the pid file, "ready", serving until told to stop, and the clean-up.
/// QEMU forks; a .NET process cannot. The runtime (NativeAOT too) has threads from the start (GC,
/// finalizer, thread pool), fork() copies only the calling one, and the child would inherit
/// locks held by threads that no longer exist — it could hang at its first allocation. So the
/// process starts itself again as a detached child with the same arguments, hands it the write
/// end of a pipe (by descriptor number, in an environment variable), and waits for the one byte
/// 0 the child writes once it is ready. End of file without it means the child failed and exited.
/// </summary>
internal sealed class DaemonStart : IDisposable
{
    private readonly int? _readyFd;
    private string? _pidFileWritten;

    private DaemonStart(int? readyFd) => _readyFd = readyFd;

    /// <summary>
    /// The start of this process: the detached child (named by <paramref name="readyVariable"/>
    /// in its environment) detaches from the terminal now; any other start runs in the foreground.
    /// </summary>
    public static DaemonStart Begin(string readyVariable)
    {
        int? readyFd = int.TryParse(Environment.GetEnvironmentVariable(readyVariable), System.Globalization.CultureInfo.InvariantCulture, out int fd) ? fd : null;
        if (readyFd is not null)
        {
            Environment.SetEnvironmentVariable(readyVariable, null);
            DaemonProcess.Detach();
        }
        return new DaemonStart(readyFd);
    }

    /// <summary>True in the detached child.</summary>
    public bool IsDetachedChild => _readyFd is not null;

    /// <summary>
    /// The parent's side: starts <paramref name="program"/> with <paramref name="args"/> as the
    /// detached child and returns its start-up's exit status (0 once it is ready, 1 when it failed
    /// with its error already on stderr).
    /// </summary>
    public static int RunDetached(string program, IEnumerable<string> args, string readyVariable)
    {
        using var ready = new System.IO.Pipes.AnonymousPipeServerStream(System.IO.Pipes.PipeDirection.In, HandleInheritability.Inheritable);
        var start = new System.Diagnostics.ProcessStartInfo(program) { UseShellExecute = false };
        foreach (var arg in args) start.ArgumentList.Add(arg);
        start.Environment[readyVariable] = ready.GetClientHandleAsString();
        using (System.Diagnostics.Process.Start(start)) { }
        ready.DisposeLocalCopyOfClientHandle();
        return ready.ReadByte() == 0 ? 0 : 1;
    }

    /// <summary>Writes and locks the pid file (qemu_write_pidfile); it is removed when this ends.</summary>
    /// <exception cref="NativeIOException">QEMU's message for the file.</exception>
    public void WritePidFile(string path)
    {
        DaemonProcess.WritePidFile(path);
        _pidFileWritten = Path.GetFullPath(path);
    }

    /// <summary>Start-up succeeded: the detached child lets its parent exit 0 and leaves the terminal.</summary>
    public void Ready()
    {
        if (_readyFd is { } ready) DaemonProcess.FinishDetaching(ready);
    }

    /// <summary>
    /// Start-up is done: <paramref name="daemon"/> serves until <paramref name="stop"/> completes
    /// or a terminating signal cancels <paramref name="signals"/>, with the calling thread as
    /// its main loop meanwhile (<see cref="StorageDaemon.RunMainLoop"/>).
    /// </summary>
    public static async Task ServeUntilAsync(StorageDaemon daemon, Task stop, CancellationToken signals)
    {
        var serving = StoppedAsync(stop, signals);
        daemon.RunMainLoop(serving);
        await serving.ConfigureAwait(false);
    }

    private static async Task StoppedAsync(Task stop, CancellationToken signals)
    {
        try
        {
            await stop.WaitAsync(signals).ConfigureAwait(false);
        }
        catch (OperationCanceledException)
        {
            // SIGTERM, SIGINT or SIGHUP: a normal end, as in QEMU.
        }
    }

    /// <summary>Removes the pid file this process wrote.</summary>
    public void Dispose()
    {
        if (_pidFileWritten is not null) DaemonProcess.RemovePidFile(_pidFileWritten);
    }
}
