namespace Vdisk.Native;

/// <summary>
/// Raising signals at the process itself with their default action (qemu-io's abort, sigraise),
/// and a signal at the parent's end (the etcd helper).
/// </summary>
public static class ProcessSignals
{
    /// <summary>The highest signal number raise(3) takes on Linux (NSIG - 1).</summary>
    public const int Highest = 64;

    /// <summary>
    /// Signals qemu-io survives: those QEMU's main loop blocks or handles (SIGBUS, SIGUSR1,
    /// SIGALRM, SIGIO), SIGPIPE it ignores, and those whose default action is to do nothing.
    /// </summary>
    public static bool QemuIoSurvives(int signal) => signal is 0 or 7 or 10 or 13 or 14 or 17 or 23 or 28 or 29 or > Highest;

    /// <summary>
    /// Raises <paramref name="signal"/> with its default action (the runtime's own handlers for
    /// SIGTERM, SIGINT and the like are put aside first), so the process ends as a C program would.
    /// </summary>
    public static unsafe void RaiseWithDefaultAction(int signal)
    {
        if (signal is <= 0 or > Highest) return;
        LibC.Signal(signal, LibC.SIG_DFL);
        ulong set = 1UL << (signal - 1);
        LibC.SigProcMask(LibC.SIG_UNBLOCK, &set, null);
        LibC.Raise(signal);
    }

    /// <summary>abort(3): SIGABRT, a core dump where enabled, exit status 134 in a shell.</summary>
    public static void Abort()
    {
        LibC.Signal(6, LibC.SIG_DFL);
        LibC.Abort();
    }

    /// <summary>The parent process's id (getppid); it changes when the parent ends and the process is adopted.</summary>
    public static int ParentId => LibC.GetPpid();

    /// <summary>
    /// Has the kernel send <paramref name="signal"/> to this process when its parent ends
    /// (prctl PR_SET_PDEATHSIG). The kernel also sends it when the parent's thread that started
    /// this process ends while the parent lives on: a receiver compares <see cref="ParentId"/>.
    /// </summary>
    /// <exception cref="IOException">prctl refused (the message has strerror).</exception>
    public static void SignalAtParentEnd(int signal)
    {
        if (LibC.Prctl(LibC.PR_SET_PDEATHSIG, (nuint)signal, 0, 0, 0) != 0) throw LibC.LastErrorException("prctl(PR_SET_PDEATHSIG)", null);
    }
}
