namespace Vdisk.Server.Daemon;

/// <summary>
/// A daemon operation failed with a message meant for the user, worded as QEMU words it
/// (<c>NBD server not running</c>, <c>Node r0 is in use</c>). QMP reports it as GenericError;
/// the command line prints it after the option that caused it.
/// </summary>
public class DaemonException(string message) : Exception(message);
