using System.Globalization;
using System.Text;

namespace Vdisk.Drivers.Vmdk;

/// <summary>One extent line of a descriptor: access, size, type, file name and (flat) start sector.</summary>
/// <param name="Sectors">Size in 512-byte sectors.</param>
/// <param name="Type">FLAT, SPARSE, VMFS, VMFSSPARSE or SESPARSE.</param>
/// <param name="FileName">The file name as written (relative to the descriptor's directory unless absolute).</param>
/// <param name="FlatStartSector">Where a flat extent's data starts in its file, in sectors (0 for others).</param>
public sealed record VmdkExtentLine(long Sectors, string Type, string FileName, long FlatStartSector)
{
    /// <summary>True for extents whose file holds the guest bytes as they are (FLAT, VMFS).</summary>
    public bool IsFlat => Type is "FLAT" or "VMFS";
}

/// <summary>
/// The text descriptor of a VMDK image, read the way QEMU 7.2's vmdk driver reads it: not as a
/// grammar but with strstr/sscanf, so a key is found wherever its name first occurs and a line
/// is an extent when sscanf says so. The quirks are kept on purpose (a <c>CID</c> found inside
/// <c>parentCID</c>, an extent line read twice after a blank line, RDONLY and ZERO extents
/// skipped): vdisk must open the same images as QEMU, with the same sizes.
/// </summary>
public static class VmdkDescriptor
{
    /// <summary>DESC_SIZE: the descriptor area QEMU reads for CIDs and the parent hint (20 sectors).</summary>
    public const int DescriptorAreaSize = 20 * 512;

    /// <summary>How much of a descriptor file QEMU reads to parse it (vmdk_read_desc).</summary>
    public const int MaxDescriptorFileBytes = (1 << 20) - 1;

    /// <summary>The create types QEMU opens from a descriptor file (monolithicSparse and streamOptimized embed theirs).</summary>
    public static readonly IReadOnlySet<string> DescriptorCreateTypes = new HashSet<string>(StringComparer.Ordinal)
    {
        "monolithicFlat", "vmfs", "vmfsSparse", "seSparse", "twoGbMaxExtentSparse", "twoGbMaxExtentFlat",
    };

    /// <summary>The text up to the first NUL, as C string functions see a buffer.</summary>
    public static string CString(ReadOnlySpan<byte> buffer)
    {
        int nul = buffer.IndexOf((byte)0);
        return Encoding.Latin1.GetString(nul < 0 ? buffer : buffer[..nul]);
    }

    /// <summary>
    /// vmdk_probe: the VMDK3/VMDK4 magic, or a text whose first line that is neither a comment
    /// nor blank is exactly <c>version=1</c>, <c>version=2</c> or <c>version=3</c>.
    /// </summary>
    public static bool Probe(ReadOnlySpan<byte> buffer)
    {
        if (buffer.Length < 4) return false;
        uint magic = System.Buffers.Binary.BinaryPrimitives.ReadUInt32BigEndian(buffer);
        if (magic is VmdkSparseHeader.Vmdk3Magic or VmdkSparseHeader.Vmdk4Magic) return true;
        int p = 0, end = buffer.Length;
        while (p < end)
        {
            if (buffer[p] == '#')
            {
                while (p < end && buffer[p] != '\n') p++;
                p++;
                continue;
            }
            if (buffer[p] == ' ')
            {
                while (p < end && buffer[p] == ' ') p++;
                if (p < end && buffer[p] == '\r') p++;
                // Only blank lines may come before the version line.
                if (p == end || buffer[p] != '\n') return false;
                p++;
                continue;
            }
            var rest = buffer[p..];
            foreach (char v in "123")
            {
                if (rest.StartsWith(Encoding.ASCII.GetBytes($"version={v}\n"))) return true;
                if (rest.StartsWith(Encoding.ASCII.GetBytes($"version={v}\r\n"))) return true;
            }
            return false;
        }
        return false;
    }

    /// <summary>
    /// vmdk_parse_description: the quoted value after the first occurrence of
    /// <paramref name="name"/> (two characters, normally <c>="</c>, are skipped), or null.
    /// </summary>
    public static string? FindQuoted(string desc, string name, int bufferSize = 128)
    {
        int pos = desc.IndexOf(name, StringComparison.Ordinal);
        if (pos < 0) return null;
        int start = pos + name.Length + 2;
        if (start >= desc.Length) return null;
        int stop = desc.IndexOf('"', start);
        if (stop < 0 || bufferSize < stop - start + 1) return null;
        return desc[start..stop];
    }

    /// <summary>
    /// vmdk_read_cid: the hexadecimal number after the first occurrence of <c>CID</c> (or
    /// <c>parentCID</c>) and one more character, or null when there is none.
    /// </summary>
    public static uint? ReadCid(string desc, bool parent)
    {
        string name = parent ? "parentCID" : "CID";
        int pos = desc.IndexOf(name, StringComparison.Ordinal);
        if (pos < 0) return null;
        int p = pos + name.Length + 1;
        if (p > desc.Length) return null;
        return ScanHex32(desc, p);
    }

    /// <summary>sscanf's <c>%x</c> into a uint32_t: spaces, a sign, an optional 0x, hex digits.</summary>
    private static uint? ScanHex32(string s, int p)
    {
        while (p < s.Length && IsCSpace(s[p])) p++;
        bool negative = false;
        if (p < s.Length && (s[p] == '+' || s[p] == '-'))
        {
            negative = s[p] == '-';
            p++;
        }
        if (p + 1 < s.Length && s[p] == '0' && (s[p + 1] == 'x' || s[p + 1] == 'X') && p + 2 < s.Length && Uri.IsHexDigit(s[p + 2])) p += 2;
        int start = p;
        ulong value = 0;
        bool overflow = false;
        while (p < s.Length && Uri.IsHexDigit(s[p]))
        {
            ulong digit = (ulong)Convert.ToInt32(s[p].ToString(), 16);
            if (value > (ulong.MaxValue - digit) / 16) overflow = true;
            else value = value * 16 + digit;
            p++;
        }
        if (p == start) return null;
        if (overflow) value = ulong.MaxValue;
        if (negative) value = unchecked(0 - value);
        return unchecked((uint)value);
    }

    /// <summary>
    /// vmdk_parent_open: the name between <c>parentFileNameHint="</c> and the next quote; null
    /// when the key is absent. Throws when the closing quote is missing or the name too long.
    /// </summary>
    public static string? ReadParentHint(string desc)
    {
        const string key = "parentFileNameHint";
        int pos = desc.IndexOf(key, StringComparison.Ordinal);
        if (pos < 0) return null;
        int start = pos + key.Length + 2;
        int stop = start <= desc.Length ? desc.IndexOf('"', Math.Min(start, desc.Length)) : -1;
        if (stop < 0 || stop - start > 4095) throw new FormatException("bad parentFileNameHint");
        return desc[start..stop];
    }

    /// <summary>The outcome of reading one line as an extent.</summary>
    public enum LineKind
    {
        /// <summary>Not an extent QEMU uses (comments, other keys, RDONLY/NOACCESS, unknown types, non-positive sizes).</summary>
        Skipped,
        /// <summary>An extent.</summary>
        Extent,
        /// <summary>A RW line whose fields do not fit its type ("Invalid extent line").</summary>
        Invalid,
    }

    /// <summary>
    /// vmdk_parse_extents: every line that sscanf reads as <c>RW SECTORS TYPE "FILE" [OFFSET]</c>.
    /// Throws <see cref="VmdkFormatException"/> "Invalid extent line: ..." for a RW line whose
    /// fields do not fit its type.
    /// </summary>
    public static List<VmdkExtentLine> ParseExtents(string desc)
    {
        var list = new List<VmdkExtentLine>();
        int p = 0;
        while (p < desc.Length)
        {
            var kind = ReadExtentLine(desc, p, out var line);
            if (kind == LineKind.Invalid)
            {
                int np = NextLine(desc, p);
                if (np > 0 && desc[np - 1] == '\n') np--;
                throw new VmdkFormatException("Invalid extent line: " + desc[p..np]);
            }
            if (kind == LineKind.Extent) list.Add(line!);
            p = NextLine(desc, p);
        }
        return list;
    }

    private static int NextLine(string s, int p)
    {
        int nl = s.IndexOf('\n', p);
        return nl < 0 ? s.Length : nl + 1;
    }

    /// <summary>The sscanf of one extent line and QEMU's checks on its fields.</summary>
    public static LineKind ReadExtentLine(string desc, int p, out VmdkExtentLine? line)
    {
        line = null;
        // sscanf(p, "%10s %lld %10s \"%511[^\n\r\"]\" %lld", access, &sectors, type, fname, &flat_offset)
        var scan = new Scanner(desc, p);
        int matches = 0;
        string? access = scan.Word(10);
        long sectors = 0, flatOffset = -1;
        string? type = null, fname = null;
        if (access is not null)
        {
            matches++;
            if (scan.Integer() is long s)
            {
                sectors = s;
                matches++;
                if ((type = scan.Word(10)) is not null)
                {
                    matches++;
                    scan.SkipSpace();
                    if (scan.Literal('"') && (fname = scan.CharsNotIn(511, "\n\r\"")) is not null)
                    {
                        matches++;
                        if (scan.Literal('"'))
                        {
                            if (scan.Integer() is long o)
                            {
                                flatOffset = o;
                                matches++;
                            }
                        }
                    }
                }
            }
        }
        if (matches < 4 || access != "RW") return LineKind.Skipped;
        switch (type)
        {
            case "FLAT":
                if (matches != 5 || flatOffset < 0) return LineKind.Invalid;
                break;
            case "VMFS":
                if (matches != 4) return LineKind.Invalid;
                flatOffset = 0;
                break;
            default:
                if (matches != 4) return LineKind.Invalid;
                break;
        }
        if (sectors <= 0 || type is not ("FLAT" or "SPARSE" or "VMFS" or "VMFSSPARSE" or "SESPARSE")) return LineKind.Skipped;
        line = new VmdkExtentLine(sectors, type!, fname!, flatOffset < 0 ? 0 : flatOffset);
        return LineKind.Extent;
    }

    /// <summary>isspace in the C locale.</summary>
    private static bool IsCSpace(char c) => c is ' ' or '\t' or '\n' or '\v' or '\f' or '\r';

    /// <summary>Just enough of sscanf's directives for the extent line, with its whitespace rules.</summary>
    private ref struct Scanner(string s, int p)
    {
        private int _p = p;

        public void SkipSpace()
        {
            while (_p < s.Length && IsCSpace(s[_p])) _p++;
        }

        /// <summary>%Ns: skips white space, then up to <paramref name="max"/> non-space characters (at least one).</summary>
        public string? Word(int max)
        {
            SkipSpace();
            int start = _p;
            while (_p < s.Length && _p - start < max && !IsCSpace(s[_p]) && s[_p] != '\0') _p++;
            return _p == start ? null : s[start.._p];
        }

        /// <summary>%lld: skips white space, optional sign, decimal digits (saturating like strtoll).</summary>
        public long? Integer()
        {
            SkipSpace();
            int q = _p;
            bool negative = false;
            if (q < s.Length && (s[q] == '+' || s[q] == '-'))
            {
                negative = s[q] == '-';
                q++;
            }
            int digits = q;
            long value = 0;
            bool overflow = false;
            while (q < s.Length && s[q] is >= '0' and <= '9')
            {
                int d = s[q] - '0';
                if (value > (long.MaxValue - d) / 10) overflow = true;
                else value = value * 10 + d;
                q++;
            }
            if (q == digits) return null;
            _p = q;
            if (overflow) return negative ? long.MinValue : long.MaxValue;
            return negative ? -value : value;
        }

        public bool Literal(char c)
        {
            if (_p < s.Length && s[_p] == c)
            {
                _p++;
                return true;
            }
            return false;
        }

        /// <summary>%N[^set]: one to <paramref name="max"/> characters not in <paramref name="set"/>.</summary>
        public string? CharsNotIn(int max, string set)
        {
            int start = _p;
            while (_p < s.Length && _p - start < max && set.IndexOf(s[_p]) < 0 && s[_p] != '\0') _p++;
            return _p == start ? null : s[start.._p];
        }
    }

    /// <summary>
    /// vmdk_write_cid: the descriptor area with the number after the first <c>CID</c> replaced
    /// by <paramref name="cid"/> (lower-case hex) and the text from <c>parentCID</c> on appended
    /// after it; everything between them is dropped, as in QEMU. Null when there is no
    /// <c>parentCID</c> (QEMU fails the write with EINVAL). <paramref name="areaSize"/> is the
    /// buffer QEMU works in: the 10 KiB area of an embedded descriptor, or a descriptor file's
    /// whole sectors.
    /// </summary>
    public static byte[]? WithCid(ReadOnlySpan<byte> area, uint cid, int areaSize = DescriptorAreaSize)
    {
        var desc = new byte[areaSize];
        area[..Math.Min(area.Length, areaSize - 1)].CopyTo(desc);
        string text = CString(desc);
        int parent = text.IndexOf("parentCID", StringComparison.Ordinal);
        if (parent < 0) return null;
        string tail = text[parent..];
        int pos = text.IndexOf("CID", StringComparison.Ordinal);
        if (pos < 0) return desc;
        int at = pos + "CID".Length + 1;
        // snprintf and pstrcat write a NUL-terminated string and stop one byte short of the
        // buffer's end; bytes after the new terminator keep their old contents, as in QEMU.
        var bytes = Encoding.Latin1.GetBytes(cid.ToString("x", CultureInfo.InvariantCulture) + "\n" + tail);
        int n = Math.Min(bytes.Length, areaSize - 1 - at);
        bytes.AsSpan(0, n).CopyTo(desc.AsSpan(at));
        desc[at + n] = 0;
        return desc;
    }
}

/// <summary>A VMDK image whose descriptor or headers QEMU refuses; the message is QEMU's.</summary>
public sealed class VmdkFormatException(string message) : IOException(message);
