/* epoll_echo: a hand-written single-threaded epoll TCP echo server, the
 * baseline of the weft echo benchmarks.
 *
 *   epoll_echo PORT
 *
 * Listens on 127.0.0.1:PORT and serves until killed. One thread, one
 * level-triggered epoll set, non-blocking sockets. Per readable event it
 * does one read() of up to 64 KiB into a shared buffer and write()s it
 * straight back: with level triggering there is no extra read() to hit
 * EAGAIN, so an echo costs epoll_wait + read + write. If the write is
 * partial, the rest is copied into a per-connection buffer and the
 * connection waits for EPOLLOUT only (no reading, so a client that doesn't
 * read can't make the server buffer without bound) until it is flushed.
 * Accepted sockets get TCP_NODELAY.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#define BUF_SIZE (64 * 1024)
#define MAX_EVENTS 1024

struct pending { /* unsent tail of a partial write */
    char *data;
    size_t len, off;
};

static char buf[BUF_SIZE];
static struct pending *pend; /* indexed by fd */
static int npend;
static int ep;

static void drop(int fd)
{
    free(pend[fd].data);
    pend[fd] = (struct pending){ 0 };
    close(fd); /* removes it from the epoll set */
}

static void want(int fd, unsigned events)
{
    struct epoll_event ev = { .events = events, .data.fd = fd };
    if (epoll_ctl(ep, EPOLL_CTL_MOD, fd, &ev) < 0)
        drop(fd);
}

static void flush(int fd)
{
    struct pending *p = &pend[fd];
    while (p->off < p->len) {
        ssize_t n = write(fd, p->data + p->off, p->len - p->off);
        if (n > 0) {
            p->off += (size_t)n;
        } else if (n < 0 && errno == EINTR) {
            continue;
        } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            return; /* still waiting for EPOLLOUT */
        } else {
            drop(fd);
            return;
        }
    }
    free(p->data);
    *p = (struct pending){ 0 };
    want(fd, EPOLLIN);
}

static void echo(int fd)
{
    ssize_t n = read(fd, buf, sizeof buf);
    if (n <= 0) {
        if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR))
            drop(fd);
        return;
    }
    ssize_t w = write(fd, buf, (size_t)n);
    if (w == n)
        return;
    if (w < 0) {
        if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
            drop(fd);
            return;
        }
        w = 0;
    }
    struct pending *p = &pend[fd];
    p->len = (size_t)(n - w);
    p->off = 0;
    p->data = malloc(p->len);
    if (!p->data) {
        drop(fd);
        return;
    }
    memcpy(p->data, buf + w, p->len);
    want(fd, EPOLLOUT);
}

static void accept_all(int lfd)
{
    for (;;) {
        int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                return;
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            perror("epoll_echo: accept4"); /* e.g. EMFILE: retried on the next event */
            return;
        }
        if (fd >= npend) {
            fprintf(stderr, "epoll_echo: fd %d too large, closing\n", fd);
            close(fd);
            continue;
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        struct epoll_event ev = { .events = EPOLLIN, .data.fd = fd };
        if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) < 0) {
            perror("epoll_echo: epoll_ctl");
            close(fd);
        }
    }
}

int main(int argc, char **argv)
{
    char *end;
    long port = argc == 2 ? strtol(argv[1], &end, 10) : -1;
    if (argc != 2 || *end || port < 1 || port > 65535) {
        fprintf(stderr, "usage: epoll_echo PORT\n");
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);

    struct rlimit rl;
    npend = 65536;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < (rlim_t)npend)
        npend = (int)rl.rlim_cur;
    pend = calloc((size_t)npend, sizeof *pend);

    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (!pend || lfd < 0 || bind(lfd, (struct sockaddr *)&sa, sizeof sa) < 0 || listen(lfd, 4096) < 0) {
        perror("epoll_echo: listen 127.0.0.1");
        return 1;
    }
    ep = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event lev = { .events = EPOLLIN, .data.fd = lfd };
    if (ep < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &lev) < 0) {
        perror("epoll_echo: epoll");
        return 1;
    }
    fprintf(stderr, "epoll_echo: listening on 127.0.0.1:%ld\n", port);

    struct epoll_event evs[MAX_EVENTS];
    for (;;) {
        int n = epoll_wait(ep, evs, MAX_EVENTS, -1);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            perror("epoll_echo: epoll_wait");
            return 1;
        }
        for (int i = 0; i < n; i++) {
            int fd = evs[i].data.fd;
            if (fd == lfd)
                accept_all(lfd);
            else if (pend[fd].data)
                flush(fd);
            else
                echo(fd);
        }
    }
}
