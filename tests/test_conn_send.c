/* Description: weft_conn_send, sends batched through the worker's ring
 * (weft/conn.h).
 *
 * - (the many-connection echo answering with weft_conn_send, across
 *   workers: test_conn.c, test_conn_echo_send);
 * - large: one call of 1 MiB + 13 bytes (pieces of 64 KiB) to a peer with
 *   small socket buffers that starts reading 50 ms later: the call waits
 *   piece by piece, returns the whole count, and the peer gets every byte
 *   in order; the conn is closed at once and the peer still gets all of
 *   it, then end of file (close lets the send in flight finish);
 * - a second sender while one waits gets -EBUSY; the conn stays usable
 *   and the bytes arrive in call order;
 * - cancel and deadline of a sender waiting for its previous piece: it
 *   returns the count taken so far (or -ECANCELED / -ETIMEDOUT if it took
 *   nothing), and once another fiber closes the conn the peer gets
 *   exactly the bytes taken, then end of file (nothing lost);
 * - close wakes a waiting sender (its taken count, or -EBADF), and the
 *   peer gets exactly the count;
 * - a closer cancelled while the send in flight cannot finish: close
 *   returns -ECANCELED, the fd is closed, nothing leaks, the peer sees end
 *   of file or a reset;
 * - shutdown: weft_run's end cancels a sender waiting for a peer that
 *   does not read (it returns the count taken), its close cancels the
 *   send in flight (-ECANCELED), weft_run returns, no fd leaks;
 * - peer reset: sends fail with -ECONNRESET or -EPIPE, at every later call
 *   (sticky), and a failure no call returned is returned by close;
 * - bad input: NULL conn, not a fiber -> -EINVAL; buf NULL with n > 0 ->
 *   -EFAULT; n 0 -> 0 (a pipe -> -ENOTSOCK and an fd not open -> -EBADF
 *   at the first call: test_misuse.c);
 * - no fd leaks in any of these (/proc/self/fd before and after).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <string.h>
#include <sys/socket.h>

#include "testutil.h"

static int fds_open(void)
{
	return count_dir_entries("/proc/self/fd");
}

/* ---- a peer that reads later ------------------------------------------- */

/* A pair whose sending end (s) has a small send buffer, so that a send of
 * a few hundred KiB waits for the peer (c) to read: the peer's receive
 * buffer holds ~128 KiB until it reads (it grows as it reads; shrunk too,
 * it made loopback crawl on window probes: 20 s per MiB). */
static int small_pair(int *c, int *s)
{
	int r = tcp_pair(c, s);
	if (r)
		return r;
	int small = 16384;
	setsockopt(*s, SOL_SOCKET, SO_SNDBUF, &small, sizeof small);
	return 0;
}

struct peer {
	int fd;
	uint64_t seed;
	uint64_t delay;   /* ns before the first read */
	_Atomic int go;   /* or: read once this is set (delay 0) */
	size_t got;       /* bytes read until end of file or an error */
	bool bad;         /* a byte differed from pat(seed, offset) */
	ssize_t last;     /* 0 (end of file) or the error that ended it */
};

static void *peer_reader(void *arg)
{
	struct peer *p = arg;
	if (p->delay)
		weft_sleep(p->delay);
	else
		CHECK_EQ(wait_flag(&p->go), 0);
	char buf[8192];
	for (;;) {
		ssize_t n = weft_recv(p->fd, buf, sizeof buf, 0);
		if (n <= 0) {
			p->last = n;
			break;
		}
		for (ssize_t i = 0; i < n; i++)
			if ((unsigned char)buf[i] != pat(p->seed, p->got + (size_t)i))
				p->bad = true;
		p->got += (size_t)n;
	}
	return NULL;
}

static char *pattern(uint64_t seed, size_t off, size_t n)
{
	char *b = malloc(n);
	for (size_t i = 0; i < n; i++)
		b[i] = (char)pat(seed, off + i);
	return b;
}

static void *large_main(void *arg)
{
	(void)arg;
	int pc = -1, ps = -1;
	CHECK_EQ(small_pair(&pc, &ps), 0);
	weft_conn *c = weft_conn_open(ps, NULL);
	size_t n = (1u << 20) + 13;
	char *buf = pattern(5, 0, n);
	struct peer p = {.fd = pc, .seed = 5, .delay = 50 * MS, .last = 1};
	weft_task *t = weft_spawn(peer_reader, &p);
	uint64_t t0 = weft_now();
	CHECK_EQ(weft_conn_send(c, buf, n), (ssize_t)n);
	CHECK(weft_now() - t0 >= 40 * MS); /* it waited for the reader */
	memset(buf, 0, n); /* the conn copied it: ours to reuse */
	CHECK_EQ(weft_conn_close(c), 0); /* the last piece still goes */
	CHECK_EQ(weft_join(t, NULL), 0);
	CHECK_EQ(p.got, n);
	CHECK(!p.bad);
	CHECK_EQ(p.last, 0);
	close(pc);
	free(buf);
	return NULL;
}

static void test_send_large(void **state)
{
	(void)state;
	int fds0 = fds_open();
	run(2, large_main, NULL);
	run(1, large_main, NULL);
	assert_int_equal(fds_open(), fds0);
}

/* ---- waiting senders: -EBUSY, cancel, deadline, close ------------------- */

struct sender {
	weft_conn *c;
	const char *buf;
	size_t n;
	bool deadline; /* under a 50 ms deadline scope */
	_Atomic int started;
	ssize_t r;
};

static void *sender_fiber(void *arg)
{
	struct sender *s = arg;
	weft_deadline d;
	if (s->deadline)
		weft_deadline_push(&d, 50 * MS);
	atomic_store(&s->started, 1);
	s->r = weft_conn_send(s->c, s->buf, s->n);
	if (s->deadline)
		weft_deadline_pop(&d);
	return NULL;
}

#define BIG (2u << 20) /* far more than the small pair buffers */

static void *busy_main(void *arg)
{
	(void)arg;
	int pc = -1, ps = -1;
	CHECK_EQ(small_pair(&pc, &ps), 0);
	weft_conn *c = weft_conn_open(ps, NULL);
	char *buf = pattern(7, 0, BIG + 100);
	struct sender s = {.c = c, .buf = buf, .n = BIG};
	weft_task *t = weft_spawn(sender_fiber, &s);
	weft_task_set_name(t, "sender");
	CHECK_EQ(wait_flag(&s.started), 0);
	/* waiting inside weft_conn_send, not about to enter it */
	CHECK_EQ(wait_parked("sender", "io "), 0);
	/* a second sender while the first waits: -EBUSY, nothing taken */
	CHECK_EQ(weft_conn_send(c, buf + BIG, 100), -EBUSY);
	struct peer p = {.fd = pc, .seed = 7, .last = 1};
	weft_task *rd = weft_spawn(peer_reader, &p);
	atomic_store(&p.go, 1);
	CHECK_EQ(weft_join(t, NULL), 0);
	CHECK_EQ(s.r, (ssize_t)BIG);
	CHECK_EQ(weft_conn_send(c, buf + BIG, 100), 100); /* usable */
	CHECK_EQ(weft_conn_close(c), 0);
	CHECK_EQ(weft_join(rd, NULL), 0);
	CHECK_EQ(p.got, (size_t)BIG + 100);
	CHECK(!p.bad);
	close(pc);
	free(buf);
	return NULL;
}

/* how: 0 cancel, 1 deadline, 2 close by another fiber */
static void *cut_main(void *arg)
{
	int how = (int)(intptr_t)arg;
	int pc = -1, ps = -1;
	CHECK_EQ(small_pair(&pc, &ps), 0);
	weft_conn *c = weft_conn_open(ps, NULL);
	char *buf = pattern(9, 0, BIG);
	struct sender s = {.c = c, .buf = buf, .n = BIG, .deadline = how == 1};
	weft_task *t = weft_spawn(sender_fiber, &s);
	weft_task_set_name(t, "sender");
	CHECK_EQ(wait_flag(&s.started), 0);
	/* waiting inside weft_conn_send, not about to enter it */
	CHECK_EQ(wait_parked("sender", "io "), 0);
	struct peer p = {.fd = pc, .seed = 9, .delay = how == 2 ? 100 * MS : 0,
			 .last = 1};
	weft_task *rd = weft_spawn(peer_reader, &p);
	if (how == 0)
		CHECK_EQ(weft_cancel(t), 0);
	if (how == 2) /* close wakes the sender, then lets its piece finish
			 once the reader starts (100 ms) */
		CHECK_EQ(weft_conn_close(c), 0);
	int jr = weft_join(t, NULL);
	CHECK(how == 0 ? jr == -ECANCELED : jr == 0);
	/* it waited for a later piece: whole pieces of 64 KiB were taken */
	CHECK(s.r > 0 && s.r < (ssize_t)BIG && s.r % (64 * 1024) == 0);
	if (how != 2) {
		atomic_store(&p.go, 1);
		CHECK_EQ(weft_conn_close(c), 0); /* not cancelled: drains */
	}
	CHECK_EQ(weft_join(rd, NULL), 0);
	CHECK_EQ(p.got, (size_t)s.r); /* exactly what was taken */
	CHECK(!p.bad);
	CHECK_EQ(p.last, 0);
	close(pc);
	free(buf);
	return NULL;
}

struct closer {
	weft_conn *c;
	_Atomic int started;
	int r;
};

static void *closer_fiber(void *arg)
{
	struct closer *k = arg;
	atomic_store(&k->started, 1);
	k->r = weft_conn_close(k->c);
	return NULL;
}

/* the closer itself is cancelled while the send in flight cannot finish */
static void *close_cancel_main(void *arg)
{
	(void)arg;
	int pc = -1, ps = -1;
	CHECK_EQ(small_pair(&pc, &ps), 0);
	weft_conn *c = weft_conn_open(ps, NULL);
	char *buf = pattern(11, 0, BIG);
	weft_deadline d;
	weft_deadline_push(&d, 30 * MS);
	ssize_t taken = weft_conn_send(c, buf, BIG);
	CHECK(taken > 0 && taken < (ssize_t)BIG);
	weft_deadline_pop(&d);
	struct closer k = {.c = c, .r = 1};
	weft_task *t = weft_spawn(closer_fiber, &k);
	CHECK_EQ(wait_flag(&k.started), 0);
	weft_sleep(20 * MS);
	CHECK_EQ(weft_cancel(t), 0);
	CHECK_EQ(weft_join(t, NULL), -ECANCELED);
	CHECK_EQ(k.r, -ECANCELED);
	struct peer p = {.fd = pc, .seed = 11, .last = 1};
	atomic_store(&p.go, 1);
	peer_reader(&p); /* the fd was closed: end of file (or a reset) */
	CHECK(p.got < (size_t)taken); /* the piece in flight was cut */
	CHECK(p.last == 0 || p.last == -ECONNRESET);
	CHECK(!p.bad);
	close(pc);
	free(buf);
	return NULL;
}

static void test_send_waiting(void **state)
{
	(void)state;
	int fds0 = fds_open();
	for (unsigned w = 1; w <= 2; w++) {
		run(w, busy_main, NULL);
		for (int how = 0; how < 3; how++)
			run(w, cut_main, (void *)(intptr_t)how);
		run(w, close_cancel_main, NULL);
	}
	assert_int_equal(fds_open(), fds0);
}

/* weft_run's end cancels a sender waiting for a peer that does not read;
 * its close then cancels the send in flight: weft_run returns, no fd
 * leaks (the peer's end is closed only after it) */
static struct {
	int pc;
	ssize_t sent;
	int closed;
	_Atomic int started;
} sd;

static void *shutdown_sender(void *arg)
{
	weft_conn *c = arg;
	char *buf = pattern(13, 0, BIG);
	atomic_store(&sd.started, 1);
	sd.sent = weft_conn_send(c, buf, BIG);
	sd.closed = weft_conn_close(c);
	free(buf);
	return NULL;
}

static void *shutdown_main(void *arg)
{
	(void)arg;
	int ps = -1;
	sd.pc = -1;
	CHECK_EQ(small_pair(&sd.pc, &ps), 0);
	weft_conn *c = weft_conn_open(ps, NULL);
	weft_task *t = weft_spawn(shutdown_sender, c);
	CHECK(t != NULL);
	weft_detach(t);
	CHECK_EQ(wait_flag(&sd.started), 0);
	weft_sleep(20 * MS);
	return NULL; /* the sender is still waiting */
}

static void test_send_shutdown(void **state)
{
	(void)state;
	int fds0 = fds_open();
	for (unsigned w = 1; w <= 2; w++) {
		memset(&sd, 0, sizeof sd);
		run(w, shutdown_main, NULL);
		assert_true(sd.sent > 0 && sd.sent < (ssize_t)BIG);
		assert_int_equal(sd.closed, -ECANCELED);
		close(sd.pc);
	}
	assert_int_equal(fds_open(), fds0);
}

/* ---- peer reset, bad input ------------------------------------------------ */

static void reset_peer(int fd)
{
	struct linger lg = {1, 0}; /* close sends a reset */
	setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
	close(fd);
}

static void *reset_main(void *arg)
{
	(void)arg;
	int pc = -1, ps = -1;
	/* sticky: once failed, every call fails the same way */
	CHECK_EQ(tcp_pair(&pc, &ps), 0);
	weft_conn *c = weft_conn_open(ps, NULL);
	CHECK_EQ(weft_conn_send(c, "hello", 5), 5);
	reset_peer(pc);
	weft_sleep(20 * MS);
	ssize_t r = 0;
	for (int i = 0; i < 1000 && r >= 0; i++) {
		r = weft_conn_send(c, "x", 1);
		if (r >= 0)
			weft_sleep(1 * MS); /* its completion reports it */
	}
	CHECK(r == -ECONNRESET || r == -EPIPE);
	CHECK_EQ(weft_conn_send(c, "y", 1), r);
	CHECK_EQ(weft_conn_close(c), 0); /* told already */

	/* a failure no call returned: close returns it */
	CHECK_EQ(tcp_pair(&pc, &ps), 0);
	c = weft_conn_open(ps, NULL);
	reset_peer(pc);
	weft_sleep(20 * MS);
	CHECK_EQ(weft_conn_send(c, "z", 1), 1); /* taken: it fails later */
	weft_sleep(20 * MS);
	int cr = weft_conn_close(c);
	CHECK(cr == -ECONNRESET || cr == -EPIPE);
	return NULL;
}

static void test_send_reset(void **state)
{
	(void)state;
	int fds0 = fds_open();
	run(2, reset_main, NULL);
	run(1, reset_main, NULL);
	assert_int_equal(fds_open(), fds0);
}

static void *bad_main(void *arg)
{
	(void)arg;
	int pc = -1, ps = -1;
	CHECK_EQ(tcp_pair(&pc, &ps), 0);
	weft_conn *c = weft_conn_open(ps, NULL);
	CHECK_EQ(weft_conn_send(NULL, "a", 1), -EINVAL);
	CHECK_EQ(weft_conn_send(c, NULL, 1), -EFAULT);
	CHECK_EQ(weft_conn_send(c, NULL, 0), 0);
	CHECK_EQ(weft_conn_send(c, "a", 0), 0);
	/* still usable */
	CHECK_EQ(weft_conn_send(c, "ok", 2), 2);
	char buf[4];
	CHECK_EQ(weft_recv(pc, buf, 2, MSG_WAITALL), 2);
	CHECK(memcmp(buf, "ok", 2) == 0);
	CHECK_EQ(weft_conn_close(c), 0);
	close(pc);
	return NULL;
}

static void test_send_bad_input(void **state)
{
	(void)state;
	int fds0 = fds_open();
	assert_int_equal(weft_conn_send(NULL, "a", 1), -EINVAL); /* no fiber */
	run(1, bad_main, NULL);
	assert_int_equal(fds_open(), fds0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_send_large),
		cmocka_unit_test(test_send_waiting),
		cmocka_unit_test(test_send_shutdown),
		cmocka_unit_test(test_send_reset),
		cmocka_unit_test(test_send_bad_input),
	};
	apply_test_filters();
	return cmocka_run_group_tests(tests, NULL, NULL);
}
