using Vdisk.Drivers.Nbd;

namespace Vdisk;

/// <summary>One export as <c>qemu-nbd --list</c> reports it (QEMU's NBDExportInfo after nbd_receive_export_list): Flags is 0 when the server would not describe it.</summary>
public sealed record NbdListedExport(string Name, string? Description, ulong Size, ushort Flags, uint MinBlock, uint OptBlock, uint MaxBlock,
    IReadOnlyList<string> MetaContexts);

/// <summary>Asks an NBD server which exports it has, as <c>qemu-nbd --list</c> does.</summary>
public static class NbdExportList
{
    /// <summary>
    /// Connects to the server at the Unix socket <paramref name="socketPath"/> (or, when it is null,
    /// <paramref name="host"/>:<paramref name="port"/>), lists every export with its size, flags,
    /// block sizes and meta contexts, and hangs up.
    /// </summary>
    /// <exception cref="IOException">Connecting or the negotiation failed; the message is QEMU's.</exception>
    public static async Task<IReadOnlyList<NbdListedExport>> ListAsync(string? socketPath, string host, string port, CancellationToken ct)
    {
        var address = socketPath is not null ? NbdServerAddress.Unix(socketPath) : NbdServerAddress.Inet(host, port);
        var socket = await address.ConnectAsync(ct).ConfigureAwait(false);
        using var channel = new NbdChannel(socket);
        return await NbdHandshake.ListExportsAsync(channel, ct).ConfigureAwait(false);
    }
}
