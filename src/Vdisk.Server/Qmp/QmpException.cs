namespace Vdisk.Server.Qmp;

/// <summary>QMP's error classes (qapi/error.json).</summary>
public enum QmpErrorClass
{
    /// <summary>Almost every error.</summary>
    GenericError,
    /// <summary>Unknown command, or a command in the wrong mode.</summary>
    CommandNotFound,
    /// <summary>A device was not found.</summary>
    DeviceNotFound,
    /// <summary>A device is not active.</summary>
    DeviceNotActive,
    /// <summary>KVM lacks a capability.</summary>
    KVMMissingCap,
}

/// <summary>A QMP command failed: <c>{"error": {"class": C, "desc": S}}</c>.</summary>
public sealed class QmpException(QmpErrorClass errorClass, string description) : Exception(description)
{
    /// <summary>The error class.</summary>
    public QmpErrorClass ErrorClass { get; } = errorClass;

    /// <summary>A GenericError.</summary>
    public static QmpException Generic(string description) => new(QmpErrorClass.GenericError, description);

    /// <summary>A CommandNotFound error.</summary>
    public static QmpException CommandNotFound(string description) => new(QmpErrorClass.CommandNotFound, description);
}
