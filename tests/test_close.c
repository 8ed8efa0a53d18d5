/* Description: weft_close wakes what waits on the descriptor (io/uring.c,
 * "Closing wakes"), as Go's Close and libuv's uv_close do.
 *
 * A fiber blocked in weft_recv, weft_send, weft_accept, weft_read (pipe) or
 * weft_poll on fd returns -EBADF soon after another fiber's weft_close(fd),
 * whether it waits on the closer's worker's ring or on the other's; the
 * descriptor is really released (a closed listener refuses connections, a
 * closed socket's peer reads end of file). Ops on other descriptors are
 * not disturbed, not even one on the same number reused right after the
 * close. A stress test closes half of many waited-on sockets while the
 * other half receive data, on two workers: every waiter gets exactly one
 * of the two outcomes, and no descriptor leaks.
 * Each victim waits under a 3 s deadline: without the wake it returns
 * -ETIMEDOUT instead of hanging the test.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "testutil.h"

static int count_fds(void)
{
	return count_dir_entries("/proc/self/fd") - 1; /* the DIR's own fd */
}

/* Keep this worker busy for ns of real time without yielding: its queue
 * is then taken by the other worker (sched.c, "Quiet wakes"). */
static void hog(uint64_t ns)
{
	uint64_t t0 = real_ns();
	while (real_ns() - t0 < ns)
		;
}

/* ---- one waiter per kind ------------------------------------------------- */

enum { K_RECV, K_SEND, K_ACCEPT, K_PIPE, K_POLL, K_N };
static const char *const kind_name[] = {"recv", "send", "accept", "pipe read",
					"poll"};

static struct {
	int kind;
	int fd;
	_Atomic int blocked;
	_Atomic int victim_worker;
	ssize_t ret;
	uint64_t returned_at;
	char buf[65536];
} V;

static void *victim(void *arg)
{
	(void)arg;
	weft_deadline d;
	weft_deadline_push(&d, 3 * SEC); /* the old behaviour: -ETIMEDOUT */
	atomic_store(&V.victim_worker, weft_worker_id());
	atomic_store(&V.blocked, 1);
	switch (V.kind) {
	case K_RECV:
		V.ret = weft_recv(V.fd, V.buf, sizeof V.buf, 0);
		break;
	case K_SEND:
		V.ret = weft_send(V.fd, V.buf, sizeof V.buf, 0);
		break;
	case K_ACCEPT:
		V.ret = weft_accept(V.fd, NULL, NULL);
		break;
	case K_PIPE:
		V.ret = weft_read(V.fd, V.buf, sizeof V.buf, -1);
		break;
	default:
		V.ret = weft_poll(V.fd, POLLIN);
	}
	V.returned_at = weft_now();
	weft_deadline_pop(&d);
	return NULL;
}

static struct {
	int remote, local; /* victims on the other / the closer's worker */
} placed;

static void *one_kind(void *arg)
{
	bool move = (uintptr_t)arg; /* try to put the victim elsewhere */
	int c = -1, s = -1, l = -1, p[2] = {-1, -1};
	uint16_t port = 0;
	switch (V.kind) {
	case K_RECV:
	case K_SEND:
		CHECK_EQ(tcp_pair(&c, &s), 0);
		V.fd = c;
		if (V.kind == K_SEND) { /* fill it: the next send waits */
			int small = 4096;
			setsockopt(c, SOL_SOCKET, SO_SNDBUF, &small,
				   sizeof small);
			setsockopt(s, SOL_SOCKET, SO_RCVBUF, &small,
				   sizeof small);
			while (weft_send(c, V.buf, sizeof V.buf,
					 MSG_DONTWAIT) > 0)
				;
			/* the close resets: no wait for the peer's window
			 * to drain what is queued (TCP's persist timer
			 * outlasts a seeded run's wait for real I/O) */
			struct linger lg = {1, 0};
			setsockopt(c, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
		}
		break;
	case K_ACCEPT:
		l = weft_tcp_listen("127.0.0.1", 0, 16);
		CHECK(l >= 0);
		port = port_of(l);
		V.fd = l;
		break;
	default:
		CHECK_EQ(pipe2(p, O_CLOEXEC), 0);
		V.fd = p[0];
	}
	weft_task *t = weft_spawn(victim, NULL);
	CHECK(t != NULL);
	if (move)
		hog(5 * MS);
	while (!atomic_load(&V.blocked))
		weft_sleep(1 * MS);
	weft_sleep(20 * MS); /* well inside the kernel by now */
	if (atomic_load(&V.victim_worker) == (int)weft_worker_id())
		placed.local++;
	else
		placed.remote++;
	uint64_t t0 = weft_now();
	CHECK_EQ(weft_close(V.fd), 0);
	CHECK_EQ(weft_join(t, NULL), 0);
	if (V.ret != -EBADF || V.returned_at - t0 > 1 * SEC)
		note_fail(__LINE__, V.kind, (long)V.ret);
	/* released for real */
	weft_deadline d;
	weft_deadline_push(&d, 2 * SEC);
	switch (V.kind) {
	case K_RECV:
	case K_SEND: {
		char b[256];
		ssize_t r;
		while ((r = weft_recv(s, b, sizeof b, 0)) > 0)
			; /* what the send side had queued, then the end */
		/* recv: the end; send: the reset (linger 0, below) */
		CHECK_EQ(r, V.kind == K_RECV ? 0 : -ECONNRESET);
		break;
	}
	case K_ACCEPT:
		CHECK_EQ(weft_tcp_connect("127.0.0.1", port), -ECONNREFUSED);
		break;
	case K_PIPE:
	case K_POLL:
		/* the write end sees no reader left */
		CHECK_EQ(weft_write(p[1], "x", 1, -1), -EPIPE);
	}
	weft_deadline_pop(&d);
	if (s >= 0)
		CHECK_EQ(weft_close(s), 0);
	if (p[1] >= 0)
		CHECK_EQ(weft_close(p[1]), 0);
	return NULL;
}

static void test_close_wakes_each_kind(void **state)
{
	(void)state;
	signal(SIGPIPE, SIG_IGN);
	int before = count_fds();
	memset(&placed, 0, sizeof placed);
	for (int k = 0; k < K_N; k++)
		for (unsigned workers = 1; workers <= 2; workers++)
			for (int move = 0; move < 2; move++) {
				memset(&V, 0, sizeof V);
				V.kind = k;
				run(workers, one_kind,
				    (void *)(uintptr_t)(move && workers == 2));
				if (atomic_load(&fails))
					fail_msg("%s, %u worker(s)%s: returned "
						 "%zd (want -EBADF)",
						 kind_name[k], workers,
						 move ? ", moved" : "", V.ret);
			}
	assert_int_equal(count_fds(), before);
	/* both paths ran: the closer's own ring, and a request to the
	 * other worker (seeded runs have workers of their own choosing) */
	assert_true(placed.local > 0);
	if (!seeded())
		assert_true(placed.remote > 0);
}

/* ---- neighbours are not disturbed ---------------------------------------- */

static struct {
	_Atomic int blocked;
	ssize_t ret[2];
	char buf[2][16];
} N;

static void *n_victim(void *arg)
{
	int i = (int)((uintptr_t)arg >> 16), fd = (int)((uintptr_t)arg & 0xffff);
	weft_deadline d;
	weft_deadline_push(&d, 3 * SEC);
	atomic_fetch_add(&N.blocked, 1);
	N.ret[i] = weft_read(fd, N.buf[i], sizeof N.buf[i], -1);
	weft_deadline_pop(&d);
	return NULL;
}

static void *neighbours(void *arg)
{
	(void)arg;
	int a[2], b[2];
	CHECK_EQ(pipe2(a, O_CLOEXEC), 0);
	CHECK_EQ(pipe2(b, O_CLOEXEC), 0);
	weft_task *ta = weft_spawn(n_victim, (void *)(uintptr_t)a[0]);
	weft_task *tb =
		weft_spawn(n_victim, (void *)((uintptr_t)1 << 16 | (unsigned)b[0]));
	while (atomic_load(&N.blocked) < 2)
		weft_sleep(1 * MS);
	weft_sleep(20 * MS);
	CHECK_EQ(weft_close(a[0]), 0);
	CHECK_EQ(weft_join(ta, NULL), 0);
	CHECK_EQ(N.ret[0], -EBADF);
	/* the number is free again: a new pipe most likely takes it, and a
	 * read on it must not be hit by anything aimed at the old one */
	int c[2];
	CHECK_EQ(pipe2(c, O_CLOEXEC), 0);
	weft_task *tc = weft_spawn(n_victim, (void *)(uintptr_t)c[0]);
	weft_sleep(20 * MS);
	CHECK_EQ(weft_write(c[1], "new", 3, -1), 3);
	CHECK_EQ(weft_join(tc, NULL), 0);
	CHECK_EQ(N.ret[0], 3);
	/* b's reader still waits, and gets its data */
	CHECK_EQ(weft_write(b[1], "bee", 3, -1), 3);
	CHECK_EQ(weft_join(tb, NULL), 0);
	CHECK_EQ(N.ret[1], 3);
	CHECK(memcmp(N.buf[1], "bee", 3) == 0);
	/* closing what nobody waits on, or twice */
	CHECK_EQ(weft_close(b[0]), 0);
	CHECK_EQ(weft_close(b[0]), -EBADF);
	CHECK_EQ(weft_close(b[1]), 0);
	CHECK_EQ(weft_close(c[0]), 0);
	CHECK_EQ(weft_close(c[1]), 0);
	CHECK_EQ(weft_close(a[1]), 0);
	return NULL;
}

static void test_close_spares_neighbours(void **state)
{
	(void)state;
	int before = count_fds();
	for (unsigned workers = 1; workers <= 2; workers++) {
		memset(&N, 0, sizeof N);
		run(workers, neighbours, NULL);
	}
	assert_int_equal(count_fds(), before);
}

/* ---- stress: closes racing data, two waiters per socket ------------------- */

#define NPAIRS 32

static struct {
	int c[NPAIRS], s[NPAIRS];
	ssize_t got[NPAIRS][2];
	_Atomic int waiting;
} S;

static void *s_recv(void *arg)
{
	unsigned i = (unsigned)(uintptr_t)arg;
	weft_deadline d;
	weft_deadline_push(&d, 5 * SEC);
	atomic_fetch_add(&S.waiting, 1);
	char b[8];
	S.got[i][0] = weft_recv(S.c[i], b, sizeof b, 0);
	weft_deadline_pop(&d);
	return NULL;
}

static void *s_poll(void *arg)
{
	unsigned i = (unsigned)(uintptr_t)arg;
	weft_deadline d;
	weft_deadline_push(&d, 5 * SEC);
	atomic_fetch_add(&S.waiting, 1);
	S.got[i][1] = weft_poll(S.c[i], POLLIN);
	weft_deadline_pop(&d);
	return NULL;
}

/* closes the odd pairs' client ends, sends on the even ones */
static void *s_actor(void *arg)
{
	unsigned from = (unsigned)(uintptr_t)arg;
	for (unsigned i = from; i < NPAIRS; i += 4) {
		if (i % 2)
			CHECK_EQ(weft_close(S.c[i]), 0);
		else
			CHECK_EQ(weft_send(S.s[i], "d", 1, 0), 1);
		weft_yield();
	}
	return NULL;
}

static void *stress_round(void *arg)
{
	(void)arg;
	weft_task *t[3 * NPAIRS + 4];
	size_t n = 0;
	for (unsigned i = 0; i < NPAIRS; i++) {
		CHECK_EQ(tcp_pair(&S.c[i], &S.s[i]), 0);
		t[n++] = weft_spawn(s_recv, (void *)(uintptr_t)i);
		t[n++] = weft_spawn(s_poll, (void *)(uintptr_t)i);
	}
	while (atomic_load(&S.waiting) < 2 * NPAIRS)
		weft_sleep(1 * MS);
	weft_sleep(5 * MS);
	for (unsigned a = 0; a < 4; a++)
		t[n++] = weft_spawn(s_actor, (void *)(uintptr_t)a);
	CHECK_EQ(weft_gather(t, n, NULL), 0);
	for (unsigned i = 0; i < NPAIRS; i++) {
		if (i % 2) {
			CHECK_EQ(S.got[i][0], -EBADF);
			CHECK_EQ(S.got[i][1], -EBADF);
		} else {
			CHECK_EQ(S.got[i][0], 1);
			CHECK(S.got[i][1] > 0 && (S.got[i][1] & POLLIN));
			CHECK_EQ(weft_close(S.c[i]), 0);
		}
		CHECK_EQ(weft_close(S.s[i]), 0);
	}
	return NULL;
}

static void test_close_stress(void **state)
{
	(void)state;
	int before = count_fds();
	size_t rounds = scaled(40, 4);
	for (size_t r = 0; r < rounds; r++) {
		memset(&S, 0, sizeof S);
		run(2, stress_round, NULL);
	}
	assert_int_equal(count_fds(), before);
}

int main(void)
{
	apply_test_filters();
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_close_wakes_each_kind),
		cmocka_unit_test(test_close_spares_neighbours),
		cmocka_unit_test(test_close_stress),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
