using System.Text;
using Vdisk.Options;
using Vdisk.Server.Qmp;
using Xunit;

namespace Vdisk.Tests.Options;

/// <summary>
/// json: filenames and QMP input are read by one reader with QEMU's rule (json-parser.c and
/// json-streamer.c): nesting up to 1024, integers as int64, else uint64, else a double printed
/// with %.17g. Every expectation was checked with qemu-img 7.2 (<c>qemu-img info 'json:{...}'</c>
/// prints the options back).
/// </summary>
public class JsonReaderTests
{
    public enum Entry { JsonFilename, Qmp }

    private static OptionValue Read(Entry entry, string json) => entry switch
    {
        Entry.JsonFilename => JsonOptions.ParseFilename("json:{\"v\":" + json + "}")["v"]!,
        _ => ((OptionDict)QmpJson.Parse(Encoding.UTF8.GetBytes("{\"v\":" + json + "}")))["v"]!,
    };

    private static string ReadError(Entry entry, string json) => entry switch
    {
        Entry.JsonFilename => Assert.Throws<OptionException>(() => JsonOptions.ParseFilename("json:" + json)).Message,
        _ => "Could not parse the JSON options: " + Assert.Throws<QmpException>(() => QmpJson.Parse(Encoding.UTF8.GetBytes(json))).Message,
    };

    public static TheoryData<Entry, string, string> Numbers()
    {
        var data = new TheoryData<Entry, string, string>();
        (string Json, string Qemu)[] cases =
        [
            ("1000", "1000"),
            ("1E3", "1000"),                                   // a float token: %.17g
            ("-0", "0"),                                       // qemu_strtoi64 gives 0
            ("1.0", "1"),
            ("0.1", "0.10000000000000001"),
            ("-5", "-5"),
            ("18446744073709551615", "18446744073709551615"),  // too big for int64: uint64
            ("18446744073709551616", "1.8446744073709552e+19"), // too big for uint64: double
            ("-9223372036854775809", "-9.2233720368547758e+18"), // negative never tries uint64
            ("1e400", "inf"),                                  // strtod overflows to infinity, printf says inf
            ("-1e400", "-inf"),
        ];
        foreach (var entry in Enum.GetValues<Entry>())
            foreach (var (json, qemu) in cases) data.Add(entry, json, qemu);
        return data;
    }

    [Theory]
    [MemberData(nameof(Numbers))]
    public void Numbers_ReadAsQemuReadsThem(Entry entry, string json, string qemu)
    {
        var value = Assert.IsType<OptionScalar>(Read(entry, json));
        Assert.Equal(ScalarKind.Number, value.Kind);
        Assert.Equal(qemu, value.Text);
    }

    [Theory]
    [InlineData(Entry.JsonFilename, "true", ScalarKind.Bool, "true")]
    [InlineData(Entry.JsonFilename, "\"true\"", ScalarKind.String, "true")]
    [InlineData(Entry.JsonFilename, "\"on\"", ScalarKind.String, "on")]
    [InlineData(Entry.JsonFilename, "\"1000\"", ScalarKind.String, "1000")]
    [InlineData(Entry.JsonFilename, "null", ScalarKind.Null, "null")]
    [InlineData(Entry.Qmp, "true", ScalarKind.Bool, "true")]
    [InlineData(Entry.Qmp, "\"true\"", ScalarKind.String, "true")]
    [InlineData(Entry.Qmp, "\"on\"", ScalarKind.String, "on")]
    [InlineData(Entry.Qmp, "\"1000\"", ScalarKind.String, "1000")]
    [InlineData(Entry.Qmp, "null", ScalarKind.Null, "null")]
    public void BooleansAndStrings_KeepTheirJsonType(Entry entry, string json, ScalarKind kind, string text)
    {
        var value = Assert.IsType<OptionScalar>(Read(entry, json));
        Assert.Equal((kind, text), (value.Kind, value.Text));
    }

    private static string Nested(int depth) => new string('[', depth - 1) + new string(']', depth - 1);

    [Theory]
    [InlineData(Entry.JsonFilename)]
    [InlineData(Entry.Qmp)]
    public void Nesting_UpTo1024_IsAccepted(Entry entry)
    {
        // The object around it is one level: 1023 brackets make 1024.
        var value = Read(entry, Nested(1024));
        int depth = 1;
        while (value is OptionList { Items.Count: 1 } list) { value = list.Items[0]; depth++; }
        Assert.Equal(1023, depth);
        Assert.Empty(Assert.IsType<OptionList>(value).Items);
    }

    [Theory]
    [InlineData(Entry.JsonFilename)]
    [InlineData(Entry.Qmp)]
    public void Nesting_Beyond1024_IsRefusedInQemusWords(Entry entry) =>
        Assert.Equal("Could not parse the JSON options: JSON nesting depth limit exceeded", ReadError(entry, "{\"v\":" + Nested(1025) + "}"));

    [Theory]
    [InlineData(Entry.JsonFilename, "{\"driver\":", "JSON parse error, premature EOI")]
    [InlineData(Entry.JsonFilename, "{\"driver\":foo}", "JSON parse error, invalid keyword 'foo'")]
    [InlineData(Entry.JsonFilename, "{\"driver\":nul}", "JSON parse error, invalid keyword 'nul'")]
    [InlineData(Entry.JsonFilename, "{\"driver\":\"raw\",}", "JSON parse error, expecting value")]
    [InlineData(Entry.JsonFilename, "", "Expecting a JSON value")]
    [InlineData(Entry.JsonFilename, "  ", "Expecting a JSON value")]
    [InlineData(Entry.JsonFilename, "{\"a\":1}x", "Expecting at most one JSON value")]
    [InlineData(Entry.Qmp, "{\"driver\":", "JSON parse error, premature EOI")]
    [InlineData(Entry.Qmp, "{\"driver\":foo}", "JSON parse error, invalid keyword 'foo'")]
    [InlineData(Entry.Qmp, "{\"driver\":\"raw\",}", "JSON parse error, expecting value")]
    public void Errors_AreWordedAsQemus(Entry entry, string json, string qemu) =>
        Assert.Equal("Could not parse the JSON options: " + qemu, ReadError(entry, json));

    /// <summary>QEMU's lexer takes single-quoted strings (as the iotests write json: filenames) and the escape \' in both kinds.</summary>
    [Theory]
    [InlineData(Entry.JsonFilename, "'null-co'", "null-co")]
    [InlineData(Entry.JsonFilename, "'a\\'b\"c'", "a'b\"c")]
    [InlineData(Entry.JsonFilename, "\"it\\'s \\\"q\\\"\"", "it's \"q\"")]
    [InlineData(Entry.JsonFilename, "'\\u0041\\n'", "A\n")]
    [InlineData(Entry.Qmp, "'a\\'b\"c'", "a'b\"c")]
    public void SingleQuotedStrings_AreRead(Entry entry, string json, string expected) =>
        Assert.Equal(expected, Assert.IsType<OptionScalar>(Read(entry, json)).Text);

    [Fact]
    public void ASingleQuotedFilename_IsADictionary()
    {
        var options = JsonOptions.ParseFilename("json:{'driver': 'null-co', 'size': 1048576, 'read-zeroes': true}");
        Assert.Equal("null-co", ((OptionScalar)options["driver"]!).Text);
        Assert.Equal("1048576", ((OptionScalar)options["size"]!).Text);
        Assert.Equal("true", ((OptionScalar)options["read-zeroes"]!).Text);
    }
}
