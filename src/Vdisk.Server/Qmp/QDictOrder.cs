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
    public static IEnumerable<KeyValuePair<string, OptionValue>> Entries(OptionDict dict)
    {
        var entries = dict.Entries;
        if (entries.Count <= 1) return entries;
        var order = new (int Bucket, int Index)[entries.Count];
        for (int i = 0; i < entries.Count; i++) order[i] = (Bucket(entries[i].Key), i);
        // Same bucket: the later insertion comes first (entries are prepended to their bucket).
        Array.Sort(order, static (a, b) => a.Bucket != b.Bucket ? a.Bucket.CompareTo(b.Bucket) : b.Index.CompareTo(a.Index));
        return order.Select(o => entries[o.Index]);
    }
}
