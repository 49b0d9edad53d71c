using System.Buffers;
using Vdisk.Options;

namespace Vdisk.Server.Qmp;

/// <summary>One top-level JSON text cut out of the input stream, or an error to report.</summary>
/// <param name="Json">The bytes of one value, when <paramref name="Error"/> is null.</param>
/// <param name="Error">A framing error.</param>
/// <param name="Fatal">True when the stream cannot be trusted any more: answer, then disconnect.</param>
public readonly record struct QmpInput(byte[]? Json, QmpException? Error, bool Fatal);

/// <summary>
/// Cuts a QMP byte stream into JSON values the way QEMU's json-streamer does: by tracking
/// brackets and strings, so that no newline is needed and an unfinished object simply waits
/// for more input. A 0xFF byte resets the parser (qmp-spec). Values above
/// <see cref="MaxMessageLength"/> or deeper than <see cref="JsonOptions.MaxNesting"/> are fatal.
/// </summary>
public sealed class QmpInputSplitter
{
    /// <summary>Largest value accepted.</summary>
    public const int MaxMessageLength = 1024 * 1024;

    private enum State
    {
        Idle,
        Structured,
        Bare,
    }

    private readonly ArrayBufferWriter<byte> _current = new();
    private State _state;
    private int _depth;
    private bool _inString;
    private bool _escape;

    /// <summary>Feeds bytes; returns the values and errors they complete.</summary>
    public List<QmpInput> Feed(ReadOnlySpan<byte> data)
    {
        var output = new List<QmpInput>();
        foreach (byte b in data) Step(b, output);
        return output;
    }

    private void Step(byte b, List<QmpInput> output)
    {
        if (b == 0xFF)
        {
            Reset();
            return;
        }
        switch (_state)
        {
            case State.Idle:
                StepIdle(b, output);
                return;
            case State.Bare:
                if (IsDelimiter(b))
                {
                    Emit(output);
                    StepIdle(b, output);
                }
                else
                {
                    Append(b, output);
                }
                return;
            case State.Structured:
                Append(b, output);
                if (_state != State.Structured) return;
                if (_inString)
                {
                    if (_escape) _escape = false;
                    else if (b == '\\') _escape = true;
                    else if (b == '"')
                    {
                        _inString = false;
                        if (_depth == 0) Emit(output);
                    }
                    return;
                }
                switch (b)
                {
                    case (byte)'"':
                        _inString = true;
                        break;
                    case (byte)'{' or (byte)'[':
                        if (++_depth > JsonOptions.MaxNesting) Fail(output, "JSON nesting depth limit exceeded");
                        break;
                    case (byte)'}' or (byte)']':
                        if (--_depth == 0) Emit(output);
                        break;
                }
                return;
        }
    }

    private void StepIdle(byte b, List<QmpInput> output)
    {
        if (b is (byte)' ' or (byte)'\t' or (byte)'\r' or (byte)'\n') return;
        switch (b)
        {
            case (byte)'{' or (byte)'[':
                _state = State.Structured;
                _depth = 1;
                Put(b);
                return;
            case (byte)'"':
                _state = State.Structured;
                _depth = 0;
                _inString = true;
                Put(b);
                return;
            case (byte)'}' or (byte)']' or (byte)',' or (byte)':':
                output.Add(new QmpInput(null, QmpException.Generic("JSON parse error, expecting value"), false));
                return;
            default:
                _state = State.Bare;
                Put(b);
                return;
        }
    }

    private static bool IsDelimiter(byte b) => b is (byte)' ' or (byte)'\t' or (byte)'\r' or (byte)'\n'
        or (byte)'{' or (byte)'}' or (byte)'[' or (byte)']' or (byte)',' or (byte)':' or (byte)'"';

    private void Append(byte b, List<QmpInput> output)
    {
        if (_current.WrittenCount >= MaxMessageLength)
        {
            Fail(output, "JSON token size limit exceeded");
            return;
        }
        Put(b);
    }

    private void Put(byte b)
    {
        _current.GetSpan(1)[0] = b;
        _current.Advance(1);
    }

    private void Emit(List<QmpInput> output)
    {
        output.Add(new QmpInput(_current.WrittenSpan.ToArray(), null, false));
        Reset();
    }

    private void Fail(List<QmpInput> output, string message)
    {
        output.Add(new QmpInput(null, QmpException.Generic(message), true));
        Reset();
    }

    private void Reset()
    {
        _current.Clear();
        _state = State.Idle;
        _depth = 0;
        _inString = false;
        _escape = false;
    }
}
