using System.Runtime.CompilerServices;
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

    [Fact]
    public void StatxBufferIs256Bytes() => Assert.Equal(256, Unsafe.SizeOf<StatXBuffer>());
}
