using System.Globalization;
using System.Text;

namespace Vdisk;

/// <summary>What <c>check -r</c> may repair (BdrvCheckMode).</summary>
[Flags]
public enum RepairMode
{
    /// <summary>Report only.</summary>
    None = 0,
    /// <summary>Fix leaked clusters.</summary>
    Leaks = 1,
    /// <summary>Fix errors (rebuilding the refcount structure if needed).</summary>
    Errors = 2,
    /// <summary>Both.</summary>
    All = Leaks | Errors,
}

/// <summary>
/// A check that could not run to its end (qemu-img prints <see cref="Exception.Message"/> as an
/// error, then "Check failed: " and the errno's text, and exits 1 without a report).
/// </summary>
public sealed class ImageCheckException(int errno, string message) : IOException(message)
{
    /// <summary>The errno QEMU's check returns.</summary>
    public int Errno { get; } = errno;
}

/// <summary>The result of a consistency check (QEMU's BdrvCheckResult / QAPI ImageCheck) and its two renderings.</summary>
public sealed class ImageCheck
{
    /// <summary>References to clusters whose refcount is too low (data may be corrupted).</summary>
    public long Corruptions { get; set; }
    /// <summary>Clusters whose refcount is higher than their references (wasted space).</summary>
    public long Leaks { get; set; }
    /// <summary>Errors that stopped parts of the check.</summary>
    public long CheckErrors { get; set; }
    /// <summary>Corruptions repaired.</summary>
    public long CorruptionsFixed { get; set; }
    /// <summary>Leaks repaired.</summary>
    public long LeaksFixed { get; set; }
    /// <summary>One past the last used host byte, rounded to clusters.</summary>
    public long ImageEndOffset { get; set; }
    /// <summary>Guest clusters of the virtual disk.</summary>
    public long TotalClusters { get; set; }
    /// <summary>Guest clusters with a host cluster.</summary>
    public long AllocatedClusters { get; set; }
    /// <summary>Allocated guest clusters not placed right after the previous one.</summary>
    public long FragmentedClusters { get; set; }
    /// <summary>Compressed guest clusters.</summary>
    public long CompressedClusters { get; set; }

    /// <summary>A copy.</summary>
    public ImageCheck Clone() => (ImageCheck)MemberwiseClone();

    /// <summary>qemu-img check's exit status: 2 corrupted, 3 leaks only, 0 clean.</summary>
    public int ExitCode => Corruptions > 0 ? 2 : Leaks > 0 ? 3 : 0;

    /// <summary>dump_human_image_check.</summary>
    public string ToHuman()
    {
        var sb = new StringBuilder();
        if (Corruptions == 0 && Leaks == 0 && CheckErrors == 0)
        {
            sb.Append("No errors were found on the image.\n");
        }
        else
        {
            if (Corruptions > 0)
                sb.Append(CultureInfo.InvariantCulture, $"\n{Corruptions} errors were found on the image.\nData may be corrupted, or further writes to the image may corrupt it.\n");
            if (Leaks > 0)
                sb.Append(CultureInfo.InvariantCulture, $"\n{Leaks} leaked clusters were found on the image.\nThis means waste of disk space, but no harm to data.\n");
            if (CheckErrors > 0)
                sb.Append(CultureInfo.InvariantCulture, $"\n{CheckErrors} internal errors have occurred during the check.\n");
        }
        if (TotalClusters != 0 && AllocatedClusters != 0)
        {
            sb.Append(string.Format(CultureInfo.InvariantCulture, "{0}/{1} = {2:F2}% allocated, {3:F2}% fragmented, {4:F2}% compressed clusters\n",
                AllocatedClusters, TotalClusters, AllocatedClusters * 100.0 / TotalClusters,
                FragmentedClusters * 100.0 / AllocatedClusters, CompressedClusters * 100.0 / AllocatedClusters));
        }
        if (ImageEndOffset != 0) sb.Append(CultureInfo.InvariantCulture, $"Image end offset: {ImageEndOffset}\n");
        return sb.ToString();
    }

    /// <summary>The repair summary qemu-img prints before double checking.</summary>
    public string RepairSummary() => string.Format(CultureInfo.InvariantCulture,
        "The following inconsistencies were found and repaired:\n\n    {0} leaked clusters\n    {1} corruptions\n\nDouble checking the fixed image now...\n",
        LeaksFixed, CorruptionsFixed);

    /// <summary>QAPI ImageCheck as qemu-img prints it (optional members only when non-zero).</summary>
    public string ToJson(string filename, string format)
    {
        var o = new Output.QemuJsonObject().Add("filename", filename).Add("format", format).Add("check-errors", CheckErrors);
        if (ImageEndOffset != 0) o.Add("image-end-offset", ImageEndOffset);
        if (Corruptions != 0) o.Add("corruptions", Corruptions);
        if (Leaks != 0) o.Add("leaks", Leaks);
        if (CorruptionsFixed != 0) o.Add("corruptions-fixed", CorruptionsFixed);
        if (LeaksFixed != 0) o.Add("leaks-fixed", LeaksFixed);
        if (TotalClusters != 0) o.Add("total-clusters", TotalClusters);
        if (AllocatedClusters != 0) o.Add("allocated-clusters", AllocatedClusters);
        if (FragmentedClusters != 0) o.Add("fragmented-clusters", FragmentedClusters);
        if (CompressedClusters != 0) o.Add("compressed-clusters", CompressedClusters);
        return o.ToPrettyJson();
    }
}
