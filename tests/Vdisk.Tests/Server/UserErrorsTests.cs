using Vdisk.Graph;
using Vdisk.Locking;
using Vdisk.Native;
using Vdisk.Options;
using Vdisk.Server.Daemon;
using Xunit;

namespace Vdisk.Tests.Server;

/// <summary>The one list of expected failures that both the CLI and the daemon print as one line.</summary>
public class UserErrorsTests
{
    public static TheoryData<Exception> Expected() =>
    [
        new OptionException("Parameter 'offset' expects a number"),
        new NativeIOException(Errno.ENOENT, "Could not open 'x.img': No such file or directory"),
        new LockConflictException("Failed to get \"write\" lock", "x.img", 201, fromTest: true),
        new PermissionConflictException("Conflicts with use by a user of node 'x' as 'root'"),
        new IOException("Image is corrupt"),
        new UnauthorizedAccessException("Could not open 'x.img': Permission denied"),
        new DaemonException("Node r0 is in use"),
    ];

    [Theory]
    [MemberData(nameof(Expected))]
    public void ExpectedFailures_AreTheirMessage(Exception e) => Assert.Equal(e.Message, UserErrors.Message(e));

    [Fact]
    public void Bugs_AreNotUserErrors()
    {
        Assert.Null(UserErrors.Message(new InvalidOperationException("bug")));
        Assert.Null(UserErrors.Message(new NullReferenceException()));
        Assert.Null(UserErrors.Message(new OperationCanceledException()));
    }
}
