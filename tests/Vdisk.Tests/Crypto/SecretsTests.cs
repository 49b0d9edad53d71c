using System.Text;
using Vdisk.Crypto;
using Vdisk.Options;
using Xunit;

namespace Vdisk.Tests.Crypto;

public class SecretsTests
{
    [Fact]
    public void DataAndBase64AndFile_GiveTheSecretsBytes()
    {
        Secrets.AddFromCommandLine("secret,id=unit-raw,data=pa,,ss");
        Assert.Equal("pa,ss", Encoding.UTF8.GetString(Secrets.Lookup("unit-raw")));
        Secrets.AddFromCommandLine("secret,id=unit-b64,data=cGFzcw==,format=base64");
        Assert.Equal("pass", Encoding.UTF8.GetString(Secrets.Lookup("unit-b64")));
        string file = Path.GetTempFileName();
        try
        {
            File.WriteAllText(file, "pw\n");
            Secrets.AddFromCommandLine($"secret,id=unit-file,file={file}");
            // The file's bytes as they are, newline included (QEMU does not trim).
            Assert.Equal("pw\n", Encoding.UTF8.GetString(Secrets.Lookup("unit-file")));
        }
        finally
        {
            File.Delete(file);
        }
    }

    [Theory]
    [InlineData("secret", "Parameter 'id' is missing")]
    [InlineData("id=x", "Parameter 'qom-type' is missing")]
    [InlineData("secret,id=unit-e1", "Either 'file' or 'data' must be provided")]
    [InlineData("foo,id=unit-e2", "Parameter 'qom-type' does not accept value 'foo'")]
    [InlineData("secret,id=unit-e3,data=a,bogus=1", "Parameter 'bogus' is unexpected")]
    [InlineData("secret,id=unit-e4,data=a,format=hex", "Parameter 'format' does not accept value 'hex'")]
    [InlineData("secret,id=unit-e5,data=a,file=/etc/hostname", "'file' and 'data' are mutually exclusive")]
    [InlineData("secret,id=unit-e6,data=a%%,format=base64", "Base64 data contains invalid characters")]
    [InlineData("secret,id=unit-e7,data=a,keyid=nosuch", "No secret with id 'nosuch'")]
    [InlineData("secret,id=unit-e8,data=a,loaded=on", "Property 'secret.loaded' is not writable")]
    [InlineData("secret,id=0bad,data=a", "Parameter 'id' expects an identifier\nIdentifiers consist of letters, digits, '-', '.', '_', starting with a letter.")]
    public void MalformedObjects_GetQemusMessage(string text, string message)
    {
        var e = Assert.Throws<OptionException>(() => Secrets.AddFromCommandLine(text));
        Assert.Equal(message, e.Message);
    }

    [Fact]
    public void DuplicateId_IsRefused()
    {
        Secrets.AddFromCommandLine("secret,id=unit-dup,data=a");
        var e = Assert.Throws<OptionException>(() => Secrets.AddFromCommandLine("secret,id=unit-dup,data=b"));
        Assert.Equal("attempt to add duplicate property 'unit-dup' to object (type 'container')", e.Message);
        Assert.Equal("a", Encoding.UTF8.GetString(Secrets.Lookup("unit-dup")));
    }

    [Fact]
    public void Passphrase_MustBeUtf8_AndMissingIdsAreNamed()
    {
        Secrets.AddFromCommandLine("secret,id=unit-bad-utf8,data=/w==,format=base64");
        Assert.Equal("Data from secret unit-bad-utf8 is not valid UTF-8", Assert.Throws<OptionException>(() => Secrets.LookupPassphrase("unit-bad-utf8")).Message);
        Assert.Equal("No secret with id 'unit-none'", Assert.Throws<OptionException>(() => Secrets.LookupPassphrase("unit-none")).Message);
    }
}
