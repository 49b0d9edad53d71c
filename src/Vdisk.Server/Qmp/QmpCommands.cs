using Vdisk.Options;
using Vdisk.Server.Daemon;
using static Vdisk.Server.Qmp.QmpJson;

namespace Vdisk.Server.Qmp;

/// <summary>What a command returns, and work to do after its reply went out.</summary>
/// <param name="Return">The <c>return</c> value.</param>
/// <param name="After">Deferred work (a hard export deletion's disconnects and event), or null.</param>
public sealed record QmpResult(OptionValue Return, Func<Task>? After = null);

/// <summary>A QMP command: its argument schema and what it does to the daemon.</summary>
/// <param name="Name">The command name.</param>
/// <param name="Arguments">The argument schema.</param>
/// <param name="Handler">Runs the command (with the daemon's operations serialized).</param>
public sealed record QmpCommand(string Name, QapiStruct Arguments, Func<StorageDaemon, OptionDict, Task<QmpResult>> Handler);

/// <summary>The commands vdisk serve answers, with QEMU's names, arguments and replies.</summary>
public static class QmpCommands
{
    /// <summary>The QEMU version vdisk's QMP dialect follows.</summary>
    public static OptionDict Version() => Dict(
        ("qemu", Dict(("major", Int(7)), ("minor", Int(2)), ("micro", Int(0)))),
        ("package", Str($"vdisk {typeof(QmpCommands).Assembly.GetName().Version?.ToString(3) ?? "0"}")));

    private static readonly OptionDict Empty = new();

    private static Task<QmpResult> Done(OptionValue value) => Task.FromResult(new QmpResult(value));

    private static readonly QmpCommand[] s_commands =
    [
        new("qmp_capabilities", QmpSchema.QmpCapabilities, (_, _) => Done(Empty)),
        new("query-version", QmpSchema.NoArguments, (_, _) => Done(Version())),
        new("query-commands", QmpSchema.NoArguments, (_, _) => Done(List(s_commands!.Select(c => (OptionValue)Dict(("name", Str(c.Name))))))),
        // qemu-storage-daemon deletes its exports as its main loop ends, before the reply to
        // quit goes out: the client reads the BLOCK_EXPORT_DELETED events first.
        new("quit", QmpSchema.NoArguments, async (d, _) =>
        {
            await d.DeleteAllExportsAsync().ConfigureAwait(false);
            return new QmpResult(Empty, () =>
            {
                d.RequestQuit();
                return Task.CompletedTask;
            });
        }),
        new("blockdev-add", QmpSchema.BlockdevOptions, (d, a) =>
        {
            d.AddBlockdev(a);
            return Done(Empty);
        }),
        new("blockdev-del", QmpSchema.BlockdevDel, async (d, a) =>
        {
            await d.DeleteBlockdevAsync(ExportRequest.Text(a, "node-name")!).ConfigureAwait(false);
            return new QmpResult(Empty);
        }),
        new("blockdev-set-active", QmpSchema.BlockdevSetActive, async (d, a) =>
        {
            await d.SetActiveAsync(ExportRequest.Text(a, "node-name"), ExportRequest.Flag(a, "active")!.Value).ConfigureAwait(false);
            return new QmpResult(Empty);
        }),
        new("x-vdisk-blockdev-reserve", QmpSchema.BlockdevReserve, (d, a) =>
        {
            d.Reserve(ExportRequest.Text(a, "node-name"), ExportRequest.Flag(a, "reserve")!.Value);
            return Done(Empty);
        }),
        new("nbd-server-start", QmpSchema.NbdServerStart, (d, a) =>
        {
            d.StartNbdServer(NbdServerRequest.From(a, legacyAddress: true));
            return Done(Empty);
        }),
        new("nbd-server-stop", QmpSchema.NoArguments, async (d, _) =>
        {
            await d.StopNbdServerAsync().ConfigureAwait(false);
            return new QmpResult(Empty);
        }),
        new("block-export-add", QmpSchema.BlockExportOptions, async (d, a) =>
        {
            await d.AddExportAsync(ExportRequest.From(a)).ConfigureAwait(false);
            return new QmpResult(Empty);
        }),
        new("block-export-del", QmpSchema.BlockExportDel, async (d, a) =>
        {
            var after = await d.DeleteExportAsync(ExportRequest.Text(a, "id")!, ExportRequest.Text(a, "mode") == "hard").ConfigureAwait(false);
            return new QmpResult(Empty, after);
        }),
        new("query-block-exports", QmpSchema.NoArguments, (d, _) => Done(d.QueryBlockExports())),
        new("query-named-block-nodes", QmpSchema.QueryNamedBlockNodes, (d, a) => Done(d.QueryNamedBlockNodes(ExportRequest.Flag(a, "flat") ?? false))),
    ];

    /// <summary>Every command, in the order query-commands lists them.</summary>
    public static IReadOnlyList<QmpCommand> All => s_commands;

    /// <summary>The command called <paramref name="name"/>, or null.</summary>
    public static QmpCommand? Find(string name) => s_commands.FirstOrDefault(c => c.Name == name);
}
