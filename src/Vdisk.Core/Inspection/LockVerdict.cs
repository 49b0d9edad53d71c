using Vdisk.Locking;
using Vdisk.Native;
using Vdisk.Permissions;

namespace Vdisk.Inspection;

/// <summary>Which step of QEMU's lock transaction a request fails at.</summary>
public enum LockFailureKind
{
    /// <summary>The request is admitted.</summary>
    None,
    /// <summary>Testing byte 200+i: someone refuses to share a permission the request takes (<c>Failed to get "X" lock</c>).</summary>
    RefusedPermission,
    /// <summary>Testing byte 100+i: someone holds a permission the request refuses to share (<c>Failed to get shared "X" lock</c>).</summary>
    HeldPermission,
    /// <summary>Taking the read lock itself: someone holds an exclusive lock on the byte (<c>Failed to lock byte N</c>).</summary>
    ExclusiveLock,
}

/// <summary>
/// Whether an open with a given request would get its locks past the current holders, and if
/// not, who stops it, why, and the exact error QEMU would print.
/// </summary>
public sealed class LockVerdict
{
    private LockVerdict(PermissionPair request, LockFailureKind failure, string? error, int? offset, IReadOnlyList<LockHolder> blockers)
    {
        Request = request;
        Failure = failure;
        Error = error;
        Offset = offset;
        Blockers = blockers;
    }

    /// <summary>The request on the image file that was judged.</summary>
    public PermissionPair Request { get; }

    /// <summary>True when the open would succeed as far as locks go.</summary>
    public bool Admitted => Failure == LockFailureKind.None;

    /// <summary>The step that fails, or <see cref="LockFailureKind.None"/>.</summary>
    public LockFailureKind Failure { get; }

    /// <summary>QEMU's message, e.g. <c>Failed to get "write" lock</c>; null when admitted.</summary>
    public string? Error { get; }

    /// <summary>The lock byte whose test (or lock) fails; null when admitted.</summary>
    public int? Offset { get; }

    /// <summary>The permission that byte stands for, or <see cref="BlockPermission.None"/>.</summary>
    public BlockPermission Permission => Offset is { } o && LockBytes.Decode(o) is { } d ? d.Permission : BlockPermission.None;

    /// <summary>Every holder whose lock covers <see cref="Offset"/>, the first named in <see cref="Reason"/>.</summary>
    public IReadOnlyList<LockHolder> Blockers { get; }

    /// <summary>One sentence: who blocks the request and why, or why nothing does.</summary>
    public string Reason
    {
        get
        {
            if (Admitted)
            {
                return Request.Perm == BlockPermission.None && Request.Unshared == BlockPermission.None
                    ? "It takes no permission and refuses none, so it tests no lock byte."
                    : "No holder refuses a permission it takes or holds one it refuses to share.";
            }
            string who = Blockers.Count switch
            {
                0 => "Someone",
                1 => Blockers[0].Describe(),
                2 => $"{Blockers[0].Describe()} and one other holder",
                _ => $"{Blockers[0].Describe()} and {Blockers.Count - 1} other holders",
            };
            string name = BlockPermissions.Name(Permission);
            return Failure switch
            {
                LockFailureKind.RefusedPermission => $"{Capitalize(who)} refuses to share \"{name}\" (lock byte {Offset}), which this open takes.",
                LockFailureKind.HeldPermission => $"{Capitalize(who)} holds \"{name}\" (lock byte {Offset}), which this open refuses to share.",
                _ => $"{Capitalize(who)} holds an exclusive lock over byte {Offset}, so this open cannot take its shared lock there.",
            };
        }
    }

    /// <summary>
    /// Judges <paramref name="request"/> against <paramref name="holders"/> by running QEMU's
    /// transaction (<see cref="PermissionLockTransaction"/>: lock the request's bytes, then test
    /// the 200-bytes of what it takes and the 100-bytes of what it refuses, in that order) against
    /// the holders' locks instead of the kernel. Pure.
    /// </summary>
    /// <param name="holders">The image's current holders.</param>
    /// <param name="request">The request on the image file (see <see cref="FileNodeRequests"/>).</param>
    public static LockVerdict Evaluate(IReadOnlyList<LockHolder> holders, PermissionPair request)
    {
        var transaction = new PermissionLockTransaction(new HeldLocksPrimitive(holders), "image");
        try
        {
            transaction.Prepare(request);
            return new LockVerdict(request, LockFailureKind.None, null, null, []);
        }
        catch (LockConflictException e)
        {
            var kind = !e.FromTest ? LockFailureKind.ExclusiveLock
                : e.Offset >= LockBytes.SharedBase ? LockFailureKind.RefusedPermission
                : LockFailureKind.HeldPermission;
            bool exclusiveOnly = kind == LockFailureKind.ExclusiveLock;
            var blockers = holders.Where(h => h.Blocks(e.Offset, exclusiveOnly))
                .OrderBy(h => h.Kind == LockHolderKind.Unknown) // name a known holder first
                .ToList();
            return new LockVerdict(request, kind, e.Message, e.Offset, blockers);
        }
    }

    private static string Capitalize(string s) => s.Length > 0 && char.IsLower(s[0]) ? char.ToUpperInvariant(s[0]) + s[1..] : s;

    /// <summary>The lock bytes as a new opener would find them: read locks never block its read locks, any lock blocks its tests.</summary>
    private sealed class HeldLocksPrimitive(IReadOnlyList<LockHolder> holders) : ILockPrimitive
    {
        public void LockShared(int offset)
        {
            if (holders.Any(h => h.Blocks(offset, exclusiveOnly: true)))
                throw new NativeIOException(Errno.EAGAIN, NativeIOException.Describe(Errno.EAGAIN));
        }

        public void Unlock(int offset) { }

        public bool IsLockedByOthers(int offset) => holders.Any(h => h.Blocks(offset));
    }
}
