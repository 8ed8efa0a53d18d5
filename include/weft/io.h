/* weft/io.h — file and descriptor I/O through the worker's io_uring.
 *
 * Each call suspends the calling fiber, never the worker: it queues one
 * operation on the ring of the worker it runs on and parks; the completion
 * makes it runnable again. Calls must come from a fiber (else -EINVAL).
 * Results are those of the matching syscall as a negative errno (-EBADF,
 * -EFAULT, -ENOENT, ...), plus:
 *   -ECANCELED  the fiber was cancelled (weft_cancel): the operation was
 *               cancelled in the kernel and the buffer is no longer used;
 *   -ETIMEDOUT  the fiber's deadline scope expired (a linked timeout).
 * When a call returns, the kernel is done with its buffers, always.
 */
#ifndef WEFT_IO_H
#define WEFT_IO_H

#include <sys/types.h>
#include <sys/uio.h>

#include "common.h"

WEFT_BEGIN_DECLS

/* off = -1: the file position (pipes, sockets, terminals). Short reads are
 * returned as the kernel gives them; 0 is end of file. */
WEFT_API ssize_t weft_read(int fd, void *buf, size_t n, int64_t off);
WEFT_API ssize_t weft_readv(int fd, const struct iovec *iov, int cnt,
			    int64_t off);
/* Writes everything, looping over short writes: returns n, or a negative
 * errno if nothing was written, or the bytes written before an error
 * (which the next call reports). */
WEFT_API ssize_t weft_write(int fd, const void *buf, size_t n, int64_t off);
/* One vectored write as the kernel does it (may be short). */
WEFT_API ssize_t weft_writev(int fd, const struct iovec *iov, int cnt,
			     int64_t off);

/* openat(AT_FDCWD, ...) with O_CLOEXEC added. Returns the fd. */
WEFT_API int weft_open(const char *path, int flags, mode_t mode);
/* Closes fd: 0 or the kernel's error. Calls other fibers wait in on fd
 * return -EBADF first (Go's Close). Not cancellable and deaf to
 * deadlines (cleanup must happen): a cancelled fiber still closes. */
WEFT_API int weft_close(int fd);
WEFT_API int weft_fsync(int fd);

/* Readiness of a descriptor the fiber does not own the I/O of (an
 * OpenSSL or database client socket): waits until one of `events`
 * (POLLIN, POLLOUT, ...) holds and returns the revents mask (> 0). */
WEFT_API int weft_poll(int fd, short events);

WEFT_END_DECLS

#endif
