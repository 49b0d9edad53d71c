using System.Text;
using Vdisk.Options;

namespace Vdisk.Server.Qmp;

/// <summary>
/// The order in which QEMU prints the keys of a JSON object. QEMU keeps objects in a QDict, a
/// hash table of 512 buckets whose iteration goes bucket by bucket and, within a bucket, from
/// the newest entry; its JSON output follows that order. Reproducing it makes vdisk's replies
/// byte-identical to qemu-storage-daemon's (<c>{"micro": 22, "minor": 2, "major": 7}</c>,
/// <c>{"id": 1, "error": ...}</c> but <c>{"return": {}, "id": 1}</c>).
/// </summary>
public static class QDictOrder
{
    private const int Buckets = 512;

    /// <summary>QEMU's tdb_hash of a key, modulo the bucket count.</summary>
    public static int Bucket(string key)
    {
        int count = Encoding.UTF8.GetByteCount(key);
        Span<byte> bytes = count <= 256 ? stackalloc byte[count] : new byte[count];
        Encoding.UTF8.GetBytes(key, bytes);
        uint value = unchecked(0x238F13AFu * (uint)bytes.Length);
        for (int i = 0; i < bytes.Length; i++) value = unchecked(value + ((uint)bytes[i] << (i * 5 % 24)));
        return (int)(unchecked(1103515243u * value + 12345u) % Buckets);
    }

    /// <summary>The entries of <paramref name="dict"/> in the order QEMU would print them.</summary>
    public static KeyValuePair<string, OptionValue>[] Entries(OptionDict dict)
    {
        var entries = dict.Entries;
        if (entries.Count <= 1) return entries.ToArray();
        int n = entries.Count;
        var buckets = new int[n];
        for (int i = 0; i < n; i++) buckets[i] = Bucket(entries[i].Key);
        // Same bucket: the later insertion comes first (entries are prepended to their bucket).
        // An insertion sort by hand: objects are small, and a generic sort with a comparison over
        // tuples costs every daemon start its first-use faults.
        var ordered = new KeyValuePair<string, OptionValue>[n];
        var order = new int[n];
        for (int i = 0; i < n; i++)
        {
            int j = i - 1;
            while (j >= 0 && (buckets[order[j]] > buckets[i] || (buckets[order[j]] == buckets[i] && order[j] < i)))
            {
                order[j + 1] = order[j];
                j--;
            }
            order[j + 1] = i;
        }
        for (int i = 0; i < n; i++) ordered[i] = entries[order[i]];
        return ordered;
    }
}
