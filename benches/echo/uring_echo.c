/* uring_echo: a hand-written single-threaded io_uring TCP echo server, the
 * "best a plain io_uring loop does" peer of the weft echo benchmarks.
 *
 *   uring_echo PORT
 *
 * Listens on 127.0.0.1:PORT and serves until killed (SIGTERM/SIGINT: the
 * default action). One thread, one ring (SINGLE_ISSUER | DEFER_TASKRUN,
 * else COOP_TASKRUN, else none; always SUBMIT_ALL), no other syscalls on
 * the hot path:
 *
 *  - one multishot accept on the listening socket (re-armed if it ends);
 *    accepted sockets get TCP_NODELAY (a setsockopt per connection);
 *  - per connection one multishot recv that picks buffers from a provided
 *    buffer ring (NBUFS x BUF_SIZE in 2 MiB-aligned memory advised
 *    MADV_HUGEPAGE, registered with io_uring_register_buf_ring), re-armed
 *    when a CQE comes without IORING_CQE_F_MORE; on -ENOBUFS the connection
 *    waits until buffers come back and is re-armed then;
 *  - recv and send use a sparse fixed-file table indexed by fd
 *    (IOSQE_FIXED_FILE; one io_uring_register_files_update per accept and
 *    per close), and the ring fd is registered, if the kernel lets us;
 *  - each received buffer is echoed with io_uring_prep_send straight from
 *    the provided buffer (MSG_NOSIGNAL | MSG_WAITALL) and put back into the
 *    buffer ring when its send CQE arrives. At most one send per connection
 *    is in flight (sends to one socket issued in parallel could be
 *    reordered if one has to wait for space), later buffers wait in a
 *    per-connection FIFO. A short or failed send closes the connection.
 *  - the loop is io_uring_submit_and_wait(ring, 1), then all CQEs are
 *    handled (io_uring_for_each_cqe) and retired with one
 *    io_uring_cq_advance, and the returned buffers are published with one
 *    io_uring_buf_ring_advance, before the next submit.
 *
 * State lives in an array indexed by fd; user_data = op | fd | generation
 * | buffer id, so CQEs still in flight when a connection closes (and its fd
 * is reused) are recognised as stale: they only give their buffer back.
 * Closing: shutdown(2) first if the multishot recv may still be armed (it
 * then completes), then close(2).
 *
 * -DNBUFS=16 -DBUF_SIZE=512 exercises the -ENOBUFS and send-queue paths;
 * -DUSE_FIXED=0 / -DUSE_HUGE=0 turn those two optimisations off.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <liburing.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#define SQ_ENTRIES 4096
#define CQ_ENTRIES (4 * SQ_ENTRIES)
#ifndef NBUFS
#define NBUFS 4096 /* power of two, <= 32768 */
#endif
#ifndef BUF_SIZE
#define BUF_SIZE 4096
#endif
#define BGID 0
#ifndef USE_FIXED
#define USE_FIXED 1
#endif
#ifndef USE_HUGE
#define USE_HUGE 1
#endif
#define HUGE_2M (2u << 20)

enum { OP_ACCEPT = 1, OP_RECV, OP_SEND };

/* user_data: op in bits 0-7, buffer id in 8-23, generation in 24-39, fd in 40-63 */
static inline uint64_t ud(unsigned op, int fd, unsigned gen, unsigned bid)
{
    return (uint64_t)op | (uint64_t)(bid & 0xffff) << 8 | (uint64_t)(gen & 0xffff) << 24 |
           (uint64_t)(uint32_t)fd << 40;
}
#define UD_OP(u) ((unsigned)((u) & 0xff))
#define UD_BID(u) ((unsigned)(((u) >> 8) & 0xffff))
#define UD_GEN(u) ((unsigned)(((u) >> 24) & 0xffff))
#define UD_FD(u) ((int)((u) >> 40))

struct conn {
    uint16_t gen;        /* bumped on every accept of this fd */
    uint8_t open;
    uint8_t recv_armed;  /* a multishot recv is (or may be) in flight */
    uint8_t sending;     /* a send is in flight */
    uint8_t starved;     /* fd is in starved[] (kept across close/accept) */
    uint8_t fixed;       /* registered in the fixed-file table at index fd */
    int qhead, qtail;    /* FIFO of received buffers waiting to be sent, -1: empty */
};

static struct io_uring ring;
static struct conn *conns; /* indexed by fd */
static int nconns;
static int lfd;
static int nfixed;         /* size of the sparse fixed-file table, 0: none */

static struct io_uring_buf_ring *br;
static char *bufmem;
static unsigned bmask;
static int breturned;       /* buffers added to br since the last advance */
static int bheld;           /* buffers owned by us (received, not yet returned) */
static uint32_t blen[NBUFS]; /* bytes in a held buffer */
static int bnext[NBUFS];    /* FIFO link of a queued buffer */

static int *starved;        /* fds whose recv ended with -ENOBUFS: re-armed when buffers return */
static int nstarved;

static struct io_uring_sqe *sqe_get(void)
{
    struct io_uring_sqe *sqe;
    while (!(sqe = io_uring_get_sqe(&ring))) {
        int r = io_uring_submit(&ring);
        if (r < 0 && r != -EINTR && r != -EAGAIN && r != -EBUSY) {
            fprintf(stderr, "uring_echo: io_uring_submit: %s\n", strerror(-r));
            exit(1);
        }
    }
    return sqe;
}

static void buf_return(unsigned bid)
{
    io_uring_buf_ring_add(br, bufmem + (size_t)bid * BUF_SIZE, BUF_SIZE, (unsigned short)bid, (int)bmask,
                          breturned++);
    bheld--;
}

static void arm_accept(void)
{
    struct io_uring_sqe *sqe = sqe_get();
    io_uring_prep_multishot_accept(sqe, lfd, NULL, NULL, SOCK_CLOEXEC);
    io_uring_sqe_set_data64(sqe, ud(OP_ACCEPT, lfd, 0, 0));
}

static void arm_recv(int fd)
{
    struct io_uring_sqe *sqe = sqe_get();
    io_uring_prep_recv_multishot(sqe, fd, NULL, 0, 0);
    sqe->flags |= IOSQE_BUFFER_SELECT;
    sqe->buf_group = BGID;
    if (conns[fd].fixed)
        sqe->flags |= IOSQE_FIXED_FILE;
    io_uring_sqe_set_data64(sqe, ud(OP_RECV, fd, conns[fd].gen, 0));
    conns[fd].recv_armed = 1;
}

static void send_buf(int fd, unsigned bid)
{
    struct io_uring_sqe *sqe = sqe_get();
    io_uring_prep_send(sqe, fd, bufmem + (size_t)bid * BUF_SIZE, blen[bid], MSG_NOSIGNAL | MSG_WAITALL);
    if (conns[fd].fixed)
        sqe->flags |= IOSQE_FIXED_FILE;
    io_uring_sqe_set_data64(sqe, ud(OP_SEND, fd, conns[fd].gen, bid));
    conns[fd].sending = 1;
}

static void conn_close(int fd)
{
    struct conn *c = &conns[fd];
    for (int b = c->qhead; b >= 0; b = bnext[b])
        buf_return((unsigned)b);
    if (c->recv_armed)
        shutdown(fd, SHUT_RDWR); /* completes the multishot recv (a stale CQE then) */
    if (c->fixed) {
        int none = -1;
        io_uring_register_files_update(&ring, (unsigned)fd, &none, 1);
    }
    close(fd);
    c->open = c->recv_armed = c->sending = c->fixed = 0;
    c->qhead = c->qtail = -1;
    c->gen++;
}

static void on_accept(struct io_uring_cqe *cqe)
{
    if (!(cqe->flags & IORING_CQE_F_MORE))
        arm_accept();
    int fd = cqe->res;
    if (fd < 0) {
        if (fd != -EINTR && fd != -ECONNABORTED && fd != -EAGAIN)
            fprintf(stderr, "uring_echo: accept: %s\n", strerror(-fd));
        return;
    }
    if (fd >= nconns) {
        fprintf(stderr, "uring_echo: fd %d too large, closing\n", fd);
        close(fd);
        return;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct conn *c = &conns[fd];
    c->open = 1;
    c->qhead = c->qtail = -1;
    c->fixed = fd < nfixed && io_uring_register_files_update(&ring, (unsigned)fd, &fd, 1) == 1;
    arm_recv(fd);
}

static void on_recv(struct io_uring_cqe *cqe)
{
    uint64_t u = io_uring_cqe_get_data64(cqe);
    int fd = UD_FD(u), res = cqe->res;
    struct conn *c = &conns[fd];
    int have_buf = (cqe->flags & IORING_CQE_F_BUFFER) != 0;
    unsigned bid = cqe->flags >> IORING_CQE_BUFFER_SHIFT;
    if (have_buf)
        bheld++;
    if (!c->open || c->gen != UD_GEN(u)) { /* stale: the connection is gone */
        if (have_buf)
            buf_return(bid);
        return;
    }
    int more = (cqe->flags & IORING_CQE_F_MORE) != 0;
    if (!more)
        c->recv_armed = 0;
    if (res > 0 && have_buf) {
        blen[bid] = (uint32_t)res;
        if (c->sending) { /* queue behind the send in flight */
            bnext[bid] = -1;
            if (c->qtail >= 0)
                bnext[c->qtail] = (int)bid;
            else
                c->qhead = (int)bid;
            c->qtail = (int)bid;
        } else {
            send_buf(fd, bid);
        }
        if (!more)
            arm_recv(fd);
        return;
    }
    if (have_buf)
        buf_return(bid);
    if (res == -ENOBUFS) {
        if (!c->starved) {
            c->starved = 1;
            starved[nstarved++] = fd;
        }
        return;
    }
    if (res < 0 && res != -ECONNRESET && res != -EPIPE)
        fprintf(stderr, "uring_echo: recv fd %d: %s\n", fd, strerror(-res));
    if (!more) /* EOF or error */
        conn_close(fd);
}

static void on_send(struct io_uring_cqe *cqe)
{
    uint64_t u = io_uring_cqe_get_data64(cqe);
    int fd = UD_FD(u);
    unsigned bid = UD_BID(u);
    struct conn *c = &conns[fd];
    int ok = cqe->res == (int)blen[bid];
    buf_return(bid);
    if (!c->open || c->gen != UD_GEN(u))
        return;
    c->sending = 0;
    if (!ok) { /* error or short send (MSG_WAITALL): give up on the connection */
        conn_close(fd);
        return;
    }
    if (c->qhead >= 0) {
        unsigned next = (unsigned)c->qhead;
        c->qhead = bnext[next];
        if (c->qhead < 0)
            c->qtail = -1;
        send_buf(fd, next);
    }
}

static int setup_ring(void)
{
    static const unsigned flag_sets[] = {
        IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN,
        IORING_SETUP_COOP_TASKRUN,
        0,
    };
    static const char *const names[] = { "SINGLE_ISSUER|DEFER_TASKRUN", "COOP_TASKRUN", "none" };
    int r = -EINVAL;
    for (unsigned i = 0; i < sizeof flag_sets / sizeof flag_sets[0]; i++) {
        struct io_uring_params p;
        memset(&p, 0, sizeof p);
        p.flags = flag_sets[i] | IORING_SETUP_SUBMIT_ALL | IORING_SETUP_CQSIZE;
        p.cq_entries = CQ_ENTRIES;
        r = io_uring_queue_init_params(SQ_ENTRIES, &ring, &p);
        if (r == 0) {
            fprintf(stderr, "uring_echo: ring %u/%u entries, flags %s|SUBMIT_ALL\n", p.sq_entries,
                    p.cq_entries, names[i]);
            return 0;
        }
        if (r != -EINVAL)
            break;
    }
    fprintf(stderr, "uring_echo: io_uring_queue_init_params: %s\n", strerror(-r));
    return -1;
}

static int setup_bufs(void)
{
    size_t pg = (size_t)sysconf(_SC_PAGESIZE);
    size_t br_bytes = (NBUFS * sizeof(struct io_uring_buf) + pg - 1) & ~(pg - 1);
    br = mmap(NULL, br_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    /* buffers in 2 MiB-aligned transparent huge pages: the kernel takes
     * them in ring order, so with 4 KiB pages every message would land on
     * another page (a TLB miss per copy at 1000 connections) */
    size_t bytes = (size_t)NBUFS * BUF_SIZE, extra = USE_HUGE ? HUGE_2M : 0;
    char *p = mmap(NULL, bytes + extra, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (br == MAP_FAILED || p == MAP_FAILED) {
        perror("uring_echo: mmap");
        return -1;
    }
    bufmem = p;
    if (extra) {
        bufmem = (char *)(((uintptr_t)p + HUGE_2M - 1) & ~(uintptr_t)(HUGE_2M - 1));
        madvise(bufmem, bytes, MADV_HUGEPAGE); /* advice only */
    }
    struct io_uring_buf_reg reg;
    memset(&reg, 0, sizeof reg);
    reg.ring_addr = (uint64_t)(uintptr_t)br;
    reg.ring_entries = NBUFS;
    reg.bgid = BGID;
    int r = io_uring_register_buf_ring(&ring, &reg, 0);
    if (r) {
        fprintf(stderr, "uring_echo: io_uring_register_buf_ring: %s\n", strerror(-r));
        return -1;
    }
    io_uring_buf_ring_init(br);
    bmask = (unsigned)io_uring_buf_ring_mask(NBUFS);
    bheld = NBUFS;
    for (unsigned b = 0; b < NBUFS; b++)
        buf_return(b);
    io_uring_buf_ring_advance(br, breturned);
    breturned = 0;
    return 0;
}

int main(int argc, char **argv)
{
    char *end;
    long port = argc == 2 ? strtol(argv[1], &end, 10) : -1;
    if (argc != 2 || *end || port < 1 || port > 65535) {
        fprintf(stderr, "usage: uring_echo PORT\n");
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);

    struct rlimit rl;
    nconns = 65536;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < (rlim_t)nconns)
        nconns = (int)rl.rlim_cur;
    conns = calloc((size_t)nconns, sizeof *conns);
    starved = malloc((size_t)nconns * sizeof *starved);

    /* blocking listening socket: io_uring never blocks on it, and a
     * non-blocking one would make accept fail with -EAGAIN instead of waiting */
    lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (!conns || !starved || lfd < 0 || bind(lfd, (struct sockaddr *)&sa, sizeof sa) < 0 ||
        listen(lfd, 4096) < 0) {
        perror("uring_echo: listen 127.0.0.1");
        return 1;
    }
    if (setup_ring() < 0 || setup_bufs() < 0)
        return 1;
    io_uring_register_ring_fd(&ring); /* optional: saves an fd lookup per io_uring_enter */
    /* optional: a sparse fixed-file table indexed by fd, so that recv and
     * send skip the fd table and the file refcount (IOSQE_FIXED_FILE) */
    if (USE_FIXED && io_uring_register_files_sparse(&ring, (unsigned)nconns) == 0)
        nfixed = nconns;
    arm_accept();
    fprintf(stderr, "uring_echo: listening on 127.0.0.1:%ld\n", port);

    for (;;) {
        int r = io_uring_submit_and_wait(&ring, 1);
        if (r < 0 && r != -EINTR && r != -EAGAIN && r != -EBUSY && r != -ETIME) {
            fprintf(stderr, "uring_echo: io_uring_submit_and_wait: %s\n", strerror(-r));
            return 1;
        }
        struct io_uring_cqe *cqe;
        unsigned head, seen = 0;
        io_uring_for_each_cqe(&ring, head, cqe)
        {
            switch (UD_OP(io_uring_cqe_get_data64(cqe))) {
            case OP_ACCEPT:
                on_accept(cqe);
                break;
            case OP_RECV:
                on_recv(cqe);
                break;
            case OP_SEND:
                on_send(cqe);
                break;
            }
            seen++;
        }
        io_uring_cq_advance(&ring, seen);
        if (breturned) {
            io_uring_buf_ring_advance(br, breturned);
            breturned = 0;
        }
        /* re-arm connections that ran out of buffers, one per free buffer */
        for (int nfree = NBUFS - bheld; nstarved > 0 && nfree > 0; nfree--) {
            int fd = starved[--nstarved];
            conns[fd].starved = 0;
            if (conns[fd].open && !conns[fd].recv_armed)
                arm_recv(fd);
        }
    }
}
