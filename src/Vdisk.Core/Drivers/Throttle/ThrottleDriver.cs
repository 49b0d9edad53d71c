using Vdisk.Graph;
using Vdisk.Options;

namespace Vdisk.Drivers.Throttle;

/// <summary>
/// QEMU's <c>throttle</c> filter (block/throttle.c): requests to its <c>file</c> child wait as
/// the limits of the throttle group named by <c>throttle-group=ID</c> say (see <see cref="ThrottleGroup"/>).
/// </summary>
public sealed class ThrottleDriver : IBlockDriver
{
    /// <summary>The driver's name.</summary>
    public const string DriverName = "throttle";

    /// <summary>QEMU_OPT_THROTTLE_GROUP_NAME.</summary>
    public const string GroupOption = "throttle-group";

    /// <inheritdoc />
    public string Name => DriverName;

    /// <inheritdoc />
    public bool IsProtocol => false;

    /// <inheritdoc />
    public BlockNode Open(NodeOpenContext context)
    {
        // throttle_open: the child first, then throttle_parse_options.
        var file = context.OpenChild("file");
        string? groupName = context.Options.TakeString(GroupOption);
        context.Options.EnsureAllUsed(Name, isProtocol: false);
        if (groupName is null) throw new OptionException("Please specify a throttle group");
        var group = ThrottleGroups.Find(groupName) ?? throw new OptionException($"Throttle group '{groupName}' does not exist");
        var member = group.Register();
        try
        {
            return new ThrottleNode(context.NodeName, context.Flags, file, member);
        }
        catch
        {
            member.Dispose();
            throw;
        }
    }
}
