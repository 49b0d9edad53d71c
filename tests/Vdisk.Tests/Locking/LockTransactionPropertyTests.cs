using CsCheck;
using Vdisk.Locking;
using Vdisk.Permissions;
using Xunit;
using P = Vdisk.Permissions.BlockPermission;

namespace Vdisk.Tests.Locking;

/// <summary>
/// Any sequence of permission changes by several openers of one file (OFD semantics): whatever
/// succeeds leaves every pair of openers compatible, every opener's lock bytes exactly match its
/// committed request, and a refused change leaves the refused opener's bytes untouched.
/// </summary>
public class LockTransactionPropertyTests
{
    private static readonly Gen<PermissionPair> GenPair =
        Gen.Select(Gen.Int[0, 15], Gen.Int[0, 15], (p, s) => new PermissionPair((P)p, (P)s));

    private static int[] ExpectedBytes(PermissionPair p)
    {
        var bytes = new List<int>();
        foreach (var bit in BlockPermissions.Bits(p.Perm)) bytes.Add(LockBytes.HoldByte(bit));
        foreach (var bit in BlockPermissions.Bits(p.Unshared)) bytes.Add(LockBytes.UnsharedByte(bit));
        return bytes.Order().ToArray();
    }

    [Fact]
    public void RandomRequestSequences_KeepOpenersCompatibleAndBytesExact()
    {
        Gen.Select(Gen.Int[0, 2], GenPair).Array[1, 30].Sample(steps =>
        {
            var file = new SimulatedFile();
            var owners = Enumerable.Range(0, 3).Select(_ => file.NewOwner()).ToArray();
            var txs = owners.Select(o => new PermissionLockTransaction(o, "img")).ToArray();
            foreach (var (who, request) in steps)
            {
                var before = owners[who].Held;
                try
                {
                    txs[who].Prepare(request);
                    txs[who].Commit(request);
                }
                catch (LockConflictException)
                {
                    Assert.Equal(before, owners[who].Held);
                }
                for (int i = 0; i < 3; i++)
                {
                    Assert.Equal(ExpectedBytes(txs[i].Committed), owners[i].Held);
                    for (int j = 0; j < 3; j++)
                    {
                        if (i == j) continue;
                        Assert.Equal(P.None, txs[i].Committed.Perm & ~txs[j].Committed.Shared);
                    }
                }
            }
        });
    }

    [Fact]
    public void RequestThatConflicts_IsAlwaysRefused()
    {
        Gen.Select(GenPair, GenPair).Sample((first, second) =>
        {
            var file = new SimulatedFile();
            var a = new PermissionLockTransaction(file.NewOwner(), "img");
            a.Prepare(first);
            a.Commit(first);
            var b = new PermissionLockTransaction(file.NewOwner(), "img");
            bool compatible = (first.Perm & ~second.Shared) == 0 && (second.Perm & ~first.Shared) == 0;
            bool admitted;
            try
            {
                b.Prepare(second);
                admitted = true;
            }
            catch (LockConflictException)
            {
                admitted = false;
            }
            Assert.Equal(compatible || (second.Perm == P.None && second.Shared == P.All), admitted);
        });
    }
}
