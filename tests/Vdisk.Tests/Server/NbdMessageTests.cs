using System.Buffers.Binary;
using System.Text;
using CsCheck;
using Vdisk.Server.Nbd;
using Xunit;

namespace Vdisk.Tests.Server;

/// <summary>Encoding and decoding of NBD messages, checked against the bytes qemu-nbd 7.2 sends.</summary>
public class NbdMessageTests
{
    private static string Hex(ReadOnlySpan<byte> bytes) => Convert.ToHexString(bytes).ToLowerInvariant();

    [Fact]
    public void Greeting_IsQemusNbdMagicIHaveOptAndFlags3()
    {
        var greeting = new byte[NbdGreeting.Length];
        NbdGreeting.Write(greeting);
        Assert.Equal("4e42444d41474943" + "49484156454f5054" + "0003", Hex(greeting));
    }

    [Theory]
    [InlineData(0u, true)]
    [InlineData(1u, true)]
    [InlineData(3u, true)]
    [InlineData(4u, false)]
    [InlineData(0x80000001u, false)]
    public void ClientFlags_OutsideWhatWasOffered_AreRefused(uint flags, bool accepted)
    {
        var data = new byte[4];
        BinaryPrimitives.WriteUInt32BigEndian(data, flags);
        Assert.Equal(accepted, NbdGreeting.TryReadClientFlags(data, out _));
    }

    [Fact]
    public void OptionRequest_RoundTrips_AndBadMagicIsRejected()
    {
        var header = new byte[NbdOptionRequest.HeaderLength];
        new NbdOptionRequest(NbdOption.Go, 42).Write(header);
        Assert.True(NbdOptionRequest.TryRead(header, out var parsed));
        Assert.Equal(new NbdOptionRequest(NbdOption.Go, 42), parsed);
        header[0] ^= 0xff;
        Assert.False(NbdOptionRequest.TryRead(header, out _));
    }

    [Fact]
    public void ErrorReply_CarriesTheMessage()
    {
        var reply = NbdOptionReply.Error((NbdOption)99, NbdOptionReplyType.ErrUnsupported, "Unsupported option 99 (<unknown>)");
        Assert.Equal("0003e889045565a9" + "00000063" + "80000001" + "00000021", Hex(reply.AsSpan(0, 20)));
        Assert.Equal("Unsupported option 99 (<unknown>)", Encoding.UTF8.GetString(reply.AsSpan(20)));
    }

    [Fact]
    public void ServerReply_IsNameLengthNameDescription()
    {
        // qemu-nbd: "\0\0\0\4exp1test export"
        var reply = NbdOptionReply.Server("exp1", "test export");
        Assert.Equal("\0\0\0\u0004exp1test export", Encoding.ASCII.GetString(reply.AsSpan(20)));
        Assert.Equal(2u, BinaryPrimitives.ReadUInt32BigEndian(reply.AsSpan(12)));
    }

    [Fact]
    public void InfoReplies_HaveQemusLayout()
    {
        Assert.Equal("0000" + "0000000004000000" + "0ced",
            Hex(NbdOptionReply.InfoExport(NbdOption.Go, 64 << 20, (NbdTransmissionFlags)0x0ced).AsSpan(20)));
        Assert.Equal("0003" + "00000001" + "00001000" + "02000000",
            Hex(NbdOptionReply.InfoBlockSize(NbdOption.Go, 1, 4096, 32 << 20).AsSpan(20)));
        Assert.Equal("0002" + Hex("hello"u8), Hex(NbdOptionReply.InfoText(NbdOption.Go, NbdInfoType.Description, "hello").AsSpan(20)));
    }

    [Fact]
    public void ExportNameReply_HasZeroesUnlessNegotiatedAway()
    {
        Assert.Equal(134, NbdExportNameReply.Create(1, NbdTransmissionFlags.HasFlags, noZeroes: false).Length);
        Assert.Equal(10, NbdExportNameReply.Create(1, NbdTransmissionFlags.HasFlags, noZeroes: true).Length);
    }

    [Fact]
    public void InfoRequest_RoundTrips() =>
        Gen.String[0, 100].Select(Gen.Enum<NbdInfoType>().Array[0, 5]).Sample((name, infos) =>
        {
            var request = new NbdInfoRequest(name, infos);
            Assert.True(NbdInfoRequest.TryParse(NbdOption.Go, request.ToBytes(), out var parsed, out _));
            Assert.Equal(name, parsed!.ExportName);
            Assert.Equal(infos, parsed.Requested);
        });

    [Theory]
    [InlineData("")]
    [InlineData("0000")]
    [InlineData("00000005616263")]
    [InlineData("00000000" + "0001")]
    [InlineData("00000000" + "0000" + "00")]
    public void InfoRequest_WithInconsistentLengths_IsInvalid(string hex)
    {
        Assert.False(NbdInfoRequest.TryParse(NbdOption.Info, Convert.FromHexString(hex), out _, out string? error));
        Assert.Equal("Inconsistent lengths in option info", error);
    }

    [Fact]
    public void InfoRequest_NameLongerThanTheProtocolAllows_IsRefused()
    {
        var data = new byte[4 + 5000 + 2];
        BinaryPrimitives.WriteUInt32BigEndian(data, 5000);
        Assert.False(NbdInfoRequest.TryParse(NbdOption.Go, data, out _, out string? error));
        Assert.Equal("export name too long", error);
    }

    [Fact]
    public void MetaContextRequest_RoundTrips_AndSelectsWhatTheExportOffers()
    {
        var request = new NbdMetaContextRequest("exp", ["qemu:allocation-depth", "base:allocation"]);
        Assert.True(NbdMetaContextRequest.TryParse(NbdOption.SetMetaContext, request.ToBytes(), out var parsed, out _));
        Assert.Equal(request.Queries, parsed!.Queries);
        Assert.Equal([(0u, "base:allocation")], parsed.Select(listing: false, allocationDepth: false));
        Assert.Equal([(0u, "base:allocation"), (1u, "qemu:allocation-depth")], parsed.Select(listing: false, allocationDepth: true));
    }

    /// <summary>nbd_negotiate_meta_queries: LIST without queries and namespace wildcards select every context; SET needs names.</summary>
    [Theory]
    [InlineData(true, new string[0], false, "base:allocation")]
    [InlineData(true, new string[0], true, "base:allocation,qemu:allocation-depth")]
    [InlineData(true, new[] { "base:" }, true, "base:allocation")]
    [InlineData(false, new[] { "base:" }, false, "")]
    [InlineData(true, new[] { "qemu:" }, false, "")]
    [InlineData(true, new[] { "qemu:" }, true, "qemu:allocation-depth")]
    [InlineData(false, new[] { "qemu:" }, true, "")]
    [InlineData(false, new[] { "qemu:allocation-depth" }, false, "")]
    [InlineData(false, new[] { "qemu:allocation-depth" }, true, "qemu:allocation-depth")]
    [InlineData(false, new[] { "qemu:allocation-depth", "x-foo:bar", "base:allocation" }, true, "base:allocation,qemu:allocation-depth")]
    [InlineData(false, new[] { "x-foo:bar", "base:allocation" }, false, "base:allocation")]
    [InlineData(false, new string[0], true, "")]
    public void MetaContextSelection_FollowsListAndSetRules(bool listing, string[] queries, bool allocationDepth, string expected) =>
        Assert.Equal(expected, string.Join(",", new NbdMetaContextRequest("e", queries).Select(listing, allocationDepth).Select(c => c.Name)));

    /// <summary>nbd_meta_qemu_query: exported bitmaps by exact name, or all of them when LIST asks for "qemu:" or "qemu:dirty-bitmap:"; ids follow the export's order from 2.</summary>
    [Theory]
    [InlineData(true, new string[0], "0:base:allocation,2:qemu:dirty-bitmap:b3,3:qemu:dirty-bitmap:b0")]
    [InlineData(true, new[] { "qemu:" }, "2:qemu:dirty-bitmap:b3,3:qemu:dirty-bitmap:b0")]
    [InlineData(true, new[] { "qemu:dirty-bitmap:" }, "2:qemu:dirty-bitmap:b3,3:qemu:dirty-bitmap:b0")]
    [InlineData(false, new[] { "qemu:dirty-bitmap:" }, "")]
    [InlineData(false, new[] { "qemu:dirty-bitmap:b0" }, "3:qemu:dirty-bitmap:b0")]
    [InlineData(false, new[] { "qemu:dirty-bitmap:b0", "base:allocation", "qemu:dirty-bitmap:nope" }, "0:base:allocation,3:qemu:dirty-bitmap:b0")]
    public void MetaContextSelection_OffersExportedBitmaps(bool listing, string[] queries, string expected) =>
        Assert.Equal(expected, string.Join(",", new NbdMetaContextRequest("e", queries).Select(listing, false, ["b3", "b0"]).Select(c => $"{c.Id}:{c.Name}")));

    [Fact]
    public void MetaContextRequest_WithTrailingBytes_IsInvalid()
    {
        var data = new NbdMetaContextRequest("e", ["base:allocation"]).ToBytes().Append((byte)0).ToArray();
        Assert.False(NbdMetaContextRequest.TryParse(NbdOption.ListMetaContext, data, out _, out string? error));
        Assert.Equal("Inconsistent lengths in option list meta context", error);
    }

    [Fact]
    public void Request_RoundTrips() =>
        Gen.Select(Gen.UShort, Gen.UShort, Gen.ULong, Gen.ULong, Gen.UInt).Sample((flags, type, cookie, offset, length) =>
        {
            var header = new byte[NbdRequest.HeaderLength];
            var request = new NbdRequest((NbdCommandFlags)flags, (NbdCommand)type, cookie, offset, length);
            request.Write(header);
            Assert.Equal("25609513", Hex(header.AsSpan(0, 4)));
            Assert.True(NbdRequest.TryRead(header, out var parsed));
            Assert.Equal(request, parsed);
        });

    [Fact]
    public void Request_WithBadMagic_IsRejected() => Assert.False(NbdRequest.TryRead(new byte[NbdRequest.HeaderLength], out _));

    [Fact]
    public void SimpleReply_Layout()
    {
        var reply = new byte[NbdSimpleReply.HeaderLength];
        NbdSimpleReply.Write(reply, NbdError.Perm, 7);
        Assert.Equal("67446698" + "00000001" + "0000000000000007", Hex(reply));
    }

    [Fact]
    public void StructuredChunks_Layout()
    {
        var data = new byte[NbdStructuredReply.DataPrefixLength];
        NbdStructuredReply.WriteDataPrefix(data, done: false, cookie: 1, offset: 0, dataLength: 65536);
        Assert.Equal("668e33ef" + "0000" + "0001" + "0000000000000001" + "00010008" + "0000000000000000", Hex(data));

        var hole = new byte[NbdStructuredReply.HoleLength];
        NbdStructuredReply.WriteHole(hole, done: true, cookie: 1, offset: 65536, length: 65536);
        Assert.Equal("668e33ef" + "0001" + "0002" + "0000000000000001" + "0000000c" + "0000000000010000" + "00010000", Hex(hole));

        var status = new byte[NbdStructuredReply.BlockStatusLength(2)];
        NbdStructuredReply.WriteBlockStatus(status, true, 7, 0, [new(65536, (uint)NbdAllocationFlags.Data), new(983040, (uint)(NbdAllocationFlags.Hole | NbdAllocationFlags.Zero))]);
        Assert.Equal("668e33ef" + "0001" + "0005" + "0000000000000007" + "00000014" + "00000000" + "00010000" + "00000000" + "000f0000" + "00000003", Hex(status));
    }

    [Fact]
    public void ErrorChunk_MatchesQemusPastEofReply()
    {
        // qemu-nbd 7.2: flags=1 type=32769 err=22 "operation past EOF; From: 67108352, Len: 4096, Size: 67108864"
        var chunk = NbdStructuredReply.Error(2, NbdError.Invalid, "operation past EOF; From: 67108352, Len: 4096, Size: 67108864");
        Assert.Equal("668e33ef" + "0001" + "8001" + "0000000000000002" + "00000043" + "00000016" + "003d", Hex(chunk.AsSpan(0, 26)));
    }

    [Fact]
    public void ErrorChunk_MessageIsCappedAtTheProtocolsStringLimit() =>
        Assert.Equal(NbdStructuredReply.HeaderLength + 6 + NbdLimits.MaxString, NbdStructuredReply.Error(1, NbdError.IO, new string('x', 10_000)).Length);

    [Theory]
    [InlineData(true, true, false, 0x0ced)]
    [InlineData(true, true, true, 0x0ded)]
    [InlineData(false, true, true, 0x058f)]
    [InlineData(false, false, false, 0x040f)]
    public void TransmissionFlags_AreQemus(bool writable, bool structured, bool multiConn, int expected)
    {
        var export = new NbdExport("e", "e", null, null!, writable, shareRw: false);
        Assert.Equal(expected, (int)export.TransmissionFlags(structured, multiConn));
    }

    [Theory]
    [InlineData(1, NbdError.Perm)]
    [InlineData(30, NbdError.Perm)]
    [InlineData(5, NbdError.IO)]
    [InlineData(28, NbdError.NoSpace)]
    [InlineData(95, NbdError.NotSupported)]
    [InlineData(2, NbdError.Invalid)]
    public void HostErrno_MapsToTheWireNumber(int errno, NbdError expected) => Assert.Equal(expected, NbdErrors.ToNbdError(errno));
}
