using CsCheck;
using Vdisk.Options;
using Xunit;

namespace Vdisk.Tests.Options;

public class KeyValParserTests
{
    private static string Json(string text, KeyValDialect dialect = KeyValDialect.Keyval, string? implied = null) =>
        KeyValParser.Parse(text, dialect, implied).ToString();

    [Fact]
    public void DottedKeysNest() =>
        Assert.Equal("{\"driver\": \"qcow2\", \"file\": {\"filename\": \"/path/img\", \"locking\": \"off\", \"driver\": \"file\"}}",
            Json("driver=qcow2,file.filename=/path/img,file.locking=off,file.driver=file"));

    [Fact]
    public void DoubleCommaIsALiteralComma() =>
        Assert.Equal("{\"filename\": \"a,b,,c\"}", Json("filename=a,,b,,,,c"));

    [Fact]
    public void LastValueOfARepeatedKeyWins() =>
        Assert.Equal("{\"file\": {\"locking\": \"off\"}}", Json("file.locking=on,file.locking=off"));

    [Fact]
    public void ImpliedKeyTakesTheLeadingBareValue() =>
        Assert.Equal("{\"driver\": \"qcow2\", \"node-name\": \"q0\"}", Json("qcow2,node-name=q0", implied: "driver"));

    [Fact]
    public void TrailingCommaIsAllowed() => Assert.Equal("{\"a\": \"1\"}", Json("a=1,"));

    [Fact]
    public void NumericFragmentsMakeLists() => Assert.Equal("{\"a\": [\"x\", \"y\"]}", Json("a.0=x,a.1=y"));

    [Theory]
    [InlineData("driver=raw,filename", "Expected '=' after parameter 'filename'")]
    [InlineData("a..b=1", "Invalid parameter 'a..b'")]
    [InlineData("9bad=1", "Invalid parameter '9bad'")]
    [InlineData("file.driver=file,file=xx", "Parameters 'file.*' used inconsistently")]
    [InlineData("a.1=x", "Parameter 'a.0' missing")]
    public void KeyvalErrorsAreWordedLikeQemu(string text, string message)
    {
        var e = Assert.Throws<OptionException>(() => KeyValParser.Parse(text));
        Assert.Equal(message, e.Message);
    }

    [Fact]
    public void QemuOptsBareKeyMeansOnWithADeprecationWarning()
    {
        var warnings = new List<string>();
        var d = KeyValParser.Parse("driver=raw,file.filename", KeyValDialect.QemuOpts, warn: warnings.Add);
        Assert.Equal("{\"driver\": \"raw\", \"file\": {\"filename\": \"on\"}}", d.ToString());
        Assert.Equal("short-form boolean option 'file.filename' deprecated\nPlease use file.filename=on instead", Assert.Single(warnings));
    }

    [Fact]
    public void QemuOptsChildReferenceWithChildOptions_IsRefusedLikeQemu()
    {
        var e = Assert.Throws<OptionException>(() => KeyValParser.Parse("file.filename=x,file=node0", KeyValDialect.QemuOpts));
        Assert.Equal("Cannot reference an existing block device with additional options or a new filename", e.Message);
    }

    [Fact]
    public void RoundTrip_AnyValueSurvivesEscaping()
    {
        Gen.String[Gen.Char["abc,=.x "], 0, 20].Sample(value =>
        {
            var d = KeyValParser.Parse("k=" + value.Replace(",", ",,"));
            Assert.Equal(value, ((OptionScalar)d["k"]!).Text);
        });
    }
}

public class JsonOptionsTests
{
    [Fact]
    public void JsonFilenameGivesTheSameTreeAsKeyval()
    {
        var json = JsonOptions.ParseFilename("json:{\"driver\":\"raw\",\"file\":{\"driver\":\"file\",\"filename\":\"a.img\"}}");
        var keyval = KeyValParser.Parse("driver=raw,file.driver=file,file.filename=a.img");
        Assert.Equal(keyval.ToString(), json.ToString());
    }

    [Fact]
    public void DottedJsonKeysAreCrumpled()
    {
        var json = OptionTree.Crumple(JsonOptions.ParseFilename("json:{\"driver\":\"raw\",\"file.filename\":\"a.img\"}"));
        Assert.Equal("{\"driver\": \"raw\", \"file\": {\"filename\": \"a.img\"}}", json.ToString());
    }

    [Fact]
    public void TruncatedJson_ReportsPrematureEnd()
    {
        var e = Assert.Throws<OptionException>(() => JsonOptions.ParseFilename("json:{\"driver\":\"raw\","));
        Assert.Equal("Could not parse the JSON options: JSON parse error, premature EOI", e.Message);
    }

    [Fact]
    public void JsonThatIsNotAnObject_IsRefused()
    {
        var e = Assert.Throws<OptionException>(() => JsonOptions.ParseFilename("json:[1]"));
        Assert.Equal("Invalid JSON object given", e.Message);
    }
}

public class NodeOptionsTests
{
    [Theory]
    [InlineData("on", true)]
    [InlineData("off", false)]
    [InlineData("yes", true)]
    [InlineData("false", false)]
    public void BooleansAcceptQemusSpellings(string text, bool expected)
    {
        var o = new NodeOptions(KeyValParser.Parse("read-only=" + text));
        Assert.Equal(expected, o.TakeBool("read-only"));
    }

    [Fact]
    public void BadBoolean_IsWordedLikeQemu()
    {
        var o = new NodeOptions(KeyValParser.Parse("read-only=maybe"));
        Assert.Equal("Parameter 'read-only' expects 'on' or 'off'", Assert.Throws<OptionException>(() => o.TakeBool("read-only")).Message);
    }

    [Fact]
    public void BadSize_IsWordedLikeQemu()
    {
        var o = new NodeOptions(KeyValParser.Parse("offset=abc"));
        Assert.Equal("Parameter 'offset' expects a non-negative number below 2^64", Assert.Throws<OptionException>(() => o.TakeSize("offset")).Message);
    }

    [Theory]
    [InlineData(true, "Block protocol 'file' doesn't support the option 'bogus'")]
    [InlineData(false, "Block format 'raw' does not support the option 'bogus'")]
    public void LeftoverOption_IsReportedWithTheDriverKind(bool protocol, string message)
    {
        var o = new NodeOptions(KeyValParser.Parse("filename=x,bogus=1"));
        o.TakeString("filename");
        Assert.Equal(message, Assert.Throws<OptionException>(() => o.EnsureAllUsed(protocol ? "file" : "raw", protocol)).Message);
    }
}

public class SizeParserTests
{
    [Theory]
    [InlineData("0", 0UL)]
    [InlineData("512", 512UL)]
    [InlineData("4k", 4096UL)]
    [InlineData("4K", 4096UL)]
    [InlineData("1M", 1048576UL)]
    [InlineData("1.5M", 1572864UL)]
    [InlineData("2G", 2147483648UL)]
    [InlineData("1T", 1099511627776UL)]
    [InlineData("0x1000", 4096UL)]
    [InlineData("100b", 100UL)]
    public void ParsesQemuSizes(string text, ulong expected)
    {
        Assert.True(SizeParser.TryParse(text, out ulong v));
        Assert.Equal(expected, v);
    }

    [Theory]
    [InlineData("")]
    [InlineData("-1")]
    [InlineData("abc")]
    [InlineData("1x")]
    [InlineData("16E")]
    [InlineData("1.5")]
    public void RejectsMalformedSizes(string text) => Assert.False(SizeParser.TryParse(text, out _));
}
