using Vdisk.Crypto;
using Vdisk.Graph;
using Vdisk.Options;

namespace Vdisk.Drivers.Luks;

/// <summary>The <c>luks</c> format driver: option <c>key-secret</c> and the file child; creation with QEMU's luks options.</summary>
public sealed class LuksDriver : IBlockDriver
{
    /// <inheritdoc />
    public string Name => "luks";

    /// <inheritdoc />
    public bool IsProtocol => false;

    /// <summary>block_crypto_create_opts_luks, in QEMU's order.</summary>
    private static readonly QemuOptDesc[] s_createOptions =
    [
        new("size", QemuOptType.Size, "Virtual disk size"),
        new("key-secret", QemuOptType.String, "ID of the secret that provides the keyslot passphrase"),
        new("cipher-alg", QemuOptType.String, "Name of encryption cipher algorithm"),
        new("cipher-mode", QemuOptType.String, "Name of encryption cipher mode"),
        new("ivgen-alg", QemuOptType.String, "Name of IV generator algorithm"),
        new("ivgen-hash-alg", QemuOptType.String, "Name of IV generator hash algorithm"),
        new("hash-alg", QemuOptType.String, "Name of encryption hash algorithm"),
        new("iter-time", QemuOptType.Number, "Time to spend in PBKDF in milliseconds"),
    ];

    /// <inheritdoc />
    public IReadOnlyList<QemuOptDesc>? CreateOptionList => s_createOptions;

    /// <summary>block_crypto_amend_opts_luks, in QEMU's order.</summary>
    private static readonly QemuOptDesc[] s_amendOptions =
    [
        new("state", QemuOptType.String, "Select new state of affected keyslots (active/inactive)"),
        new("keyslot", QemuOptType.Number, "Select a single keyslot to modify explicitly"),
        new("old-secret", QemuOptType.String, "Select all keyslots that match this password"),
        new("new-secret", QemuOptType.String, "New secret to set in the matching keyslots. Empty string to erase"),
        new("iter-time", QemuOptType.Number, "Time to spend in PBKDF in milliseconds"),
    ];

    /// <inheritdoc />
    public QemuOpts? CreateAmendOptions() => new(s_amendOptions);

    /// <inheritdoc />
    public async Task CreateAsync(CreateOptions options, CancellationToken cancellationToken = default)
    {
        ulong size = options.Size ?? throw new CreateException("Image creation needs a size parameter");
        var (luks, passphrase) = CheckOptions(options.Options, e => new CreateException(e.Message));
        await ImageCreator.CreateOnProtocolAsync(options, async (file, ct) =>
        {
            if (passphrase is null)
            {
                // block_crypto_co_create_opts_luks fails after creating the file and deletes it,
                // even one that existed before.
                DeleteLocalFile(options.Filename);
                throw new CreateException(luks.Error!);
            }
            using var volume = await LuksVolume.CreateAsync(luks.Options!, passphrase,
                (payload, c) => file.TruncateAsync(payload + (long)size, c),
                (o, d, c) => file.WriteAsync(o, d, Graph.WriteFlags.None, c), ct).ConfigureAwait(false);
        }, cancellationToken).ConfigureAwait(false);
    }

    private sealed record CheckedOptions(LuksCreateOptions? Options, string? Error);

    /// <summary>The create options and the passphrase; a missing or unusable secret, or a cipher LUKS refuses, is kept as the error for after the file step.</summary>
    private static (CheckedOptions Luks, byte[]? Passphrase) CheckOptions(QemuOpts options, Func<OptionException, Exception> refusal)
    {
        LuksCreateOptions luks;
        try
        {
            luks = LuksCreateOptions.From(options.Get);
        }
        catch (OptionException e)
        {
            throw refusal(e);
        }
        if (options.Get("key-secret") is not { } secret) return (new(luks, "Parameter 'key-secret' is required for cipher"), null);
        try
        {
            var passphrase = Secrets.LookupPassphrase(secret);
            luks.Validate();
            return (new(luks, null), passphrase);
        }
        catch (OptionException e)
        {
            return (new(luks, e.Message), null);
        }
    }

    private static void DeleteLocalFile(string filename)
    {
        var protocol = new OptionDict();
        BlockDrivers.FillProtocolOptions(protocol, filename);
        if (protocol.Contains("driver")) return;
        try
        {
            System.IO.File.Delete(filename);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            // bdrv_co_delete_file_noerr: the creation error is the one reported.
        }
    }

    /// <summary>block_crypto_measure: the LUKS header (by the key length) plus the payload, allocated or not.</summary>
    public Task<MeasureResult> MeasureAsync(QemuOpts options, BlockNode? input, CancellationToken cancellationToken = default)
    {
        var (luks, passphrase) = CheckOptions(options, e => new Native.NativeIOException(Native.Errno.EINVAL, e.Message));
        if (passphrase is null) throw new Native.NativeIOException(Native.Errno.EINVAL, luks.Error!);
        long size = input?.Length ?? (long)(options.GetNumber("size") ?? 0);
        var o = luks.Options!;
        int keyBytes = CryptoAlgorithms.KeyLength(o.Cipher) * (o.Mode == CipherMode.Xts ? 2 : 1);
        long total = LuksHeader.PayloadOffsetFor(keyBytes) + size;
        return Task.FromResult(new MeasureResult(total, total, null));
    }

    /// <inheritdoc />
    public BlockNode Open(NodeOpenContext context)
    {
        string? keySecret = context.Options.TakeString("key-secret");
        var file = context.OpenChild("file");
        context.Options.EnsureAllUsed(Name, isProtocol: false);
        return LuksNode.OpenAsync(context.NodeName, context.Flags, file, keySecret).GetAwaiter().GetResult();
    }
}
