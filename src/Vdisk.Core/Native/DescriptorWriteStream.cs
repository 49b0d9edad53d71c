using Microsoft.Win32.SafeHandles;

namespace Vdisk.Native;

/// <summary>
/// A write-only stream on an inherited descriptor (stdout, stderr), written with write(2) as
/// QEMU's tools write theirs. Unlike <see cref="Console.OpenStandardOutput()"/>'s stream, a write
/// does not initialise the runtime's terminal layer (a signal-handling thread, termios queries
/// and, on a terminal, the terminfo database and a keypad-mode escape sequence qemu-img never
/// writes). Like it, a closed pipe (EPIPE) drops the bytes silently and a non-blocking
/// descriptor is waited for. Not seekable: the descriptor's own offset (and O_APPEND) applies.
/// </summary>
public sealed unsafe class DescriptorWriteStream : Stream
{
    private readonly SafeFileHandle _handle;

    /// <summary>A stream on <paramref name="fd"/>, which it does not close.</summary>
    public DescriptorWriteStream(int fd) => _handle = new SafeFileHandle(fd, ownsHandle: false);

    /// <inheritdoc />
    public override void Write(ReadOnlySpan<byte> buffer)
    {
        fixed (byte* start = buffer)
        {
            byte* p = start;
            nuint left = (nuint)buffer.Length;
            while (left > 0)
            {
                nint n = LibC.Write(_handle, p, left);
                if (n >= 0)
                {
                    p += n;
                    left -= (nuint)n;
                    continue;
                }
                int errno = LibC.LastError;
                if (errno == Errno.EINTR) continue;
                if (errno == Errno.EPIPE) return; // the reader went away: nothing to tell it
                if (errno == Errno.EAGAIN)
                {
                    var poll = new LibC.PollFd { Fd = (int)_handle.DangerousGetHandle(), Events = LibC.POLLOUT };
                    LibC.Poll(&poll, 1, -1);
                    continue;
                }
                throw new IOException(LibC.StrError(errno), errno);
            }
        }
    }

    /// <inheritdoc />
    public override void Write(byte[] buffer, int offset, int count) => Write(buffer.AsSpan(offset, count));

    /// <inheritdoc />
    public override void WriteByte(byte value) => Write([value]);

    /// <inheritdoc />
    public override void Flush()
    {
    }

    /// <inheritdoc />
    public override bool CanRead => false;

    /// <inheritdoc />
    public override bool CanSeek => false;

    /// <inheritdoc />
    public override bool CanWrite => true;

    /// <inheritdoc />
    public override long Length => throw new NotSupportedException();

    /// <inheritdoc />
    public override long Position
    {
        get => throw new NotSupportedException();
        set => throw new NotSupportedException();
    }

    /// <inheritdoc />
    public override int Read(byte[] buffer, int offset, int count) => throw new NotSupportedException();

    /// <inheritdoc />
    public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();

    /// <inheritdoc />
    public override void SetLength(long value) => throw new NotSupportedException();
}
