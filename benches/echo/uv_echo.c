/* uv_echo: libuv TCP echo server for the weft echo benchmarks.
 *
 *   uv_echo PORT
 *
 * Listens on 127.0.0.1:PORT and serves until killed, on one uv_loop_t (one
 * thread). Reads go into one shared 64 KiB buffer (safe: the loop is
 * single-threaded and read_cb consumes the data before the next read). Each
 * chunk is echoed with uv_try_write(); only if that is partial is the rest
 * copied into a heap buffer and queued with uv_write(), and reading stops
 * until the write completes (backpressure). Accepted sockets get
 * TCP_NODELAY; SIGPIPE is ignored.
 */
#define _GNU_SOURCE /* uv.h needs pthread_rwlock_t etc. under -std=c11 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#define BUF_SIZE (64 * 1024)

struct wreq {
    uv_write_t req;
    uv_buf_t buf;
};

static char rbuf[BUF_SIZE];
static uv_loop_t *loop;

static void on_close(uv_handle_t *h)
{
    free(h);
}

static void close_conn(uv_stream_t *s)
{
    if (!uv_is_closing((uv_handle_t *)s))
        uv_close((uv_handle_t *)s, on_close);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    (void)h;
    (void)suggested;
    *buf = uv_buf_init(rbuf, sizeof rbuf);
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf);

static void on_write(uv_write_t *req, int status)
{
    struct wreq *w = (struct wreq *)req;
    uv_stream_t *s = req->handle;
    free(w->buf.base);
    free(w);
    if (status < 0) {
        close_conn(s);
        return;
    }
    if (!uv_is_closing((uv_handle_t *)s) && uv_read_start(s, on_alloc, on_read) < 0)
        close_conn(s);
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    if (nread < 0) { /* UV_EOF or an error */
        close_conn(s);
        return;
    }
    if (nread == 0)
        return;
    uv_buf_t b = uv_buf_init(buf->base, (unsigned)nread);
    int r = uv_try_write(s, &b, 1);
    if (r == nread)
        return;
    if (r < 0 && r != UV_EAGAIN) {
        close_conn(s);
        return;
    }
    if (r < 0)
        r = 0;
    struct wreq *w = malloc(sizeof *w);
    char *copy = malloc((size_t)(nread - r));
    if (!w || !copy) {
        free(w);
        free(copy);
        close_conn(s);
        return;
    }
    memcpy(copy, buf->base + r, (size_t)(nread - r));
    w->buf = uv_buf_init(copy, (unsigned)(nread - r));
    uv_read_stop(s);
    if (uv_write(&w->req, s, &w->buf, 1, on_write) < 0) {
        free(copy);
        free(w);
        close_conn(s);
    }
}

static void on_connection(uv_stream_t *server, int status)
{
    if (status < 0) {
        fprintf(stderr, "uv_echo: connection error: %s\n", uv_strerror(status));
        return;
    }
    uv_tcp_t *c = malloc(sizeof *c);
    if (!c)
        return;
    uv_tcp_init(loop, c);
    if (uv_accept(server, (uv_stream_t *)c) < 0) {
        uv_close((uv_handle_t *)c, on_close);
        return;
    }
    uv_tcp_nodelay(c, 1);
    if (uv_read_start((uv_stream_t *)c, on_alloc, on_read) < 0)
        close_conn((uv_stream_t *)c);
}

int main(int argc, char **argv)
{
    char *end;
    long port = argc == 2 ? strtol(argv[1], &end, 10) : -1;
    if (argc != 2 || *end || port < 1 || port > 65535) {
        fprintf(stderr, "usage: uv_echo PORT\n");
        return 2;
    }
    signal(SIGPIPE, SIG_IGN); /* libuv doesn't: a write to a closed peer would kill us */
    loop = uv_default_loop();
    uv_tcp_t server;
    struct sockaddr_in addr;
    uv_tcp_init(loop, &server);
    uv_ip4_addr("127.0.0.1", (int)port, &addr);
    int r = uv_tcp_bind(&server, (const struct sockaddr *)&addr, 0);
    if (r == 0)
        r = uv_listen((uv_stream_t *)&server, 4096, on_connection);
    if (r < 0) {
        fprintf(stderr, "uv_echo: listen 127.0.0.1:%ld: %s\n", port, uv_strerror(r));
        return 1;
    }
    fprintf(stderr, "uv_echo: listening on 127.0.0.1:%ld (libuv %s)\n", port, uv_version_string());
    return uv_run(loop, UV_RUN_DEFAULT);
}
