/* file.c — file and descriptor ops: read, write (whole), readv, writev,
 * open, close, fsync. Each validates, preps one SQE and awaits (io.h). */
#include <fcntl.h>

#include "io.h"
#include "weft/io.h"

static inline uint64_t off_of(int64_t off)
{
	return off < 0 ? (uint64_t)-1 : (uint64_t)off; /* -1: file position */
}

ssize_t weft_read(int fd, void *buf, size_t n, int64_t off)
{
	if (fd < 0)
		return -EBADF;
	if (!buf && n)
		return -EFAULT;
	n = weft__io_len(n);
	n = weft__fault_short(fd, n); /* seeded runs (weft/sim.h) */
	WEFT__IO(io_uring_prep_read(sqe, fd, buf, (unsigned)n, off_of(off)));
}

ssize_t weft_readv(int fd, const struct iovec *iov, int cnt, int64_t off)
{
	if (fd < 0)
		return -EBADF;
	if (cnt < 0 || cnt > 1024 || (!iov && cnt))
		return -EINVAL;
	WEFT__IO(io_uring_prep_readv(sqe, fd, iov, (unsigned)cnt, off_of(off)));
}

ssize_t weft_writev(int fd, const struct iovec *iov, int cnt, int64_t off)
{
	if (fd < 0)
		return -EBADF;
	if (cnt < 0 || cnt > 1024 || (!iov && cnt))
		return -EINVAL;
	WEFT__IO(io_uring_prep_writev(sqe, fd, iov, (unsigned)cnt,
				      off_of(off)));
}

static ssize_t write_once(int fd, const void *buf, size_t n, int64_t off)
{
	n = weft__io_len(n);
	n = weft__fault_short(fd, n);
	WEFT__IO(io_uring_prep_write(sqe, fd, buf, (unsigned)n, off_of(off)));
}

ssize_t weft_write(int fd, const void *buf, size_t n, int64_t off)
{
	if (fd < 0)
		return -EBADF;
	if (!buf && n)
		return -EFAULT;
	/* off + done below must not overflow */
	if (off >= 0 && n > (uint64_t)(INT64_MAX - off))
		return -EINVAL;
	size_t done = 0;
	do {
		ssize_t r = write_once(fd, (const char *)buf + done, n - done,
				       off < 0 ? -1 : off + (int64_t)done);
		if (r < 0)
			return done ? (ssize_t)done : r;
		if (r == 0)
			break; /* nothing more will go */
		done += (size_t)r;
	} while (done < n);
	return (ssize_t)done;
}

int weft_open(const char *path, int flags, mode_t mode)
{
	if (!path)
		return -EFAULT;
	WEFT__IO(io_uring_prep_openat(sqe, AT_FDCWD, path, flags | O_CLOEXEC,
				      mode));
}

/* close(2) here, on the worker: for a fiber that must not wait */
static int close_now(int fd)
{
	return close(fd) ? -errno : 0;
}

/* A close is cleanup: it is not cancellable and ignores deadlines (Go's
 * Close, asyncio's transport.close()). Before, a cancelled fiber's close
 * failed with -ECANCELED and left the fd open: a server cancelled at
 * shutdown leaked every connection it closed on its way out. Through the
 * ring when it can wait (a close that must flush, on NFS, does not stall
 * the worker); cancelled or past the deadline, close(2) at once. */
int weft_close(int fd)
{
	if (fd < 0)
		return -EBADF;
	struct weft__worker *w;
	weft_task *self = weft__self(&w);
	int err;
	if (self) /* ops waiting on fd end with -EBADF (io/uring.c) */
		weft__io_revoke(w, self, fd);
	struct io_uring_sqe *sqe = weft__io_begin(&w, &self, &err);
	if (!sqe)
		return err == -EINVAL ? err : close_now(fd);
	io_uring_prep_close(sqe, fd);
	struct weft__op op;
	int r = weft__io_submit_wait(w, self, &op, sqe);
	if (op.res == -ECANCELED) /* cancelled before it ran: still open */
		return close_now(fd);
	/* -EINTR: interrupted while flushing, after the fd was released (as
	 * close(2) on Linux): closed, and to retry would close a reused fd */
	return op.res == -EINTR ? 0 : r;
}

int weft_fsync(int fd)
{
	if (fd < 0)
		return -EBADF;
	WEFT__IO(io_uring_prep_fsync(sqe, fd, 0));
}
