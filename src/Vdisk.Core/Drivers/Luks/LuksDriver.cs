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

    /// <inheritdoc />
    public Task CreateAsync(CreateOptions options, CancellationToken cancellationToken = default)
    {
        ulong size = options.Size ?? throw new CreateException("Image creation needs a size parameter");
        string? secret = options.Options.Get("key-secret");
        LuksCreateOptions luks;
        try
        {
            luks = LuksCreateOptions.From(options.Options.Get);
        }
        catch (OptionException e)
        {
            throw new CreateException(e.Message);
        }
        // QEMU deletes the file when the encryption layer fails; vdisk looks the secret up first, so no file is made.
        if (secret is null) throw new CreateException("Parameter 'key-secret' is required for cipher");
        byte[] passphrase;
        try
        {
            passphrase = Secrets.LookupPassphrase(secret);
        }
        catch (OptionException e)
        {
            throw new CreateException(e.Message);
        }
        return ImageCreator.CreateOnProtocolAsync(options, async (file, ct) =>
        {
            using var volume = await LuksVolume.CreateAsync(luks, passphrase,
                (payload, c) => file.TruncateAsync(payload + (long)size, c),
                (o, d, c) => file.WriteAsync(o, d, Graph.WriteFlags.None, c), ct).ConfigureAwait(false);
        }, cancellationToken);
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
