using Vdisk.Crypto;
using Vdisk.Graph;
using Vdisk.Native;
using Vdisk.Permissions;

namespace Vdisk.Drivers.Luks;

/// <summary>
/// The <c>luks</c> format (QEMU 7.2's block/crypto.c over crypto/block-luks.c): a LUKS1 header
/// and key slots, then the payload, each 512-byte sector encrypted with the master key and the
/// IV of its guest sector. Requests are in whole sectors (QEMU's request alignment for this
/// driver); a partial sector is read, decrypted, merged and written back whole, one such
/// write at a time.
/// </summary>
public sealed class LuksNode : BlockNode, IImageInfoSource
{
    private const int Sector = SectorCipher.SectorSize;
    private const int Chunk = 1 << 20;
    private readonly BdrvChild _fileChild;
    private readonly LuksVolume _volume;
    private readonly SemaphoreSlim _writes = new(1, 1);

    private readonly string? _keySecret;

    private LuksNode(string nodeName, NodeFlags flags, BlockNode file, LuksVolume volume, string? keySecret)
        : base(nodeName, flags, file.Filename)
    {
        _volume = volume;
        _keySecret = keySecret;
        _fileChild = AttachChild("file", file, ChildRole.Image);
    }

    /// <inheritdoc />
    public override string DriverName => "luks";

    /// <inheritdoc />
    public override bool IsProtocol => false;

    /// <inheritdoc />
    public override IChildPermissionRule PermissionRule => _updatingKeys ? CryptoChildPermissionRule.UpdatingKeys : CryptoChildPermissionRule.Instance;

    private bool _updatingKeys;

    /// <summary>The file child's node.</summary>
    public BlockNode File => _fileChild.Node;

    /// <summary>The volume (header and cipher).</summary>
    public LuksVolume Volume => _volume;

    /// <inheritdoc />
    public override long Length => Math.Max(0, File.Length - _volume.PayloadOffset) / Sector * Sector;

    /// <summary>
    /// block_crypto_open_generic: with I/O the passphrase is looked up first (its errors come
    /// before any read); without (qemu-img info) only the header is read.
    /// </summary>
    public static async Task<LuksNode> OpenAsync(string nodeName, NodeFlags flags, BlockNode file, string? keySecret, CancellationToken ct = default)
    {
        byte[]? passphrase = null;
        if ((flags & NodeFlags.NoIo) == 0)
        {
            if (keySecret is null) throw new Options.OptionException("Parameter 'key-secret' is required for cipher");
            passphrase = Secrets.LookupPassphrase(keySecret);
        }
        var volume = await LuksVolume.OpenAsync((o, b, c) => file.ReadAsync(o, b, c), passphrase, ct).ConfigureAwait(false);
        return new LuksNode(nodeName, flags, file, volume, keySecret);
    }

    private SectorCipher Cipher => _volume.Cipher ?? throw new NativeIOException(Errno.EIO, "Input/output error");

    /// <inheritdoc />
    public override async ValueTask ReadAsync(long offset, Memory<byte> buffer, CancellationToken cancellationToken = default)
    {
        var cipher = Cipher;
        long start = offset / Sector * Sector;
        long end = (offset + buffer.Length + Sector - 1) / Sector * Sector;
        if (start == offset && end == offset + buffer.Length)
        {
            // Aligned: decrypt in the caller's buffer.
            await File.ReadAsync(_volume.PayloadOffset + offset, buffer, cancellationToken).ConfigureAwait(false);
            cipher.Decrypt(offset, buffer.Span);
            return;
        }
        var bounce = new byte[end - start];
        await File.ReadAsync(_volume.PayloadOffset + start, bounce, cancellationToken).ConfigureAwait(false);
        cipher.Decrypt(start, bounce);
        bounce.AsSpan((int)(offset - start), buffer.Length).CopyTo(buffer.Span);
    }

    /// <inheritdoc />
    public override async ValueTask WriteAsync(long offset, ReadOnlyMemory<byte> data, WriteFlags flags = WriteFlags.None, CancellationToken cancellationToken = default)
    {
        var cipher = Cipher;
        await _writes.WaitAsync(cancellationToken).ConfigureAwait(false);
        try
        {
            long start = offset / Sector * Sector;
            long end = (offset + data.Length + Sector - 1) / Sector * Sector;
            int head = (int)(offset - start);
            // In pieces of at most a chunk, so a large write needs no buffer of its size.
            long done = start;
            while (done < end)
            {
                int n = (int)Math.Min(Chunk, end - done);
                var buffer = new byte[n];
                long dataStart = Math.Max(done, offset), dataEnd = Math.Min(done + n, offset + data.Length);
                bool partialFirst = done < offset, partialLast = done + n > offset + data.Length;
                if (partialFirst || partialLast)
                {
                    // Read-modify-write of the partial sectors (bdrv_co_do_pwritev's padding).
                    if (partialFirst) await ReadAsync(done, buffer.AsMemory(0, Sector), cancellationToken).ConfigureAwait(false);
                    if (partialLast) await ReadAsync(done + n - Sector, buffer.AsMemory(n - Sector, Sector), cancellationToken).ConfigureAwait(false);
                }
                data.Span.Slice((int)(dataStart - offset), (int)(dataEnd - dataStart)).CopyTo(buffer.AsSpan((int)(dataStart - done)));
                cipher.Encrypt(done, buffer);
                await File.WriteAsync(_volume.PayloadOffset + done, buffer, flags, cancellationToken).ConfigureAwait(false);
                done += n;
            }
            _ = head;
        }
        finally
        {
            _writes.Release();
        }
    }

    /// <summary>
    /// block_crypto_co_block_status is absent: the block layer reports every range as data
    /// (allocated, no host offset), so map and convert read it all.
    /// </summary>
    public override ValueTask<BlockStatus> GetBlockStatusAsync(long offset, long length, CancellationToken cancellationToken = default)
    {
        length = Math.Min(length, Length - offset);
        return ValueTask.FromResult(length <= 0 ? new BlockStatus(0, BlockStatusFlags.None) : new BlockStatus(length, BlockStatusFlags.Data | BlockStatusFlags.Allocated));
    }

    /// <summary>block_crypto_co_truncate: the file grows or shrinks by the same amount past the payload offset.</summary>
    public override ValueTask TruncateAsync(long length, CancellationToken cancellationToken = default) =>
        File.TruncateAsync(_volume.PayloadOffset + length, cancellationToken);

    /// <summary>
    /// block_crypto_amend_options_luks: the options read as QCryptoBlockAmendOptionsLUKS, the
    /// file child taken for exclusive writing while the key slots change (updating_keys), then
    /// released again whatever happened.
    /// </summary>
    /// <exception cref="NativeIOException">QEMU's refusal (EINVAL), or the I/O error.</exception>
    public override async ValueTask AmendAsync(Options.QemuOpts options, bool force, Action<long, long>? status = null, CancellationToken cancellationToken = default)
    {
        try
        {
            var amend = LuksAmendOptions.From(options.Get);
            _updatingKeys = true;
            try
            {
                PermissionRefresh.Refresh([this]);
                await _volume.AmendAsync(amend, _keySecret!, force,
                    (o, b, c) => File.ReadAsync(o, b, c),
                    (o, d, c) => File.WriteAsync(o, d, WriteFlags.None, c), cancellationToken).ConfigureAwait(false);
            }
            finally
            {
                _updatingKeys = false;
                PermissionRefresh.Refresh([this]);
            }
        }
        catch (Options.OptionException e)
        {
            throw new NativeIOException(Errno.EINVAL, e.Message);
        }
    }

    /// <summary>A new image reads as what the file held: only a file that reads zeroes makes zeroes of nothing.</summary>
    public override bool HasZeroInit => false;

    /// <inheritdoc />
    public ImageInfo GetImageInfo() => new()
    {
        Filename = DisplayFilename,
        Format = DriverName,
        VirtualSize = Length,
        ActualSize = File.AllocatedSize,
        Encrypted = true,
        FormatSpecificType = "luks",
        FormatSpecificData = _volume.Header.InfoData(),
    };

    /// <summary>
    /// bdrv_refresh_filename: key-secret is an option the filename cannot carry, so QEMU names
    /// the image by a json: filename of its options (driver, key-secret, the file child).
    /// </summary>
    private string DisplayFilename => _keySecret is null || File.DriverName != "file"
        ? Filename
        : "json:" + new Output.QemuJsonObject()
            .Add("driver", DriverName)
            .Add("file", new Output.QemuJsonObject().Add("driver", "file").Add("filename", File.Filename))
            .Add("key-secret", _keySecret)
            .ToCompactJson();

    /// <inheritdoc />
    protected internal override ValueTask CloseAsync()
    {
        _volume.Dispose();
        return ValueTask.CompletedTask;
    }
}
