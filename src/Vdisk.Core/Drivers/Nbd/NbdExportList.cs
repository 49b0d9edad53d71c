namespace Vdisk.Drivers.Nbd;

/// <summary>Asks an NBD server which exports it has, as <c>qemu-nbd --list</c> does.</summary>
public static class NbdExportList
{
    /// <summary>Connects, lists every export with its size, flags, block sizes and meta contexts, and hangs up.</summary>
    /// <exception cref="IOException">Connecting or the negotiation failed; the message is QEMU's.</exception>
    public static async Task<IReadOnlyList<NbdListedExport>> ListAsync(NbdServerAddress address, CancellationToken ct)
    {
        var socket = await address.ConnectAsync(ct).ConfigureAwait(false);
        using var channel = new NbdChannel(socket);
        return await NbdHandshake.ListExportsAsync(channel, ct).ConfigureAwait(false);
    }
}
