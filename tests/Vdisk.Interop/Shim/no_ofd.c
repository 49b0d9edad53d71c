/* LD_PRELOAD shim for tests: makes every F_OFD_* fcntl fail with EINVAL, as on a kernel
 * without open-file-description locks, so QEMU and vdisk both take their POSIX fallback. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>

int fcntl(int fd, int cmd, ...)
{
    static int (*real_fcntl)(int, int, ...);
    va_list ap;
    void *arg;

    if (!real_fcntl)
        real_fcntl = (int (*)(int, int, ...))dlsym(RTLD_NEXT, "fcntl");
    va_start(ap, cmd);
    arg = va_arg(ap, void *);
    va_end(ap);
    if (cmd == F_OFD_GETLK || cmd == F_OFD_SETLK || cmd == F_OFD_SETLKW) {
        errno = EINVAL;
        return -1;
    }
    return real_fcntl(fd, cmd, arg);
}

int fcntl64(int fd, int cmd, ...) __attribute__((alias("fcntl")));
