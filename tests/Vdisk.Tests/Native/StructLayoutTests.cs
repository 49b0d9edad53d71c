using System.Diagnostics;
using Vdisk.Native;
using Xunit;

namespace Vdisk.Tests.Native;

public class StructLayoutTests
{
    [Fact]
    public unsafe void FlockMatchesLinuxLayout()
    {
        Assert.Equal(32, sizeof(Flock));
        var f = new Flock();
        byte* b = (byte*)&f;
        Assert.Equal(0, (byte*)&f.Type - b);
        Assert.Equal(2, (byte*)&f.Whence - b);
        Assert.Equal(8, (byte*)&f.Start - b);
        Assert.Equal(16, (byte*)&f.Length - b);
        Assert.Equal(24, (byte*)&f.Pid - b);
    }

    /// <summary>
    /// Every field vdisk reads from <c>struct statx</c> agrees with coreutils stat(1) for a regular
    /// file with two links and for a character device, so each one sits at its kernel offset.
    /// </summary>
    [Fact]
    public unsafe void Statx_fields_agree_with_coreutils_stat()
    {
        var dir = Directory.CreateTempSubdirectory("vdisk-statx-");
        try
        {
            string file = Path.Combine(dir.FullName, "f");
            File.WriteAllBytes(file, new byte[12345]);
            File.SetUnixFileMode(file, (UnixFileMode)0b110_100_000); // 0640
            Assert.Equal(0, Run("ln", file, Path.Combine(dir.FullName, "g")).ExitCode);
            foreach (string path in new[] { file, "/dev/null" })
            {
                StatXBuffer st;
                Assert.Equal(0, LibC.StatX(path, 0, &st));
                var (exit, stdout) = Run("stat", "-c", "%i %s %f %h %b %o %Hd %Ld %Hr %Lr", path);
                Assert.Equal(0, exit);
                Assert.Equal(stdout.Trim(),
                    $"{st.Inode} {st.Size} {st.Mode:x} {st.NLink} {st.Blocks} {st.BlockSize} {st.DevMajor} {st.DevMinor} {st.RdevMajor} {st.RdevMinor}");
                Assert.Equal(LibC.STATX_BASIC_STATS, st.Mask & LibC.STATX_BASIC_STATS);
            }
        }
        finally
        {
            dir.Delete(recursive: true);
        }
    }

    private static (int ExitCode, string Stdout) Run(string program, params string[] args)
    {
        var psi = new ProcessStartInfo(program) { RedirectStandardOutput = true, UseShellExecute = false };
        foreach (var a in args) psi.ArgumentList.Add(a);
        using var p = Process.Start(psi)!;
        string stdout = p.StandardOutput.ReadToEnd();
        p.WaitForExit();
        return (p.ExitCode, stdout);
    }
}
