using System.Buffers.Binary;
using Vdisk.Crypto;
using Xunit;

namespace Vdisk.Tests.Crypto;

/// <summary>
/// IEEE 1619-2007 vectors 4 to 9 (XTS-AES-128, 512-byte data units with consecutive sequence
/// numbers, each vector's plaintext the previous one's ciphertext) through the batched paths:
/// several sectors in one <see cref="SectorCipher"/> call and several units in one
/// <see cref="XtsCipher.EncryptUnits"/> call must give each unit's published ciphertext.
/// </summary>
public class XtsBatchVectorTests
{
    private const string Key = "2718281828459045235360287471352631415926535897932384626433832795";

    // Ciphertexts of vectors 4, 5 and 6 (data units 0, 1, 2; vector 4's plaintext is bytes 0..255 twice).
    private const string Vector4 =
        "27a7479befa1d476489f308cd4cfa6e2a96e4bbe3208ff25287dd3819616e89cc78cf7f5e543445f8333d8fa7f56000005279fa5d8b5e4ad40e736ddb4d35412" +
        "328063fd2aab53e5ea1e0a9f332500a5df9487d07a5c92cc512c8866c7e860ce93fdf166a24912b422976146ae20ce846bb7dc9ba94a767aaef20c0d61ad0265" +
        "5ea92dc4c4e41a8952c651d33174be51a10c421110e6d81588ede82103a252d8a750e8768defffed9122810aaeb99f9172af82b604dc4b8e51bcb08235a6f434" +
        "1332e4ca60482a4ba1a03b3e65008fc5da76b70bf1690db4eae29c5f1badd03c5ccf2a55d705ddcd86d449511ceb7ec30bf12b1fa35b913f9f747a8afd1b130e" +
        "94bff94effd01a91735ca1726acd0b197c4e5b03393697e126826fb6bbde8ecc1e08298516e2c9ed03ff3c1b7860f6de76d4cecd94c8119855ef5297ca67e9f3" +
        "e7ff72b1e99785ca0a7e7720c5b36dc6d72cac9574c8cbbc2f801e23e56fd344b07f22154beba0f08ce8891e643ed995c94d9a69c9f1b5f499027a78572aeebd" +
        "74d20cc39881c213ee770b1010e4bea718846977ae119f7a023ab58cca0ad752afe656bb3c17256a9f6e9bf19fdd5a38fc82bbe872c5539edb609ef4f79c203e" +
        "bb140f2e583cb2ad15b4aa5b655016a8449277dbd477ef2c8d6c017db738b18deb4a427d1923ce3ff262735779a418f20a282df920147beabe421ee5319d0568";
    private const string Vector5 =
        "264d3ca8512194fec312c8c9891f279fefdd608d0c027b60483a3fa811d65ee59d52d9e40ec5672d81532b38b6b089ce951f0f9c35590b8b978d175213f329bb" +
        "1c2fd30f2f7f30492a61a532a79f51d36f5e31a7c9a12c286082ff7d2394d18f783e1a8e72c722caaaa52d8f065657d2631fd25bfd8e5baad6e527d763517501" +
        "c68c5edc3cdd55435c532d7125c8614deed9adaa3acade5888b87bef641c4c994c8091b5bcd387f3963fb5bc37aa922fbfe3df4e5b915e6eb514717bdd2a7407" +
        "9a5073f5c4bfd46adf7d282e7a393a52579d11a028da4d9cd9c77124f9648ee383b1ac763930e7162a8d37f350b2f74b8472cf09902063c6b32e8c2d9290cefb" +
        "d7346d1c779a0df50edcde4531da07b099c638e83a755944df2aef1aa31752fd323dcb710fb4bfbb9d22b925bc3577e1b8949e729a90bbafeacf7f7879e7b114" +
        "7e28ba0bae940db795a61b15ecf4df8db07b824bb062802cc98a9545bb2aaeed77cb3fc6db15dcd7d80d7d5bc406c4970a3478ada8899b329198eb61c193fb62" +
        "75aa8ca340344a75a862aebe92eee1ce032fd950b47d7704a3876923b4ad62844bf4a09c4dbe8b4397184b7471360c9564880aedddb9baa4af2e75394b08cd32" +
        "ff479c57a07d3eab5d54de5f9738b8d27f27a9f0ab11799d7b7ffefb2704c95c6ad12c39f1e867a4b7b1d7818a4b753dfd2a89ccb45e001a03a867b187f225dd";
    private const string Vector6 =
        "fa762a3680b76007928ed4a4f49a9456031b704782e65e16cecb54ed7d017b5e18abd67b338e81078f21edb7868d901ebe9c731a7c18b5e6dec1d6a72e078ac9" +
        "a4262f860beefa14f4e821018272e411a951502b6e79066e84252c3346f3aa62344351a291d4bedc7a07618bdea2af63145cc7a4b8d4070691ae890cd65733e7" +
        "946e9021a1dffc4c59f159425ee6d50ca9b135fa6162cea18a939838dc000fb386fad086acce5ac07cb2ece7fd580b00cfa5e98589631dc25e8e2a3daf2ffdec" +
        "26531659912c9d8f7a15e5865ea8fb5816d6207052bd7128cd743c12c8118791a4736811935eb982a532349e31dd401e0b660a568cb1a4711f552f55ded59f1f" +
        "15bf7196b3ca12a91e488ef59d64f3a02bf45239499ac6176ae321c4a211ec545365971c5d3f4f09d4eb139bfdf2073d33180b21002b65cc9865e76cb24cd92c" +
        "874c24c18350399a936ab3637079295d76c417776b94efce3a0ef7206b15110519655c956cbd8b2489405ee2b09a6b6eebe0c53790a12a8998378b33a5b71159" +
        "625f4ba49d2a2fdba59fbf0897bc7aabd8d707dc140a80f0f309f835d3da54ab584e501dfa0ee977fec543f74186a802b9a37adb3e8291eca04d66520d229e60" +
        "401e7282bef486ae059aa70696e0e305d777140a7a883ecdcb69b9ff938e8a4231864c69ca2c2043bed007ff3e605e014bcf518138dc3a25c5e236171a2d01d6";

    // Vector 7's plaintext and the ciphertexts of vectors 7, 8 and 9 (data units 0xfd, 0xfe, 0xff).
    private const string Vector7Plain =
        "8e41b78c390b5af9d758bb214a67e9f6bf7727b09ac6124084c37611398fa45daad94868600ed391fb1acd4857a95b466e62ef9f4b377244d1c152e7b30d731a" +
        "ad30c716d214b707aed99eb5b5e580b3e887cf7497465651d4b60e6042051da3693c3b78c14489543be8b6ad0ba629565bba202313ba7b0d0c94a3252b676f46" +
        "cc02ce0f8a7d34c0ed229129673c1f61aed579d08a9203a25aac3a77e9db60267996db38df637356d9dcd1632e369939f2a29d89345c66e05066f1a3677aef18" +
        "dea4113faeb629e46721a66d0a7e785d3e29af2594eb67dfa982affe0aac058f6e15864269b135418261fc3afb089472cf68c45dd7f231c6249ba0255e1e0338" +
        "33fc4d00a3fe02132d7bc3873614b8aee34273581ea0325c81f0270affa13641d052d36f0757d484014354d02d6883ca15c24d8c3956b1bd027bcf41f151fd80" +
        "23c5340e5606f37e90fdb87c86fb4fa634b3718a30bace06a66eaf8f63c4aa3b637826a87fe8cfa44282e92cb1615af3a28e53bc74c7cba1a0977be9065d0c1a" +
        "5dec6c54ae38d37f37aa35283e048e5530a85c4e7a29d7b92ec0c3169cdf2a805c7604bce60049b9fb7b8eaac10f51ae23794ceba68bb58112e293b9b692ca72" +
        "1b37c662f8574ed4dba6f88e170881c82cddc1034a0ca7e284bf0962b6b26292d836fa9f73c1ac770eef0f2d3a1eaf61d3e03555fd424eedd67e18a18094f888";
    private const string Vector7 =
        "d55f684f81f4426e9fde92a5ff02df2ac896af63962888a97910c1379e20b0a3b1db613fb7fe2e07004329ea5c22bfd33e3dbe4cf58cc608c2c26c19a2e2fe22" +
        "f98732c2b5cb844cc6c0702d91e1d50fc4382a7eba5635cd602432a2306ac4ce82f8d70c8d9bc15f918fe71e74c622d5cf71178bf6e0b9cc9f2b41dd8dbe441c" +
        "41cd0c73a6dc47a348f6702f9d0e9b1b1431e948e299b9ec2272ab2c5f0c7be86affa5dec87a0bee81d3d50007edaa2bcfccb35605155ff36ed8edd4a40dcd4b" +
        "243acd11b2b987bdbfaf91a7cac27e9c5aea525ee53de7b2d3332c8644402b823e94a7db26276d2d23aa07180f76b4fd29b9c0823099c9d62c519880aee7e969" +
        "7617c1497d47bf3e571950311421b6b734d38b0db91eb85331b91ea9f61530f54512a5a52a4bad589eb69781d537f23297bb459bdad2948a29e1550bf4787e0b" +
        "e95bb173cf5fab17dab7a13a052a63453d97ccec1a321954886b7a1299faaeecae35c6eaaca753b041b5e5f093bf83397fd21dd6b3012066fcc058cc32c3b09d" +
        "7562dee29509b5839392c9ff05f51f3166aaac4ac5f238038a3045e6f72e48ef0fe8bc675e82c318a268e43970271bf119b81bf6a982746554f84e72b9f00280" +
        "a320a08142923c23c883423ff949827f29bbacdc1ccdb04938ce6098c95ba6b32528f4ef78eed778b2e122ddfd1cbdd11d1c0a6783e011fc536d63d053260637";
    private const string Vector8 =
        "72efc1ebfe1ee25975a6eb3aa8589dda2b261f1c85bdab442a9e5b2dd1d7c3957a16fc08e526d4b1223f1b1232a11af274c3d70dac57f83e0983c498f1a6f1ae" +
        "cb021c3e70085a1e527f1ce41ee5911a82020161529cd82773762daf5459de94a0a82adae7e1703c808543c29ed6fb32d9e004327c1355180c995a07741493a0" +
        "9c21ba01a387882da4f62534b87bb15d60d197201c0fd3bf30c1500a3ecfecdd66d8721f90bcc4c17ee925c61b0a03727a9c0d5f5ca462fbfa0af1c2513a9d9d" +
        "4b5345bd27a5f6e653f751693e6b6a2b8ead57d511e00e58c45b7b8d005af79288f5c7c22fd4f1bf7a898b03a5634c6a1ae3f9fae5de4f296a2896b23e7ed43e" +
        "d14fa5a2803f4d28f0d3ffcf24757677aebdb47bb388378708948a8d4126ed1839e0da29a537a8c198b3c66ab00712dd261674bf45a73d67f76914f830ca014b" +
        "65596f27e4cf62de66125a5566df9975155628b400fbfb3a29040ed50faffdbb18aece7c5c44693260aab386c0a37b11b114f1c415aebb653be468179428d43a" +
        "4d8bc3ec38813eca30a13cf1bb18d524f1992d44d8b1a42ea30b22e6c95b199d8d182f8840b09d059585c31ad691fa0619ff038aca2c39a943421157361717c4" +
        "9d322028a74648113bd8c9d7ec77cf3c89c1ec8718ceff8516d96b34c3c614f10699c9abc4ed0411506223bea16af35c883accdbe1104eef0cfdb54e12fb230a";
    private const string Vector9 =
        "3260ae8dad1f4a32c5cafe3ab0eb95549d461a67ceb9e5aa2d3afb62dece0553193ba50c75be251e08d1d08f1088576c7efdfaaf3f459559571e12511753b07a" +
        "f073f35da06af0ce0bbf6b8f5ccc5cea500ec1b211bd51f63b606bf6528796ca12173ba39b8935ee44ccce646f90a45bf9ccc567f0ace13dc2d53ebeedc81f58" +
        "b2e41179dddf0d5a5c42f5d8506c1a5d2f8f59f3ea873cbcd0eec19acbf325423bd3dcb8c2b1bf1d1eaed0eba7f0698e4314fbeb2f1566d1b9253008cbccf45a" +
        "2b0d9c5c9c21474f4076e02be26050b99dee4fd68a4cf890e496e4fcae7b70f94ea5a9062da0daeba1993d2ccd1dd3c244b8428801495a58b216547e7e847c46" +
        "d1d756377b6242d2e5fb83bf752b54e0df71e889f3a2bb0f4c10805bf3c590376e3c24e22ff57f7fa965577375325cea5d920db94b9c336b455f6e894c01866f" +
        "e9fbb8c8d3f70a2957285f6dfb5dcd8cbf54782f8fe7766d4723819913ac773421e3a31095866bad22c86a6036b2518b2059b4229d18c8c2ccbdf906c6cc6e82" +
        "464ee57bddb0bebcb1dc645325bfb3e665ef7251082c88ebb1cf203bd779fdd38675713c8daadd17e1cabee432b09787b6ddf3304e38b731b45df5df51b78fcf" +
        "b3d32466028d0ba36555e7e11ab0ee0666061d1645d962444bc47a38188930a84b4d561395c73c087021927ca638b7afc8a8679ccb84c26555440ec7f10445cd";

    private static string CountingSector()
    {
        var bytes = new byte[512];
        for (int i = 0; i < bytes.Length; i++) bytes[i] = (byte)i;
        return Convert.ToHexStringLower(bytes);
    }

    public static TheoryData<long, string, string> Runs() => new()
    {
        { 0L, CountingSector() + Vector4 + Vector5, Vector4 + Vector5 + Vector6 },
        { 0xfdL, Vector7Plain + Vector7 + Vector8, Vector7 + Vector8 + Vector9 },
    };

    [Theory]
    [MemberData(nameof(Runs))]
    public void SectorCipher_ThreeSectorsInOneCall_AreTheVectors(long firstSector, string plain, string cipher)
    {
        using var sectors = new SectorCipher(CipherAlgorithm.Aes128, CipherMode.Xts, IvGenAlgorithm.Plain64, CipherAlgorithm.Aes128,
            HashAlgorithm.Sha256, Convert.FromHexString(Key));
        var data = Convert.FromHexString(plain);
        sectors.Encrypt(firstSector * SectorCipher.SectorSize, data);
        Assert.Equal(cipher, Convert.ToHexStringLower(data));
        sectors.Decrypt(firstSector * SectorCipher.SectorSize, data);
        Assert.Equal(plain, Convert.ToHexStringLower(data));
    }

    [Theory]
    [MemberData(nameof(Runs))]
    public void XtsCipher_ThreeUnitsInOneCall_AreTheVectors(long firstSector, string plain, string cipher)
    {
        using var xts = new XtsCipher(CipherAlgorithm.Aes128, Convert.FromHexString(Key));
        var ivs = new byte[3 * 16];
        for (int i = 0; i < 3; i++) BinaryPrimitives.WriteUInt64LittleEndian(ivs.AsSpan(i * 16), (ulong)(firstSector + i));
        var data = Convert.FromHexString(plain);
        xts.EncryptUnits(ivs, data);
        Assert.Equal(cipher, Convert.ToHexStringLower(data));
        xts.DecryptUnits(ivs, data);
        Assert.Equal(plain, Convert.ToHexStringLower(data));
    }

    [Fact]
    public void SectorCipher_MoreSectorsThanOneBatch_AndAPartialLastSector_EqualsSectorBySector()
    {
        // 300 sectors take more than one batch of IVs; the 100-byte tail is XTS with stealing on its own.
        var key = new byte[64];
        for (int i = 0; i < key.Length; i++) key[i] = (byte)(i * 7 + 3);
        using var cipher = new SectorCipher(CipherAlgorithm.Aes256, CipherMode.Xts, IvGenAlgorithm.Plain64, CipherAlgorithm.Aes256, HashAlgorithm.Sha256, key);
        const int sector = SectorCipher.SectorSize;
        var plain = new byte[300 * sector + 100];
        for (int i = 0; i < plain.Length; i++) plain[i] = (byte)(i * 31 + (i >> 9));
        long firstSector = (1L << 32) - 7; // the sector number passes 32 bits inside the buffer
        var each = (byte[])plain.Clone();
        for (int at = 0; at < each.Length; at += sector)
            cipher.Encrypt(firstSector * sector + at, each.AsSpan(at, Math.Min(sector, each.Length - at)));
        var all = (byte[])plain.Clone();
        cipher.Encrypt(firstSector * sector, all);
        Assert.Equal(each, all);
        cipher.Decrypt(firstSector * sector, all);
        Assert.Equal(plain, all);
    }
}
