/* Description: channels and select (weft/chan.h).
 *
 * - rendezvous (capacity 0): a send completes only once a receiver has
 *   started its receive; nothing is ever buffered;
 * - buffered channels keep FIFO order (small and 1 KiB elements, a ring
 *   that wraps), try_send/try_recv report -EAGAIN on full/empty;
 * - MPMC stress on 4 workers: 8 producers x 8 consumers, every element
 *   received exactly once (per-element flags and a checksum), capacities
 *   64, 1 and 0;
 * - close: parked senders get -EPIPE, receivers drain the buffer and then
 *   get -EPIPE, closing twice does nothing; closes racing sends, try_sends
 *   and selects lose and invent nothing (received == successfully sent);
 * - try_send/try_recv from plain pthreads and with no runtime at all;
 * - select: send and recv cases, select-with-default, fairness between two
 *   always-ready channels, selects racing plain receivers/senders and other
 *   selects (no element lost or duplicated), closed channels;
 * - cancellation and deadlines: a parked send/recv/select that is cancelled
 *   returns -ECANCELED and moved nothing; deadline scopes (nested: the
 *   earliest wins) make waits return -ETIMEDOUT; a cancel or a deadline
 *   racing a hand-off never loses or duplicates the element;
 * - bad input (-EINVAL, NULL from weft_chan_new), and weft_chan_free with
 *   a parked waiter aborts (checked in a forked child).
 *
 * Fibers never call assert_* (cmocka longjmps): they record failures with
 * CHECK into globals, checked after weft_run returns. Counts scale with env
 * WEFT_TEST_SCALE (default 1.0) for sanitizer builds.
 */
#include <stdbool.h>
#include <string.h>
#include <pthread.h>
#include <sched.h>

#include "testutil.h"

/* ---- rendezvous ---------------------------------------------------------- */

static weft_chan *RZ;
static atomic_int rz_started;
static size_t rz_n;

static void *rz_receiver(void *arg)
{
	(void)arg;
	weft_sleep(30 * MS); /* the first send parks meanwhile */
	for (size_t i = 0; i < rz_n; i++) {
		atomic_fetch_add(&rz_started, 1);
		int v = -1;
		CHECK_EQ(weft_chan_recv(RZ, &v), 0);
		CHECK_EQ(v, i);
		if (i % 97 == 0)
			weft_sleep(50 * 1000);
	}
	return NULL;
}

static void *rz_main(void *arg)
{
	(void)arg;
	RZ = weft_chan_new(0, sizeof(int));
	CHECK(RZ != NULL);
	int x = 7;
	/* nobody receives: try_send cannot complete, try_recv finds nothing */
	CHECK_EQ(weft_chan_try_send(RZ, &x), -EAGAIN);
	CHECK_EQ(weft_chan_try_recv(RZ, &x), -EAGAIN);
	/* a blocking send without a receiver does not complete */
	weft_deadline d;
	CHECK_EQ(weft_deadline_push(&d, 20 * MS), 0);
	CHECK_EQ(weft_chan_send(RZ, &x), -ETIMEDOUT);
	weft_deadline_pop(&d);
	CHECK_EQ(weft_chan_len(RZ), 0);
	CHECK_EQ(weft_chan_try_recv(RZ, &x), -EAGAIN); /* not buffered */

	atomic_store(&rz_started, 0);
	weft_task *t = weft_spawn(rz_receiver, NULL);
	uint64_t t0 = weft_now();
	for (size_t i = 0; i < rz_n; i++) {
		int v = (int)i;
		CHECK_EQ(weft_chan_send(RZ, &v), 0);
		/* completed only because receive number i has started */
		if ((size_t)atomic_load(&rz_started) < i + 1)
			CHECK_EQ(atomic_load(&rz_started), i + 1);
		CHECK_EQ(weft_chan_len(RZ), 0);
		if (i == 0)
			CHECK(ms_since(t0) >= 25); /* waited for the receiver */
	}
	CHECK_EQ(weft_join(t, NULL), 0);
	weft_chan_free(RZ);
	return NULL;
}

static void test_rendezvous(void **state)
{
	(void)state;
	rz_n = scaled(5000, 300);
	run(4, rz_main, NULL);
}

/* ---- buffered FIFO ------------------------------------------------------- */

struct big {
	uint64_t seq;
	unsigned char pad[1016];
};

static weft_chan *FQ, *FB;
static size_t fifo_n;
static atomic_int fifo_len_bad;

static void *fifo_producer(void *arg)
{
	(void)arg;
	for (size_t i = 0; i < fifo_n; i++) {
		uint64_t v = i;
		CHECK_EQ(weft_chan_send(FQ, &v), 0);
		if (i % 1000 == 0)
			weft_yield();
	}
	struct big b;
	for (size_t i = 0; i < fifo_n / 10; i++) {
		b.seq = i;
		memset(b.pad, (int)(i & 0xff), sizeof b.pad);
		CHECK_EQ(weft_chan_send(FB, &b), 0);
	}
	return NULL;
}

static void *fifo_consumer(void *arg)
{
	(void)arg;
	for (size_t i = 0; i < fifo_n; i++) {
		uint64_t v = UINT64_MAX;
		CHECK_EQ(weft_chan_recv(FQ, &v), 0);
		if (v != i) {
			CHECK_EQ(v, i);
			break;
		}
		if (weft_chan_len(FQ) > 16)
			atomic_fetch_add(&fifo_len_bad, 1);
		if (i % 777 == 0)
			weft_sleep(20 * 1000); /* let the buffer fill up */
	}
	struct big b;
	for (size_t i = 0; i < fifo_n / 10; i++) {
		CHECK_EQ(weft_chan_recv(FB, &b), 0);
		CHECK_EQ(b.seq, i);
		size_t bad = 0;
		for (size_t k = 0; k < sizeof b.pad; k++)
			bad += b.pad[k] != (unsigned char)(i & 0xff);
		CHECK_EQ(bad, 0);
	}
	return NULL;
}

static void *fifo_main(void *arg)
{
	(void)arg;
	FQ = weft_chan_new(16, sizeof(uint64_t));
	FB = weft_chan_new(7, sizeof(struct big));
	CHECK(FQ && FB);
	/* fill exactly to capacity, twice, so the ring wraps */
	for (int round = 0; round < 2; round++) {
		for (uint64_t i = 0; i < 16; i++)
			CHECK_EQ(weft_chan_try_send(FQ, &i), 0);
		uint64_t x = 99;
		CHECK_EQ(weft_chan_try_send(FQ, &x), -EAGAIN);
		CHECK_EQ(weft_chan_len(FQ), 16);
		for (uint64_t i = 0; i < 5; i++) {
			CHECK_EQ(weft_chan_try_recv(FQ, &x), 0);
			CHECK_EQ(x, i);
		}
		for (uint64_t i = 16; i < 21; i++)
			CHECK_EQ(weft_chan_try_send(FQ, &i), 0);
		for (uint64_t i = 5; i < 21; i++) {
			CHECK_EQ(weft_chan_try_recv(FQ, &x), 0);
			CHECK_EQ(x, i);
		}
		CHECK_EQ(weft_chan_try_recv(FQ, &x), -EAGAIN);
		CHECK_EQ(weft_chan_len(FQ), 0);
	}
	weft_task *p = weft_spawn(fifo_producer, NULL);
	weft_task *c = weft_spawn(fifo_consumer, NULL);
	CHECK_EQ(weft_join(p, NULL), 0);
	CHECK_EQ(weft_join(c, NULL), 0);
	CHECK_EQ(weft_chan_len(FQ), 0);
	weft_chan_free(FQ);
	weft_chan_free(FB);
	return NULL;
}

static void test_buffered_fifo(void **state)
{
	(void)state;
	fifo_n = scaled(100000, 2000);
	atomic_store(&fifo_len_bad, 0);
	run(4, fifo_main, NULL);
	assert_int_equal(atomic_load(&fifo_len_bad), 0);
}

/* ---- MPMC stress --------------------------------------------------------- */

#define MP_PROD 8
#define MP_CONS 8

static struct {
	weft_chan *c;
	size_t n;
	_Atomic unsigned char *seen;
	atomic_ullong sum;
	atomic_size_t got, dup, bad_ret, out_of_range;
	atomic_size_t per_cons[MP_CONS];
} MP;

static void *mp_producer(void *arg)
{
	size_t p = (size_t)(uintptr_t)arg;
	for (size_t i = p; i < MP.n; i += MP_PROD) {
		uint64_t v = i;
		int r = weft_chan_send(MP.c, &v);
		if (r != 0) {
			CHECK_EQ(r, 0);
			break;
		}
		if (i % 4099 == p)
			weft_yield();
	}
	return NULL;
}

static void *mp_consumer(void *arg)
{
	size_t k = (size_t)(uintptr_t)arg;
	for (;;) {
		uint64_t v;
		int r = weft_chan_recv(MP.c, &v);
		if (r == -EPIPE)
			break;
		if (r != 0) {
			atomic_fetch_add(&MP.bad_ret, 1);
			break;
		}
		if (v >= MP.n) {
			atomic_fetch_add(&MP.out_of_range, 1);
			continue;
		}
		if (atomic_fetch_add(&MP.seen[v], 1))
			atomic_fetch_add(&MP.dup, 1);
		atomic_fetch_add(&MP.sum, v);
		atomic_fetch_add(&MP.got, 1);
		atomic_fetch_add(&MP.per_cons[k], 1);
	}
	return NULL;
}

static void *mp_main(void *arg)
{
	(void)arg;
	weft_task *c[MP_CONS], *p[MP_PROD];
	for (size_t k = 0; k < MP_CONS; k++)
		c[k] = weft_spawn(mp_consumer, (void *)(uintptr_t)k);
	for (size_t k = 0; k < MP_PROD; k++)
		p[k] = weft_spawn(mp_producer, (void *)(uintptr_t)k);
	CHECK_EQ(weft_gather(p, MP_PROD, NULL), 0);
	weft_chan_close(MP.c);
	CHECK_EQ(weft_gather(c, MP_CONS, NULL), 0);
	return NULL;
}

static void mp_run(size_t cap, size_t n)
{
	memset(&MP, 0, sizeof MP);
	MP.n = n;
	MP.c = weft_chan_new(cap, sizeof(uint64_t));
	assert_non_null(MP.c);
	MP.seen = calloc(n, 1);
	assert_non_null(MP.seen);
	run(4, mp_main, NULL);
	assert_int_equal(atomic_load(&MP.bad_ret), 0);
	assert_int_equal(atomic_load(&MP.out_of_range), 0);
	assert_int_equal(atomic_load(&MP.dup), 0);
	assert_int_equal(atomic_load(&MP.got), n);
	size_t missing = 0;
	for (size_t i = 0; i < n; i++)
		missing += atomic_load(&MP.seen[i]) != 1;
	assert_int_equal(missing, 0);
	assert_true(atomic_load(&MP.sum) ==
		    (unsigned long long)n * (n - 1) / 2);
	assert_int_equal(weft_chan_len(MP.c), 0);
	weft_chan_free(MP.c);
	free((void *)MP.seen);
}

static void test_mpmc_cap64(void **state)
{
	(void)state;
	mp_run(64, scaled(200000, 5000));
}

static void test_mpmc_cap1(void **state)
{
	(void)state;
	mp_run(1, scaled(100000, 2000));
}

static void test_mpmc_rendezvous(void **state)
{
	(void)state;
	mp_run(0, scaled(100000, 2000));
}

/* ---- close --------------------------------------------------------------- */

static weft_chan *CL;
static atomic_int cl_arrived;
static int cl_res[4];

static void *cl_sender(void *arg)
{
	int k = (int)(intptr_t)arg;
	int v = 100 + k;
	atomic_fetch_add(&cl_arrived, 1);
	cl_res[k] = weft_chan_send(CL, &v);
	return NULL;
}

static void *cl_receiver(void *arg)
{
	int k = (int)(intptr_t)arg;
	int v = -1;
	atomic_fetch_add(&cl_arrived, 1);
	cl_res[k] = weft_chan_recv(CL, &v);
	return NULL;
}

static int sel_res_idx, sel_res_result;

static void *cl_selector(void *arg)
{
	weft_chan **ch = arg;
	int a, b;
	weft_select_case cs[2] = {{ch[0], WEFT_RECV, &a, 1},
				  {ch[1], WEFT_RECV, &b, 1}};
	atomic_fetch_add(&cl_arrived, 1);
	sel_res_idx = weft_select(cs, 2, 0);
	sel_res_result = sel_res_idx >= 0 ? cs[sel_res_idx].result : 1;
	return NULL;
}

static void *close_main(void *arg)
{
	(void)arg;
	/* parked senders on a full buffered channel get -EPIPE */
	CL = weft_chan_new(4, sizeof(int));
	for (int i = 0; i < 4; i++)
		CHECK_EQ(weft_chan_send(CL, &i), 0);
	atomic_store(&cl_arrived, 0);
	weft_task *t[4];
	for (int k = 0; k < 3; k++)
		t[k] = weft_spawn(cl_sender, (void *)(intptr_t)k);
	await_at_least(&cl_arrived, 3);
	weft_sleep(20 * MS); /* let them park */
	CHECK_EQ(weft_chan_len(CL), 4);
	weft_chan_close(CL);
	weft_chan_close(CL); /* twice: nothing */
	for (int k = 0; k < 3; k++) {
		CHECK_EQ(weft_join(t[k], NULL), 0);
		CHECK_EQ(cl_res[k], -EPIPE);
	}
	/* receivers drain what was buffered (and only that), then -EPIPE */
	CHECK_EQ(weft_chan_len(CL), 4);
	for (int i = 0; i < 4; i++) {
		int v = -1;
		CHECK_EQ(weft_chan_recv(CL, &v), 0);
		CHECK_EQ(v, i);
	}
	int v = 5;
	CHECK_EQ(weft_chan_recv(CL, &v), -EPIPE);
	CHECK_EQ(weft_chan_recv(CL, &v), -EPIPE);
	CHECK_EQ(weft_chan_try_recv(CL, &v), -EPIPE);
	CHECK_EQ(weft_chan_send(CL, &v), -EPIPE);
	CHECK_EQ(weft_chan_try_send(CL, &v), -EPIPE);
	CHECK_EQ(weft_chan_len(CL), 0);
	/* select on a closed channel: that case, with result -EPIPE */
	weft_chan *open = weft_chan_new(1, sizeof(int));
	int a = 0, b = 0;
	for (int op = WEFT_SEND; op <= WEFT_RECV; op++) {
		weft_select_case cs[2] = {{open, WEFT_RECV, &a, 1},
					  {CL, op, &b, 1}};
		CHECK_EQ(weft_select(cs, 2, 0), 1);
		CHECK_EQ(cs[1].result, -EPIPE);
		CHECK_EQ(weft_select(cs, 2, 1), 1);
		CHECK_EQ(cs[1].result, -EPIPE);
	}
	weft_chan_free(CL);

	/* parked receivers on an empty channel get -EPIPE */
	for (size_t cap = 0; cap <= 2; cap += 2) {
		CL = weft_chan_new(cap, sizeof(int));
		atomic_store(&cl_arrived, 0);
		for (int k = 0; k < 4; k++)
			t[k] = weft_spawn(cl_receiver, (void *)(intptr_t)k);
		await_at_least(&cl_arrived, 4);
		weft_sleep(20 * MS);
		weft_chan_close(CL);
		for (int k = 0; k < 4; k++) {
			CHECK_EQ(weft_join(t[k], NULL), 0);
			CHECK_EQ(cl_res[k], -EPIPE);
		}
		weft_chan_free(CL);
	}

	/* a parked select is completed by a close of one of its channels */
	weft_chan *ch[2] = {weft_chan_new(0, sizeof(int)),
			    weft_chan_new(3, sizeof(int))};
	atomic_store(&cl_arrived, 0);
	t[0] = weft_spawn(cl_selector, ch);
	await_at_least(&cl_arrived, 1);
	weft_sleep(20 * MS);
	weft_chan_close(ch[1]);
	CHECK_EQ(weft_join(t[0], NULL), 0);
	CHECK_EQ(sel_res_idx, 1);
	CHECK_EQ(sel_res_result, -EPIPE);
	weft_chan_free(ch[0]);
	weft_chan_free(ch[1]);
	weft_chan_free(open);

	weft_chan_close(NULL);
	weft_chan_free(NULL);
	CHECK_EQ(weft_chan_len(NULL), 0);
	return NULL;
}

static void test_close(void **state)
{
	(void)state;
	run(4, close_main, NULL);
}

/* ---- closes racing sends ------------------------------------------------- */

#define CR_SEND 6
#define CR_RECV 4

/* senders: 0,3 blocking send, 1,4 try_send, 2,5 select over {c, dummy};
 * receivers: 0,1 recv, 2,3 select over {c, dummy}. dummy is never closed
 * during a round: a select moves elements through it too (counted the
 * same way), and finishes once c's case reports -EPIPE. */
static struct {
	weft_chan *c, *dummy;
	atomic_ullong sent, sent_sum, recvd, recvd_sum;
	atomic_int bad;
} CR;

static void *cr_sender(void *arg)
{
	uintptr_t k = (uintptr_t)arg;
	for (uint64_t i = 0;; i++) {
		uint64_t v = (k << 40) | i;
		int r;
		if (k % 3 == 1) {
			while ((r = weft_chan_try_send(CR.c, &v)) == -EAGAIN)
				weft_yield();
		} else if (k % 3 == 2) {
			weft_select_case cs[2] = {{CR.c, WEFT_SEND, &v, 1},
						  {CR.dummy, WEFT_SEND, &v, 1}};
			r = weft_select(cs, 2, 0);
			if (r == 0 || r == 1)
				r = cs[r].result;
			else
				r = -EBADE;
		} else {
			r = weft_chan_send(CR.c, &v);
		}
		if (r == -EPIPE)
			break;
		if (r != 0) {
			atomic_fetch_add(&CR.bad, 1);
			break;
		}
		atomic_fetch_add(&CR.sent, 1);
		atomic_fetch_add(&CR.sent_sum, v);
	}
	return NULL;
}

static void *cr_receiver(void *arg)
{
	uintptr_t k = (uintptr_t)arg;
	for (;;) {
		uint64_t v, w;
		int r;
		if (k >= 2) {
			weft_select_case cs[2] = {{CR.c, WEFT_RECV, &v, 1},
						  {CR.dummy, WEFT_RECV, &w, 1}};
			r = weft_select(cs, 2, 0);
			if (r == 1)
				v = w;
			if (r == 0 || r == 1)
				r = cs[r].result;
			else
				r = -EBADE;
		} else {
			r = weft_chan_recv(CR.c, &v);
		}
		if (r == -EPIPE)
			break;
		if (r != 0) {
			atomic_fetch_add(&CR.bad, 1);
			break;
		}
		atomic_fetch_add(&CR.recvd, 1);
		atomic_fetch_add(&CR.recvd_sum, v);
	}
	return NULL;
}

static size_t cr_rounds;

static void *cr_main(void *arg)
{
	(void)arg;
	static const size_t caps[] = {0, 1, 8};
	for (size_t round = 0; round < cr_rounds; round++) {
		CR.c = weft_chan_new(caps[round % 3], sizeof(uint64_t));
		CR.dummy = weft_chan_new(0, sizeof(uint64_t));
		weft_task *t[CR_SEND + CR_RECV];
		for (size_t k = 0; k < CR_RECV; k++)
			t[k] = weft_spawn(cr_receiver, (void *)(uintptr_t)k);
		for (size_t k = 0; k < CR_SEND; k++)
			t[CR_RECV + k] =
				weft_spawn(cr_sender, (void *)(uintptr_t)k);
		weft_sleep((round % 4) * 500 * 1000);
		weft_chan_close(CR.c);
		CHECK_EQ(weft_gather(t, CR_SEND + CR_RECV, NULL), 0);
		CHECK_EQ(weft_chan_len(CR.c), 0);
		weft_chan_free(CR.c);
		weft_chan_free(CR.dummy);
	}
	return NULL;
}

static void test_close_races_sends(void **state)
{
	(void)state;
	memset(&CR, 0, sizeof CR);
	cr_rounds = scaled(150, 6);
	run(4, cr_main, NULL);
	assert_int_equal(atomic_load(&CR.bad), 0);
	assert_true(atomic_load(&CR.sent) > 0);
	assert_int_equal(atomic_load(&CR.recvd), atomic_load(&CR.sent));
	assert_true(atomic_load(&CR.recvd_sum) == atomic_load(&CR.sent_sum));
}

/* ---- try_send / try_recv, from plain threads ----------------------------- */

static size_t tp_n;
static weft_chan *TA, *TB;
static atomic_int tp_threads_done;
static atomic_int tp_bad;

/* a plain thread: try_send 0..n-1 into TA, retrying on -EAGAIN */
static void *tp_sender_thread(void *arg)
{
	(void)arg;
	for (size_t i = 0; i < tp_n; i++) {
		int v = (int)i, r;
		while ((r = weft_chan_try_send(TA, &v)) == -EAGAIN)
			sched_yield();
		if (r)
			atomic_fetch_add(&tp_bad, 1);
	}
	atomic_fetch_add(&tp_threads_done, 1);
	return NULL;
}

/* a plain thread: try_recv from TB (fed by a fiber's blocking sends) */
static void *tp_receiver_thread(void *arg)
{
	(void)arg;
	int v, r;
	for (size_t i = 0; i < tp_n; i++) {
		while ((r = weft_chan_try_recv(TB, &v)) == -EAGAIN)
			sched_yield();
		if (r || v != (int)i)
			atomic_fetch_add(&tp_bad, 1);
	}
	/* the fiber closes TB after its last send */
	while ((r = weft_chan_try_recv(TB, &v)) == -EAGAIN)
		sched_yield();
	if (r != -EPIPE)
		atomic_fetch_add(&tp_bad, 1);
	/* not a fiber: a receive that would block is refused */
	weft_chan *e = weft_chan_new(1, sizeof(int));
	if (weft_chan_recv(e, &v) != -EINVAL)
		atomic_fetch_add(&tp_bad, 1);
	v = 1;
	if (weft_chan_try_send(e, &v) || weft_chan_send(e, &v) != -EINVAL)
		atomic_fetch_add(&tp_bad, 1);
	weft_select_case cs = {e, WEFT_SEND, &v, 1};
	if (weft_select(&cs, 1, 0) != -EINVAL ||
	    weft_select(&cs, 1, 1) != -EAGAIN)
		atomic_fetch_add(&tp_bad, 1);
	cs.op = WEFT_RECV;
	if (weft_select(&cs, 1, 0) != 0 || cs.result != 0 || v != 1)
		atomic_fetch_add(&tp_bad, 1);
	weft_chan_free(e);
	atomic_fetch_add(&tp_threads_done, 1);
	return NULL;
}

static void *tp_fiber_sender(void *arg)
{
	(void)arg;
	for (size_t i = 0; i < tp_n; i++) {
		int v = (int)i;
		CHECK_EQ(weft_chan_send(TB, &v), 0);
	}
	weft_chan_close(TB);
	return NULL;
}

static void *tp_main(void *arg)
{
	pthread_t *th = arg;
	atomic_store(&tp_threads_done, 0);
	CHECK_EQ(pthread_create(&th[0], NULL, tp_sender_thread, NULL), 0);
	CHECK_EQ(pthread_create(&th[1], NULL, tp_receiver_thread, NULL), 0);
	weft_task *s = weft_spawn(tp_fiber_sender, NULL);
	for (size_t i = 0; i < tp_n; i++) {
		int v = -1;
		CHECK_EQ(weft_chan_recv(TA, &v), 0);
		if (v != (int)i) {
			CHECK_EQ(v, i);
			break;
		}
	}
	CHECK_EQ(weft_join(s, NULL), 0);
	/* keep the runtime up until the threads are done with it, so that
	 * their late ops meet a running runtime (the ops across the run's
	 * end: test_foreign_completer_at_end) */
	await_at_least(&tp_threads_done, 2);
	return NULL;
}

static void test_try_ops_threads(void **state)
{
	(void)state;
	/* no runtime at all: the non-blocking calls still work */
	weft_chan *c = weft_chan_new(2, sizeof(int));
	assert_non_null(c);
	int v = 1;
	assert_int_equal(weft_chan_try_send(c, &v), 0);
	v = 2;
	assert_int_equal(weft_chan_try_send(c, &v), 0);
	assert_int_equal(weft_chan_try_send(c, &v), -EAGAIN);
	assert_int_equal(weft_chan_len(c), 2);
	assert_int_equal(weft_chan_try_recv(c, &v), 0);
	assert_int_equal(v, 1);
	assert_int_equal(weft_chan_try_recv(c, &v), 0);
	assert_int_equal(v, 2);
	assert_int_equal(weft_chan_try_recv(c, &v), -EAGAIN);
	/* a receive that would block, not from a fiber */
	assert_int_equal(weft_chan_recv(c, &v), -EINVAL);
	weft_chan_close(c);
	assert_int_equal(weft_chan_try_recv(c, &v), -EPIPE);
	assert_int_equal(weft_chan_try_send(c, &v), -EPIPE);
	weft_chan_free(c);

	tp_n = scaled(5000, 500);
	atomic_store(&tp_bad, 0);
	TA = weft_chan_new(4, sizeof(int));
	TB = weft_chan_new(0, sizeof(int));
	pthread_t th[2];
	run(4, tp_main, th);
	assert_int_equal(pthread_join(th[0], NULL), 0);
	assert_int_equal(pthread_join(th[1], NULL), 0);
	assert_int_equal(atomic_load(&tp_bad), 0);
	weft_chan_free(TA);
	weft_chan_free(TB);
}

/* ---- a plain thread completes a wait as the run ends -----------------------
 * A plain thread's try_send claims a parked receiver under the channel's
 * lock and wakes it after unlocking. If the run ends between the two (main
 * returns, the receiver is woken by its cancel first, finds its record
 * claimed, returns the element and ends), weft_run's teardown must not
 * free the fibers' memory under that late wake: the thread counts itself
 * a foreign caller from its claim on (waitq.h). The test hook holds the
 * thread's wake back 200 ms after its unlock, and main returns as soon as
 * the thread is in that wait, so the run ends in between; without the
 * count the late wake touched a freed slab (SIGSEGV, or a use-after-free
 * under ASan). The other way round too: try_recv from a parked sender. */
extern _Atomic unsigned weft__test_wake_delay_us, weft__test_wake_delayed;

static struct {
	weft_chan *c;
	_Atomic int trying, main_back, claimed, raced;
	int recv_r, val, send_side; /* the fiber's result, read after the run */
} FC;

static void *fc_thread(void *arg)
{
	(void)arg;
	while (!atomic_load(&FC.trying))
		sched_yield();
	uint64_t until = real_ns() + 2 * SEC;
	int v = 42, r = -EAGAIN;
	while (r == -EAGAIN && real_ns() < until) {
		r = FC.send_side ? weft_chan_try_recv(FC.c, &v)
				 : weft_chan_try_send(FC.c, &v);
		if (r == -EAGAIN)
			sched_yield();
	}
	if (r == 0) {
		atomic_store(&FC.claimed, 1);
		/* main had returned before our wake was done */
		atomic_store(&FC.raced, atomic_load(&FC.main_back));
	}
	return NULL;
}

static void *fc_waiter(void *arg)
{
	(void)arg;
	int v = FC.send_side ? 42 : -1;
	FC.recv_r = FC.send_side ? weft_chan_send(FC.c, &v)
				 : weft_chan_recv(FC.c, &v);
	FC.val = v;
	return NULL;
}

static void *fc_main(void *arg)
{
	(void)arg;
	unsigned before = atomic_load(&weft__test_wake_delayed);
	weft_detach(weft_spawn(fc_waiter, NULL));
	atomic_store(&FC.trying, 1);
	/* the waiter parks, the thread claims it and sleeps in its wake:
	 * end the run meanwhile */
	uint64_t until = real_ns() + 2 * SEC;
	while (atomic_load(&weft__test_wake_delayed) == before &&
	       real_ns() < until)
		weft_sleep(100 * US);
	atomic_store(&FC.main_back, 1);
	return NULL;
}

static void test_foreign_completer_at_end(void **state)
{
	(void)state;
	SKIP_IF_SEEDED("a plain thread on a real-time schedule");
	size_t rounds = scaled(6, 4);
	int raced = 0;
	/* long enough that main, polling every 100 us, sees it begin even
	 * on a loaded machine */
	atomic_store(&weft__test_wake_delay_us, 200000);
	for (size_t i = 0; i < rounds; i++) {
		memset(&FC, 0, sizeof FC);
		FC.send_side = (int)(i & 1);
		FC.recv_r = 1;
		assert_non_null(FC.c = weft_chan_new(0, sizeof(int)));
		pthread_t th;
		assert_int_equal(pthread_create(&th, NULL, fc_thread, NULL), 0);
		weft_config c;
		weft_config_init(&c);
		c.workers = 1 + i % 2;
		assert_int_equal(weft_run(&c, fc_main, NULL, NULL), 0);
		assert_int_equal(pthread_join(th, NULL), 0);
		/* success wins: the element moved iff the thread claimed */
		if (atomic_load(&FC.claimed)) {
			assert_int_equal(FC.recv_r, 0);
			assert_int_equal(FC.val, 42);
			raced += atomic_load(&FC.raced);
		} else {
			assert_int_equal(FC.recv_r, -ECANCELED);
		}
		weft_chan_free(FC.c);
	}
	atomic_store(&weft__test_wake_delay_us, 0);
	print_message("  %d of %zu runs ended inside a plain thread's wake\n",
		      raced, rounds);
	/* the case under test happened in every run (main returns once the
	 * thread is in its held-back wake) */
	assert_int_equal(raced, (int)rounds);
}

/* ---- select: basics ------------------------------------------------------ */

static weft_chan *SA, *SB;

static void *sb_late_sender(void *arg)
{
	int v = (int)(intptr_t)arg;
	weft_sleep(20 * MS);
	CHECK_EQ(weft_chan_send(SB, &v), 0);
	return NULL;
}

static void *sb_late_receiver(void *arg)
{
	(void)arg;
	weft_sleep(20 * MS);
	int v = -1;
	CHECK_EQ(weft_chan_recv(SB, &v), 0);
	return (void *)(intptr_t)v;
}

static void *select_basic_main(void *arg)
{
	(void)arg;
	SA = weft_chan_new(1, sizeof(int)); /* buffered, one slot */
	SB = weft_chan_new(0, sizeof(int)); /* rendezvous */
	int a = -1, b = -1;

	/* nothing ready: select-with-default */
	weft_select_case r2[2] = {{SA, WEFT_RECV, &a, 1},
				  {SB, WEFT_RECV, &b, 1}};
	CHECK_EQ(weft_select(r2, 2, 1), -EAGAIN);
	CHECK_EQ(a, -1);
	CHECK_EQ(b, -1);

	/* one ready: that one, element copied, result 0 */
	int x = 11;
	CHECK_EQ(weft_chan_try_send(SA, &x), 0);
	r2[0].result = r2[1].result = 1;
	CHECK_EQ(weft_select(r2, 2, 1), 0);
	CHECK_EQ(r2[0].result, 0);
	CHECK_EQ(a, 11);
	CHECK_EQ(weft_chan_len(SA), 0);

	/* send cases: SA has room, SB has no receiver */
	int s1 = 21, s2 = 22;
	weft_select_case w2[2] = {{SB, WEFT_SEND, &s2, 1},
				  {SA, WEFT_SEND, &s1, 1}};
	CHECK_EQ(weft_select(w2, 2, 0), 1);
	CHECK_EQ(w2[1].result, 0);
	CHECK_EQ(weft_chan_len(SA), 1);
	/* now SA is full too: nothing ready */
	CHECK_EQ(weft_select(w2, 2, 1), -EAGAIN);
	CHECK_EQ(weft_chan_try_recv(SA, &x), 0);
	CHECK_EQ(x, 21);

	/* blocking recv select, completed by a late sender on SB */
	a = b = -1;
	weft_task *t = weft_spawn(sb_late_sender, (void *)(intptr_t)33);
	uint64_t t0 = weft_now();
	CHECK_EQ(weft_select(r2, 2, 0), 1);
	CHECK_EQ(r2[1].result, 0);
	CHECK_EQ(b, 33);
	CHECK_EQ(a, -1);
	CHECK(ms_since(t0) >= 15);
	CHECK_EQ(weft_join(t, NULL), 0);

	/* blocking send select (SA full, SB rendezvous), completed by a late
	 * receiver on SB */
	CHECK_EQ(weft_chan_try_send(SA, &x), 0);
	t = weft_spawn(sb_late_receiver, NULL);
	s2 = 44;
	CHECK_EQ(weft_select(w2, 2, 0), 0);
	CHECK_EQ(w2[0].result, 0);
	void *res = NULL;
	CHECK_EQ(weft_join(t, &res), 0);
	CHECK_EQ((intptr_t)res, 44);
	CHECK_EQ(weft_chan_len(SA), 1);
	CHECK_EQ(weft_chan_try_recv(SA, &x), 0);

	/* mixed: recv on empty SA, send on SB; a late receiver on SB */
	weft_select_case mx[2] = {{SA, WEFT_RECV, &a, 1},
				  {SB, WEFT_SEND, &s1, 1}};
	s1 = 55;
	t = weft_spawn(sb_late_receiver, NULL);
	CHECK_EQ(weft_select(mx, 2, 0), 1);
	CHECK_EQ(weft_join(t, &res), 0);
	CHECK_EQ((intptr_t)res, 55);
	/* mixed, completed by a send to SA instead: SB send must not happen */
	x = 66;
	CHECK_EQ(weft_chan_try_send(SA, &x), 0);
	CHECK_EQ(weft_select(mx, 2, 0), 0);
	CHECK_EQ(a, 66);
	CHECK_EQ(weft_chan_try_recv(SB, &x), -EAGAIN);

	/* the same channel twice in one select */
	x = 77;
	CHECK_EQ(weft_chan_try_send(SA, &x), 0);
	int d1 = -1, d2 = -1;
	weft_select_case dd[2] = {{SA, WEFT_RECV, &d1, 1},
				  {SA, WEFT_RECV, &d2, 1}};
	int i = weft_select(dd, 2, 0);
	CHECK(i == 0 || i == 1);
	CHECK_EQ(i == 0 ? d1 : d2, 77);
	CHECK_EQ(i == 0 ? d2 : d1, -1);
	CHECK_EQ(weft_select(dd, 2, 1), -EAGAIN);
	t = weft_spawn(sb_late_sender, (void *)(intptr_t)88);
	weft_select_case sd[3] = {{SA, WEFT_RECV, &d1, 1},
				  {SB, WEFT_RECV, &d2, 1},
				  {SA, WEFT_RECV, &d1, 1}};
	CHECK_EQ(weft_select(sd, 3, 0), 1);
	CHECK_EQ(d2, 88);
	CHECK_EQ(weft_join(t, NULL), 0);
	/* a one-case select is a plain op */
	x = 99;
	weft_select_case one = {SA, WEFT_SEND, &x, 1};
	CHECK_EQ(weft_select(&one, 1, 0), 0);
	CHECK_EQ(weft_chan_len(SA), 1);
	CHECK_EQ(weft_chan_try_recv(SA, &x), 0);
	CHECK_EQ(x, 99);

	weft_chan_free(SA);
	weft_chan_free(SB);
	return NULL;
}

static void test_select_basic(void **state)
{
	(void)state;
	run(4, select_basic_main, NULL);
}

/* ---- select: fairness ---------------------------------------------------- */

static size_t fair_n;
static size_t fair_recv[2], fair_send[2];

static void *fair_main(void *arg)
{
	(void)arg;
	weft_chan *c[2] = {weft_chan_new(1, sizeof(int)),
			   weft_chan_new(1, sizeof(int))};
	int v = 1, a, b;
	CHECK_EQ(weft_chan_try_send(c[0], &v), 0);
	CHECK_EQ(weft_chan_try_send(c[1], &v), 0);
	weft_select_case rc[2] = {{c[0], WEFT_RECV, &a, 1},
				  {c[1], WEFT_RECV, &b, 1}};
	for (size_t k = 0; k < fair_n; k++) {
		int i = weft_select(rc, 2, (int)(k & 1));
		if (i != 0 && i != 1) {
			CHECK_EQ(i, 0);
			break;
		}
		fair_recv[i]++;
		CHECK_EQ(weft_chan_try_send(c[i], &v), 0); /* ready again */
	}
	/* both empty now: two always-ready send cases */
	CHECK_EQ(weft_chan_try_recv(c[0], &a), 0);
	CHECK_EQ(weft_chan_try_recv(c[1], &a), 0);
	weft_select_case sc[2] = {{c[0], WEFT_SEND, &v, 1},
				  {c[1], WEFT_SEND, &v, 1}};
	for (size_t k = 0; k < fair_n; k++) {
		int i = weft_select(sc, 2, (int)(k & 1));
		if (i != 0 && i != 1) {
			CHECK_EQ(i, 0);
			break;
		}
		fair_send[i]++;
		CHECK_EQ(weft_chan_try_recv(c[i], &a), 0);
	}
	weft_chan_free(c[0]);
	weft_chan_free(c[1]);
	return NULL;
}

static void test_select_fairness(void **state)
{
	(void)state;
	fair_n = 10000;
	memset(fair_recv, 0, sizeof fair_recv);
	memset(fair_send, 0, sizeof fair_send);
	run(2, fair_main, NULL);
	assert_int_equal(fair_recv[0] + fair_recv[1], fair_n);
	assert_int_equal(fair_send[0] + fair_send[1], fair_n);
	for (int i = 0; i < 2; i++) {
		if (fair_recv[i] * 10 <= fair_n * 3 ||
		    fair_send[i] * 10 <= fair_n * 3)
			fail_msg("unfair select: recv %zu/%zu send %zu/%zu",
				 fair_recv[0], fair_recv[1], fair_send[0],
				 fair_send[1]);
	}
	/* also from a plain thread (no worker: its own random start) */
	weft_chan *c[2] = {weft_chan_new(1, sizeof(int)),
			   weft_chan_new(1, sizeof(int))};
	int v = 1, a;
	size_t cnt[2] = {0, 0};
	weft_chan_try_send(c[0], &v);
	weft_chan_try_send(c[1], &v);
	weft_select_case rc[2] = {{c[0], WEFT_RECV, &a, 1},
				  {c[1], WEFT_RECV, &a, 1}};
	for (int k = 0; k < 1000; k++) {
		int i = weft_select(rc, 2, 1);
		assert_true(i == 0 || i == 1);
		cnt[i]++;
		assert_int_equal(weft_chan_try_send(c[i], &v), 0);
	}
	assert_true(cnt[0] > 300 && cnt[1] > 300);
	weft_chan_free(c[0]);
	weft_chan_free(c[1]);
}

/* ---- select racing receivers, senders and other selects ------------------ */

#define SR_CH 3
static struct {
	weft_chan *c[SR_CH];
	size_t n; /* elements per sender kind */
	_Atomic unsigned char *seen;
	atomic_size_t got, dup, bad;
	atomic_ullong sum;
} SR;

static void sr_record(uint64_t v)
{
	if (v >= 2 * SR.n) {
		atomic_fetch_add(&SR.bad, 1);
		return;
	}
	if (atomic_fetch_add(&SR.seen[v], 1))
		atomic_fetch_add(&SR.dup, 1);
	atomic_fetch_add(&SR.got, 1);
	atomic_fetch_add(&SR.sum, v);
}

/* plain sender: values [lo, lo+n) step, each on channel v % SR_CH */
static void *sr_plain_sender(void *arg)
{
	size_t k = (size_t)(uintptr_t)arg; /* 0..1 */
	for (size_t i = k; i < SR.n; i += 2) {
		uint64_t v = i;
		if (weft_chan_send(SR.c[i % SR_CH], &v))
			atomic_fetch_add(&SR.bad, 1);
	}
	return NULL;
}

/* selecting sender: values [n, 2n), whichever channel takes it */
static void *sr_select_sender(void *arg)
{
	size_t k = (size_t)(uintptr_t)arg; /* 0..1 */
	for (size_t i = SR.n + k; i < 2 * SR.n; i += 2) {
		uint64_t v = i;
		weft_select_case cs[SR_CH];
		for (int j = 0; j < SR_CH; j++)
			cs[j] = (weft_select_case){SR.c[j], WEFT_SEND, &v, 1};
		int r = weft_select(cs, SR_CH, 0);
		if (r < 0 || r >= SR_CH || cs[r].result != 0)
			atomic_fetch_add(&SR.bad, 1);
	}
	return NULL;
}

static void *sr_plain_receiver(void *arg)
{
	size_t j = (size_t)(uintptr_t)arg % SR_CH;
	for (;;) {
		uint64_t v;
		int r = weft_chan_recv(SR.c[j], &v);
		if (r == -EPIPE)
			break;
		if (r) {
			atomic_fetch_add(&SR.bad, 1);
			break;
		}
		sr_record(v);
	}
	return NULL;
}

/* selecting receiver over all open channels until every one is closed */
static void *sr_select_receiver(void *arg)
{
	(void)arg;
	weft_chan *open[SR_CH];
	size_t nopen = SR_CH;
	memcpy(open, SR.c, sizeof open);
	uint64_t v[SR_CH];
	while (nopen) {
		weft_select_case cs[SR_CH];
		for (size_t j = 0; j < nopen; j++)
			cs[j] = (weft_select_case){open[j], WEFT_RECV, &v[j],
						   1};
		int r = weft_select(cs, nopen, 0);
		if (r < 0 || (size_t)r >= nopen) {
			atomic_fetch_add(&SR.bad, 1);
			break;
		}
		if (cs[r].result == -EPIPE) {
			open[r] = open[--nopen];
			continue;
		}
		if (cs[r].result) {
			atomic_fetch_add(&SR.bad, 1);
			break;
		}
		sr_record(v[r]);
	}
	return NULL;
}

static void *sr_main(void *arg)
{
	(void)arg;
	weft_task *recv[8], *send[4];
	for (size_t k = 0; k < 4; k++)
		recv[k] = weft_spawn(sr_select_receiver, NULL);
	for (size_t k = 4; k < 8; k++)
		recv[k] = weft_spawn(sr_plain_receiver, (void *)(uintptr_t)k);
	send[0] = weft_spawn(sr_plain_sender, (void *)(uintptr_t)0);
	send[1] = weft_spawn(sr_plain_sender, (void *)(uintptr_t)1);
	send[2] = weft_spawn(sr_select_sender, (void *)(uintptr_t)0);
	send[3] = weft_spawn(sr_select_sender, (void *)(uintptr_t)1);
	CHECK_EQ(weft_gather(send, 4, NULL), 0);
	for (int j = 0; j < SR_CH; j++)
		weft_chan_close(SR.c[j]);
	CHECK_EQ(weft_gather(recv, 8, NULL), 0);
	return NULL;
}

static void sr_run(size_t cap, size_t n)
{
	memset(&SR, 0, sizeof SR);
	SR.n = n;
	for (int j = 0; j < SR_CH; j++)
		assert_non_null(SR.c[j] = weft_chan_new(cap, sizeof(uint64_t)));
	SR.seen = calloc(2 * n, 1);
	run(4, sr_main, NULL);
	assert_int_equal(atomic_load(&SR.bad), 0);
	assert_int_equal(atomic_load(&SR.dup), 0);
	assert_int_equal(atomic_load(&SR.got), 2 * n);
	size_t missing = 0;
	for (size_t i = 0; i < 2 * n; i++)
		missing += atomic_load(&SR.seen[i]) != 1;
	assert_int_equal(missing, 0);
	assert_true(atomic_load(&SR.sum) ==
		    (unsigned long long)(2 * n) * (2 * n - 1) / 2);
	for (int j = 0; j < SR_CH; j++)
		weft_chan_free(SR.c[j]);
	free((void *)SR.seen);
}

static void test_select_race(void **state)
{
	(void)state;
	sr_run(0, scaled(60000, 1000));
	sr_run(2, scaled(60000, 1000));
}

/* ---- cancellation -------------------------------------------------------- */

static weft_chan *CA, *CB;
static atomic_int ca_arrived;
static int ca_res[3];

static void *ca_recv(void *arg)
{
	(void)arg;
	int v = -1;
	atomic_fetch_add(&ca_arrived, 1);
	ca_res[0] = weft_chan_recv(CA, &v);
	return (void *)(intptr_t)v;
}

static void *ca_send(void *arg)
{
	int v = (int)(intptr_t)arg;
	atomic_fetch_add(&ca_arrived, 1);
	ca_res[1] = weft_chan_send(CB, &v);
	return NULL;
}

static void *ca_select(void *arg)
{
	(void)arg;
	int a = -1, s = 500;
	weft_select_case cs[2] = {{CA, WEFT_RECV, &a, 1},
				  {CB, WEFT_SEND, &s, 1}};
	atomic_fetch_add(&ca_arrived, 1);
	ca_res[2] = weft_select(cs, 2, 0);
	return (void *)(intptr_t)a;
}

static void *cancel_main(void *arg)
{
	(void)arg;
	for (size_t cap = 0; cap <= 1; cap++) {
		CA = weft_chan_new(cap, sizeof(int)); /* empty */
		CB = weft_chan_new(cap, sizeof(int)); /* full */
		int x = 1;
		if (cap)
			CHECK_EQ(weft_chan_try_send(CB, &x), 0);
		atomic_store(&ca_arrived, 0);
		weft_task *r = weft_spawn(ca_recv, NULL);
		weft_task *s = weft_spawn(ca_send, (void *)(intptr_t)200);
		weft_task *q = weft_spawn(ca_select, NULL);
		await_at_least(&ca_arrived, 3);
		weft_sleep(20 * MS); /* all three park */
		CHECK_EQ(weft_cancel(r), 0);
		CHECK_EQ(weft_cancel(s), 0);
		CHECK_EQ(weft_cancel(q), 0);
		void *res = NULL;
		CHECK_EQ(weft_join(r, &res), -ECANCELED);
		CHECK_EQ(ca_res[0], -ECANCELED);
		CHECK_EQ((intptr_t)res, -1); /* received nothing */
		CHECK_EQ(weft_join(s, NULL), -ECANCELED);
		CHECK_EQ(ca_res[1], -ECANCELED);
		CHECK_EQ(weft_join(q, &res), -ECANCELED);
		CHECK_EQ(ca_res[2], -ECANCELED);
		CHECK_EQ((intptr_t)res, -1);
		/* nothing moved: CB holds only the original element (or is
		 * empty for cap 0), CA gets what we send now */
		int y = -1;
		CHECK_EQ(weft_chan_len(CB), cap);
		if (cap) {
			CHECK_EQ(weft_chan_try_recv(CB, &y), 0);
			CHECK_EQ(y, 1);
		}
		CHECK_EQ(weft_chan_try_recv(CB, &y), -EAGAIN);
		/* nobody waits any more: a rendezvous try_send finds no one */
		x = 2;
		CHECK_EQ(weft_chan_try_send(CA, &x), cap ? 0 : -EAGAIN);
		if (cap) {
			CHECK_EQ(weft_chan_try_recv(CA, &y), 0);
			CHECK_EQ(y, 2);
		}
		/* a fiber cancelled before it waits fails at once */
		weft_chan_free(CA);
		weft_chan_free(CB);
	}
	return NULL;
}

static void test_cancel_parked(void **state)
{
	(void)state;
	run(4, cancel_main, NULL);
}

/* cancel (or a deadline) racing a hand-off: the element is moved exactly
 * once -- received, or left in the buffer, never both, never neither */
static struct {
	weft_chan *c;
	atomic_int recv_ok, recv_fail, send_ok, bad, leftover;
} CX;

static void *cx_receiver(void *arg)
{
	uintptr_t i = (uintptr_t)arg;
	bool use_select = (i / 2) & 1, use_deadline = (i / 4) & 1;
	int v = -1;
	int r;
	weft_deadline d;
	if (use_deadline)
		weft_deadline_push(&d, (i % 7) * 10 * 1000);
	if (use_select) {
		weft_select_case cs = {CX.c, WEFT_RECV, &v, 1};
		r = weft_select(&cs, 1, 0);
		if (r == 0)
			r = cs.result;
	} else {
		r = weft_chan_recv(CX.c, &v);
	}
	if (use_deadline)
		weft_deadline_pop(&d);
	if (r == 0) {
		atomic_fetch_add(&CX.recv_ok, 1);
		if (v != 42)
			atomic_fetch_add(&CX.bad, 1);
	} else if (r == (use_deadline ? -ETIMEDOUT : -ECANCELED)) {
		atomic_fetch_add(&CX.recv_fail, 1);
		if (v != -1)
			atomic_fetch_add(&CX.bad, 1);
	} else {
		atomic_fetch_add(&CX.bad, 1);
	}
	return NULL;
}

static size_t cx_rounds;

static void *cx_main(void *arg)
{
	(void)arg;
	for (size_t i = 0; i < cx_rounds; i++) {
		bool use_deadline = (i / 4) & 1;
		CX.c = weft_chan_new(i % 2, sizeof(int));
		weft_task *t = weft_spawn(cx_receiver, (void *)(uintptr_t)i);
		if (i % 3)
			weft_yield();
		if (i % 5 == 0)
			weft_sleep(10 * 1000);
		int v = 42;
		/* try_send: only succeeds by handing to the parked receiver
		 * (or into the buffer); then cancel or the receiver's
		 * deadline races it */
		int r = weft_chan_try_send(CX.c, &v);
		if (!use_deadline)
			weft_cancel(t);
		weft_join(t, NULL);
		if (r == 0)
			atomic_fetch_add(&CX.send_ok, 1);
		else if (r != -EAGAIN)
			atomic_fetch_add(&CX.bad, 1);
		int y;
		if (weft_chan_try_recv(CX.c, &y) == 0)
			atomic_fetch_add(&CX.leftover, 1);
		weft_chan_free(CX.c);
	}
	return NULL;
}

static void test_cancel_races_handoff(void **state)
{
	(void)state;
	memset(&CX, 0, sizeof CX);
	cx_rounds = scaled(100000, 1000);
	run(4, cx_main, NULL);
	assert_int_equal(atomic_load(&CX.bad), 0);
	/* every element sent is received or still buffered, never both */
	assert_int_equal(atomic_load(&CX.send_ok),
			 atomic_load(&CX.recv_ok) + atomic_load(&CX.leftover));
	assert_int_equal(atomic_load(&CX.recv_ok) + atomic_load(&CX.recv_fail),
			 cx_rounds);
}

/* ---- deadlines ----------------------------------------------------------- */

static struct {
	int r1, r2, r3, r4, r5, r6, r7;
	uint64_t e1, e2, e3, e4, e5, e6;
	uint64_t cur_inner, cur_outer, cur_after;
	int buffered_after;
} DL;

static void *deadline_main(void *arg)
{
	(void)arg;
	weft_chan *c = weft_chan_new(1, sizeof(int));
	int v = 0;
	weft_deadline d1, d2;

	/* recv on an empty channel: -ETIMEDOUT after ~50 ms */
	uint64_t t0 = weft_now();
	weft_deadline_push(&d1, 50 * MS);
	DL.r1 = weft_chan_recv(c, &v);
	DL.e1 = ms_since(t0);
	weft_deadline_pop(&d1);
	DL.cur_after = weft_deadline_current();

	/* nested, inner earlier: the inner wins; after its pop the outer
	 * still holds */
	t0 = weft_now();
	weft_deadline_push(&d1, 800 * MS);
	DL.cur_outer = weft_deadline_current();
	weft_deadline_push(&d2, 30 * MS);
	DL.cur_inner = weft_deadline_current();
	DL.r2 = weft_chan_recv(c, &v);
	DL.e2 = ms_since(t0);
	weft_deadline_pop(&d2);
	if (weft_deadline_current() != DL.cur_outer)
		DL.cur_outer = 0;
	DL.r3 = weft_chan_recv(c, &v);
	DL.e3 = ms_since(t0);
	weft_deadline_pop(&d1);

	/* nested, inner later: the outer (earlier) still wins */
	t0 = weft_now();
	weft_deadline_push(&d1, 40 * MS);
	weft_deadline_push(&d2, 5 * SEC);
	DL.r4 = weft_chan_recv(c, &v);
	DL.e4 = ms_since(t0);
	weft_deadline_pop(&d2);
	weft_deadline_pop(&d1);

	/* send on a full channel, and select: -ETIMEDOUT, nothing moved */
	CHECK_EQ(weft_chan_try_send(c, &v), 0);
	t0 = weft_now();
	weft_deadline_push(&d1, 30 * MS);
	int w = 9;
	DL.r5 = weft_chan_send(c, &w);
	DL.e5 = ms_since(t0);
	weft_select_case cs[2] = {{c, WEFT_SEND, &w, 1}, {c, WEFT_SEND, &w, 1}};
	DL.r6 = weft_select(cs, 2, 0);
	DL.e6 = ms_since(t0);
	/* an expired deadline: a wait fails at once */
	DL.r7 = weft_sleep(1 * MS);
	weft_deadline_pop(&d1);
	DL.buffered_after = (int)weft_chan_len(c);
	CHECK_EQ(weft_chan_try_recv(c, &w), 0);
	CHECK_EQ(w, 0);
	weft_chan_free(c);
	return NULL;
}

static void test_deadlines(void **state)
{
	(void)state;
	memset(&DL, 0, sizeof DL);
	run(2, deadline_main, NULL);
	assert_int_equal(DL.r1, -ETIMEDOUT);
	assert_true(DL.e1 >= 49 && DL.e1 < 3000);
	assert_true(DL.cur_after == 0);
	assert_int_equal(DL.r2, -ETIMEDOUT);
	assert_true(DL.e2 >= 29 && DL.e2 < 790); /* not the outer's 800 */
	assert_true(DL.cur_inner != 0 && DL.cur_outer != 0 &&
		    DL.cur_inner < DL.cur_outer);
	assert_int_equal(DL.r3, -ETIMEDOUT);
	assert_true(DL.e3 >= 799 && DL.e3 < 4000);
	assert_int_equal(DL.r4, -ETIMEDOUT);
	assert_true(DL.e4 >= 39 && DL.e4 < 3000);
	assert_int_equal(DL.r5, -ETIMEDOUT);
	assert_true(DL.e5 >= 29 && DL.e5 < 3000);
	assert_int_equal(DL.r6, -ETIMEDOUT);
	assert_int_equal(DL.r7, -ETIMEDOUT);
	assert_int_equal(DL.buffered_after, 1);
}

/* ---- bad input ----------------------------------------------------------- */

static void *bad_main(void *arg)
{
	(void)arg;
	weft_chan *c = weft_chan_new(1, sizeof(int));
	int v = 0;
	CHECK_EQ(weft_deadline_push(NULL, 1000), -EINVAL);
	CHECK_EQ(weft_chan_send(NULL, &v), -EINVAL);
	CHECK_EQ(weft_chan_recv(NULL, &v), -EINVAL);
	CHECK_EQ(weft_chan_try_send(NULL, &v), -EINVAL);
	CHECK_EQ(weft_chan_try_recv(NULL, &v), -EINVAL);
	CHECK_EQ(weft_chan_send(c, NULL), -EINVAL);
	CHECK_EQ(weft_chan_recv(c, NULL), -EINVAL);
	CHECK_EQ(weft_chan_try_send(c, NULL), -EINVAL);
	CHECK_EQ(weft_chan_try_recv(c, NULL), -EINVAL);
	CHECK_EQ(weft_chan_len(c), 0);

	weft_select_case cs[65];
	for (int i = 0; i < 65; i++)
		cs[i] = (weft_select_case){c, WEFT_RECV, &v, 1};
	CHECK_EQ(weft_select(cs, 0, 0), -EINVAL);
	CHECK_EQ(weft_select(cs, 0, 1), -EINVAL);
	CHECK_EQ(weft_select(NULL, 1, 0), -EINVAL);
	CHECK_EQ(weft_select(cs, 65, 1), -EINVAL);
	CHECK_EQ(weft_select(cs, 64, 1), -EAGAIN); /* 64 is allowed */
	cs[3].op = 0;
	CHECK_EQ(weft_select(cs, 4, 1), -EINVAL);
	cs[3].op = 3;
	CHECK_EQ(weft_select(cs, 4, 1), -EINVAL);
	cs[3].op = WEFT_SEND;
	cs[3].chan = NULL;
	CHECK_EQ(weft_select(cs, 4, 1), -EINVAL);
	cs[3].chan = c;
	cs[3].elem = NULL;
	CHECK_EQ(weft_select(cs, 4, 0), -EINVAL);
	cs[3].elem = &v;
	/* rejected input moved nothing */
	CHECK_EQ(weft_chan_len(c), 0);
	/* 64 cases, one ready (the send): index 3 */
	CHECK_EQ(weft_select(cs, 64, 0), 3);
	CHECK_EQ(weft_chan_len(c), 1);
	weft_chan_free(c);
	return NULL;
}

static void test_bad_input(void **state)
{
	(void)state;
	assert_null(weft_chan_new(0, 0));
	assert_null(weft_chan_new(4, 0));
	assert_null(weft_chan_new(4, 65537));
	assert_null(weft_chan_new((1u << 24) + 1, 1));
	assert_null(weft_chan_new(SIZE_MAX, 8));
	weft_chan *c = weft_chan_new(0, 65536);
	assert_non_null(c);
	weft_chan_free(c);
	c = weft_chan_new(1u << 24, 1);
	assert_non_null(c);
	weft_chan_free(c);
	/* deadline scopes belong to fibers */
	weft_deadline d;
	assert_int_equal(weft_deadline_push(&d, 1000), -EINVAL);
	assert_int_equal(weft_deadline_current(), 0);
	weft_deadline_pop(&d); /* outside a fiber: nothing */
	/* outside a fiber, on an empty channel: would block -> -EINVAL */
	c = weft_chan_new(0, sizeof(int));
	int v = 0;
	assert_int_equal(weft_chan_recv(c, &v), -EINVAL);
	assert_int_equal(weft_chan_send(c, &v), -EINVAL);
	weft_chan_free(c);
	run(2, bad_main, NULL);
}

/* ---- weft_chan_free with a parked waiter aborts -------------------------- */

static weft_chan *FREED;

static void *fw_waiter(void *arg)
{
	(void)arg;
	int v;
	weft_chan_recv(FREED, &v);
	return NULL;
}

static void *fw_main(void *arg)
{
	(void)arg;
	FREED = weft_chan_new(0, sizeof(int));
	weft_task *t = weft_spawn(fw_waiter, NULL);
	weft_sleep(30 * MS);
	weft_chan_free(FREED); /* aborts */
	weft_join(t, NULL);
	return NULL;
}

/* in the forked child */
static void fw_child(void *arg)
{
	(void)arg;
	weft_config cfg = cfg_workers(2);
	weft_run(&cfg, fw_main, NULL, NULL); /* aborts */
}

static void test_free_with_waiter_aborts(void **state)
{
	(void)state;
	char buf[4096];
	int status = run_in_child(fw_child, NULL, buf, sizeof buf);
	if (!WIFSIGNALED(status) || WTERMSIG(status) != SIGABRT)
		fail_msg("child status %#x, stderr: %s", status, buf);
	assert_non_null(strstr(buf, "weft_chan_free"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_rendezvous),
		cmocka_unit_test(test_buffered_fifo),
		cmocka_unit_test(test_mpmc_cap64),
		cmocka_unit_test(test_mpmc_cap1),
		cmocka_unit_test(test_mpmc_rendezvous),
		cmocka_unit_test(test_close),
		cmocka_unit_test(test_close_races_sends),
		cmocka_unit_test(test_try_ops_threads),
		cmocka_unit_test(test_foreign_completer_at_end),
		cmocka_unit_test(test_select_basic),
		cmocka_unit_test(test_select_fairness),
		cmocka_unit_test(test_select_race),
		cmocka_unit_test(test_cancel_parked),
		cmocka_unit_test(test_cancel_races_handoff),
		cmocka_unit_test(test_deadlines),
		cmocka_unit_test(test_bad_input),
		cmocka_unit_test(test_free_with_waiter_aborts),
	};
	apply_test_filters();
	return cmocka_run_group_tests(tests, NULL, NULL);
}
