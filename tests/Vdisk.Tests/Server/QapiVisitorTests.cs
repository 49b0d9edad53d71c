using System.Text;
using Vdisk.Options;
using Vdisk.Server.Qmp;
using Xunit;

namespace Vdisk.Tests.Server;

/// <summary>
/// Argument checks with QEMU's messages. Every expected text below was produced by
/// qemu-storage-daemon 7.2 for the same input, over QMP (JSON) or on its command line (keyval).
/// </summary>
public class QapiVisitorTests
{
    private static string JsonError(QapiStruct type, string json)
    {
        var args = (OptionDict)QmpJson.Parse(Encoding.UTF8.GetBytes(json));
        return Assert.Throws<QmpException>(() => QapiVisitor.Json.VisitArguments(type, args)).Message;
    }

    private static string KeyvalError(QapiStruct type, string text, string? implied = null) =>
        Assert.Throws<QmpException>(() => QapiVisitor.Keyval.Visit(type, KeyValParser.Parse(text, impliedKey: implied), "")).Message;

    [Theory]
    [InlineData("{}", "Parameter 'addr' is missing")]
    [InlineData("{\"addr\":{}}", "Parameter 'addr.type' is missing")]
    [InlineData("{\"addr\":{\"type\":\"unix\"}}", "Parameter 'addr.data' is missing")]
    [InlineData("{\"addr\":{\"type\":\"unix\",\"data\":{}}}", "Parameter 'addr.data.path' is missing")]
    [InlineData("{\"addr\":{\"type\":\"unix\",\"data\":{\"path\":5}}}", "Invalid parameter type for 'addr.data.path', expected: string")]
    [InlineData("{\"addr\":{\"type\":\"foo\",\"data\":{}}}", "Parameter 'type' does not accept value 'foo'")]
    [InlineData("{\"addr\":{\"type\":\"inet\",\"data\":{\"host\":\"127.0.0.1\",\"port\":5}}}", "Invalid parameter type for 'addr.data.port', expected: string")]
    [InlineData("{\"addr\":{\"type\":\"unix\",\"data\":{\"path\":\"/p\"}},\"max-connections\":\"x\"}", "Parameter 'max-connections' expects uint64")]
    [InlineData("{\"addr\":{\"type\":\"unix\",\"data\":{\"path\":\"/p\"}},\"max-connections\":-1}", "Parameter 'max-connections' expects uint32_t")]
    [InlineData("{\"addr\":{\"type\":\"unix\",\"data\":{\"path\":\"/p\"}},\"bogus\":1}", "Parameter 'bogus' is unexpected")]
    [InlineData("{\"addr\":{\"type\":\"unix\",\"data\":{\"path\":\"/p\",\"bogus\":1}}}", "Parameter 'addr.data.bogus' is unexpected")]
    public void NbdServerStart(string json, string message) => Assert.Equal(message, JsonError(QmpSchema.NbdServerStart, json));

    [Theory]
    [InlineData("{\"type\":\"nbd\",\"id\":\"e0\",\"node-name\":\"r0\",\"writable\":\"yes\"}", "Invalid parameter type for 'writable', expected: boolean")]
    [InlineData("{\"type\":\"nbd\",\"id\":\"e0\",\"node-name\":\"r0\",\"bogus\":1}", "Parameter 'bogus' is unexpected")]
    [InlineData("{\"type\":\"nbd\",\"node-name\":\"r0\"}", "Parameter 'id' is missing")]
    [InlineData("{\"type\":\"nbd\",\"id\":\"e0\"}", "Parameter 'node-name' is missing")]
    [InlineData("{\"type\":\"vhost\",\"id\":\"e2\",\"node-name\":\"r0\"}", "Parameter 'type' does not accept value 'vhost'")]
    [InlineData("{\"id\":\"e2\",\"node-name\":\"r0\"}", "Parameter 'type' is missing")]
    public void BlockExportAdd(string json, string message) => Assert.Equal(message, JsonError(QmpSchema.BlockExportOptions, json));

    [Theory]
    [InlineData("{}", "Parameter 'driver' is missing")]
    [InlineData("{\"driver\":\"raw\"}", "Parameter 'file' is missing")]
    [InlineData("{\"driver\":\"file\",\"node-name\":\"x1\"}", "Parameter 'filename' is missing")]
    [InlineData("{\"driver\":\"file\",\"node-name\":\"x1\",\"filename\":\"/f\",\"read-only\":\"on\"}", "Invalid parameter type for 'read-only', expected: boolean")]
    [InlineData("{\"driver\":\"nosuch\",\"node-name\":\"x1\"}", "Parameter 'driver' does not accept value 'nosuch'")]
    [InlineData("{\"driver\":\"raw\",\"node-name\":\"x1\",\"file\":\"f0\",\"offset\":\"5\"}", "Invalid parameter type for 'offset', expected: integer")]
    [InlineData("{\"driver\":\"raw\",\"node-name\":\"x1\",\"file\":5}", "Invalid parameter type for 'file', expected: BlockdevRef")]
    [InlineData("{\"driver\":\"raw\",\"node-name\":\"r2\",\"bogus\":1,\"file\":\"f0\"}", "Parameter 'bogus' is unexpected")]
    public void BlockdevAdd(string json, string message) => Assert.Equal(message, JsonError(QmpSchema.BlockdevOptions, json));

    [Theory]
    [InlineData("{\"node-name\":5}", "Invalid parameter type for 'node-name', expected: string")]
    [InlineData("{}", "Parameter 'node-name' is missing")]
    [InlineData("{\"node-name\":\"x\",\"bogus\":1}", "Parameter 'bogus' is unexpected")]
    public void BlockdevDel(string json, string message) => Assert.Equal(message, JsonError(QmpSchema.BlockdevDel, json));

    [Fact]
    public void CommandsWithoutArguments_RefuseAny() => Assert.Equal("Parameter 'x' is unexpected", JsonError(QmpSchema.NoArguments, "{\"x\":1}"));

    [Theory]
    [InlineData("driver=file,node-name=f0,filename=r.img,read-only=maybe", "Parameter 'read-only' expects 'on' or 'off'")]
    [InlineData("driver=raw,node-name=r0,file.driver=file,file.filename=r.img,offset=abc", "Parameter 'offset' expects integer")]
    [InlineData("driver=raw,node-name=r0,file.driver=file,file.filename=r.img,offset=1k", "Parameter 'offset' expects integer")]
    [InlineData("driver=file,node-name=f0", "Parameter 'filename' is missing")]
    [InlineData("driver=file,node-name=f0,filename=r.img,locking=maybe", "Parameter 'locking' does not accept value 'maybe'")]
    [InlineData("driver=file,node-name=f0,filename=r.img,cache.direct=x", "Parameter 'cache.direct' expects 'on' or 'off'")]
    [InlineData("driver=file,node-name=f0,filename=r.img,cache.bogus=1", "Parameter 'cache.bogus' is unexpected")]
    [InlineData("driver=file,node-name=f0,filename=r.img,cache=x", "Invalid parameter type for 'cache', expected: object")]
    [InlineData("file,node-name=f0,filename=r.img,bogus=1", "Parameter 'bogus' is unexpected")]
    [InlineData("raw,node-name=r0,file.driver=file,file.filename=r.img,file.bogus=1", "Parameter 'file.bogus' is unexpected")]
    [InlineData("node-name=f0", "Parameter 'driver' is missing")]
    [InlineData("driver=nosuch", "Parameter 'driver' does not accept value 'nosuch'")]
    [InlineData("driver=file,filename=x,file.aio=bogus", "Parameter 'file' is unexpected")]
    [InlineData("driver=raw,file.driver=file,file.filename=x,file.aio=bogus", "Parameter 'aio' does not accept value 'bogus'")]
    public void BlockdevOnTheCommandLine(string text, string message) => Assert.Equal(message, KeyvalError(QmpSchema.BlockdevOptions, text, "driver"));

    [Theory]
    [InlineData("addr.type=unix", "Parameter 'addr.path' is missing")]
    [InlineData("addr.type=unix,addr.path=/x.sock,bogus=1", "Parameter 'bogus' is unexpected")]
    [InlineData("addr.type=inet,addr.host=127.0.0.1", "Parameter 'addr.port' is missing")]
    [InlineData("addr.type=foo", "Parameter 'type' does not accept value 'foo'")]
    [InlineData("addr.path=x", "Parameter 'addr.type' is missing")]
    [InlineData("addr.type=unix,addr.path=/x.sock,max-connections=x", "Parameter 'max-connections' expects integer")]
    public void NbdServerOnTheCommandLine(string text, string message) => Assert.Equal(message, KeyvalError(QmpSchema.NbdServerOptions, text));

    [Theory]
    [InlineData("type=nbd,id=e0", "Parameter 'node-name' is missing")]
    [InlineData("id=e0,node-name=f0", "Parameter 'type' is missing")]
    [InlineData("nbd,id=e0,node-name=f0,writable=maybe", "Parameter 'writable' expects 'on' or 'off'")]
    [InlineData("nbd,id=e0,node-name=f0,bogus=1", "Parameter 'bogus' is unexpected")]
    public void ExportOnTheCommandLine(string text, string message) => Assert.Equal(message, KeyvalError(QmpSchema.BlockExportOptions, text, "type"));

    [Fact]
    public void Keyval_ConvertsScalarsToTheirTypes()
    {
        var o = (OptionDict)QapiVisitor.Keyval.Visit(QmpSchema.BlockdevOptions,
            KeyValParser.Parse("raw,node-name=r0,read-only=on,offset=0x200,file.driver=file,file.filename=x", impliedKey: "driver"), "");
        Assert.Equal("{\"driver\": \"raw\", \"node-name\": \"r0\", \"read-only\": true, \"file\": {\"driver\": \"file\", \"filename\": \"x\"}, \"offset\": 512}", o.ToString());
    }
}
