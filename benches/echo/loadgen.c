/* loadgen: closed-loop TCP echo load generator for the weft echo benchmarks.
 *
 *   loadgen -p PORT [-c CONNS] [-s SIZE] [-d SECS] [-w WARMUP] [-t THREADS] [-P PID]
 *
 * Opens CONNS connections to 127.0.0.1:PORT (never any other address) and
 * keeps exactly one SIZE-byte message in flight on each: send it, wait for
 * the full echo, compare every byte, send the next one. The connections are
 * spread over THREADS threads, each running its own level-triggered epoll
 * loop. After WARMUP seconds (not counted) it measures for SECS seconds: a
 * message counts if its echo completes inside that window, and its latency
 * (first send() to last byte read, CLOCK_MONOTONIC) goes into a log-linear
 * histogram (~3% bucket width). Then it prints one line to stdout:
 *
 *   LOAD conns=C size=S secs=D msgs=<n> msgs_per_s=<x> p50_us=<x> p99_us=<x> errors=<n>
 *
 * On stderr it writes a line at each window boundary,
 *
 *   loadgen: window start server_ticks=<n> self_ticks=<n> busy_ticks=<n>
 *   loadgen: window end server_ticks=<n> self_ticks=<n> busy_ticks=<n>
 *
 * where the ticks are utime+stime (clock ticks, all threads) read from
 * /proc/PID/stat for the -P PID (normally the server; -1 if it is gone or
 * no -P was given) and from /proc/self/stat, and busy_ticks is the
 * non-idle time of all CPUs from /proc/stat (so that a driver can tell how
 * much CPU other processes took), all sampled by the main thread at
 * the exact boundary. (A driver script sampling them itself would be late by
 * its own wake-up delay on a busy machine.) Then a summary line with its own
 * CPU time during the window.
 *
 * Exit status: 0 on success; 1 if any byte mismatched, a connection failed
 * (connect error, not all connections open within 10 s, reset, early EOF)
 * or no message completed in the window; 2 on usage errors.
 *
 * Defaults: -c 50 -s 64 -d 5 -w 1 -t 1.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define CONNECT_TIMEOUT_MS 10000 /* for all connections together */
#define MAX_EVENTS 512

/* ---- latency histogram (nanoseconds) -------------------------------------
 * Values below 64 get one bucket each; above, every power of two [2^e, 2^e+1)
 * is split into 32 equal sub-buckets, so the relative bucket width is at most
 * 1/32. 64 + 32 * 58 buckets cover every uint64_t. */
#define SUB_BITS 5
#define SUB (1u << SUB_BITS)
#define NBUCKETS (2 * SUB + SUB * (64 - SUB_BITS - 1))

static unsigned bucket_of(uint64_t v)
{
    if (v < 2 * SUB)
        return (unsigned)v;
    unsigned e = 63u - (unsigned)__builtin_clzll(v); /* e >= SUB_BITS + 1 */
    unsigned shift = e - SUB_BITS;
    return 2 * SUB + (e - SUB_BITS - 1) * SUB + (unsigned)((v >> shift) - SUB);
}

/* lower bound and width of bucket b */
static void bucket_range(unsigned b, double *lo, double *width)
{
    if (b < 2 * SUB) {
        *lo = b;
        *width = 1;
        return;
    }
    unsigned k = b - 2 * SUB;
    unsigned e = k / SUB + SUB_BITS + 1;
    unsigned m = k % SUB + SUB;
    double unit = (double)(1ull << (e - SUB_BITS));
    *lo = m * unit;
    *width = unit;
}

/* ---- state ------------------------------------------------------------ */
struct conn {
    int fd;
    bool out_armed;   /* EPOLLOUT in the interest set */
    bool busy;        /* a message is in flight */
    size_t sent, rcvd;
    uint64_t seq;
    uint64_t t0;      /* ns, CLOCK_MONOTONIC, at first send() of the message */
    unsigned char *msg; /* the message in flight (size bytes) */
};

struct worker {
    pthread_t th;
    int ep;
    struct conn *conns;
    int nconns;
    int alive;
    unsigned char *rbuf;
    uint64_t msgs;     /* completed inside the window */
    uint64_t errors;
    uint64_t mismatches;
    uint64_t hist[NBUCKETS];
};

static size_t g_size = 64;
static uint64_t g_win_start, g_win_end; /* ns */

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void sleep_until(uint64_t t)
{
    struct timespec ts = { .tv_sec = (time_t)(t / 1000000000u), .tv_nsec = (long)(t % 1000000000u) };
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR) {
    }
}

static double cpu_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* utime+stime of a process, in clock ticks, from /proc/<pid>/stat; -1 on error */
static long long proc_ticks(const char *path)
{
    char buf[1024];
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    char *p = strrchr(buf, ')'); /* the command name may contain spaces and ')' */
    unsigned long long ut, st;
    if (!p || sscanf(p + 1, " %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st) != 2)
        return -1;
    return (long long)(ut + st);
}

/* non-idle time of all CPUs (user nice system irq softirq steal), in clock
 * ticks, from the first line of /proc/stat; -1 on error */
static long long busy_ticks(void)
{
    unsigned long long v[8] = { 0 };
    FILE *f = fopen("/proc/stat", "r");
    if (!f)
        return -1;
    int n = fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2], &v[3], &v[4], &v[5], &v[6], &v[7]);
    fclose(f);
    if (n < 8)
        return -1;
    return (long long)(v[0] + v[1] + v[2] + v[5] + v[6] + v[7]); /* not idle (3), iowait (4) */
}

static void usage(void)
{
    fprintf(stderr, "usage: loadgen -p PORT [-c CONNS] [-s SIZE] [-d SECS] [-w WARMUP] [-t THREADS] [-P PID]\n");
    exit(2);
}

/* ---- per-connection logic -------------------------------------------- */
static void conn_fail(struct worker *w, struct conn *c, const char *what, int err)
{
    if (c->fd < 0)
        return;
    fprintf(stderr, "loadgen: connection fd %d: %s%s%s\n", c->fd, what,
            err ? ": " : "", err ? strerror(err) : "");
    close(c->fd); /* also removes it from the epoll set */
    c->fd = -1;
    c->busy = false;
    w->errors++;
    w->alive--;
}

static void set_out(struct worker *w, struct conn *c, bool on)
{
    if (c->out_armed == on)
        return;
    struct epoll_event ev = { .events = EPOLLIN | (on ? EPOLLOUT : 0), .data.ptr = c };
    if (epoll_ctl(w->ep, EPOLL_CTL_MOD, c->fd, &ev) < 0) {
        conn_fail(w, c, "epoll_ctl", errno);
        return;
    }
    c->out_armed = on;
}

static void do_send(struct worker *w, struct conn *c)
{
    while (c->sent < g_size) {
        ssize_t n = send(c->fd, c->msg + c->sent, g_size - c->sent, MSG_NOSIGNAL);
        if (n > 0) {
            c->sent += (size_t)n;
        } else if (n < 0 && errno == EINTR) {
            continue;
        } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            set_out(w, c, true);
            return;
        } else {
            conn_fail(w, c, "send", n < 0 ? errno : 0);
            return;
        }
    }
    set_out(w, c, false);
}

static void start_msg(struct worker *w, struct conn *c)
{
    /* Make every message differ from the previous one: stamp the sequence
     * number into its first (up to) 8 bytes; the rest is a fixed
     * per-connection pattern. */
    c->seq++;
    uint64_t s = c->seq;
    for (size_t i = 0; i < g_size && i < 8; i++, s >>= 8)
        c->msg[i] = (unsigned char)(s ^ (0x5a + i));
    c->sent = c->rcvd = 0;
    c->busy = true;
    c->t0 = now_ns();
    do_send(w, c);
}

static void do_recv(struct worker *w, struct conn *c)
{
    if (!c->busy) {
        /* Nothing in flight (the window is over): any byte is unexpected,
         * but we're about to stop anyway; just drain. */
        char tmp[256];
        ssize_t n = recv(c->fd, tmp, sizeof tmp, 0);
        if (n == 0)
            conn_fail(w, c, "unexpected EOF", 0);
        return;
    }
    /* Never read past the message: one in flight, so extra bytes would be
     * a server bug and show up as a mismatch of the next message. Only ask
     * for bytes already sent. */
    size_t want = c->sent - c->rcvd;
    if (want == 0) {
        /* Can only happen if the server sent bytes we haven't sent. */
        char tmp[1];
        ssize_t n = recv(c->fd, tmp, 1, 0);
        if (n > 0) {
            w->mismatches++;
            conn_fail(w, c, "server sent bytes that were never sent", 0);
        } else if (n == 0) {
            conn_fail(w, c, "unexpected EOF", 0);
        } else if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
            conn_fail(w, c, "recv", errno);
        }
        return;
    }
    ssize_t n = recv(c->fd, w->rbuf, want, 0);
    if (n < 0) {
        if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
            conn_fail(w, c, "recv", errno);
        return;
    }
    if (n == 0) {
        conn_fail(w, c, "unexpected EOF (server closed)", 0);
        return;
    }
    if (memcmp(w->rbuf, c->msg + c->rcvd, (size_t)n) != 0) {
        w->mismatches++;
        conn_fail(w, c, "echoed bytes differ from the bytes sent", 0);
        return;
    }
    c->rcvd += (size_t)n;
    if (c->rcvd < g_size)
        return; /* level-triggered: the rest will be reported again */

    uint64_t t1 = now_ns();
    c->busy = false;
    if (t1 >= g_win_start && t1 < g_win_end) {
        w->msgs++;
        w->hist[bucket_of(t1 - c->t0)]++;
    }
    if (t1 < g_win_end)
        start_msg(w, c);
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    struct epoll_event evs[MAX_EVENTS];

    for (int i = 0; i < w->nconns; i++)
        start_msg(w, &w->conns[i]);

    for (;;) {
        uint64_t t = now_ns();
        if (t >= g_win_end || w->alive == 0)
            break;
        uint64_t left_ms = (g_win_end - t) / 1000000u + 1;
        int timeout = left_ms > 100 ? 100 : (int)left_ms;
        int n = epoll_wait(w->ep, evs, MAX_EVENTS, timeout);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            perror("loadgen: epoll_wait");
            w->errors++;
            break;
        }
        for (int i = 0; i < n; i++) {
            struct conn *c = evs[i].data.ptr;
            uint32_t e = evs[i].events;
            if (c->fd < 0)
                continue;
            if ((e & EPOLLOUT) && c->busy && c->sent < g_size)
                do_send(w, c);
            if (c->fd >= 0 && (e & (EPOLLIN | EPOLLERR | EPOLLHUP)))
                do_recv(w, c);
        }
    }
    return NULL;
}

/* ---- setup ------------------------------------------------------------ */
static int connect_one(int port, uint64_t deadline)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        perror("loadgen: socket");
        return -1;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK); /* 127.0.0.1, always */
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
        if (errno != EINPROGRESS) {
            fprintf(stderr, "loadgen: connect 127.0.0.1:%d: %s\n", port, strerror(errno));
            close(fd);
            return -1;
        }
        struct pollfd p = { .fd = fd, .events = POLLOUT };
        int r;
        do {
            uint64_t t = now_ns();
            int ms = t >= deadline ? 0 : (int)((deadline - t) / 1000000u) + 1;
            r = poll(&p, 1, ms);
        } while (r < 0 && errno == EINTR);
        int err = 0;
        socklen_t len = sizeof err;
        if (r == 0)
            err = ETIMEDOUT;
        else if (r < 0 || getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
            err = errno;
        if (err) {
            fprintf(stderr, "loadgen: connect 127.0.0.1:%d: %s\n", port, strerror(err));
            close(fd);
            return -1;
        }
    }
    return fd;
}

static long parse_long(const char *s, long lo, long hi)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi)
        usage();
    return v;
}

static double parse_secs(const char *s, double lo)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !(v >= lo) || v > 86400)
        usage();
    return v;
}

int main(int argc, char **argv)
{
    long port = -1, conns = 50, threads = 1, watch_pid = -1;
    double secs = 5, warmup = 1;
    int opt;
    while ((opt = getopt(argc, argv, "p:c:s:d:w:t:P:h")) != -1) {
        switch (opt) {
        case 'p': port = parse_long(optarg, 1, 65535); break;
        case 'c': conns = parse_long(optarg, 1, 1000000); break;
        case 's': g_size = (size_t)parse_long(optarg, 1, 64L << 20); break;
        case 'd': secs = parse_secs(optarg, 0.001); break;
        case 'w': warmup = parse_secs(optarg, 0); break;
        case 't': threads = parse_long(optarg, 1, 1024); break;
        case 'P': watch_pid = parse_long(optarg, 1, 1L << 30); break;
        default: usage();
        }
    }
    if (optind != argc || port < 0)
        usage();
    char watch_path[64] = "";
    if (watch_pid > 0)
        snprintf(watch_path, sizeof watch_path, "/proc/%ld/stat", watch_pid);
    if (threads > conns)
        threads = conns;
    signal(SIGPIPE, SIG_IGN);

    struct worker *ws = calloc((size_t)threads, sizeof *ws);
    struct conn *cs = calloc((size_t)conns, sizeof *cs);
    if (!ws || !cs) {
        perror("loadgen: calloc");
        return 1;
    }
    for (long t = 0; t < threads; t++) {
        ws[t].ep = epoll_create1(EPOLL_CLOEXEC);
        ws[t].rbuf = malloc(g_size);
        if (ws[t].ep < 0 || !ws[t].rbuf) {
            perror("loadgen: epoll_create1/malloc");
            return 1;
        }
    }

    /* Connect everything first (sequentially, all within CONNECT_TIMEOUT_MS),
     * then hand the connections out in contiguous blocks, one per thread. */
    long per = conns / threads, extra = conns % threads, next = 0;
    for (long t = 0; t < threads; t++) {
        struct worker *w = &ws[t];
        w->conns = &cs[next];
        w->nconns = (int)(per + (t < extra));
        next += w->nconns;
    }
    uint64_t connect_deadline = now_ns() + (uint64_t)CONNECT_TIMEOUT_MS * 1000000u;
    for (long i = 0; i < conns; i++) {
        struct conn *c = &cs[i];
        c->fd = connect_one((int)port, connect_deadline);
        if (c->fd < 0) {
            fprintf(stderr, "loadgen: FAILED: could not open connection %ld of %ld\n", i + 1, conns);
            return 1;
        }
        c->msg = malloc(g_size);
        if (!c->msg) {
            perror("loadgen: malloc");
            return 1;
        }
        /* per-connection pseudo-random pattern (xorshift64) */
        uint64_t x = 0x9e3779b97f4a7c15ull * (uint64_t)(i + 1);
        for (size_t k = 0; k < g_size; k++) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            c->msg[k] = (unsigned char)x;
        }
    }
    for (long t = 0; t < threads; t++) {
        struct worker *w = &ws[t];
        w->alive = w->nconns;
        for (int i = 0; i < w->nconns; i++) {
            struct epoll_event ev = { .events = EPOLLIN, .data.ptr = &w->conns[i] };
            if (epoll_ctl(w->ep, EPOLL_CTL_ADD, w->conns[i].fd, &ev) < 0) {
                perror("loadgen: epoll_ctl");
                return 1;
            }
        }
    }

    uint64_t t0 = now_ns();
    g_win_start = t0 + (uint64_t)(warmup * 1e9);
    g_win_end = g_win_start + (uint64_t)(secs * 1e9);
    for (long t = 0; t < threads; t++) {
        if (pthread_create(&ws[t].th, NULL, worker_main, &ws[t]) != 0) {
            fprintf(stderr, "loadgen: pthread_create failed\n");
            return 1;
        }
    }

    sleep_until(g_win_start);
    long long srv0 = watch_pid > 0 ? proc_ticks(watch_path) : -1, self0 = proc_ticks("/proc/self/stat");
    long long busy0 = busy_ticks();
    double cpu0 = cpu_seconds();
    sleep_until(g_win_end);
    long long srv1 = watch_pid > 0 ? proc_ticks(watch_path) : -1, self1 = proc_ticks("/proc/self/stat");
    long long busy1 = busy_ticks();
    double cpu1 = cpu_seconds();
    fprintf(stderr, "loadgen: window start server_ticks=%lld self_ticks=%lld busy_ticks=%lld\n", srv0, self0, busy0);
    fprintf(stderr, "loadgen: window end server_ticks=%lld self_ticks=%lld busy_ticks=%lld\n", srv1, self1, busy1);
    for (long t = 0; t < threads; t++)
        pthread_join(ws[t].th, NULL);

    uint64_t msgs = 0, errors = 0, mismatches = 0, hist[NBUCKETS] = { 0 };
    long alive = 0;
    for (long t = 0; t < threads; t++) {
        msgs += ws[t].msgs;
        errors += ws[t].errors;
        mismatches += ws[t].mismatches;
        alive += ws[t].alive;
        for (unsigned b = 0; b < NBUCKETS; b++)
            hist[b] += ws[t].hist[b];
    }

    double pct[2] = { 0.50, 0.99 }, val[2] = { 0, 0 };
    for (int k = 0; k < 2; k++) {
        if (msgs == 0)
            break;
        uint64_t rank = (uint64_t)(pct[k] * (double)msgs + 0.999999);
        if (rank < 1)
            rank = 1;
        uint64_t acc = 0;
        for (unsigned b = 0; b < NBUCKETS; b++) {
            acc += hist[b];
            if (acc >= rank) {
                double lo, width;
                bucket_range(b, &lo, &width);
                val[k] = (lo + (width - 1) / 2) / 1000.0; /* bucket middle, us */
                break;
            }
        }
    }

    printf("LOAD conns=%ld size=%zu secs=%g msgs=%" PRIu64 " msgs_per_s=%.0f p50_us=%.1f p99_us=%.1f errors=%" PRIu64 "\n",
           conns, g_size, secs, msgs, (double)msgs / secs, val[0], val[1], errors);
    fflush(stdout);
    fprintf(stderr, "loadgen: threads=%ld window_cpu_s=%.3f (%.0f%% of one core) mismatches=%" PRIu64 " conns_alive=%ld/%ld\n",
             threads, cpu1 - cpu0, 100 * (cpu1 - cpu0) / secs, mismatches, alive, conns);

    for (long i = 0; i < conns; i++)
        if (cs[i].fd >= 0)
            close(cs[i].fd);

    if (errors || mismatches) {
        fprintf(stderr, "loadgen: FAILED: %" PRIu64 " error(s), %" PRIu64 " mismatch(es)\n", errors, mismatches);
        return 1;
    }
    if (msgs == 0) {
        fprintf(stderr, "loadgen: FAILED: no message completed in the window\n");
        return 1;
    }
    return 0;
}
