using System.Globalization;
using System.Text;

namespace Vdisk.Locking.Cluster;

/// <summary>
/// The etcd key layout, QEMU's lock bytes turned into keys: while a holder has byte
/// <c>100+i</c> or <c>200+i</c> locked, the key <c>PREFIX locks/LOCK-ID/BYTE/HOLDER</c> exists,
/// attached to the holder's lease. Testing a byte for others is a range read of
/// <c>PREFIX locks/LOCK-ID/</c> that looks for keys of that byte with another holder. Pure.
/// </summary>
public static class ClusterKeys
{
    /// <summary>The prefix under which every image's keys live: <c>PREFIX locks/</c>.</summary>
    public static string AllImages(string keyPrefix) => keyPrefix + "locks/";

    /// <summary>The prefix of one image's keys: <c>PREFIX locks/LOCK-ID/</c> (the trailing slash keeps <c>vm4</c> apart from <c>vm42</c>).</summary>
    public static string Image(string keyPrefix, string lockId) => AllImages(keyPrefix) + lockId + "/";

    /// <summary>The key standing for <paramref name="holder"/>'s lock on <paramref name="offset"/>.</summary>
    public static string Byte(string keyPrefix, string lockId, int offset, string holder) =>
        Image(keyPrefix, lockId) + offset.ToString(CultureInfo.InvariantCulture) + "/" + holder;

    /// <summary>Splits a key of <see cref="Byte"/>'s shape; null for any other key.</summary>
    public static (string LockId, int Offset, string Holder)? Parse(string keyPrefix, string key)
    {
        string all = AllImages(keyPrefix);
        if (!key.StartsWith(all, StringComparison.Ordinal)) return null;
        var parts = key[all.Length..].Split('/');
        if (parts.Length != 3 || parts[0].Length == 0 || parts[2].Length == 0) return null;
        if (!int.TryParse(parts[1], NumberStyles.None, CultureInfo.InvariantCulture, out int offset)) return null;
        return (parts[0], offset, parts[2]);
    }

    /// <summary>etcd's range end for "every key starting with <paramref name="prefix"/>": the prefix with its last byte incremented.</summary>
    public static byte[] RangeEnd(string prefix)
    {
        var bytes = Encoding.UTF8.GetBytes(prefix);
        for (int i = bytes.Length - 1; i >= 0; i--)
        {
            if (bytes[i] < 0xff)
            {
                bytes[i]++;
                return bytes[..(i + 1)];
            }
        }
        return [0]; // every key
    }
}
