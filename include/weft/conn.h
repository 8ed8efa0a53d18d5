/* weft/conn.h — server-oriented sockets on multishot io_uring ops.
 *
 * weft_recv arms one receive per call. A weft_conn arms ONE multishot
 * receive (IORING_RECV_MULTISHOT) on the worker ring and keeps it armed:
 * the kernel fills buffers from that worker's registered buffer ring
 * (io_uring_register_buf_ring) as data arrives, and weft_conn_recv copies
 * out of them. No submission per message, no poll re-armed per message.
 * The buffers are shared by every connection on a worker (lazily set up:
 * weft_config.conn_buffers x conn_buffer_size); a connection holding
 * 16 unread buffers stops receiving until it is read (back-pressure), and
 * one that finds the pool empty re-arms when it is next read. Without
 * buffer rings (old kernels) a weft_conn falls back to weft_recv.
 *
 * A weft_listener arms one multishot accept and queues the connections it
 * brings (64 queued pause it until they are taken).
 *
 * Fiber only; one reader (acceptor) at a time. weft_conn_send batches
 * sends into the worker's submit (no syscall per message); weft_send on
 * weft_conn_fd(c) works too (a syscall first), but not both at once. */
#ifndef WEFT_CONN_H
#define WEFT_CONN_H

#include <sys/socket.h>
#include <sys/types.h>

#include "common.h"

WEFT_BEGIN_DECLS

typedef struct weft_conn weft_conn;

/* Wrap a connected stream socket (accepted or connected); the conn owns fd
 * from now on. Returns the conn, or NULL with *err (if err is not NULL) set
 * to -EBADF (fd < 0), -EINVAL (not in a fiber) or -ENOMEM. */
WEFT_API weft_conn *weft_conn_open(int fd, int *err);

/* Receive up to n bytes (like weft_recv with flags 0). Returns the count
 * (> 0), 0 once the peer has closed and everything was read, or
 *   -ECANCELED / -ETIMEDOUT  the caller was cancelled / its deadline
 *                            passed (nothing is lost: data that arrives
 *                            stays queued for the next call);
 *   -ENOMEM   it had to wait under a deadline scope and found no memory
 *             for the deadline's timer (nothing is lost either);
 *   -EBUSY    another fiber is already waiting in weft_conn_recv on c;
 *   -EBADF    weft_conn_close(c) was called meanwhile (closing wakes);
 *   -EINVAL   c NULL, or not called from a fiber;
 *   -EFAULT   buf NULL with n > 0;
 *   or the socket's error (-ECONNRESET, ...), once. */
WEFT_API ssize_t weft_conn_recv(weft_conn *c, void *buf, size_t n);

/* Send n bytes: copy them into c's send buffer and hand that to the
 * kernel (MSG_WAITALL) in the worker's next batched submit; return
 * without waiting for it, as send(2) returns once the socket has the
 * data. One send is in flight per conn: a call while the previous one is
 * still in flight waits for it (a peer that stops reading holds the
 * sender, as with weft_send); over 64 KiB goes in 64 KiB pieces. Returns
 * n, or the count taken before an error (what was taken is sent), or
 *   the first send error (-ECONNRESET, -EPIPE, ...; -ENOTSOCK, -EBADF
 *   at once), at every later call;
 *   -ECANCELED / -ETIMEDOUT  while waiting (the send in flight goes on);
 *   -EBUSY    another fiber is already waiting in weft_conn_send on c;
 *   -EBADF    weft_conn_close(c) was called meanwhile;
 *   -ENOMEM   no memory for the send buffer;
 *   -EINVAL   c NULL, or not called from a fiber; -EFAULT buf NULL, n > 0. */
WEFT_API ssize_t weft_conn_send(weft_conn *c, const void *buf, size_t n);

/* The socket (for weft_send, setsockopt, getpeername; not for close). */
WEFT_API int weft_conn_fd(const weft_conn *c);

/* Stop receiving, give the buffers back, close the fd and free c. A fiber
 * waiting in weft_conn_recv or weft_conn_send on c returns -EBADF first
 * (Go's Close); this waits (not cancellably) for it to leave and for the
 * kernel to finish with the multishot receive, and lets a send in flight
 * finish (cancellably: if the caller is cancelled or its deadline passes,
 * the send is cancelled and this returns -ECANCELED / -ETIMEDOUT). Else
 * returns 0, a send error no call has returned yet, or the error of
 * close(2); -ENOMEM under a deadline scope with no memory for its timer
 * (as a wait's). c is freed all the same, except for: -EINVAL c NULL or
 * the caller not a fiber, and -EBADF another close of c is under way
 * (which frees it): then nothing was done. */
WEFT_API int weft_conn_close(weft_conn *c);

typedef struct weft_listener weft_listener;

/* Wrap a listening socket (weft_tcp_listen, weft_unix_listen); it owns lfd
 * from now on. NULL with *err: -EBADF, -EINVAL (not a fiber), -ENOMEM. */
WEFT_API weft_listener *weft_listener_open(int lfd, int *err);
/* The next connection, as weft_accept (close-on-exec, TCP_NODELAY; sa/len
 * from getpeername, *len 0 if that failed). Returns the fd, or -ECANCELED,
 * -ETIMEDOUT, -ENOMEM (as for weft_conn_recv; a connection that arrives
 * later stays queued), -EBUSY
 * (another fiber waits on l), -EBADF (l is being closed), -EINVAL (l NULL, not a fiber), -EFAULT (sa
 * without len), or an accept error once (-EMFILE, -ENFILE, ...: the next
 * call accepts again). */
WEFT_API int weft_listener_accept(weft_listener *l, struct sockaddr *sa,
				  socklen_t *len);
WEFT_API int weft_listener_fd(const weft_listener *l);
/* Stop accepting, close queued connections and lfd, free l; a fiber in
 * weft_listener_accept on l returns -EBADF. Returns as weft_conn_close. */
WEFT_API int weft_listener_close(weft_listener *l);

WEFT_END_DECLS

#endif
