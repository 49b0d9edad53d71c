using System.Security.Cryptography;
using Vdisk.Options;

namespace Vdisk.Crypto;

/// <summary>The new state of the key slots an amend names (QCryptoBlockLUKSKeyslotState).</summary>
public enum LuksKeySlotState
{
    /// <summary>Add a passphrase.</summary>
    Active,
    /// <summary>Erase passphrases.</summary>
    Inactive,
}

/// <summary>
/// QCryptoBlockAmendOptionsLUKS as qemu-img amend reads it: <c>state</c>, <c>new-secret</c>,
/// <c>old-secret</c>, <c>keyslot</c>, <c>iter-time</c> (secret ids and numbers as given).
/// </summary>
public sealed record LuksAmendOptions(LuksKeySlotState State, string? NewSecret, string? OldSecret, long? KeySlot, long? IterTimeMs)
{
    /// <summary>
    /// block_crypto_amend_opts_init over the options named <paramref name="prefix"/>KEY: the
    /// QAPI visit of the members in their schema order, with its messages (they name the key
    /// without the prefix, as QEMU's visitor sees the extracted sub-dictionary).
    /// </summary>
    /// <exception cref="OptionException">A missing state, a state or number QEMU refuses.</exception>
    public static LuksAmendOptions From(Func<string, string?> get, string prefix = "")
    {
        var state = get(prefix + "state") switch
        {
            null => throw new OptionException("Parameter 'state' is missing"),
            "active" => LuksKeySlotState.Active,
            "inactive" => LuksKeySlotState.Inactive,
            var s => throw new OptionException($"Parameter 'state' does not accept value '{s}'"),
        };
        return new LuksAmendOptions(state, get(prefix + "new-secret"), get(prefix + "old-secret"),
            Integer(get, prefix, "keyslot"), Integer(get, prefix, "iter-time"));
    }

    /// <summary>The keyval visitor's int: the text parsed again as a signed 64-bit number, any base.</summary>
    private static long? Integer(Func<string, string?> get, string prefix, string key)
    {
        if (get(prefix + key) is not { } text) return null;
        return QemuNumber.ParseLong(text, 0, out long value) == QemuNumberStatus.Ok
            ? value
            : throw new OptionException($"Parameter '{key}' expects integer");
    }
}

// qcrypto_block_luks_amend_options: key slots added and erased in place.
public sealed partial class LuksVolume
{
    private const int DefaultIterTimeMs = 2000;
    private const int EraseIterations = 16;

    /// <summary>
    /// qcrypto_block_luks_amend_options: <c>state=active</c> stores the master key under
    /// new-secret in the given or first free slot; <c>state=inactive</c> erases the given slot
    /// or every slot old-secret opens. <paramref name="secret"/> is the key-secret the volume
    /// was opened with (it unlocks the master key for a new slot). Without
    /// <paramref name="force"/>, overwriting an active slot and erasing the last one are refused.
    /// </summary>
    /// <exception cref="OptionException">QEMU's refusal, in its words.</exception>
    public Task AmendAsync(LuksAmendOptions o, string secret, bool force, CryptoReadFunc read, CryptoWriteFunc write, CancellationToken cancellationToken = default) =>
        o.State == LuksKeySlotState.Active
            ? AddKeySlotAsync(o, secret, force, read, write, cancellationToken)
            : EraseKeySlotsAsync(o, force, read, write, cancellationToken);

    /// <summary>qcrypto_block_luks_amend_add_keyslot.</summary>
    private async Task AddKeySlotAsync(LuksAmendOptions o, string secret, bool force, CryptoReadFunc read, CryptoWriteFunc write, CancellationToken ct)
    {
        if (o.NewSecret is null) throw new OptionException("'new-secret' is required to activate a keyslot");
        if (o.OldSecret is not null) throw new OptionException("'old-secret' must not be given when activating keyslots");
        int slot;
        if (o.KeySlot is { } given)
        {
            // QEMU keeps the slot in a C int and prints it unsigned.
            slot = unchecked((int)given);
            if (slot is < 0 or >= LuksHeader.SlotCount)
                throw new OptionException($"Invalid keyslot {unchecked((uint)slot)} specified, must be between 0 and {LuksHeader.SlotCount - 1}");
        }
        else
        {
            slot = Array.FindIndex(Header.Slots, s => !s.IsEnabled);
            if (slot < 0) throw new OptionException("Can't add a keyslot - all keyslots are in use");
        }
        if (!force && Header.Slots[slot].IsEnabled)
            throw new OptionException($"Refusing to overwrite active keyslot {slot} - please erase it first");

        var oldPassphrase = Secrets.LookupPassphrase(secret);
        byte[]? masterKey = null;
        for (int i = 0; i < LuksHeader.SlotCount && masterKey is null; i++)
            masterKey = await TryUnlockSlotAsync(Header, i, oldPassphrase, read, ct).ConfigureAwait(false);
        if (masterKey is null) throw new OptionException("Invalid password, cannot unlock any keyslot\nFailed to retrieve the master key");
        var newPassphrase = Secrets.LookupPassphrase(o.NewSecret);
        ulong iterTime = o.IterTimeMs is { } t ? unchecked((ulong)t) : DefaultIterTimeMs;
        await StoreKeyAsync(slot, newPassphrase, masterKey, iterTime, write, ct).ConfigureAwait(false);
    }

    /// <summary>qcrypto_block_luks_amend_erase_keyslots.</summary>
    private async Task EraseKeySlotsAsync(LuksAmendOptions o, bool force, CryptoReadFunc read, CryptoWriteFunc write, CancellationToken ct)
    {
        if (o.NewSecret is not null) throw new OptionException("'new-secret' must not be given when erasing keyslots");
        if (o.IterTimeMs is not null) throw new OptionException("'iter-time' must not be given when erasing keyslots");
        byte[]? oldPassphrase = o.OldSecret is null ? null : Secrets.LookupPassphrase(o.OldSecret);
        int activeSlots = Header.Slots.Count(s => s.IsEnabled);
        if (o.KeySlot is { } given)
        {
            int slot = unchecked((int)given);
            if (slot is < 0 or >= LuksHeader.SlotCount)
                throw new OptionException($"Invalid keyslot {slot} specified, must be between 0 and {LuksHeader.SlotCount - 1}");
            if (oldPassphrase is not null && await TryUnlockSlotAsync(Header, slot, oldPassphrase, read, ct).ConfigureAwait(false) is null)
                throw new OptionException($"Given keyslot {slot} doesn't contain the given old password for erase operation");
            if (!force && !Header.Slots[slot].IsEnabled)
                throw new OptionException($"Given keyslot {slot} is already erased (inactive) ");
            if (!force && activeSlots == 1)
                throw new OptionException($"Attempt to erase the only active keyslot {slot} which will erase all the data in the image irreversibly - refusing operation");
            await EraseKeyAsync(slot, write, ct).ConfigureAwait(false);
        }
        else if (oldPassphrase is not null)
        {
            var matching = new List<int>();
            for (int i = 0; i < LuksHeader.SlotCount; i++)
                if (await TryUnlockSlotAsync(Header, i, oldPassphrase, read, ct).ConfigureAwait(false) is not null) matching.Add(i);
            if (matching.Count == 0) throw new OptionException("No keyslots match given (old) password for erase operation");
            if (!force && matching.Count == activeSlots)
                throw new OptionException("All the active keyslots match the (old) password that was given and erasing them will erase all the data in the image irreversibly - refusing operation");
            foreach (int i in matching) await EraseKeyAsync(i, write, ct).ConfigureAwait(false);
        }
        else
        {
            throw new OptionException("To erase keyslot(s), either explicit keyslot index or the password currently contained in them must be given");
        }
    }

    /// <summary>
    /// qcrypto_block_luks_erase_key: the slot disabled in the header (salt and iterations
    /// zeroed), then its key material overwritten with random bytes, 16 times.
    /// </summary>
    private async Task EraseKeyAsync(int index, CryptoWriteFunc write, CancellationToken ct)
    {
        var slot = Header.Slots[index];
        Array.Clear(slot.Salt);
        slot.Iterations = 0;
        slot.Active = LuksKeySlot.Disabled;
        await write(0, Header.ToArray(), ct).ConfigureAwait(false);
        var garbage = new byte[(int)Header.KeyBytes * (int)slot.Stripes];
        for (int i = 0; i < EraseIterations; i++)
        {
            RandomNumberGenerator.Fill(garbage);
            await write((long)slot.KeyOffsetSector * SectorCipher.SectorSize, garbage, ct).ConfigureAwait(false);
        }
    }
}
