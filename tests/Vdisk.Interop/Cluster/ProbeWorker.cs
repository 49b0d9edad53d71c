using Vdisk.Interop.Support;

namespace Vdisk.Interop.Cluster;

/// <summary>
/// A LockProbe worker (one process: one host's lease): "go" opens the image and answers
/// "admitted" or "refused MESSAGE" and keeps it open until "release". Lines are read one by one
/// as they arrive, so many workers can be driven at once.
/// </summary>
public sealed class ProbeWorker : IDisposable
{
    private readonly ChildProcess _process;
    private int _consumed;

    private ProbeWorker(ChildProcess process)
    {
        _process = process;
        string ready = NextLine();
        if (ready != "ready") throw new InvalidOperationException($"LockProbe said '{ready}'\n{process.Stderr}");
    }

    public int Pid => _process.Pid;

    public string Stderr => _process.Stderr;

    /// <summary>A worker on <paramref name="image"/> ("opts:..." or a raw path) with a default request.</summary>
    public static ProbeWorker Start(string image, IDictionary<string, string>? env, string perm = "read,write", string unshared = "write") =>
        new(ChildProcess.Start(Programs.LockProbe, ["worker", image, perm, unshared], env, keepStdinOpen: true));

    public void Send(string line)
    {
        _process.StandardInput.Write(line + "\n");
        _process.StandardInput.Flush();
    }

    public string NextLine(TimeSpan? timeout = null)
    {
        _process.WaitFor((stdout, _) => stdout.IndexOf('\n', _consumed) >= 0, "answered", timeout ?? TimeSpan.FromSeconds(120));
        string all = _process.Stdout;
        int end = all.IndexOf('\n', _consumed);
        string line = all[_consumed..end];
        _consumed = end + 1;
        return line;
    }

    public string Ask(string line)
    {
        Send(line);
        return NextLine();
    }

    public void Kill() => _process.Kill();

    public void Dispose() => _process.Dispose();
}
