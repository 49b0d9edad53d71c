using System.Globalization;
using System.Text;
using Vdisk.Output;

namespace Vdisk.Cli.Img;

/// <summary>qemu-img check's outputs for a check result: human text, JSON, repair summary, exit status.</summary>
internal static class ImageCheckText
{
    /// <summary>qemu-img check's exit status: 2 corrupted, 3 leaks only, 0 clean.</summary>
    public static int ExitCode(ImageCheck check) => check.Corruptions > 0 ? 2 : check.Leaks > 0 ? 3 : 0;

    /// <summary>dump_human_image_check.</summary>
    public static string Human(ImageCheck check)
    {
        var sb = new StringBuilder();
        if (check.Corruptions == 0 && check.Leaks == 0 && check.CheckErrors == 0)
        {
            sb.Append("No errors were found on the image.\n");
        }
        else
        {
            if (check.Corruptions > 0)
                sb.Append(CultureInfo.InvariantCulture, $"\n{check.Corruptions} errors were found on the image.\nData may be corrupted, or further writes to the image may corrupt it.\n");
            if (check.Leaks > 0)
                sb.Append(CultureInfo.InvariantCulture, $"\n{check.Leaks} leaked clusters were found on the image.\nThis means waste of disk space, but no harm to data.\n");
            if (check.CheckErrors > 0)
                sb.Append(CultureInfo.InvariantCulture, $"\n{check.CheckErrors} internal errors have occurred during the check.\n");
        }
        if (check.TotalClusters != 0 && check.AllocatedClusters != 0)
        {
            sb.Append(string.Format(CultureInfo.InvariantCulture, "{0}/{1} = {2:F2}% allocated, {3:F2}% fragmented, {4:F2}% compressed clusters\n",
                check.AllocatedClusters, check.TotalClusters, check.AllocatedClusters * 100.0 / check.TotalClusters,
                check.FragmentedClusters * 100.0 / check.AllocatedClusters, check.CompressedClusters * 100.0 / check.AllocatedClusters));
        }
        if (check.ImageEndOffset != 0) sb.Append(CultureInfo.InvariantCulture, $"Image end offset: {check.ImageEndOffset}\n");
        return sb.ToString();
    }

    /// <summary>The repair summary qemu-img prints before double checking.</summary>
    public static string RepairSummary(ImageCheck check) => string.Format(CultureInfo.InvariantCulture,
        "The following inconsistencies were found and repaired:\n\n    {0} leaked clusters\n    {1} corruptions\n\nDouble checking the fixed image now...\n",
        check.LeaksFixed, check.CorruptionsFixed);

    /// <summary>QAPI ImageCheck as qemu-img prints it (optional members only when non-zero).</summary>
    public static string Json(ImageCheck check, string filename, string format)
    {
        var o = new QemuJsonObject().Add("filename", filename).Add("format", format).Add("check-errors", check.CheckErrors);
        if (check.ImageEndOffset != 0) o.Add("image-end-offset", check.ImageEndOffset);
        if (check.Corruptions != 0) o.Add("corruptions", check.Corruptions);
        if (check.Leaks != 0) o.Add("leaks", check.Leaks);
        if (check.CorruptionsFixed != 0) o.Add("corruptions-fixed", check.CorruptionsFixed);
        if (check.LeaksFixed != 0) o.Add("leaks-fixed", check.LeaksFixed);
        if (check.TotalClusters != 0) o.Add("total-clusters", check.TotalClusters);
        if (check.AllocatedClusters != 0) o.Add("allocated-clusters", check.AllocatedClusters);
        if (check.FragmentedClusters != 0) o.Add("fragmented-clusters", check.FragmentedClusters);
        if (check.CompressedClusters != 0) o.Add("compressed-clusters", check.CompressedClusters);
        return o.ToPrettyJson();
    }
}
