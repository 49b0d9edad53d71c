using System.Runtime.ExceptionServices;
using Vdisk.Graph;
using Vdisk.Native;
using Vdisk.Permissions;

namespace Vdisk.Drivers.Nbd;

/// <summary>How an <see cref="NbdNode"/> reaches its server (the options of QEMU's nbd driver).</summary>
public sealed record NbdConnectOptions
{
    /// <summary>The server.</summary>
    public required NbdServerAddress Address { get; init; }

    /// <summary>The export name, or null for the default export ("").</summary>
    public string? Export { get; init; }

    /// <summary>reconnect-delay: how long requests wait for a new connection after one breaks (0: they fail at once).</summary>
    public TimeSpan ReconnectDelay { get; init; }

    /// <summary>open-timeout: how long the first connection is retried (0: one try).</summary>
    public TimeSpan OpenTimeout { get; init; }

    /// <summary>The metadata context block status reads (base:allocation, or x-dirty-bitmap's).</summary>
    public string MetaContext { get; init; } = "base:allocation";

    /// <summary>The clock for reconnect-delay and open-timeout.</summary>
    public TimeProvider Time { get; init; } = TimeProvider.System;
}

/// <summary>
/// The <c>nbd</c> protocol driver (QEMU's block/nbd.c): a node whose bytes live behind an NBD
/// server. Like QEMU it takes no lock bytes on anything: the server's process holds the image
/// and its locks. Reads, writes, flushes, trims and zero writes map to NBD commands (FUA, trim,
/// write-zeroes and fast-zero only when the server advertises them), block status reads
/// base:allocation, and a broken connection is re-established within reconnect-delay, as in
/// QEMU 7.2: requests wait for it and are sent again.
/// </summary>
public sealed class NbdNode : BlockNode
{
    private readonly NbdConnectOptions _options;
    private readonly SemaphoreSlim _connectLock = new(1, 1);
    private readonly object _stateLock = new();
    private NbdSession _session;
    private ClientState _state = ClientState.Connected;
    private DateTimeOffset? _reconnectDeadline;
    private bool _closed;

    private enum ClientState
    {
        Connected,
        /// <summary>Within reconnect-delay: requests wait for a new connection.</summary>
        ConnectingWait,
        /// <summary>Past reconnect-delay: each request tries once, then fails.</summary>
        ConnectingNoWait,
        /// <summary>The server broke the protocol: every request fails.</summary>
        Quit,
    }

    private NbdNode(string nodeName, NodeFlags flags, NbdConnectOptions options, NbdSession session)
        : base(nodeName, flags, NbdFilename.Describe(options.Address, options.Export))
    {
        _options = options;
        _session = session;
    }

    /// <summary>Connects (retrying within open-timeout) and negotiates; QEMU's messages on failure.</summary>
    /// <exception cref="NativeIOException">The server cannot be reached or refused the export.</exception>
    public static async Task<NbdNode> OpenAsync(string nodeName, NodeFlags flags, NbdConnectOptions options, CancellationToken ct = default)
    {
        var deadline = options.Time.GetUtcNow() + options.OpenTimeout;
        var backoff = TimeSpan.FromSeconds(1);
        while (true)
        {
            try
            {
                var session = await ConnectAsync(options, ct).ConfigureAwait(false);
                if (session.Info.Has(NbdWire.TxReadOnly) && (flags & NodeFlags.ReadWrite) != 0)
                {
                    await session.CloseAsync().ConfigureAwait(false);
                    // QEMU 7.2 checks this with no error object ("NBD export is read-only" is
                    // lost), so bdrv_open_driver words it from the errno alone.
                    throw new NativeIOException(Errno.EACCES, $"Could not open image: {LibC.StrError(Errno.EACCES)}");
                }
                return new NbdNode(nodeName, flags, options, session);
            }
            catch (NativeIOException) when (options.OpenTimeout > TimeSpan.Zero && options.Time.GetUtcNow() < deadline)
            {
                var wait = Min(backoff, deadline - options.Time.GetUtcNow());
                if (wait > TimeSpan.Zero) await Task.Delay(wait, options.Time, ct).ConfigureAwait(false);
                backoff = Min(backoff * 2, MaxBackoff);
            }
        }
    }

    /// <summary>QEMU's connection thread waits 1, 2, 4, 8, then 16 seconds between attempts.</summary>
    private static readonly TimeSpan MaxBackoff = TimeSpan.FromSeconds(16);

    private static TimeSpan Min(TimeSpan a, TimeSpan b) => a < b ? a : b;

    private static async Task<NbdSession> ConnectAsync(NbdConnectOptions options, CancellationToken ct)
    {
        try
        {
            return await NbdSession.ConnectAsync(options.Address, options.Export ?? "", options.MetaContext, ct).ConfigureAwait(false);
        }
        catch (NbdProtocolException e)
        {
            throw new NativeIOException(Errno.EINVAL, e.Message);
        }
        catch (NbdChannelException e)
        {
            throw new NativeIOException(Errno.EIO, e.Message);
        }
    }

    /// <inheritdoc />
    public override string DriverName => "nbd";

    /// <summary>nbd_dirname: export names are no paths, so relative backing names cannot be resolved.</summary>
    protected override bool HasDirname => false;

    /// <inheritdoc />
    protected override string DirnameRefusalName => "NBD";

    /// <inheritdoc />
    public override bool IsProtocol => true;

    /// <summary>
    /// QEMU's nbd driver has no backing support: a range the server reports as a hole that is not
    /// zero (a context of x-dirty-bitmap, such as qemu:allocation-depth's 0) is not allocated and
    /// not zero, and qemu-img map shows it with no offset.
    /// </summary>
    public override bool UnallocatedReadsAsZeroes => false;

    /// <inheritdoc />
    public override IChildPermissionRule PermissionRule => LeafChildPermissionRule.Instance;

    /// <summary>The server's address.</summary>
    public NbdServerAddress Address => _options.Address;

    /// <summary>The export name as given (null: the default export).</summary>
    public string? Export => _options.Export;

    /// <summary>True when the server answers block status (base:allocation was negotiated).</summary>
    public bool HasBlockStatus => _session.Info.BaseAllocationId is not null;

    /// <summary>True when the server uses structured replies.</summary>
    public bool HasStructuredReplies => _session.Info.StructuredReplies;

    /// <inheritdoc />
    public override long Length => (long)_session.Info.Size;

    /// <summary>The server's disk usage is not known (qemu-img's "disk size: unavailable").</summary>
    public override long? AllocatedSize => null;

    /// <summary>QEMU's nbd driver has no bdrv_get_info.</summary>
    public override bool HasDriverInfo => false;

    /// <summary>A fresh export may hold anything (bdrv_has_zero_init is 0 for nbd).</summary>
    public override bool HasZeroInit => false;

    /// <summary>Largest read or write per request: 32 MiB, or less if the server says so.</summary>
    private int MaxTransfer
    {
        get
        {
            uint max = _session.Info.MaxBlock;
            return max == 0 ? NbdWire.MaxBufferSize : (int)Math.Min(max, NbdWire.MaxBufferSize);
        }
    }

    /// <inheritdoc />
    public override async ValueTask ReadAsync(long offset, Memory<byte> buffer, CancellationToken cancellationToken = default)
    {
        // The block layer may read a rounded-up tail; past the export it reads as zeroes.
        long size = Length;
        if (offset + buffer.Length > size)
        {
            int inside = (int)Math.Max(0, size - offset);
            buffer.Span[inside..].Clear();
            buffer = buffer[..inside];
        }
        await InPiecesAsync(offset, buffer.Length, cancellationToken,
            (at, start, length, connectToken) => RunAsync(s => s.RequestAsync(NbdWire.CmdRead, 0, (ulong)at, (uint)length, default, buffer.Slice(start, length), cancellationToken), cancellationToken, connectToken))
            .ConfigureAwait(false);
    }

    /// <summary>
    /// Reads and writes longer than this go out as several requests in flight together. A
    /// server allocates a buffer per request, and qemu-nbd's large ones are fresh mappings
    /// (glibc's mmap threshold) faulted in page by page on every request: 2 MiB requests cost
    /// it several times the CPU of 256 KiB ones for the same bytes, which decides a copy's
    /// speed when the server shares the machine. 256 KiB is nbdcopy's request size.
    /// </summary>
    private const int PieceSize = 256 * 1024;

    /// <summary>
    /// Runs <paramref name="request"/> (target offset, offset in the caller's buffer, length,
    /// token for getting a connection) for each piece of <paramref name="length"/> bytes at
    /// <paramref name="offset"/>, all in flight at once. Once a piece fails, the pieces still
    /// waiting for a connection give up instead of each trying to connect in turn (after
    /// reconnect-delay, one attempt per piece could take minutes each); pieces already sent are
    /// awaited, so the caller's buffer is never touched after this returns. The error thrown is
    /// the lowest failed piece's, as from one request.
    /// </summary>
    private async Task InPiecesAsync(long offset, int length, CancellationToken cancellationToken, Func<long, int, int, CancellationToken, Task<NbdRequestResult>> request)
    {
        int piece = Math.Min(MaxTransfer, PieceSize);
        if (length <= piece)
        {
            if (length > 0) await request(offset, 0, length, cancellationToken).ConfigureAwait(false);
            return;
        }
        using var failed = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        var pieces = new Task[(int)(((long)length + piece - 1) / piece)];
        for (int i = 0; i < pieces.Length; i++)
        {
            int start = i * piece;
            pieces[i] = PieceAsync(offset + start, start, Math.Min(piece, length - start));
        }
        try
        {
            await Task.WhenAll(pieces).ConfigureAwait(false);
        }
        catch (Exception)
        {
            // In offset order, by hand: the order of Task.WhenAll's exceptions is not a promise.
            foreach (var p in pieces)
                if (p.IsFaulted) ExceptionDispatchInfo.Throw(p.Exception!.InnerException!);
            cancellationToken.ThrowIfCancellationRequested();
            throw;
        }

        async Task PieceAsync(long at, int start, int n)
        {
            try
            {
                await request(at, start, n, failed.Token).ConfigureAwait(false);
            }
            catch (Exception e) when (e is not OperationCanceledException)
            {
                failed.Cancel();
                throw;
            }
        }
    }

    /// <inheritdoc />
    public override async ValueTask WriteAsync(long offset, ReadOnlyMemory<byte> data, WriteFlags flags = WriteFlags.None, CancellationToken cancellationToken = default)
    {
        bool fua = (flags & WriteFlags.Fua) != 0;
        bool serverFua = _session.Info.Has(NbdWire.TxSendFua);
        ushort commandFlags = fua && serverFua ? NbdWire.CmdFlagFua : (ushort)0;
        await InPiecesAsync(offset, data.Length, cancellationToken,
            (at, start, length, connectToken) => RunAsync(s => s.RequestAsync(NbdWire.CmdWrite, commandFlags, (ulong)at, (uint)length, data.Slice(start, length), default, cancellationToken), cancellationToken, connectToken))
            .ConfigureAwait(false);
        // Without FUA on the wire, the block layer emulates it with a flush.
        if (fua && !serverFua) await FlushAsync(cancellationToken).ConfigureAwait(false);
    }

    /// <inheritdoc />
    public override async ValueTask WriteZeroesAsync(long offset, long length, ZeroFlags flags = ZeroFlags.None, CancellationToken cancellationToken = default)
    {
        if (length <= 0) return;
        var info = _session.Info;
        bool noFallback = (flags & ZeroFlags.NoFallback) != 0;
        if (!info.Has(NbdWire.TxSendWriteZeroes) || (noFallback && !info.Has(NbdWire.TxSendFastZero)))
        {
            // bdrv_co_do_pwrite_zeroes: without the command, zeroes are written as data,
            // unless the caller wanted only a fast way.
            if (noFallback) throw new NativeIOException(Errno.ENOTSUP, LibC.StrError(Errno.ENOTSUP), Filename);
            var zeroes = new byte[(int)Math.Min(length, 1 << 20)];
            while (length > 0)
            {
                int n = (int)Math.Min(length, zeroes.Length);
                await WriteAsync(offset, zeroes.AsMemory(0, n), (flags & ZeroFlags.Fua) != 0 ? WriteFlags.Fua : WriteFlags.None, cancellationToken).ConfigureAwait(false);
                offset += n;
                length -= n;
            }
            return;
        }
        bool fua = (flags & ZeroFlags.Fua) != 0;
        ushort commandFlags = 0;
        if ((flags & ZeroFlags.MayUnmap) == 0) commandFlags |= NbdWire.CmdFlagNoHole;
        if (noFallback) commandFlags |= NbdWire.CmdFlagFastZero;
        if (fua && info.Has(NbdWire.TxSendFua)) commandFlags |= NbdWire.CmdFlagFua;
        long max = MaxTransfer;
        while (length > 0)
        {
            uint n = (uint)Math.Min(length, max);
            long at = offset;
            await RunAsync(s => s.RequestAsync(NbdWire.CmdWriteZeroes, commandFlags, (ulong)at, n, default, default, cancellationToken), cancellationToken)
                .ConfigureAwait(false);
            offset += n;
            length -= n;
        }
        if (fua && !info.Has(NbdWire.TxSendFua)) await FlushAsync(cancellationToken).ConfigureAwait(false);
    }

    /// <inheritdoc />
    public override async ValueTask DiscardAsync(long offset, long length, CancellationToken cancellationToken = default)
    {
        if (!_session.Info.Has(NbdWire.TxSendTrim)) return;
        // max_pdiscard: INT_MAX rounded down to the alignment.
        long max = int.MaxValue - int.MaxValue % Math.Max(1u, _session.Info.MinBlock);
        while (length > 0)
        {
            uint n = (uint)Math.Min(length, max);
            long at = offset;
            await RunAsync(s => s.RequestAsync(NbdWire.CmdTrim, 0, (ulong)at, n, default, default, cancellationToken), cancellationToken)
                .ConfigureAwait(false);
            offset += n;
            length -= n;
        }
    }

    /// <summary>
    /// NBD_CMD_FLUSH when the server takes it. QEMU sends it from bdrv_co_flush_to_os, which
    /// runs even with cache.no-flush, so this does too.
    /// </summary>
    public override async ValueTask FlushAsync(CancellationToken cancellationToken = default)
    {
        if (!_session.Info.Has(NbdWire.TxSendFlush)) return;
        await RunAsync(s => s.RequestAsync(NbdWire.CmdFlush, 0, 0, 0, default, default, cancellationToken), cancellationToken).ConfigureAwait(false);
    }

    /// <inheritdoc />
    public override async ValueTask<BlockStatus> GetBlockStatusAsync(long offset, long length, CancellationToken cancellationToken = default)
    {
        var info = _session.Info;
        if (info.BaseAllocationId is null)
            return new BlockStatus(length, BlockStatusFlags.Data | BlockStatusFlags.Allocated, offset, this);
        long size = Length;
        if (offset >= size) return new BlockStatus(length, BlockStatusFlags.Zero);
        long alignment = Math.Max(1u, info.MinBlock);
        long request = Math.Min(Math.Min(length, size - offset), int.MaxValue - int.MaxValue % alignment);
        var result = await RunAsync(s => s.RequestAsync(NbdWire.CmdBlockStatus, NbdWire.CmdFlagReqOne, (ulong)offset, (uint)request, default, default,
            cancellationToken), cancellationToken).ConfigureAwait(false);
        uint extentFlags = result.ExtentFlags;
        // nbd_parse_blockstatus_payload's hack: read as x-dirty-bitmap, qemu:allocation-depth's depths
        // over 2 count as 2, since only the low two bits are looked at.
        if (_options.MetaContext == "qemu:allocation-depth" && extentFlags > 2) extentFlags = 2;
        var flags = BlockStatusFlags.None;
        if ((extentFlags & NbdWire.StateHole) == 0) flags |= BlockStatusFlags.Data;
        if ((extentFlags & NbdWire.StateZero) != 0) flags |= BlockStatusFlags.Zero;
        // A protocol node's range counts as allocated when it holds data or reads as zeroes (bdrv_co_block_status).
        if (flags != BlockStatusFlags.None) flags |= BlockStatusFlags.Allocated;
        else
            // Neither data nor zeroes (a hole of an x-dirty-bitmap context): qemu-img map's walk ends
            // below this node with status 0, so no offset is shown.
            return new BlockStatus(Math.Min(result.ExtentLength, length), flags);
        return new BlockStatus(Math.Min(result.ExtentLength, length), flags, offset, this);
    }

    /// <summary>nbd_co_truncate with exact=true: only the current size is accepted.</summary>
    public override ValueTask TruncateAsync(long length, CancellationToken cancellationToken = default)
    {
        if (length != Length) throw new NativeIOException(Errno.ENOTSUP, "Cannot resize NBD nodes");
        return ValueTask.CompletedTask;
    }

    /// <summary>nbd_co_truncate with exact=false (image creation): shrinking is a no-op, growing fails.</summary>
    public void EnsureAtLeast(long length)
    {
        if (length > Length) throw new NativeIOException(Errno.EINVAL, "Cannot grow NBD nodes");
    }

    /// <summary>
    /// Runs one request, re-running it on a new connection while reconnect-delay allows
    /// (nbd_co_request's loop). A request the server answered with an error fails with that errno.
    /// </summary>
    private async Task<NbdRequestResult> RunAsync(Func<NbdSession, Task<NbdRequestResult>> request, CancellationToken ct, CancellationToken connectToken = default)
    {
        while (true)
        {
            var session = await GetSessionAsync(connectToken.CanBeCanceled ? connectToken : ct).ConfigureAwait(false);
            NbdRequestResult result;
            try
            {
                result = await request(session).ConfigureAwait(false);
            }
            catch (NbdProtocolException e)
            {
                SetState(session, ClientState.Quit);
                throw new NativeIOException(e.Errno, LibC.StrError(e.Errno), Filename);
            }
            catch (NbdChannelException)
            {
                OnConnectionLost(session);
                if (WillReconnect) continue;
                throw new NativeIOException(Errno.EIO, LibC.StrError(Errno.EIO), Filename);
            }
            if (result.Errno != 0) throw new NativeIOException(result.Errno, LibC.StrError(result.Errno), Filename);
            return result;
        }
    }

    private bool WillReconnect
    {
        get
        {
            lock (_stateLock) return _state == ClientState.ConnectingWait && !_closed;
        }
    }

    private void SetState(NbdSession session, ClientState state)
    {
        lock (_stateLock)
        {
            if (ReferenceEquals(session, _session)) _state = state;
        }
    }

    /// <summary>nbd_channel_error with EIO: wait for a new connection if reconnect-delay is set.</summary>
    private void OnConnectionLost(NbdSession session)
    {
        lock (_stateLock)
        {
            if (!ReferenceEquals(session, _session) || _state != ClientState.Connected) return;
            _state = _options.ReconnectDelay > TimeSpan.Zero ? ClientState.ConnectingWait : ClientState.ConnectingNoWait;
            _reconnectDeadline = null;
        }
    }

    /// <summary>The connection to send on: the current one, or a new one (nbd_reconnect_attempt).</summary>
    private async Task<NbdSession> GetSessionAsync(CancellationToken ct)
    {
        lock (_stateLock)
        {
            if (_closed || _state == ClientState.Quit) throw new NativeIOException(Errno.EIO, LibC.StrError(Errno.EIO), Filename);
            if (_state == ClientState.Connected) return _session;
        }
        await _connectLock.WaitAsync(ct).ConfigureAwait(false);
        try
        {
            var backoff = TimeSpan.FromSeconds(1);
            while (true)
            {
                ClientState state;
                lock (_stateLock)
                {
                    state = _state;
                    if (_closed || state == ClientState.Quit) throw new NativeIOException(Errno.EIO, LibC.StrError(Errno.EIO), Filename);
                    if (state == ClientState.Connected) return _session;
                    if (state == ClientState.ConnectingWait)
                    {
                        _reconnectDeadline ??= _options.Time.GetUtcNow() + _options.ReconnectDelay;
                        if (_options.Time.GetUtcNow() >= _reconnectDeadline)
                        {
                            _state = state = ClientState.ConnectingNoWait;
                        }
                    }
                }
                var old = _session;
                NbdSession? fresh = null;
                try
                {
                    fresh = await ConnectAsync(_options, ct).ConfigureAwait(false);
                    if (fresh.Info.Size != old.Info.Size || (fresh.Info.Has(NbdWire.TxReadOnly) && !IsReadOnly))
                    {
                        // Another export behind the same name: not the disk this node opened.
                        await fresh.CloseAsync().ConfigureAwait(false);
                        fresh = null;
                    }
                }
                catch (NativeIOException)
                {
                    fresh = null;
                }
                if (fresh is not null)
                {
                    lock (_stateLock)
                    {
                        _session = fresh;
                        _state = ClientState.Connected;
                        _reconnectDeadline = null;
                    }
                    await old.CloseAsync().ConfigureAwait(false);
                    return fresh;
                }
                if (state == ClientState.ConnectingNoWait) throw new NativeIOException(Errno.EIO, LibC.StrError(Errno.EIO), Filename);
                TimeSpan remaining;
                lock (_stateLock) remaining = _reconnectDeadline!.Value - _options.Time.GetUtcNow();
                var wait = Min(backoff, remaining);
                if (wait > TimeSpan.Zero) await Task.Delay(wait, _options.Time, ct).ConfigureAwait(false);
                backoff = Min(backoff * 2, MaxBackoff);
            }
        }
        finally
        {
            _connectLock.Release();
        }
    }

    /// <inheritdoc />
    protected internal override async ValueTask CloseAsync()
    {
        NbdSession session;
        lock (_stateLock)
        {
            if (_closed) return;
            _closed = true;
            session = _session;
        }
        await session.CloseAsync().ConfigureAwait(false);
    }
}
