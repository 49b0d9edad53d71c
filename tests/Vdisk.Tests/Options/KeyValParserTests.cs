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
    [InlineData("1.5")]
    [InlineData("1M ")]
    [InlineData("1.5e3")]
    [InlineData("0x")]
    [InlineData("0x1.5")]
    [InlineData("1.5b")]
    [InlineData("99999999999999999999k")]
    public void RejectsMalformedSizes(string text) => Assert.Equal(SizeParseStatus.Invalid, SizeParser.Parse(text, out _));

    /// <summary>Values qemu-img 7.2 prints for these sizes (qemu-img create -f raw x SIZE).</summary>
    [Theory]
    [InlineData(" 1M", 1048576UL)]
    [InlineData("+1M", 1048576UL)]
    [InlineData("1.k", 1024UL)]
    [InlineData("1.", 1UL)]
    [InlineData("1.5E", 1729382256910270464UL)]
    [InlineData("0x1E", 30UL)]
    [InlineData("0x1k", 1024UL)]
    [InlineData("1e", 1152921504606846976UL)]
    [InlineData("00012", 12UL)]
    [InlineData("9007199254740993", 9007199254740993UL)]
    [InlineData("1.00048828125k", 1025UL)]
    [InlineData("1.000244140625k", 1024UL)]
    [InlineData("1.9999999999999999999", 1UL)]
    [InlineData("7.99999999999999999E", 8070450532247928832UL)]
    [InlineData("7.9999999999999999E", 9223372036854775680UL)]
    [InlineData("0xffffffffffffffff", 18446744073709551615UL)]
    [InlineData("15.9999999999999999999E", 17293822569102704640UL)]
    public void ParsesLikeQemuStrtosz(string text, ulong expected)
    {
        Assert.Equal(SizeParseStatus.Ok, SizeParser.Parse(text, out ulong v));
        Assert.Equal(expected, v);
    }

    [Theory]
    [InlineData("16E")]
    [InlineData("0x10000000000000000")]
    [InlineData("99999999999999999999")]
    public void TellsTooLargeFromMalformed(string text) => Assert.Equal(SizeParseStatus.OutOfRange, SizeParser.Parse(text, out _));
}

public class QemuNumberTests
{
    [Theory]
    [InlineData("4", QemuNumberStatus.Ok, 4L)]
    [InlineData(" 4", QemuNumberStatus.Ok, 4L)]
    [InlineData("0x4", QemuNumberStatus.Ok, 4L)]
    [InlineData("010", QemuNumberStatus.Ok, 8L)]
    [InlineData("-3", QemuNumberStatus.Ok, -3L)]
    [InlineData("4k", QemuNumberStatus.Invalid, 0L)]
    [InlineData("abc", QemuNumberStatus.Invalid, 0L)]
    [InlineData("", QemuNumberStatus.Invalid, 0L)]
    [InlineData("9223372036854775808", QemuNumberStatus.OutOfRange, 0L)]
    [InlineData("9223372036854775808x", QemuNumberStatus.Invalid, 0L)]
    public void Strtol_base_0(string text, QemuNumberStatus status, long value)
    {
        Assert.Equal(status, QemuNumber.ParseLong(text, 0, out long v));
        Assert.Equal(value, v);
    }

    [Theory]
    [InlineData("16", QemuNumberStatus.Ok, 16UL)]
    [InlineData("0x10", QemuNumberStatus.Ok, 16UL)]
    [InlineData("-1", QemuNumberStatus.Ok, 18446744073709551615UL)]
    [InlineData("99999999999999999999", QemuNumberStatus.OutOfRange, 0UL)]
    [InlineData("1 ", QemuNumberStatus.Invalid, 0UL)]
    public void Strtou64_base_0(string text, QemuNumberStatus status, ulong value)
    {
        Assert.Equal(status, QemuNumber.ParseUnsigned(text, 0, out ulong v));
        Assert.Equal(value, v);
    }
}
