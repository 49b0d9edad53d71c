using System.Runtime.InteropServices;
using Spectre.Console;
using Vdisk.Cli.Common;
using Vdisk.Output;

namespace Vdisk.Cli.Img;

/// <summary>
/// The -p progress of convert, commit, rebase and amend. Into a pipe or file, stdout gets
/// exactly qemu-img's lines (<c>"    (12.50/100%)\r"</c> ..., a newline at the end), which
/// scripts parse; on a terminal a Spectre.Console bar is drawn instead and left on screen at
/// 100%. Without -p nothing is printed, but SIGUSR1 asks for one report on stderr, as in qemu-img.
/// </summary>
internal sealed class ImgProgress : IDisposable
{
    /// <summary>SIGUSR1 on Linux.</summary>
    private const int SigUsr1 = 10;

    private readonly QemuProgress _progress;
    private readonly PosixSignalRegistration? _signal;
    private readonly TerminalBar? _bar;
    private bool _ended;

    /// <summary>qemu_progress_init(enabled, minSkip).</summary>
    public ImgProgress(bool enabled, float minSkip, string description)
    {
        bool terminal = enabled && !Console.IsOutputRedirected;
        _progress = new QemuProgress(enabled && !terminal, minSkip,
            text => { Stdio.Out.Write(text); Stdio.Out.Flush(); },
            text => Stdio.ErrorRaw(text));
        if (terminal) _bar = new TerminalBar(description);
        if (!enabled)
        {
            try
            {
                _signal = PosixSignalRegistration.Create((PosixSignal)SigUsr1, context =>
                {
                    context.Cancel = true;
                    _progress.RequestReport();
                });
            }
            catch (Exception e) when (e is PlatformNotSupportedException or IOException)
            {
                // No report on request then; the verb itself is unaffected.
            }
        }
    }

    /// <summary>qemu_progress_print.</summary>
    public void Print(float delta, int max)
    {
        _progress.Print(delta, max);
        _bar?.Set(_progress.Current);
    }

    /// <summary>qemu_progress_end (once).</summary>
    public void End()
    {
        if (_ended) return;
        _ended = true;
        if (_bar is not null) _bar.Finish();
        else _progress.End();
    }

    public void Dispose()
    {
        End();
        _signal?.Dispose();
    }

    /// <summary>A Spectre.Console bar on stdout, redrawn from the latest value until finished, then left on screen.</summary>
    private sealed class TerminalBar
    {
        private readonly TaskCompletionSource _finished = new(TaskCreationOptions.RunContinuationsAsynchronously);
        private readonly Task _rendering;
        private double _value;

        public TerminalBar(string description)
        {
            var console = AnsiConsole.Create(new AnsiConsoleSettings { Out = new AnsiConsoleOutput(Console.Out) });
            _rendering = console.Progress()
                .AutoClear(false)
                .HideCompleted(false)
                .Columns(new TaskDescriptionColumn(), new ProgressBarColumn(), new PercentageColumn(), new RemainingTimeColumn())
                .StartAsync(async ctx =>
                {
                    var task = ctx.AddTask(description, maxValue: 100);
                    while (!_finished.Task.IsCompleted)
                    {
                        task.Value = Volatile.Read(ref _value);
                        await Task.WhenAny(_finished.Task, Task.Delay(100));
                    }
                    task.Value = Volatile.Read(ref _value);
                    ctx.Refresh();
                });
        }

        public void Set(float percent) => Volatile.Write(ref _value, Math.Clamp(percent, 0, 100));

        public void Finish()
        {
            _finished.TrySetResult();
            _rendering.GetAwaiter().GetResult();
        }
    }
}
