using Vdisk.Drivers.Nbd;
using Vdisk.Graph;
using Vdisk.Options;
using Xunit;

namespace Vdisk.Tests.Options;

/// <summary>nbd_parse_filename's results and errors, as checked against qemu-img 7.2 by hand and in the interop tests.</summary>
public class NbdFilenameTests
{
    private static string Parse(string filename)
    {
        var o = new OptionDict();
        NbdFilename.Parse(filename, o);
        return string.Join(",", o.Entries.Select(e => $"{e.Key}={((OptionScalar)e.Value).Text}"));
    }

    [Theory]
    [InlineData("nbd+unix:///exp?socket=/run/s", "export=exp,server.type=unix,server.path=/run/s")]
    [InlineData("nbd+unix://?socket=/run/s", "server.type=unix,server.path=/run/s")]
    [InlineData("nbd+unix:///e%31?socket=/a%20b", "export=e1,server.type=unix,server.path=/a b")]
    [InlineData("nbd://host/exp", "export=exp,server.type=inet,server.host=host,server.port=10809")]
    [InlineData("nbd://host:0/exp", "export=exp,server.type=inet,server.host=host,server.port=10809")]
    [InlineData("nbd+tcp://user@10.0.0.1:00042//a/b#frag", "export=/a/b,server.type=inet,server.host=10.0.0.1,server.port=42")]
    [InlineData("nbd://[::1]:7/x", "export=x,server.type=inet,server.host=::1,server.port=7")]
    [InlineData("nbd:unix:/s:exportname=e", "export=e,server.type=unix,server.path=/s")]
    [InlineData("nbd:localhost:99", "server.type=inet,server.host=localhost,server.port=99")]
    [InlineData("nbd:[::1]:1,ipv4", "server.type=inet,server.host=::1,server.port=1")]
    [InlineData("nbd:unix:/s:exportname=", "")]
    [InlineData("nbd:", "")]
    public void Parses(string filename, string expected) => Assert.Equal(expected, Parse(filename));

    [Theory]
    [InlineData("nbd+unix:///exp", "No valid URL specified")]
    [InlineData("nbd://", "No valid URL specified")]
    [InlineData("nbd://a:/x", "No valid URL specified")]
    [InlineData("nbd://a:65536/x", "No valid URL specified")]
    [InlineData("nbd://a:x1/", "No valid URL specified")]
    [InlineData("nbd://[::1/x", "No valid URL specified")]
    [InlineData("nbd://a/x?y=z", "No valid URL specified")]
    [InlineData("nbd://a/b%2", "No valid URL specified")]
    [InlineData("nbd+unix://host/e?socket=/s", "No valid URL specified")]
    [InlineData("nbd+unix:///e?socket=/s&x=y", "No valid URL specified")]
    [InlineData("nbd+unix:///e?sock=/s", "No valid URL specified")]
    [InlineData("nbd+unix:///e?socket", "No valid URL specified")]
    [InlineData("nbd:127.0.0.1", "error parsing address '127.0.0.1'")]
    [InlineData("nbd:/x", "error parsing address '/x'")]
    [InlineData("nbd:[::1", "error parsing IPv6 address '[::1'")]
    [InlineData("nbd:exportname=x", "File name string for NBD must start with 'nbd:'")]
    public void Refuses(string filename, string message) =>
        Assert.Equal(message, Assert.Throws<OptionException>(() => Parse(filename)).Message);

    [Fact]
    public void AFilenameWithServerOptions_IsRefused()
    {
        var o = new OptionDict();
        o.Set("export", "x");
        Assert.Equal("Option 'export' cannot be used with a file name",
            Assert.Throws<OptionException>(() => NbdFilename.Parse("nbd://h/e", o)).Message);
    }

    [Theory]
    [InlineData("disk.img", "file")]
    [InlineData("./a:b.img", "file")]
    [InlineData("/x/a:b", "file")]
    [InlineData("file:a:b", "file")]
    [InlineData("nbd://h/e", "nbd")]
    [InlineData("nbd+unix:///e?socket=/s", "nbd")]
    [InlineData("nbd+tcp://h", "nbd")]
    [InlineData("nbd:unix:/s", "nbd")]
    public void FindsTheProtocolDriver(string filename, string driver) => Assert.Equal(driver, BlockDrivers.FindProtocol(filename).Name);

    [Theory]
    [InlineData("a:b.img", "Unknown protocol 'a'")]
    [InlineData("NBD://h", "Unknown protocol 'NBD'")]
    [InlineData("http://h/x", "Unknown protocol 'http'")]
    public void UnknownPrefixes_AreQemusError(string filename, string message) =>
        Assert.Equal(message, Assert.Throws<OptionException>(() => BlockDrivers.FindProtocol(filename)).Message);

    [Fact]
    public void RefreshedFilenames_AreQemus()
    {
        Assert.Equal("nbd+unix:///e?socket=/s", NbdFilename.Describe(NbdServerAddress.Unix("/s"), "e"));
        Assert.Equal("nbd+unix://?socket=/s", NbdFilename.Describe(NbdServerAddress.Unix("/s"), null));
        Assert.Equal("nbd://h:1/e", NbdFilename.Describe(NbdServerAddress.Inet("h", "1"), "e"));
        Assert.Equal("nbd://h:1", NbdFilename.Describe(NbdServerAddress.Inet("h", "1"), null));
    }
}
