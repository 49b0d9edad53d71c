using Vdisk.Native;
using Vdisk.Permissions;

namespace Vdisk.Locking;

/// <summary>
/// QEMU's per-file lock bookkeeping and transaction (raw_handle_perm_lock, raw_apply_lock_bytes,
/// raw_check_lock_bytes), independent of how bytes are locked. PREPARE locks the union of old
/// and new requests and tests the new one; COMMIT applies the new set and unlocks the rest;
/// ABORT restores the old set. Loosen-only requests skip PREPARE entirely.
/// </summary>
public sealed class PermissionLockTransaction
{
    private ILockPrimitive _primitive;
    private readonly string _filename;
    private readonly Action<string>? _warn;

    /// <summary>Creates the state of a node that holds nothing (perm 0, shared ALL).</summary>
    public PermissionLockTransaction(ILockPrimitive primitive, string filename, Action<string>? warn = null)
    {
        _primitive = primitive;
        _filename = filename;
        _warn = warn;
    }

    /// <summary>The last committed request (s->perm, s->shared_perm).</summary>
    public PermissionPair Committed { get; private set; } = PermissionPair.Unused;

    /// <summary>Bits whose 100+i byte is locked now (s->locked_perm).</summary>
    public BlockPermission LockedPerm { get; private set; }

    /// <summary>Bits whose 200+i byte is locked now (s->locked_shared_perm).</summary>
    public BlockPermission LockedUnshared { get; private set; }

    /// <summary>
    /// "Does not share" bytes kept locked on top of the committed request (a vdisk extension for
    /// migration hand-over, see <see cref="Reserve"/>); QEMU never has any.
    /// </summary>
    public BlockPermission Reserved { get; private set; }

    private BlockPermission _reservedNewly;

    /// <summary>
    /// Locks the "does not share" bytes of <paramref name="unshared"/> without testing anything,
    /// and keeps them through later transactions until <see cref="ReleaseReservation"/>. New
    /// openers that want those permissions are refused from now on; this node's own tests do
    /// not see the bytes (they are on its own descriptor), so its later activation is unaffected.
    /// </summary>
    public void Reserve(BlockPermission unshared)
    {
        unshared &= BlockPermission.All;
        _reservedNewly |= unshared & ~LockedUnshared & ~Reserved;
        Reserved |= unshared;
        ApplyLockBytes(LockedPerm, LockedUnshared | Reserved, unlock: false);
        Flush();
    }

    /// <summary>
    /// Drops the reservation. An active node goes back to exactly its committed request; an
    /// inactive one (whose locks QEMU leaves alone) unlocks only what the reservation added.
    /// </summary>
    public void ReleaseReservation(bool active)
    {
        if (Reserved == BlockPermission.None) return;
        var added = _reservedNewly;
        Reserved = BlockPermission.None;
        _reservedNewly = BlockPermission.None;
        if (active) ApplyLockBytes(Committed.Perm, Committed.Unshared, unlock: true);
        else ApplyLockBytes(LockedPerm, LockedUnshared & ~added, unlock: true);
        Flush();
    }

    /// <summary>
    /// PREPARE. On conflict, restores the previous lock set (ABORT) and throws
    /// <see cref="LockConflictException"/>; any other failure (a cluster lock store that does not
    /// answer) restores it too.
    /// </summary>
    public void Prepare(PermissionPair next)
    {
        if (TryPrepare(next) is { } conflict) throw conflict;
    }

    /// <summary>
    /// PREPARE, with a conflict that a lock test found returned instead of thrown (the previous
    /// lock set is restored first, as by <see cref="Prepare"/>): a refused open is an expected
    /// outcome, and an exception dispatch (a stack walk through every frame up to the catch) was
    /// a tenth of its cost. Any other failure throws.
    /// </summary>
    public LockConflictException? TryPrepare(PermissionPair next)
    {
        var current = Committed;
        bool loosenOnly = (next.Perm & ~current.Perm) == 0 && (current.Shared & ~next.Shared) == 0;
        if (loosenOnly) return null;
        bool prepared = false;
        try
        {
            ApplyLockBytes(current.Perm | next.Perm, current.Unshared | next.Unshared, unlock: false);
            if (FindConflict(next) is { } conflict) return conflict;
            Flush();
            prepared = true;
            return null;
        }
        finally
        {
            if (!prepared) Abort();
        }
    }

    /// <summary>COMMIT: lock exactly the bytes of <paramref name="next"/>, unlock the rest. Failures only warn.</summary>
    public void Commit(PermissionPair next)
    {
        try
        {
            ApplyLockBytes(next.Perm, next.Unshared | Reserved, unlock: true);
            Flush();
        }
        catch (IOException e)
        {
            _warn?.Invoke($"Failed to unlock old lock bytes: {e.Message}");
        }
        Committed = next;
    }

    /// <summary>
    /// Records a request without touching locks: QEMU stores perms while a node is inactive.
    /// </summary>
    public void RecordWithoutLocking(PermissionPair next) => Committed = next;

    /// <summary>ABORT: go back to the bytes of the committed request.</summary>
    public void Abort()
    {
        try
        {
            ApplyLockBytes(Committed.Perm, Committed.Unshared | Reserved, unlock: true);
            Flush();
        }
        catch (IOException e)
        {
            _warn?.Invoke($"Failed to restore old lock bytes: {e.Message}");
        }
    }

    /// <summary>Unlocks every byte this node holds (used before handing the descriptor back).</summary>
    public void ReleaseAll()
    {
        Reserved = _reservedNewly = BlockPermission.None;
        ApplyLockBytes(BlockPermission.None, BlockPermission.None, unlock: true);
        Flush();
        Committed = PermissionPair.Unused;
    }

    /// <summary>
    /// Locks the bytes of <paramref name="request"/> on another descriptor without testing
    /// (raw_apply_lock_bytes(NULL, newfd, ..., unlock=false)): the locks a reopened node copies to
    /// its new descriptor after the test passed on the old one.
    /// </summary>
    public void CopyTo(ILockPrimitive other, PermissionPair request)
    {
        foreach (var bit in BlockPermissions.Bits(request.Perm)) Lock(other, LockBytes.HoldByte(bit));
        foreach (var bit in BlockPermissions.Bits(request.Unshared)) Lock(other, LockBytes.UnsharedByte(bit));
    }

    /// <summary>
    /// Continues on the descriptor the locks were copied to (the old one is being closed, and
    /// its OFD locks with it). The bookkeeping then describes what <see cref="CopyTo"/> locked.
    /// </summary>
    public void UsePrimitive(ILockPrimitive primitive) => _primitive = primitive;

    /// <summary>
    /// file-posix's unlock with no saved state (raw_apply_lock_bytes(NULL, ..., unlock=true)), used
    /// after creating an image: every byte 100-103 and 200-203 is unlocked, held or not.
    /// </summary>
    public void UnlockEveryByte()
    {
        foreach (int baseOffset in new[] { LockBytes.PermBase, LockBytes.SharedBase })
            for (int i = 0; i < BlockPermissions.BitCount; i++) UnlockByte(baseOffset + i);
        Flush();
        LockedPerm = BlockPermission.None;
        LockedUnshared = BlockPermission.None;
        Committed = PermissionPair.Unused;
    }

    /// <summary>Ends a step: a batching primitive carries out what it collected.</summary>
    private void Flush()
    {
        if (_primitive is IBatchedLockPrimitive batched) batched.Flush();
    }

    private void ApplyLockBytes(BlockPermission holds, BlockPermission unshared, bool unlock)
    {
        LockedPerm = ApplyRange(LockBytes.PermBase, holds, LockedPerm, unlock);
        LockedUnshared = ApplyRange(LockBytes.SharedBase, unshared, LockedUnshared, unlock);
    }

    /// <summary>
    /// One pass of raw_apply_lock_bytes over bytes base+i: lock wanted bits not yet locked, and
    /// (when unlocking) unlock locked bits no longer wanted. Returns the new locked mask; on
    /// failure the mask already reflects the bytes that changed, as QEMU's bookkeeping does.
    /// </summary>
    private BlockPermission ApplyRange(int baseOffset, BlockPermission wanted, BlockPermission locked, bool unlock)
    {
        for (int i = 0; i < BlockPermissions.BitCount; i++)
        {
            var bit = BlockPermissions.FromBit(i);
            bool want = (wanted & bit) != 0, has = (locked & bit) != 0;
            try
            {
                if (want && !has)
                {
                    Lock(baseOffset + i);
                    locked |= bit;
                }
                else if (unlock && has && !want)
                {
                    UnlockByte(baseOffset + i);
                    locked &= ~bit;
                }
            }
            catch
            {
                if (baseOffset == LockBytes.PermBase) LockedPerm = locked;
                else LockedUnshared = locked;
                throw;
            }
        }
        return locked;
    }

    private void Lock(int offset) => Lock(_primitive, offset);

    private void Lock(ILockPrimitive primitive, int offset)
    {
        try
        {
            primitive.LockShared(offset);
        }
        catch (NativeIOException e)
        {
            bool busy = e.Errno is Errno.EAGAIN or Errno.EACCES;
            string message = busy ? $"Failed to lock byte {offset}" : $"Failed to lock byte {offset}: {NativeIOException.Describe(e.Errno)}";
            throw new LockConflictException(message, _filename, offset, fromTest: false, e.Errno);
        }
    }

    private void UnlockByte(int offset)
    {
        try
        {
            _primitive.Unlock(offset);
        }
        catch (NativeIOException e)
        {
            throw new LockConflictException($"Failed to unlock byte {offset}: {NativeIOException.Describe(e.Errno)}", _filename, offset, fromTest: false, e.Errno);
        }
    }

    /// <summary>raw_check_lock_bytes: the first conflicting byte, or null.</summary>
    private LockConflictException? FindConflict(PermissionPair request)
    {
        foreach (var bit in BlockPermissions.Bits(request.Perm))
            if (Test(LockBytes.UnsharedByte(bit), bit, shared: false) is { } conflict) return conflict;
        foreach (var bit in BlockPermissions.Bits(request.Unshared))
            if (Test(LockBytes.HoldByte(bit), bit, shared: true) is { } conflict) return conflict;
        return null;
    }

    /// <summary>
    /// Tests one byte: the conflict (QEMU's "Failed to get [shared] "write" lock", made only
    /// when the test fails), or null. A failed test syscall throws.
    /// </summary>
    private LockConflictException? Test(int offset, BlockPermission bit, bool shared)
    {
        bool conflict;
        try
        {
            conflict = _primitive.IsLockedByOthers(offset);
        }
        catch (NativeIOException e)
        {
            throw new LockConflictException($"{Message()}: {NativeIOException.Describe(e.Errno)}", _filename, offset, fromTest: true, e.Errno);
        }
        return conflict
            ? new LockConflictException(Message(), _filename, offset, fromTest: true) { Detail = (_primitive as IBatchedLockPrimitive)?.Conflict(offset) }
            : null;

        string Message() => shared
            ? $"Failed to get shared \"{BlockPermissions.Name(bit)}\" lock"
            : $"Failed to get \"{BlockPermissions.Name(bit)}\" lock";
    }
}
