/* net.c — socket ops: accept, connect, recv, send (whole), sendto,
 * recvfrom, and the TCP/UDP/Unix conveniences.
 *
 * Sockets are created blocking: io_uring then waits for readiness inside
 * the kernel (internal poll) instead of failing with -EAGAIN. A receive
 * is tried before that poll is armed (not IORING_RECVSEND_POLL_FIRST: see
 * weft_recv); a send first tries
 * the syscall with MSG_DONTWAIT and only queues on the ring when the
 * socket buffer is full (as Go's netpoller tries before it parks). A socket the
 * user made O_NONBLOCK can still return -EAGAIN from the kernel; recv,
 * send and accept then wait with weft_poll and retry, so the caller never
 * sees it. Sends use MSG_NOSIGNAL: a closed peer is -EPIPE, not SIGPIPE.
 *
 * Names are resolved with getaddrinfo on the blocking pool; numeric
 * addresses (and NULL/"" for "any") without it.
 */
#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/un.h>
#include <unistd.h>

#include "io.h"
#include "weft/blocking.h"
#include "weft/io.h"
#include "weft/net.h"

int weft_accept(int lfd, struct sockaddr *sa, socklen_t *len)
{
	if (lfd < 0)
		return -EBADF;
	if (sa && !len)
		return -EFAULT;
	for (;;) {
		int r;
		{
			WEFT__IO_INTO(r, io_uring_prep_accept(sqe, lfd, sa, len,
							      SOCK_CLOEXEC));
		}
		if (r >= 0) {
			/* as Go does: no Nagle delay on accepted TCP streams
			 * (fails harmlessly on Unix sockets) */
			int one = 1;
			setsockopt(r, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
		}
		if (r != -EAGAIN)
			return r;
		if ((r = weft_poll(lfd, POLLIN)) < 0)
			return r;
	}
}

int weft_connect(int fd, const struct sockaddr *sa, socklen_t len)
{
	if (fd < 0)
		return -EBADF;
	if (!sa)
		return -EFAULT;
	int r;
	WEFT__IO_INTO(r, io_uring_prep_connect(sqe, fd, sa, len));
	return r;
}

ssize_t weft_recv(int fd, void *buf, size_t n, int flags)
{
	if (fd < 0)
		return -EBADF;
	if (!buf && n)
		return -EFAULT;
	/* seeded runs (weft/sim.h): a reset or a short receive */
	if (weft__fault(WEFT_FAULT_RESET))
		return -ECONNRESET;
	n = weft__fault_short(fd, weft__io_len(n));
	for (;;) {
		int r;
		/* No IORING_RECVSEND_POLL_FIRST: with it the kernel arms the
		 * poll before it looks at the fd, so a pipe or a listening
		 * socket (where recv(2) fails at once: -ENOTSOCK, -ENOTCONN)
		 * waited until it became readable, forever if it never did.
		 * Tried first, the receive fails as the syscall does. */
		WEFT__IO_INTO(r, io_uring_prep_recv(sqe, fd, buf, n, flags));
		if (r != -EAGAIN || (flags & MSG_DONTWAIT))
			return r;
		if ((r = weft_poll(fd, POLLIN)) < 0)
			return r;
	}
}

static ssize_t send_once(int fd, const void *buf, size_t n, int flags)
{
	/* Try the send syscall first without blocking, as Go's netpoller
	 * does: a socket buffer usually has room, and then the fiber neither
	 * parks nor waits for a CQE. Only a full buffer goes to the ring. A
	 * cancelled fiber or a passed deadline still fails first. */
	weft_task *self = weft__self(NULL);
	if (weft__fault(WEFT_FAULT_RESET)) /* seeded runs (weft/sim.h) */
		return -ECONNRESET;
	n = weft__fault_short(fd, weft__io_len(n));
	if (self && !(flags & MSG_DONTWAIT)) {
		int e = weft__io_check(self);
		if (e)
			return e;
		ssize_t r = send(fd, buf, n, flags | MSG_DONTWAIT | MSG_NOSIGNAL);
		if (r >= 0)
			return r;
		if (errno != EAGAIN && errno != EWOULDBLOCK)
			return -errno;
	}
	for (;;) {
		int r;
		WEFT__IO_INTO(r, io_uring_prep_send(sqe, fd, buf, n,
						    flags | MSG_NOSIGNAL));
		if (r != -EAGAIN || (flags & MSG_DONTWAIT))
			return r;
		if ((r = weft_poll(fd, POLLOUT)) < 0)
			return r;
	}
}

ssize_t weft_send(int fd, const void *buf, size_t n, int flags)
{
	if (fd < 0)
		return -EBADF;
	if (!buf && n)
		return -EFAULT;
	size_t done = 0;
	do {
		ssize_t r = send_once(fd, (const char *)buf + done, n - done,
				      flags);
		if (r < 0)
			return done ? (ssize_t)done : r;
		done += (size_t)r;
	} while (done < n);
	return (ssize_t)done;
}

ssize_t weft_sendto(int fd, const void *buf, size_t n, int flags,
		    const struct sockaddr *sa, socklen_t len)
{
	if (fd < 0)
		return -EBADF;
	if (!buf && n)
		return -EFAULT;
	struct iovec iov = {(void *)buf, n};
	struct msghdr mh = {.msg_name = (void *)sa,
			    .msg_namelen = sa ? len : 0,
			    .msg_iov = &iov,
			    .msg_iovlen = 1};
	int r;
	WEFT__IO_INTO(r, io_uring_prep_sendmsg(sqe, fd, &mh,
					       (unsigned)(flags | MSG_NOSIGNAL)));
	return r;
}

ssize_t weft_recvfrom(int fd, void *buf, size_t n, int flags,
		      struct sockaddr *sa, socklen_t *len)
{
	if (fd < 0)
		return -EBADF;
	if ((!buf && n) || (sa && !len))
		return -EFAULT;
	struct iovec iov = {buf, n};
	struct msghdr mh = {.msg_name = sa,
			    .msg_namelen = sa ? *len : 0,
			    .msg_iov = &iov,
			    .msg_iovlen = 1};
	int r;
	WEFT__IO_INTO(r, io_uring_prep_recvmsg(sqe, fd, &mh, (unsigned)flags));
	if (r >= 0 && sa)
		*len = mh.msg_namelen;
	return r;
}

/* ---- addresses ---------------------------------------------------------------- */

struct resolve {
	const char *host;
	char port[8];
	int socktype, passive;
	struct addrinfo *res;
	int err;
};

static void *do_getaddrinfo(void *p)
{
	struct resolve *r = p;
	struct addrinfo hints = {.ai_family = AF_UNSPEC,
				 .ai_socktype = r->socktype,
				 .ai_flags = r->passive ? AI_PASSIVE : 0};
	r->err = getaddrinfo(r->host, r->port, &hints, &r->res);
	return NULL;
}

/* One address for host:port. Numeric and empty hosts directly; names on
 * the blocking pool. With all != NULL, a name's whole getaddrinfo list is
 * handed back there (the caller frees it; ss holds its first address);
 * *all is NULL for a numeric or empty host. */
static int resolve(const char *host, uint16_t port, int socktype, bool passive,
		   struct sockaddr_storage *ss, socklen_t *len,
		   struct addrinfo **all)
{
	if (all)
		*all = NULL;
	memset(ss, 0, sizeof *ss);
	struct sockaddr_in *s4 = (struct sockaddr_in *)ss;
	struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)ss;
	if (!host || !*host) {
		s6->sin6_family = AF_INET6;
		s6->sin6_port = htons(port);
		s6->sin6_addr = passive ? in6addr_any : in6addr_loopback;
		*len = sizeof *s6;
		return 0;
	}
	if (inet_pton(AF_INET, host, &s4->sin_addr) == 1) {
		s4->sin_family = AF_INET;
		s4->sin_port = htons(port);
		*len = sizeof *s4;
		return 0;
	}
	if (inet_pton(AF_INET6, host, &s6->sin6_addr) == 1) {
		s6->sin6_family = AF_INET6;
		s6->sin6_port = htons(port);
		*len = sizeof *s6;
		return 0;
	}
	if (strlen(host) > 253)
		return -EINVAL;
	struct resolve rq = {.host = host, .socktype = socktype,
			     .passive = passive};
	snprintf(rq.port, sizeof rq.port, "%u", port);
	int r = weft_blocking(do_getaddrinfo, &rq, NULL);
	if (r)
		return r;
	if (rq.err)
		return rq.err == EAI_NONAME || rq.err == EAI_NODATA ? -ENOENT
		       : rq.err == EAI_MEMORY			     ? -ENOMEM
		       : rq.err == EAI_AGAIN			     ? -EAGAIN
									     : -EINVAL;
	memcpy(ss, rq.res->ai_addr, rq.res->ai_addrlen);
	*len = rq.res->ai_addrlen;
	if (all)
		*all = rq.res;
	else
		freeaddrinfo(rq.res);
	return 0;
}

static int sock_of(int family, int type)
{
	int fd = socket(family, type | SOCK_CLOEXEC, 0);
	return fd < 0 ? -errno : fd;
}

static int bind_listen(int fd, const struct sockaddr *sa, socklen_t len,
		       int backlog)
{
	if (bind(fd, sa, len) != 0 || (backlog >= 0 && listen(fd, backlog) != 0)) {
		int e = -errno;
		close(fd);
		return e;
	}
	return fd;
}

int weft_tcp_listen(const char *host, uint16_t port, int backlog)
{
	struct sockaddr_storage ss;
	socklen_t len;
	int r = resolve(host, port, SOCK_STREAM, true, &ss, &len, NULL);
	if (r)
		return r;
	int fd = sock_of(ss.ss_family, SOCK_STREAM);
	if (fd < 0 && (!host || !*host)) {
		/* no IPv6 here: any IPv4 address */
		struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
		memset(&ss, 0, sizeof ss);
		s4->sin_family = AF_INET;
		s4->sin_port = htons(port);
		len = sizeof *s4;
		fd = sock_of(AF_INET, SOCK_STREAM);
	}
	if (fd < 0)
		return fd;
	int one = 1, zero = 0;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
	if (ss.ss_family == AF_INET6)
		setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof zero);
	return bind_listen(fd, (struct sockaddr *)&ss, len,
			   backlog > 0 ? backlog : SOMAXCONN);
}

/* the calling fiber was cancelled or its deadline passed: its waits fail
 * from now on (an -ETIMEDOUT of TCP's own, SYNs unanswered, is not this) */
static bool stopped(void)
{
	weft_task *self = weft__self(NULL);
	if (!self)
		return false;
	if (weft__cancelled(self))
		return true;
	return self->deadline && weft__clock() >= self->deadline;
}

int weft_tcp_connect(const char *host, uint16_t port)
{
	if (!host || !*host)
		return -EINVAL;
	struct sockaddr_storage ss;
	socklen_t len;
	struct addrinfo *all;
	int r = resolve(host, port, SOCK_STREAM, false, &ss, &len, &all);
	if (r)
		return r;
	/* Every address in the resolver's order until one connects, as Go
	 * and Tokio do ("localhost" may give ::1 first to an IPv4-only
	 * server); the first failure is reported if none does. Cancelled or
	 * out of time: that is reported, and nothing more is tried. */
	int first = 0;
	for (struct addrinfo *ai = all;;) {
		int fd = sock_of(ss.ss_family, SOCK_STREAM);
		if (fd >= 0) {
			int one = 1;
			setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one,
				   sizeof one);
			r = weft_connect(fd, (struct sockaddr *)&ss, len);
			if (r >= 0) {
				r = fd;
				break;
			}
			close(fd);
		} else {
			r = fd;
		}
		if (!first)
			first = r;
		if (stopped())
			break;
		if (!ai || !ai->ai_next) {
			r = first;
			break;
		}
		ai = ai->ai_next;
		memcpy(&ss, ai->ai_addr, ai->ai_addrlen);
		len = ai->ai_addrlen;
	}
	if (all)
		freeaddrinfo(all);
	return r;
}

int weft_udp_bind(const char *host, uint16_t port)
{
	struct sockaddr_storage ss;
	socklen_t len;
	int r = resolve(host, port, SOCK_DGRAM, true, &ss, &len, NULL);
	if (r)
		return r;
	int fd = sock_of(ss.ss_family, SOCK_DGRAM);
	if (fd < 0)
		return fd;
	int zero = 0;
	if (ss.ss_family == AF_INET6)
		setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof zero);
	return bind_listen(fd, (struct sockaddr *)&ss, len, -1);
}

static int unix_addr(const char *path, struct sockaddr_un *su, socklen_t *len)
{
	if (!path || !*path)
		return -EINVAL;
	size_t n = strlen(path);
	if (n >= sizeof su->sun_path)
		return -ENAMETOOLONG;
	memset(su, 0, sizeof *su);
	su->sun_family = AF_UNIX;
	memcpy(su->sun_path, path, n);
	*len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n + 1);
	return 0;
}

int weft_unix_listen(const char *path, int backlog)
{
	struct sockaddr_un su;
	socklen_t len;
	int r = unix_addr(path, &su, &len);
	if (r)
		return r;
	int fd = sock_of(AF_UNIX, SOCK_STREAM);
	if (fd < 0)
		return fd;
	unlink(path); /* a stale socket file from an earlier run */
	return bind_listen(fd, (struct sockaddr *)&su, len,
			   backlog > 0 ? backlog : SOMAXCONN);
}

int weft_unix_connect(const char *path)
{
	struct sockaddr_un su;
	socklen_t len;
	int r = unix_addr(path, &su, &len);
	if (r)
		return r;
	int fd = sock_of(AF_UNIX, SOCK_STREAM);
	if (fd < 0)
		return fd;
	if ((r = weft_connect(fd, (struct sockaddr *)&su, len)) < 0) {
		close(fd);
		return r;
	}
	return fd;
}
