namespace Vdisk.Server.Daemon;

/// <summary>
/// A daemon operation failed with a message meant for the user, worded as QEMU words it
/// (<c>NBD server not running</c>, <c>Node r0 is in use</c>). QMP reports it as GenericError;
/// the command line prints it after the option that caused it.
/// </summary>
public class DaemonException(string message, string? hint = null) : UserFacingException(message)
{
    /// <summary>
    /// QEMU's second line for humans (<c>Is another process using the image [PATH]?</c>), which
    /// the command line prints and QMP leaves out, as QEMU does.
    /// </summary>
    public string? Hint { get; } = hint;
}
