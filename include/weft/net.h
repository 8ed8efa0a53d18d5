/* weft/net.h — sockets through the worker's io_uring (see weft/io.h for
 * the shared rules: fiber only, negative errno, -ECANCELED, -ETIMEDOUT).
 *
 * Returned descriptors are close-on-exec. A refused connect is
 * -ECONNREFUSED, a reset peer -ECONNRESET; a peer that closed makes
 * weft_recv return 0. Host names are resolved on the blocking pool
 * (getaddrinfo never stalls a worker); numeric addresses directly.
 */
#ifndef WEFT_NET_H
#define WEFT_NET_H

#include <sys/socket.h>
#include <sys/types.h>

#include "common.h"

WEFT_BEGIN_DECLS

WEFT_API int weft_accept(int lfd, struct sockaddr *sa, socklen_t *len);
WEFT_API int weft_connect(int fd, const struct sockaddr *sa, socklen_t len);
WEFT_API ssize_t weft_recv(int fd, void *buf, size_t n, int flags);
/* Sends everything, looping over short sends (as weft_write). */
WEFT_API ssize_t weft_send(int fd, const void *buf, size_t n, int flags);
WEFT_API ssize_t weft_sendto(int fd, const void *buf, size_t n, int flags,
			     const struct sockaddr *sa, socklen_t len);
WEFT_API ssize_t weft_recvfrom(int fd, void *buf, size_t n, int flags,
			       struct sockaddr *sa, socklen_t *len);

/* TCP: host NULL or "" listens on every address (IPv6 and IPv4); port 0
 * picks a free port (read it back with getsockname). SO_REUSEADDR is set.
 * Returns the fd; -ENOENT for a host that does not resolve, -EAGAIN for a
 * temporary resolver failure, -EADDRINUSE, ... */
WEFT_API int weft_tcp_listen(const char *host, uint16_t port, int backlog);
/* Resolves, connects (TCP_NODELAY set) and returns the fd. Each resolved
 * address is tried in turn; if none connects, the first one's error. */
WEFT_API int weft_tcp_connect(const char *host, uint16_t port);
/* UDP socket bound to host:port (port 0: any). */
WEFT_API int weft_udp_bind(const char *host, uint16_t port);
/* Unix stream sockets; listen unlinks whatever is at path first (a stale
 * socket from an earlier run). */
WEFT_API int weft_unix_listen(const char *path, int backlog);
WEFT_API int weft_unix_connect(const char *path);

WEFT_END_DECLS

#endif
