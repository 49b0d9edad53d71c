using Vdisk.Native;
using Vdisk.Options;

namespace Vdisk.Drivers.Qcow2;

// qcow2_reopen_prepare/commit/abort for the runtime options a reopen may change.
public sealed partial class Qcow2Node
{
    /// <summary>
    /// Whether refcount updates are postponed (the dirty bit set before the first write):
    /// the lazy-refcounts option, else the image's lazy_refcounts bit; amend and reopen change it.
    /// </summary>
    internal bool UseLazyRefcounts { get; set; }

    private bool? _reopenLazyRefcounts;

    /// <summary>
    /// qcow2_update_options_prepare for lazy-refcounts (vdisk refuses the other qcow2 options on
    /// a reopen): turning it on needs a v3 image; turning it off marks the image clean at once,
    /// its refcounts written first.
    /// </summary>
    protected internal override string? PrepareReopen(IReadOnlyDictionary<string, string?> options)
    {
        bool? lazy = null;
        foreach (var (key, value) in options)
        {
            if (key != "lazy-refcounts") return $"Cannot change the option '{key}'";
            lazy = value is null ? null : NodeOptions.ParseBool(value);
            if (lazy is null) return $"Parameter '{key}' expects 'on' or 'off'";
        }
        if (lazy == true && _header.Version < 3)
            return "Lazy refcounts require a qcow2 image with at least qemu 1.1 compatibility level";
        if (lazy == false && UseLazyRefcounts && !IsReadOnly)
        {
            try
            {
                MarkCleanAsync().AsTask().GetAwaiter().GetResult();
            }
            catch (NativeIOException e)
            {
                return $"Failed to disable lazy refcounts: {NativeIOException.Describe(e.Errno)}";
            }
        }
        _reopenLazyRefcounts = lazy;
        return null;
    }

    /// <inheritdoc />
    protected internal override void CommitReopen()
    {
        if (_reopenLazyRefcounts is { } lazy)
        {
            // Turned on, the next write sets the dirty bit (PrepareForWritesLockedAsync).
            if (lazy && !UseLazyRefcounts) _preparedForWrites = false;
            UseLazyRefcounts = lazy;
        }
        _reopenLazyRefcounts = null;
    }

    /// <inheritdoc />
    protected internal override void AbortReopen() => _reopenLazyRefcounts = null;

    private async ValueTask MarkCleanAsync()
    {
        await LockQuiescedAsync().ConfigureAwait(false);
        try
        {
            await FlushLockedAsync(CancellationToken.None).ConfigureAwait(false);
            await MarkCleanLockedAsync().ConfigureAwait(false);
            // The next write prepares the image again, without the dirty bit now.
            _preparedForWrites = false;
        }
        finally
        {
            _lock.Release();
        }
    }
}
