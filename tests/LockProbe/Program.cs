// A small program over the vdisk library, used by the interop tests as a lock holder and as a
// racer. Modes:
//   hold IMG PERM UNSHARED      open raw IMG taking PERM and refusing UNSHARED, print "held", wait
//   worker IMG PERM UNSHARED    per stdin line: "go" -> try to open, print "admitted" or
//                               "refused <message>"; "go PERM UNSHARED" -> the same with that
//                               request; "release" -> close, print "released"
//   twonodes IMG PERM UNSHARED  open IMG as the first node, then a second read-only node on the
//                               same file, close the second, print "held", wait (the first
//                               node's locks must survive, also with POSIX locks)
//   hold-many DIR COUNT PERM UNSHARED
//                               open the first COUNT files of DIR (by name) the same way, print
//                               "held COUNT", wait (one cheap process holding many images; raise
//                               `ulimit -n` for large counts)
// IMG is a path (raw) or "opts:" followed by an --image-opts string.
// PERM and UNSHARED are comma lists of: read, write, write-unchanged, resize (or "-" for none).
using Vdisk;
using Vdisk.Permissions;

static BlockPermission ParsePerms(string text)
{
    var p = BlockPermission.None;
    if (text == "-") return p;
    foreach (var part in text.Split(','))
    {
        p |= part switch
        {
            "read" => BlockPermission.ConsistentRead,
            "write" => BlockPermission.Write,
            "write-unchanged" => BlockPermission.WriteUnchanged,
            "resize" => BlockPermission.Resize,
            _ => throw new ArgumentException($"unknown permission '{part}'"),
        };
    }
    return p;
}

if (args.Length == 5 && args[0] == "hold-many")
{
    var many = new PermissionPair(ParsePerms(args[3]), BlockPermission.All & ~ParsePerms(args[4]));
    var manyFlags = (many.Perm & (BlockPermission.Write | BlockPermission.Resize)) != 0 ? OpenFlags.ReadWrite : OpenFlags.None;
    var files = Directory.GetFiles(args[1]).Order(StringComparer.Ordinal).Take(int.Parse(args[2])).ToList();
    var held = files.Select(f => DiskImage.Open(ImageSource.FromFile(f, "raw"), manyFlags, many)).ToList();
    Console.WriteLine($"held {held.Count}");
    Console.Out.Flush();
    Thread.Sleep(Timeout.Infinite);
    GC.KeepAlive(held);
    return 0;
}
if (args.Length != 4)
{
    Console.Error.WriteLine("usage: LockProbe hold|worker|twonodes IMG PERM UNSHARED | hold-many DIR COUNT PERM UNSHARED");
    return 2;
}
var source = args[1].StartsWith("opts:", StringComparison.Ordinal)
    ? ImageSource.FromImageOptions(args[1]["opts:".Length..])
    : ImageSource.FromFile(args[1], "raw");
Diagnostics.WarningSink = message => Console.Error.WriteLine(message.TrimStart('\n'));
var request = new PermissionPair(ParsePerms(args[2]), BlockPermission.All & ~ParsePerms(args[3]));
var flags = (request.Perm & (BlockPermission.Write | BlockPermission.Resize)) != 0 ? OpenFlags.ReadWrite : OpenFlags.None;

switch (args[0])
{
    case "hold":
        using (DiskImage.Open(source, flags, request))
        {
            Console.WriteLine("held");
            Console.Out.Flush();
            Thread.Sleep(Timeout.Infinite);
        }
        return 0;
    case "twonodes":
        using (DiskImage.Open(source, flags, request))
        {
            using (DiskImage.Open(source, OpenFlags.None, new PermissionPair(BlockPermission.ConsistentRead, BlockPermission.All)))
            {
            }
            Console.WriteLine("held");
            Console.Out.Flush();
            Thread.Sleep(Timeout.Infinite);
        }
        return 0;
    case "worker":
        DiskImage? image = null;
        Console.WriteLine("ready");
        string? line;
        while ((line = Console.ReadLine()) is not null)
        {
            if (line == "go" || line.StartsWith("go ", StringComparison.Ordinal))
            {
                var words = line.Split(' ');
                var asked = words.Length == 3 ? new PermissionPair(ParsePerms(words[1]), BlockPermission.All & ~ParsePerms(words[2])) : request;
                var askedFlags = (asked.Perm & (BlockPermission.Write | BlockPermission.Resize)) != 0 ? OpenFlags.ReadWrite : OpenFlags.None;
                try
                {
                    image = DiskImage.Open(source, askedFlags, asked);
                    Console.WriteLine("admitted");
                }
                catch (IOException e)
                {
                    Console.WriteLine("refused " + e.Message);
                }
            }
            else if (line == "release")
            {
                image?.Dispose();
                image = null;
                Console.WriteLine("released");
            }
            Console.Out.Flush();
        }
        return 0;
    default:
        Console.Error.WriteLine($"unknown mode '{args[0]}'");
        return 2;
}
