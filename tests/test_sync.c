/* Description: mutex, condition variable, semaphore, wait group and event
 * (weft/sync.h).
 *
 * - mutex: 16 fibers on 4 workers increment a plain counter under the lock
 *   (exact count, never two inside); trylock -EBUSY; unlock by a non-owner
 *   -EPERM; a fiber cancelled while waiting gets -ECANCELED and does not
 *   hold the lock (the others finish, the count is exact); a deadline gives
 *   -ETIMEDOUT; no contender starves; a cancelled fiber still takes a
 *   free lock (and a free rwlock for writing), also while others queue;
 * - cond: bounded-buffer producer/consumer with signal and broadcast;
 *   cond_wait returns with the mutex held even when cancelled or timed out;
 * - semaphore: at most K inside; release(n) wakes exactly n; cancellation
 *   racing release never loses or invents a unit;
 * - wait group: wait returns after N done() from fibers on every worker
 *   and from a plain thread; a negative counter is refused;
 * - event: set releases every waiter; later waits return at once;
 * - lifetime: a waiter that frees the wait group / event / semaphore / cond
 *   as soon as its wait returned (checked in a forked child, where ASan or
 *   TSan report a use after free, and plain builds see the freed block
 *   written or crash). They failed while signal.c and mutex.c woke
 *   waiters under the object's lock and touched it again afterwards (the
 *   next claim, the unlock): "the last touch", design.md;
 * - no memory for a deadline's timer: the waits return -ENOMEM, nothing
 *   taken (an interposed realloc fails).
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

#include <limits.h>

static void spin_ns(uint64_t ns)
{
	uint64_t t0 = weft_now();
	while (weft_now() - t0 < ns)
		;
}

/* ---- mutex: stress ------------------------------------------------------- */

#define MX_FIBERS 16
static weft_mutex MX = WEFT_MUTEX_INIT;
static long mx_counter; /* deliberately plain: the mutex protects it */
static atomic_int mx_inside, mx_overlap;
static size_t mx_per;

static void mx_critical(size_t i)
{
	if (atomic_fetch_add(&mx_inside, 1) != 0)
		atomic_fetch_add(&mx_overlap, 1);
	long c = mx_counter;
	if (i % 64 == 0)
		weft_yield(); /* hold it across a switch */
	if (i % 501 == 0)
		weft_sleep(5 * US);
	mx_counter = c + 1;
	atomic_fetch_sub(&mx_inside, 1);
}

static void *mx_worker(void *arg)
{
	size_t k = (size_t)(uintptr_t)arg;
	for (size_t i = 0; i < mx_per; i++) {
		if (k % 4 == 3) {
			int r;
			while ((r = weft_mutex_trylock(&MX)) == -EBUSY)
				weft_yield();
			CHECK_EQ(r, 0);
		} else {
			CHECK_EQ(weft_mutex_lock(&MX), 0);
		}
		mx_critical(i);
		CHECK_EQ(weft_mutex_unlock(&MX), 0);
	}
	return NULL;
}

static void *mx_main(void *arg)
{
	(void)arg;
	weft_task *t[MX_FIBERS];
	for (size_t k = 0; k < MX_FIBERS; k++)
		t[k] = weft_spawn(mx_worker, (void *)(uintptr_t)k);
	CHECK_EQ(weft_gather(t, MX_FIBERS, NULL), 0);
	return NULL;
}

static void test_mutex_stress(void **state)
{
	(void)state;
	mx_per = scaled(100000, 4000) / MX_FIBERS;
	mx_counter = 0;
	atomic_store(&mx_overlap, 0);
	run(4, mx_main, NULL);
	assert_int_equal(atomic_load(&mx_overlap), 0);
	assert_int_equal(mx_counter, (long)(mx_per * MX_FIBERS));
}

/* ---- mutex: trylock, owner checks, bad input ----------------------------- */

static weft_mutex MT;
static weft_event mt_release;
static atomic_int mt_locked;
static int mt_thread_unlock, mt_thread_trylock, mt_thread_lock;

static void *mt_holder(void *arg)
{
	(void)arg;
	CHECK_EQ(weft_mutex_lock(&MT), 0);
	atomic_store(&mt_locked, 1);
	CHECK_EQ(weft_event_wait(&mt_release), 0);
	CHECK_EQ(weft_mutex_unlock(&MT), 0);
	CHECK_EQ(weft_mutex_unlock(&MT), -EPERM); /* not held any more */
	return NULL;
}

static void *mt_thread(void *arg)
{
	(void)arg;
	mt_thread_unlock = weft_mutex_unlock(&MT);
	mt_thread_trylock = weft_mutex_trylock(&MT);
	mt_thread_lock = weft_mutex_lock(&MT);
	return NULL;
}

static void *mt_main(void *arg)
{
	(void)arg;
	weft_mutex_init(&MT);
	weft_event_init(&mt_release);
	CHECK_EQ(weft_mutex_unlock(&MT), -EPERM); /* not locked at all */
	weft_task *h = weft_spawn(mt_holder, NULL);
	await_at_least(&mt_locked, 1);
	CHECK_EQ(weft_mutex_trylock(&MT), -EBUSY);
	CHECK_EQ(weft_mutex_unlock(&MT), -EPERM);
	pthread_t th;
	CHECK_EQ(pthread_create(&th, NULL, mt_thread, NULL), 0);
	pthread_join(th, NULL);
	/* a short lock attempt under a deadline fails with -ETIMEDOUT */
	weft_deadline d;
	weft_deadline_push(&d, 10 * MS);
	CHECK_EQ(weft_mutex_lock(&MT), -ETIMEDOUT);
	weft_deadline_pop(&d);
	weft_event_set(&mt_release);
	CHECK_EQ(weft_join(h, NULL), 0);
	/* free again: ours */
	CHECK_EQ(weft_mutex_trylock(&MT), 0);
	CHECK_EQ(weft_mutex_trylock(&MT), -EBUSY); /* not recursive */
	CHECK_EQ(weft_mutex_unlock(&MT), 0);
	CHECK_EQ(weft_mutex_lock(&MT), 0);
	CHECK_EQ(weft_mutex_unlock(&MT), 0);
	CHECK_EQ(weft_mutex_lock(NULL), -EINVAL);
	CHECK_EQ(weft_mutex_trylock(NULL), -EINVAL);
	CHECK_EQ(weft_mutex_unlock(NULL), -EINVAL);
	return NULL;
}

static void test_mutex_trylock_owner(void **state)
{
	(void)state;
	atomic_store(&mt_locked, 0);
	run(4, mt_main, NULL);
	assert_int_equal(mt_thread_unlock, -EPERM);
	assert_int_equal(mt_thread_trylock, -EBUSY);
	assert_int_equal(mt_thread_lock, -EINVAL); /* not a fiber */
	/* outside any runtime */
	weft_mutex m = WEFT_MUTEX_INIT;
	assert_int_equal(weft_mutex_lock(&m), -EINVAL);
	weft_mutex_init(NULL);
}

/* ---- mutex: cancelled and timed-out waiters ------------------------------ */

#define MC_WAITERS 6
static weft_mutex MC;
static long mc_counter;
static atomic_int mc_arrived;
static int mc_res[MC_WAITERS], mc_unlock_res[MC_WAITERS];

static void *mc_holder(void *arg)
{
	(void)arg;
	CHECK_EQ(weft_mutex_lock(&MC), 0);
	atomic_fetch_add(&mc_arrived, 1);
	weft_sleep(60 * MS);
	mc_counter++;
	CHECK_EQ(weft_mutex_unlock(&MC), 0);
	return NULL;
}

static void *mc_waiter(void *arg)
{
	size_t k = (size_t)(uintptr_t)arg;
	atomic_fetch_add(&mc_arrived, 1);
	int r = weft_mutex_lock(&MC);
	mc_res[k] = r;
	if (r == 0) {
		mc_counter++;
		mc_unlock_res[k] = weft_mutex_unlock(&MC);
	} else {
		/* not held: unlocking must be refused */
		mc_unlock_res[k] = weft_mutex_unlock(&MC);
	}
	return NULL;
}

static void *mc_main(void *arg)
{
	(void)arg;
	weft_mutex_init(&MC);
	mc_counter = 0;
	atomic_store(&mc_arrived, 0);
	weft_task *h = weft_spawn(mc_holder, NULL);
	await_at_least(&mc_arrived, 1);
	weft_task *w[MC_WAITERS];
	for (size_t k = 0; k < MC_WAITERS; k++)
		w[k] = weft_spawn(mc_waiter, (void *)(uintptr_t)k);
	await_at_least(&mc_arrived, 1 + MC_WAITERS);
	weft_sleep(15 * MS); /* all parked behind the holder */
	CHECK_EQ(weft_cancel(w[1]), 0);
	CHECK_EQ(weft_cancel(w[4]), 0);
	CHECK_EQ(weft_join(h, NULL), 0);
	for (size_t k = 0; k < MC_WAITERS; k++)
		weft_join(w[k], NULL);
	/* the lock is free and usable */
	CHECK_EQ(weft_mutex_trylock(&MC), 0);
	CHECK_EQ(weft_mutex_unlock(&MC), 0);
	return NULL;
}

/* A cancelled fiber takes a free lock (sync.md: a call that does not have
 * to wait succeeds even in a cancelled fiber). Free with waiters queued:
 * on one worker, an unlock with two fibers queued wakes the first to
 * compete and leaves WAITERS set. weft_mutex_lock refused that to a
 * cancelled fiber (-ECANCELED), though an expired deadline took it; and
 * weft_rwlock_wrlock, whose writers queue on an inner mutex, inherited it. */
static int cf_mutex, cf_rw;
static unsigned cf_state;
static weft_mutex cf_m;
static weft_rwlock cf_l;
static weft_task *cf_self;

static void *cf_waiter(void *arg)
{
	if (arg) {
		if (weft_rwlock_wrlock(&cf_l) == 0)
			weft_rwlock_unlock(&cf_l);
	} else if (weft_mutex_lock(&cf_m) == 0) {
		weft_mutex_unlock(&cf_m);
	}
	return NULL;
}

static void *cf_holder(void *arg)
{
	(void)arg;
	CHECK_EQ(weft_mutex_lock(&cf_m), 0);
	CHECK_EQ(weft_rwlock_wrlock(&cf_l), 0);
	weft_task *t[4];
	for (int i = 0; i < 4; i++) /* two each: the second keeps WAITERS */
		t[i] = weft_spawn(cf_waiter, i < 2 ? NULL : (void *)1);
	for (int i = 0; i < 8; i++)
		weft_yield(); /* all four park */
	CHECK_EQ(weft_cancel(cf_self), 0);
	weft_mutex_unlock(&cf_m);
	cf_state = __atomic_load_n(&cf_m._state, __ATOMIC_RELAXED);
	cf_mutex = weft_mutex_lock(&cf_m);
	if (cf_mutex == 0)
		weft_mutex_unlock(&cf_m);
	weft_rwlock_unlock(&cf_l);
	cf_rw = weft_rwlock_wrlock(&cf_l);
	if (cf_rw == 0)
		weft_rwlock_unlock(&cf_l);
	weft_shield sh; /* cancelled: join the waiters in a shield */
	CHECK_EQ(weft_shield_push(&sh), 0);
	for (int i = 0; i < 4; i++)
		CHECK_EQ(weft_join(t[i], NULL), 0);
	CHECK_EQ(weft_shield_pop(&sh), -ECANCELED);
	return NULL;
}

static void *cf_main(void *arg)
{
	(void)arg;
	cf_self = weft_spawn(cf_holder, NULL);
	CHECK_EQ(weft_join(cf_self, NULL), -ECANCELED);
	return NULL;
}

static void test_mutex_cancelled_takes_free(void **state)
{
	(void)state;
	weft_mutex_init(&cf_m);
	weft_rwlock_init(&cf_l);
	cf_mutex = cf_rw = 1;
	run(1, cf_main, NULL);
	assert_int_equal(cf_state, 2); /* WAITERS, not LOCKED: free */
	assert_int_equal(cf_mutex, 0);
	assert_int_equal(cf_rw, 0);
}

static void test_mutex_cancel_waiter(void **state)
{
	(void)state;
	run(4, mc_main, NULL);
	for (int k = 0; k < MC_WAITERS; k++) {
		if (k == 1 || k == 4) {
			assert_int_equal(mc_res[k], -ECANCELED);
			assert_int_equal(mc_unlock_res[k], -EPERM);
		} else {
			assert_int_equal(mc_res[k], 0);
			assert_int_equal(mc_unlock_res[k], 0);
		}
	}
	assert_int_equal(mc_counter, 1 + MC_WAITERS - 2);
}

/* stress: fibers looping on the lock while some are cancelled at random;
 * every successful lock is counted, a failed one holds nothing */
#define MS_FIBERS 12
static weft_mutex MSX;
static long msx_counter;
static atomic_long msx_success;
static atomic_int msx_bad, msx_cancelled_ret;
static size_t msx_iters;

static void *msx_worker(void *arg)
{
	(void)arg;
	for (size_t i = 0; i < msx_iters; i++) {
		int r = weft_mutex_lock(&MSX);
		if (r == -ECANCELED) {
			atomic_fetch_add(&msx_cancelled_ret, 1);
			if (weft_mutex_unlock(&MSX) != -EPERM)
				atomic_fetch_add(&msx_bad, 1);
			return NULL;
		}
		if (r) {
			atomic_fetch_add(&msx_bad, 1);
			return NULL;
		}
		msx_counter++;
		atomic_fetch_add(&msx_success, 1);
		if (i % 8 == 0)
			weft_yield();
		if (i % 4999 == 17)
			weft_sleep(1200 * US); /* waiters pass 1 ms: hand-off */
		if (weft_mutex_unlock(&MSX))
			atomic_fetch_add(&msx_bad, 1);
	}
	return NULL;
}

static void *msx_main(void *arg)
{
	(void)arg;
	weft_mutex_init(&MSX);
	weft_task *t[MS_FIBERS];
	for (size_t k = 0; k < MS_FIBERS; k++)
		t[k] = weft_spawn(msx_worker, NULL);
	for (size_t k = 0; k < MS_FIBERS; k += 2) {
		weft_sleep(((k * 7) % 5) * 1 * MS);
		weft_cancel(t[k]);
	}
	for (size_t k = 0; k < MS_FIBERS; k++)
		weft_join(t[k], NULL);
	CHECK_EQ(weft_mutex_trylock(&MSX), 0);
	CHECK_EQ(weft_mutex_unlock(&MSX), 0);
	return NULL;
}

static void test_mutex_cancel_stress(void **state)
{
	(void)state;
	msx_iters = scaled(20000, 1000);
	size_t rounds = scaled(20, 2);
	for (size_t r = 0; r < rounds; r++) {
		msx_counter = 0;
		atomic_store(&msx_success, 0);
		atomic_store(&msx_bad, 0);
		run(4, msx_main, NULL);
		assert_int_equal(atomic_load(&msx_bad), 0);
		assert_int_equal(msx_counter, atomic_load(&msx_success));
		/* the uncancelled half ran to completion */
		assert_true(atomic_load(&msx_success) >=
			    (long)(msx_iters * MS_FIBERS / 2));
	}
}

/* ---- mutex: deadline while waiting --------------------------------------- */

static weft_mutex MD;
static atomic_int md_locked;
static int md_res, md_unlock_res, md_relock;
static uint64_t md_elapsed;

static void *md_holder(void *arg)
{
	(void)arg;
	CHECK_EQ(weft_mutex_lock(&MD), 0);
	atomic_store(&md_locked, 1);
	weft_sleep(300 * MS);
	CHECK_EQ(weft_mutex_unlock(&MD), 0);
	return NULL;
}

static void *md_main(void *arg)
{
	(void)arg;
	weft_mutex_init(&MD);
	weft_task *h = weft_spawn(md_holder, NULL);
	await_at_least(&md_locked, 1);
	weft_deadline d;
	uint64_t t0 = weft_now();
	weft_deadline_push(&d, 50 * MS);
	md_res = weft_mutex_lock(&MD);
	md_elapsed = ms_since(t0);
	weft_deadline_pop(&d);
	md_unlock_res = weft_mutex_unlock(&MD);
	md_relock = weft_mutex_lock(&MD); /* waits for the holder */
	weft_mutex_unlock(&MD);
	CHECK_EQ(weft_join(h, NULL), 0);
	return NULL;
}

static void test_mutex_deadline(void **state)
{
	(void)state;
	atomic_store(&md_locked, 0);
	run(4, md_main, NULL);
	assert_int_equal(md_res, -ETIMEDOUT);
	assert_true(md_elapsed >= 49 && md_elapsed < 3000);
	assert_int_equal(md_unlock_res, -EPERM);
	assert_int_equal(md_relock, 0);
}

/* ---- mutex: no starvation ------------------------------------------------ */

#define SV_FIBERS 8
static weft_mutex SVM;
static struct {
	uint64_t count;
	uint64_t max_wait_ns;
	uint64_t first_ns; /* from its start to its first acquisition */
} sv[SV_FIBERS + 1];
static uint64_t sv_end;

static void *sv_worker(void *arg)
{
	size_t k = (size_t)(uintptr_t)arg;
	uint64_t start = weft_now();
	while (weft_now() < sv_end) {
		uint64_t t0 = weft_now();
		if (weft_mutex_lock(&SVM))
			break;
		uint64_t t1 = weft_now();
		if (sv[k].count == 0)
			sv[k].first_ns = t1 - start;
		sv[k].count++;
		if (t1 - t0 > sv[k].max_wait_ns)
			sv[k].max_wait_ns = t1 - t0;
		spin_ns(20 * US); /* hold it a while, without yielding */
		weft_mutex_unlock(&SVM);
	}
	return NULL;
}

static void *sv_main(void *arg)
{
	(void)arg;
	weft_mutex_init(&SVM);
	sv_end = weft_now() + 400 * MS;
	weft_task *t[SV_FIBERS + 1];
	for (size_t k = 0; k < SV_FIBERS; k++)
		t[k] = weft_spawn(sv_worker, (void *)(uintptr_t)k);
	weft_sleep(100 * MS); /* a latecomer against a busy lock */
	t[SV_FIBERS] = weft_spawn(sv_worker, (void *)(uintptr_t)SV_FIBERS);
	CHECK_EQ(weft_gather(t, SV_FIBERS + 1, NULL), 0);
	return NULL;
}

static void test_mutex_no_starvation(void **state)
{
	(void)state;
	memset(sv, 0, sizeof sv);
	run(4, sv_main, NULL);
	for (int k = 0; k <= SV_FIBERS; k++) {
		if (sv[k].count == 0 || sv[k].max_wait_ns > 2 * SEC ||
		    sv[k].first_ns > 2 * SEC)
			fail_msg("fiber %d: %llu acquisitions, max wait %llu "
				 "us, first after %llu us",
				 k, (unsigned long long)sv[k].count,
				 (unsigned long long)sv[k].max_wait_ns / 1000,
				 (unsigned long long)sv[k].first_ns / 1000);
	}
}

/* ---- cond: producer / consumer ------------------------------------------- */

#define PC_CAP 8
#define PC_PROD 4
#define PC_CONS 4
static struct {
	weft_mutex m;
	weft_cond not_full, not_empty;
	uint64_t buf[PC_CAP];
	size_t head, count; /* under m */
	int done;           /* under m */
	size_t n;
	_Atomic unsigned char *seen;
	atomic_size_t got, dup;
	atomic_ullong sum;
} PC;

static void *pc_producer(void *arg)
{
	size_t p = (size_t)(uintptr_t)arg;
	for (size_t i = p; i < PC.n; i += PC_PROD) {
		CHECK_EQ(weft_mutex_lock(&PC.m), 0);
		while (PC.count == PC_CAP)
			CHECK_EQ(weft_cond_wait(&PC.not_full, &PC.m), 0);
		PC.buf[(PC.head + PC.count) % PC_CAP] = i;
		PC.count++;
		weft_cond_signal(&PC.not_empty);
		CHECK_EQ(weft_mutex_unlock(&PC.m), 0);
	}
	return NULL;
}

/* arg 1: a consumer that main cancels half-way; it leaves on the first
 * failed wait (cond_wait re-locked the mutex: it unlocks) */
static atomic_int pc_cancel_exits;

static void *pc_consumer(void *arg)
{
	bool cancellable = arg != NULL;
	for (size_t k = 0;; k++) {
		int r = weft_mutex_lock(&PC.m);
		if (r) {
			CHECK(cancellable && r == -ECANCELED);
			atomic_fetch_add(&pc_cancel_exits, 1);
			return NULL;
		}
		while (PC.count == 0 && !PC.done) {
			r = weft_cond_wait(&PC.not_empty, &PC.m);
			if (r) {
				CHECK(cancellable && r == -ECANCELED);
				CHECK_EQ(weft_mutex_unlock(&PC.m), 0);
				atomic_fetch_add(&pc_cancel_exits, 1);
				return NULL;
			}
		}
		if (PC.count == 0) {
			weft_mutex_unlock(&PC.m);
			break;
		}
		uint64_t v = PC.buf[PC.head];
		PC.head = (PC.head + 1) % PC_CAP;
		PC.count--;
		if (k % 16 == 0)
			weft_cond_broadcast(&PC.not_full);
		else
			weft_cond_signal(&PC.not_full);
		CHECK_EQ(weft_mutex_unlock(&PC.m), 0);
		if (v < PC.n && atomic_fetch_add(&PC.seen[v], 1))
			atomic_fetch_add(&PC.dup, 1);
		atomic_fetch_add(&PC.got, 1);
		atomic_fetch_add(&PC.sum, v);
		if (cancellable && k % 4 == 0)
			weft_yield();
	}
	return NULL;
}

static void *pc_main(void *arg)
{
	(void)arg;
	weft_task *c[PC_CONS], *p[PC_PROD], *x[2];
	for (size_t k = 0; k < PC_CONS; k++)
		c[k] = weft_spawn(pc_consumer, NULL);
	for (size_t k = 0; k < 2; k++)
		x[k] = weft_spawn(pc_consumer, (void *)1);
	for (size_t k = 0; k < PC_PROD; k++)
		p[k] = weft_spawn(pc_producer, (void *)(uintptr_t)k);
	/* cancel the two extra consumers while items flow */
	while (atomic_load(&PC.got) < PC.n / 3)
		weft_sleep(50 * US);
	weft_cancel(x[0]);
	weft_cancel(x[1]);
	CHECK_EQ(weft_gather(p, PC_PROD, NULL), 0);
	weft_mutex_lock(&PC.m);
	PC.done = 1;
	weft_cond_broadcast(&PC.not_empty);
	weft_mutex_unlock(&PC.m);
	CHECK_EQ(weft_gather(c, PC_CONS, NULL), 0);
	weft_join(x[0], NULL);
	weft_join(x[1], NULL);
	return NULL;
}

static void test_cond_producer_consumer(void **state)
{
	(void)state;
	memset(&PC, 0, sizeof PC);
	weft_mutex_init(&PC.m);
	weft_cond_init(&PC.not_full);
	weft_cond_init(&PC.not_empty);
	PC.n = scaled(200000, 3000);
	PC.seen = calloc(PC.n, 1);
	atomic_store(&pc_cancel_exits, 0);
	run(4, pc_main, NULL);
	assert_int_equal(atomic_load(&PC.dup), 0);
	assert_int_equal(atomic_load(&PC.got), PC.n);
	size_t missing = 0;
	for (size_t i = 0; i < PC.n; i++)
		missing += atomic_load(&PC.seen[i]) != 1;
	assert_int_equal(missing, 0);
	assert_true(atomic_load(&PC.sum) ==
		    (unsigned long long)PC.n * (PC.n - 1) / 2);
	/* the cancelled consumers left early (or finished with the rest) */
	assert_true(atomic_load(&pc_cancel_exits) <= 2);
	free((void *)PC.seen);
}

/* ---- cond: returns with the mutex held, even when cancelled -------------- */

static weft_mutex CM;
static weft_cond CV;
static atomic_int cw_arrived, cw_main_unlocked, cw_woken;
static int cw_res, cw_saw_unlocked, cw_unlock_res;
static int cw_to_res, cw_to_unlock;
static int cw_gen; /* under CM */

static void *cw_cancelled(void *arg)
{
	(void)arg;
	CHECK_EQ(weft_mutex_lock(&CM), 0);
	atomic_fetch_add(&cw_arrived, 1);
	cw_res = weft_cond_wait(&CV, &CM);
	/* main held CM when it cancelled us: we return only after it let go */
	cw_saw_unlocked = atomic_load(&cw_main_unlocked);
	cw_unlock_res = weft_mutex_unlock(&CM);
	return NULL;
}

static void *cw_broadcast_waiter(void *arg)
{
	(void)arg;
	CHECK_EQ(weft_mutex_lock(&CM), 0);
	atomic_fetch_add(&cw_arrived, 1);
	while (cw_gen == 0)
		CHECK_EQ(weft_cond_wait(&CV, &CM), 0);
	CHECK_EQ(weft_mutex_unlock(&CM), 0);
	atomic_fetch_add(&cw_woken, 1);
	return NULL;
}

static int cw_tokens; /* under CM */

static void *cw_signal_waiter(void *arg)
{
	(void)arg;
	CHECK_EQ(weft_mutex_lock(&CM), 0);
	atomic_fetch_add(&cw_arrived, 1);
	while (cw_tokens == 0)
		CHECK_EQ(weft_cond_wait(&CV, &CM), 0);
	cw_tokens--;
	CHECK_EQ(weft_mutex_unlock(&CM), 0);
	atomic_fetch_add(&cw_woken, 1);
	return NULL;
}

static void *cw_main(void *arg)
{
	(void)arg;
	weft_mutex_init(&CM);
	weft_cond_init(&CV);

	/* cancelled while waiting, with the mutex held by someone else */
	weft_task *t = weft_spawn(cw_cancelled, NULL);
	await_at_least(&cw_arrived, 1);
	CHECK_EQ(weft_mutex_lock(&CM), 0); /* t is in cond_wait now */
	CHECK_EQ(weft_cancel(t), 0);
	weft_sleep(30 * MS);
	atomic_store(&cw_main_unlocked, 1);
	CHECK_EQ(weft_mutex_unlock(&CM), 0);
	CHECK_EQ(weft_join(t, NULL), -ECANCELED);

	/* timed out: still returns holding the mutex */
	CHECK_EQ(weft_mutex_lock(&CM), 0);
	weft_deadline d;
	weft_deadline_push(&d, 20 * MS);
	cw_to_res = weft_cond_wait(&CV, &CM);
	weft_deadline_pop(&d);
	cw_to_unlock = weft_mutex_unlock(&CM);

	/* misuse */
	CHECK_EQ(weft_cond_wait(&CV, &CM), -EPERM); /* CM not held */
	CHECK_EQ(weft_cond_wait(NULL, &CM), -EINVAL);
	CHECK_EQ(weft_cond_wait(&CV, NULL), -EINVAL);
	weft_cond_signal(NULL);
	weft_cond_broadcast(NULL);
	weft_cond_signal(&CV); /* nobody waits: nothing */

	/* broadcast releases every waiter */
	atomic_store(&cw_arrived, 0);
	atomic_store(&cw_woken, 0);
	weft_task *b[10];
	for (int i = 0; i < 10; i++)
		b[i] = weft_spawn(cw_broadcast_waiter, NULL);
	await_at_least(&cw_arrived, 10);
	weft_sleep(10 * MS);
	CHECK_EQ(atomic_load(&cw_woken), 0);
	weft_mutex_lock(&CM);
	cw_gen = 1;
	weft_cond_broadcast(&CV);
	weft_mutex_unlock(&CM);
	CHECK_EQ(weft_gather(b, 10, NULL), 0);
	CHECK_EQ(atomic_load(&cw_woken), 10);

	/* signal releases one at a time */
	atomic_store(&cw_arrived, 0);
	atomic_store(&cw_woken, 0);
	weft_task *s[5];
	for (int i = 0; i < 5; i++)
		s[i] = weft_spawn(cw_signal_waiter, NULL);
	await_at_least(&cw_arrived, 5);
	weft_sleep(10 * MS);
	for (int i = 0; i < 5; i++) {
		weft_mutex_lock(&CM);
		cw_tokens++;
		weft_cond_signal(&CV);
		weft_mutex_unlock(&CM);
		await_at_least(&cw_woken, i + 1);
		weft_sleep(5 * MS);
		CHECK_EQ(atomic_load(&cw_woken), i + 1);
	}
	CHECK_EQ(weft_gather(s, 5, NULL), 0);
	return NULL;
}

static void *cw_thread(void *arg)
{
	(void)arg;
	weft_mutex m = WEFT_MUTEX_INIT;
	weft_cond c;
	weft_cond_init(&c);
	return (void *)(intptr_t)weft_cond_wait(&c, &m);
}

static void test_cond_cancel_holds_mutex(void **state)
{
	(void)state;
	run(4, cw_main, NULL);
	assert_int_equal(cw_res, -ECANCELED);
	assert_int_equal(cw_saw_unlocked, 1);
	assert_int_equal(cw_unlock_res, 0);
	assert_int_equal(cw_to_res, -ETIMEDOUT);
	assert_int_equal(cw_to_unlock, 0);
	pthread_t th;
	void *r;
	assert_int_equal(pthread_create(&th, NULL, cw_thread, NULL), 0);
	pthread_join(th, &r);
	assert_int_equal((intptr_t)r, -EINVAL);
}

/* ---- semaphore ----------------------------------------------------------- */

#define SB_K 3
#define SB_FIBERS 24
static weft_sem SEM;
static atomic_int sb_inside, sb_max, sb_over;
static size_t sb_iters;

static void *sb_worker(void *arg)
{
	size_t k = (size_t)(uintptr_t)arg;
	for (size_t i = 0; i < sb_iters; i++) {
		CHECK_EQ(weft_sem_acquire(&SEM), 0);
		int in = atomic_fetch_add(&sb_inside, 1) + 1;
		if (in > SB_K)
			atomic_fetch_add(&sb_over, 1);
		int m = atomic_load(&sb_max);
		while (in > m && !atomic_compare_exchange_weak(&sb_max, &m, in))
			;
		if ((i + k) % 3 == 0)
			weft_sleep(50 * US);
		else
			weft_yield();
		atomic_fetch_sub(&sb_inside, 1);
		CHECK_EQ(weft_sem_release(&SEM, 1), 0);
	}
	return NULL;
}

static void *sb_main(void *arg)
{
	(void)arg;
	weft_sem_init(&SEM, SB_K);
	weft_task *t[SB_FIBERS];
	for (size_t k = 0; k < SB_FIBERS; k++)
		t[k] = weft_spawn(sb_worker, (void *)(uintptr_t)k);
	CHECK_EQ(weft_gather(t, SB_FIBERS, NULL), 0);
	/* every unit is back */
	for (int i = 0; i < SB_K; i++)
		CHECK_EQ(weft_sem_try_acquire(&SEM), 0);
	CHECK_EQ(weft_sem_try_acquire(&SEM), -EAGAIN);
	return NULL;
}

static void test_sem_bound(void **state)
{
	(void)state;
	sb_iters = scaled(400, 40);
	atomic_store(&sb_max, 0);
	atomic_store(&sb_over, 0);
	run(4, sb_main, NULL);
	assert_int_equal(atomic_load(&sb_over), 0);
	assert_true(atomic_load(&sb_max) >= 1 && atomic_load(&sb_max) <= SB_K);
}

/* release(n) wakes exactly n */
static weft_sem SR;
static atomic_int sr_arrived, sr_passed;

static void *sr_waiter(void *arg)
{
	(void)arg;
	atomic_fetch_add(&sr_arrived, 1);
	CHECK_EQ(weft_sem_acquire(&SR), 0);
	atomic_fetch_add(&sr_passed, 1);
	return NULL;
}

static int sr_thread_res;

static void *sr_thread(void *arg)
{
	(void)arg;
	sr_thread_res = weft_sem_acquire(&SR); /* not a fiber */
	return NULL;
}

static void *sr_main(void *arg)
{
	(void)arg;
	weft_sem_init(&SR, 0);
	atomic_store(&sr_arrived, 0);
	atomic_store(&sr_passed, 0);
	weft_task *t[10];
	for (int i = 0; i < 10; i++)
		t[i] = weft_spawn(sr_waiter, NULL);
	await_at_least(&sr_arrived, 10);
	weft_sleep(20 * MS);
	CHECK_EQ(atomic_load(&sr_passed), 0);
	CHECK_EQ(weft_sem_release(&SR, 4), 0);
	await_at_least(&sr_passed, 4);
	weft_sleep(30 * MS);
	CHECK_EQ(atomic_load(&sr_passed), 4);
	CHECK_EQ(weft_sem_try_acquire(&SR), -EAGAIN); /* all went to waiters */
	CHECK_EQ(weft_sem_release(&SR, 6), 0);
	CHECK_EQ(weft_gather(t, 10, NULL), 0);
	CHECK_EQ(atomic_load(&sr_passed), 10);
	CHECK_EQ(weft_sem_try_acquire(&SR), -EAGAIN);
	/* more than the waiters: the rest is counted */
	CHECK_EQ(weft_sem_release(&SR, 3), 0);
	for (int i = 0; i < 3; i++)
		CHECK_EQ(weft_sem_acquire(&SR), 0);
	CHECK_EQ(weft_sem_try_acquire(&SR), -EAGAIN);
	/* deadline */
	weft_deadline d;
	uint64_t t0 = weft_now();
	weft_deadline_push(&d, 20 * MS);
	CHECK_EQ(weft_sem_acquire(&SR), -ETIMEDOUT);
	weft_deadline_pop(&d);
	CHECK(ms_since(t0) >= 19);
	/* bad input */
	CHECK_EQ(weft_sem_release(&SR, 0), -EINVAL);
	CHECK_EQ(weft_sem_release(&SR, -2), -EINVAL);
	CHECK_EQ(weft_sem_release(NULL, 1), -EINVAL);
	CHECK_EQ(weft_sem_acquire(NULL), -EINVAL);
	CHECK_EQ(weft_sem_try_acquire(NULL), -EINVAL);
	CHECK_EQ(weft_sem_try_acquire(&SR), -EAGAIN);
	pthread_t th;
	CHECK_EQ(pthread_create(&th, NULL, sr_thread, NULL), 0);
	pthread_join(th, NULL);
	CHECK_EQ(sr_thread_res, -EINVAL);
	weft_sem neg;
	weft_sem_init(&neg, -5); /* clamped to 0 */
	CHECK_EQ(weft_sem_try_acquire(&neg), -EAGAIN);
	/* past LONG_MAX: refused, the count unchanged (was signed overflow) */
	weft_sem big;
	weft_sem_init(&big, LONG_MAX - 1);
	CHECK_EQ(weft_sem_release(&big, 2), -EOVERFLOW);
	CHECK_EQ(weft_sem_release(&big, LONG_MAX), -EOVERFLOW);
	CHECK_EQ(weft_sem_release(&big, 1), 0);
	CHECK_EQ(weft_sem_release(&big, 1), -EOVERFLOW);
	CHECK_EQ(weft_sem_try_acquire(&big), 0);
	CHECK_EQ(weft_sem_release(&big, 1), 0);
	weft_sem_init(NULL, 1);
	return NULL;
}

static void test_sem_release_n(void **state)
{
	(void)state;
	run(4, sr_main, NULL);
}

/* cancellation racing release: a unit is never lost or invented */
static weft_sem SC;
static atomic_int sc_got, sc_cancelled, sc_bad;
static size_t sc_rounds;

static void *sc_waiter(void *arg)
{
	(void)arg;
	int r = weft_sem_acquire(&SC);
	if (r == 0)
		atomic_fetch_add(&sc_got, 1);
	else if (r == -ECANCELED)
		atomic_fetch_add(&sc_cancelled, 1);
	else
		atomic_fetch_add(&sc_bad, 1);
	return NULL;
}

static void *sc_main(void *arg)
{
	(void)arg;
	long leftover = 0;
	for (size_t i = 0; i < sc_rounds; i++) {
		weft_sem_init(&SC, 0);
		int before = atomic_load(&sc_got);
		weft_task *t = weft_spawn(sc_waiter, NULL);
		if (i % 3)
			weft_yield();
		if (i % 7 == 0)
			weft_sleep(5 * US);
		if (i % 2) {
			weft_sem_release(&SC, 1);
			weft_cancel(t);
		} else {
			weft_cancel(t);
			weft_sem_release(&SC, 1);
		}
		weft_join(t, NULL);
		int got = atomic_load(&sc_got) - before;
		int left = 0;
		while (weft_sem_try_acquire(&SC) == 0)
			left++;
		leftover += left;
		CHECK_EQ(got + left, 1);
	}
	(void)leftover;
	return NULL;
}

/* and in bulk: fibers looping acquire/release, half of them cancelled */
#define SX_K 4
#define SX_FIBERS 16
static weft_sem SX;
static size_t sx_iters;

static void *sx_worker(void *arg)
{
	(void)arg;
	for (size_t i = 0; i < sx_iters; i++) {
		int r = weft_sem_acquire(&SX);
		if (r == -ECANCELED)
			return NULL;
		if (r) {
			atomic_fetch_add(&sc_bad, 1);
			return NULL;
		}
		if (i % 4 == 0)
			weft_yield();
		weft_sem_release(&SX, 1);
	}
	return NULL;
}

static void *sx_main(void *arg)
{
	(void)arg;
	weft_sem_init(&SX, SX_K);
	weft_task *t[SX_FIBERS];
	for (size_t k = 0; k < SX_FIBERS; k++)
		t[k] = weft_spawn(sx_worker, NULL);
	for (size_t k = 0; k < SX_FIBERS; k += 2) {
		weft_sleep((k % 3) * 200 * US);
		weft_cancel(t[k]);
	}
	for (size_t k = 0; k < SX_FIBERS; k++)
		weft_join(t[k], NULL);
	int n = 0;
	while (weft_sem_try_acquire(&SX) == 0)
		n++;
	CHECK_EQ(n, SX_K);
	return NULL;
}

static void test_sem_cancel_conserves(void **state)
{
	(void)state;
	atomic_store(&sc_got, 0);
	atomic_store(&sc_cancelled, 0);
	atomic_store(&sc_bad, 0);
	sc_rounds = scaled(20000, 300);
	run(4, sc_main, NULL);
	assert_int_equal(atomic_load(&sc_bad), 0);
	assert_int_equal(atomic_load(&sc_got) + atomic_load(&sc_cancelled),
			 sc_rounds);
	sx_iters = scaled(5000, 300);
	for (size_t r = 0; r < scaled(10, 2); r++)
		run(4, sx_main, NULL);
	assert_int_equal(atomic_load(&sc_bad), 0);
}

/* ---- wait group ---------------------------------------------------------- */

#define WG_N 64
#define WG_ROUNDS 20
/* one per round: a child may still be inside weft_wg_done of its round when
 * the next round starts (see test_wg_free_after_wait) */
static weft_wg WGS[WG_ROUNDS + 1];
static atomic_int wg_done_count, wg_early;

static void *wg_child(void *arg)
{
	size_t k = (size_t)(uintptr_t)arg % WG_N;
	weft_wg *wg = &WGS[(size_t)(uintptr_t)arg / WG_N];
	weft_sleep((k % 5) * MS);
	for (volatile int i = 0; i < 20000; i++)
		;
	atomic_fetch_add(&wg_done_count, 1);
	CHECK_EQ(weft_wg_done(wg), 0);
	return NULL;
}

static void *wg_waiter(void *arg)
{
	CHECK_EQ(weft_wg_wait(arg), 0);
	if (atomic_load(&wg_done_count) != WG_N)
		atomic_fetch_add(&wg_early, 1);
	return NULL;
}

static void *wg_thread(void *arg)
{
	(void)arg;
	usleep(20000);
	atomic_fetch_add(&wg_done_count, 1);
	weft_wg_done(&WGS[WG_ROUNDS]);
	return NULL;
}

static void *wg_main(void *arg)
{
	(void)arg;
	for (size_t round = 0; round < WG_ROUNDS; round++) {
		weft_wg *wg = &WGS[round];
		weft_wg_init(wg);
		atomic_store(&wg_done_count, 0);
		CHECK_EQ(weft_wg_add(wg, WG_N), 0);
		weft_task *w[3];
		for (int i = 0; i < 3; i++)
			w[i] = weft_spawn(wg_waiter, wg);
		for (size_t k = 0; k < WG_N; k++) {
			uintptr_t a = round * WG_N + k;
			weft_detach(weft_spawn(wg_child, (void *)a));
		}
		CHECK_EQ(weft_wg_wait(wg), 0);
		CHECK_EQ(atomic_load(&wg_done_count), WG_N);
		CHECK_EQ(weft_gather(w, 3, NULL), 0);
	}

	/* done() from a plain thread wakes a fiber */
	weft_wg_init(&WGS[WG_ROUNDS]);
	atomic_store(&wg_done_count, 0);
	CHECK_EQ(weft_wg_add(&WGS[WG_ROUNDS], 1), 0);
	pthread_t th;
	CHECK_EQ(pthread_create(&th, NULL, wg_thread, NULL), 0);
	CHECK_EQ(weft_wg_wait(&WGS[WG_ROUNDS]), 0);
	CHECK_EQ(atomic_load(&wg_done_count), 1);
	pthread_join(th, NULL);

	/* the counter never goes negative; a refused change changes nothing */
	weft_wg g;
	weft_wg_init(&g);
	CHECK_EQ(weft_wg_add(&g, -1), -EINVAL);
	CHECK_EQ(weft_wg_done(&g), -EINVAL);
	CHECK_EQ(weft_wg_wait(&g), 0); /* zero: at once */
	CHECK_EQ(weft_wg_add(&g, 2), 0);
	CHECK_EQ(weft_wg_add(&g, -3), -EINVAL);
	CHECK_EQ(weft_wg_done(&g), 0);
	weft_deadline d;
	weft_deadline_push(&d, 10 * MS);
	CHECK_EQ(weft_wg_wait(&g), -ETIMEDOUT); /* still 1 */
	weft_deadline_pop(&d);
	CHECK_EQ(weft_wg_done(&g), 0);
	CHECK_EQ(weft_wg_done(&g), -EINVAL);
	CHECK_EQ(weft_wg_wait(&g), 0);
	/* past LONG_MAX: refused, the count unchanged (was signed overflow) */
	CHECK_EQ(weft_wg_add(&g, LONG_MAX), 0);
	CHECK_EQ(weft_wg_add(&g, 1), -EOVERFLOW);
	CHECK_EQ(weft_wg_add(&g, LONG_MAX), -EOVERFLOW);
	CHECK_EQ(weft_wg_add(&g, LONG_MIN), -EINVAL);
	CHECK_EQ(weft_wg_add(&g, -LONG_MAX), 0);
	CHECK_EQ(weft_wg_wait(&g), 0);
	CHECK_EQ(weft_wg_add(NULL, 1), -EINVAL);
	CHECK_EQ(weft_wg_done(NULL), -EINVAL);
	CHECK_EQ(weft_wg_wait(NULL), -EINVAL);
	return NULL;
}

static void test_wait_group(void **state)
{
	(void)state;
	atomic_store(&wg_early, 0);
	run(4, wg_main, NULL);
	assert_int_equal(atomic_load(&wg_early), 0);
	/* not a fiber */
	weft_wg g;
	weft_wg_init(&g);
	weft_wg_add(&g, 1);
	assert_int_equal(weft_wg_wait(&g), -EINVAL);
	weft_wg_init(NULL);
}

/* ---- event --------------------------------------------------------------- */

#define EV_N 16
static weft_event EV;
static atomic_int ev_arrived, ev_released;
static int ev_res[EV_N];

static void *ev_waiter(void *arg)
{
	size_t k = (size_t)(uintptr_t)arg;
	atomic_fetch_add(&ev_arrived, 1);
	ev_res[k] = weft_event_wait(&EV);
	atomic_fetch_add(&ev_released, 1);
	return NULL;
}

static void *ev_thread(void *arg)
{
	weft_event *e = arg;
	usleep(20000);
	weft_event_set(e);
	return NULL;
}

static void *ev_main(void *arg)
{
	(void)arg;
	weft_event_init(&EV);
	CHECK_EQ(weft_event_is_set(&EV), 0);
	weft_task *t[EV_N];
	for (size_t k = 0; k < EV_N; k++)
		t[k] = weft_spawn(ev_waiter, (void *)(uintptr_t)k);
	await_at_least(&ev_arrived, EV_N);
	weft_sleep(20 * MS);
	CHECK_EQ(atomic_load(&ev_released), 0);
	weft_event_set(&EV);
	CHECK_EQ(weft_event_is_set(&EV), 1);
	CHECK_EQ(weft_gather(t, EV_N, NULL), 0);
	for (size_t k = 0; k < EV_N; k++)
		CHECK_EQ(ev_res[k], 0);
	/* later waits return at once */
	uint64_t t0 = weft_now();
	for (int i = 0; i < 1000; i++)
		CHECK_EQ(weft_event_wait(&EV), 0);
	CHECK(ms_since(t0) < 1000);
	weft_event_set(&EV); /* twice: still set */
	CHECK_EQ(weft_event_is_set(&EV), 1);

	/* set from a plain thread */
	weft_event e2;
	weft_event_init(&e2);
	pthread_t th;
	CHECK_EQ(pthread_create(&th, NULL, ev_thread, &e2), 0);
	CHECK_EQ(weft_event_wait(&e2), 0);
	pthread_join(th, NULL);

	/* deadline and cancel on an unset event */
	weft_event e3;
	weft_event_init(&e3);
	weft_deadline d;
	weft_deadline_push(&d, 15 * MS);
	CHECK_EQ(weft_event_wait(&e3), -ETIMEDOUT);
	weft_deadline_pop(&d);
	EV = e3; /* unset */
	atomic_store(&ev_arrived, 0);
	weft_task *c = weft_spawn(ev_waiter, (void *)(uintptr_t)0);
	await_at_least(&ev_arrived, 1);
	weft_sleep(10 * MS);
	CHECK_EQ(weft_cancel(c), 0);
	CHECK_EQ(weft_join(c, NULL), -ECANCELED);
	CHECK_EQ(ev_res[0], -ECANCELED);

	CHECK_EQ(weft_event_wait(NULL), -EINVAL);
	CHECK_EQ(weft_event_is_set(NULL), 0);
	weft_event_set(NULL);
	return NULL;
}

static void test_event(void **state)
{
	(void)state;
	atomic_store(&ev_arrived, 0);
	atomic_store(&ev_released, 0);
	run(4, ev_main, NULL);
	weft_event e;
	weft_event_init(&e);
	assert_int_equal(weft_event_wait(&e), -EINVAL); /* not a fiber */
	weft_event_init(NULL);
}

/* ---- lifetime: the waiter frees the object as soon as its wait returns ----
 *
 * The usual pattern: a wait group / event / semaphore / cond in a heap
 * object (or on the waiter's stack) that the waiter frees once its wait
 * returned. The waker must not touch the object after the waiter can see
 * the wake. Checked in a forked child (a use after free may crash): under
 * ASan/TSan the child reports it; in plain builds the freed block is
 * reused at once and a late write into it (the waker's unlock, its next
 * look at the waiter list) shows up as corruption or a crash. */

enum { LT_WG, LT_EVENT, LT_SEM, LT_COND };
struct lt_box {
	weft_wg wg;
	weft_event ev;
	weft_sem sem;
	weft_mutex m;
	weft_cond cv;
	int flag; /* under m */
};
static int lt_kind;
static size_t lt_iters;
static atomic_int lt_corrupt, lt_stop;
static struct lt_box *_Atomic lt_handoff;

static void lt_wake(struct lt_box *b)
{
	switch (lt_kind) {
	case LT_WG:
		weft_wg_done(&b->wg);
		break;
	case LT_EVENT:
		weft_event_set(&b->ev);
		break;
	case LT_SEM:
		weft_sem_release(&b->sem, 1);
		break;
	default:
		/* broadcast while holding the mutex: a waiter that finds the
		 * flag set without waiting may free the box as soon as it has
		 * the mutex, so a broadcast after the unlock would touch freed
		 * memory in any implementation (POSIX: destroying a cond is
		 * safe once no thread is blocked on it) */
		weft_mutex_lock(&b->m);
		b->flag = 1;
		weft_cond_broadcast(&b->cv);
		weft_mutex_unlock(&b->m);
		break;
	}
}

static void *lt_waker_fiber(void *arg)
{
	lt_wake(arg);
	return NULL;
}

static void *lt_waker_thread(void *arg)
{
	(void)arg;
	while (!atomic_load(&lt_stop)) {
		struct lt_box *b = atomic_exchange(&lt_handoff, NULL);
		if (b)
			lt_wake(b); /* not for LT_COND: no locking here */
		else
			sched_yield();
	}
	return NULL;
}

static void *lt_main(void *arg)
{
	(void)arg;
	pthread_t th;
	bool thread_phase = false;
	for (size_t i = 0; i < lt_iters && !atomic_load(&lt_corrupt); i++) {
		if (!thread_phase && i >= lt_iters / 2 && lt_kind != LT_COND) {
			thread_phase = true;
			pthread_create(&th, NULL, lt_waker_thread, NULL);
		}
		struct lt_box *b = malloc(sizeof *b);
		memset(b, 0, sizeof *b);
		if (lt_kind == LT_WG)
			weft_wg_add(&b->wg, 1);
		if (thread_phase)
			atomic_store(&lt_handoff, b);
		else
			weft_detach(weft_spawn(lt_waker_fiber, b));
		int r = 0;
		switch (lt_kind) {
		case LT_WG:
			r = weft_wg_wait(&b->wg);
			break;
		case LT_EVENT:
			r = weft_event_wait(&b->ev);
			break;
		case LT_SEM:
			r = weft_sem_acquire(&b->sem);
			break;
		default:
			weft_mutex_lock(&b->m);
			while (!b->flag && r == 0)
				r = weft_cond_wait(&b->cv, &b->m);
			weft_mutex_unlock(&b->m);
			break;
		}
		if (r)
			atomic_fetch_add(&lt_corrupt, 1);
		free(b); /* the wait returned: b is ours again */
		/* reuse the block at once; a late write shows */
		unsigned char *k = malloc(sizeof *b);
		memset(k, 0xA5, sizeof *b);
		for (volatile int s = 0; s < 1000; s++)
			;
		for (size_t j = 0; j < sizeof *b; j++)
			if (k[j] != 0xA5) {
				atomic_fetch_add(&lt_corrupt, 1);
				break;
			}
		free(k);
	}
	if (thread_phase) {
		atomic_store(&lt_stop, 1);
		pthread_join(th, NULL);
	}
	return NULL;
}

/* in the forked child: exits 3 if the run failed or saw corruption */
static void lt_child(void *arg)
{
	lt_kind = (int)(intptr_t)arg;
	lt_iters = scaled(40000, 2000);
	weft_config c = cfg_workers(4);
	int r = weft_run(&c, lt_main, NULL, NULL);
	_exit(r || atomic_load(&lt_corrupt) ? 3 : 0);
}

static void lt_check(int kind, const char *what)
{
	/* stderr not captured: a sanitizer report shows in the test log */
	int status = run_in_child(lt_child, (void *)(intptr_t)kind, NULL, 0);
	if (WIFSIGNALED(status))
		fail_msg("%s: the child died by signal %d (use after free: the "
			 "waker touched the object after the woken waiter "
			 "freed it)",
			 what, WTERMSIG(status));
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
		fail_msg("%s: the child exited with %d (freed object written "
			 "after the wait returned, or a sanitizer report)",
			 what, WEXITSTATUS(status));
}

static void test_wg_free_after_wait(void **state)
{
	(void)state;
	lt_check(LT_WG, "weft_wg_done");
}

static void test_event_free_after_wait(void **state)
{
	(void)state;
	lt_check(LT_EVENT, "weft_event_set");
}

static void test_sem_free_after_acquire(void **state)
{
	(void)state;
	lt_check(LT_SEM, "weft_sem_release");
}

static void test_cond_free_after_broadcast(void **state)
{
	(void)state;
	lt_check(LT_COND, "weft_cond_broadcast");
}

/* ---- the unlock's wake vs the woken waiter's cancel ------------------------ */

/* The unlocker takes the oldest waiter A (to compete for the lock) and,
 * before waking it, A is cancelled: A settles, finds its record taken and
 * tries the lock once more. LOCKED used to be cleared only after the
 * unlocker's list unlock, so A found it still held, queued again and gave
 * up, and B, the next waiter, was never woken (the one wake was spent on
 * A). Seeded: the unlock's slow path is a preemption point just there,
 * and across seeds the cancel lands in it; a lost wake is a deadlock. */
static weft_mutex uw_m;
static int uw_a, uw_b;

static void *uw_locker(void *arg)
{
	int *res = arg;
	*res = weft_mutex_lock(&uw_m);
	if (*res == 0)
		weft_mutex_unlock(&uw_m);
	return NULL;
}

static void *uw_canceller(void *arg)
{
	weft_cancel(arg);
	return NULL;
}

static void *uw_main(void *arg)
{
	(void)arg;
	weft_mutex_init(&uw_m);
	weft_mutex_lock(&uw_m);
	/* A queues first, then B; both wait under 1 ms, so the unlock lets
	 * A compete rather than handing it the lock (mutex.c, HANDOFF_NS) */
	weft_task *a = weft_spawn(uw_locker, &uw_a);
	weft_sleep(50 * US);
	weft_task *b = weft_spawn(uw_locker, &uw_b);
	weft_sleep(50 * US);
	weft_task *c = weft_spawn(uw_canceller, a);
	weft_mutex_unlock(&uw_m); /* C may cancel A in the middle */
	weft_join(c, NULL);
	weft_join(a, NULL);
	weft_join(b, NULL);
	return NULL;
}

static void test_mutex_unlock_wake_vs_cancel(void **state)
{
	(void)state;
	int bad = 0, a_cancelled = 0;
	for (uint64_t seed = 1; seed <= 300; seed++) {
		weft_config c = cfg_workers(2);
		c.seed = seed;
		uw_a = uw_b = 1;
		int r = weft_run(&c, uw_main, NULL, NULL);
		if (r != 0 || uw_b != 0 ||
		    (uw_a != 0 && uw_a != -ECANCELED)) {
			print_error("seed %d: weft_run %d, A %d, B %d\n",
				    (int)seed, r, uw_a, uw_b);
			bad++;
		}
		a_cancelled += uw_a == -ECANCELED;
	}
	assert_int_equal(bad, 0);
	assert_true(a_cancelled > 0);
}

/* ---- no memory for the deadline's timer ------------------------------------
 * A wait that must park under a deadline scope adds a timer to its worker's
 * heap; when the heap cannot grow (realloc fails) the wait returns -ENOMEM
 * at once, having taken nothing (weft/deadline.h). Interposed realloc:
 * fails while nomem_realloc is set. The first timer of a worker allocates
 * its heap, so a fresh runtime with one worker hits it. */
NOMEM_REALLOC_DEFINE()

static int nomem_child(void *arg)
{
	(void)arg;
	weft_sleep(5 * MS);
	return 0;
}

static void *nomem_main(void *arg)
{
	(void)arg;
	weft_mutex m = WEFT_MUTEX_INIT;
	weft_sem s;
	weft_sem_init(&s, 0);
	weft_event e;
	weft_event_init(&e);
	weft_wg wg;
	weft_wg_init(&wg);
	weft_wg_add(&wg, 1);
	weft_chan *c = weft_chan_new(1, sizeof(int));
	weft_group *g = weft_group_new();
	CHECK(c && g);
	if (!c || !g)
		return NULL;
	CHECK_EQ(weft_group_spawn(g, nomem_child, NULL), 0);
	CHECK_EQ(weft_mutex_trylock(&m), 0);
	int x = 0;
	weft_deadline d;
	CHECK_EQ(weft_deadline_push(&d, 10 * SEC), 0);
	atomic_store(&nomem_realloc, 1);
	CHECK_EQ(weft_chan_recv(c, &x), -ENOMEM);
	CHECK_EQ(weft_sem_acquire(&s), -ENOMEM);
	CHECK_EQ(weft_event_wait(&e), -ENOMEM);
	CHECK_EQ(weft_wg_wait(&wg), -ENOMEM);
	CHECK_EQ(weft_group_wait(g), -ENOMEM);
	int failed = atomic_exchange(&nomem_realloc, 0);
	weft_deadline_pop(&d);
	CHECK(failed > 1);
	/* nothing was taken: the channel is empty, the semaphore at 0 */
	CHECK_EQ(weft_chan_try_recv(c, &x), -EAGAIN);
	CHECK_EQ(weft_sem_try_acquire(&s), -EAGAIN);
	CHECK_EQ(weft_mutex_unlock(&m), 0);
	weft_chan_free(c);
	weft_group_free(g);
	return NULL;
}

static void test_deadline_timer_nomem(void **state)
{
	(void)state;
	if (seeded() || !INTERPOSE)
		skip(); /* the simulator's timers are its own; sanitizers
			   keep realloc */
	run(1, nomem_main, NULL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_mutex_stress),
		cmocka_unit_test(test_mutex_trylock_owner),
		cmocka_unit_test(test_mutex_cancel_waiter),
		cmocka_unit_test(test_mutex_cancelled_takes_free),
		cmocka_unit_test(test_mutex_cancel_stress),
		cmocka_unit_test(test_mutex_unlock_wake_vs_cancel),
		cmocka_unit_test(test_mutex_deadline),
		cmocka_unit_test(test_mutex_no_starvation),
		cmocka_unit_test(test_cond_producer_consumer),
		cmocka_unit_test(test_cond_cancel_holds_mutex),
		cmocka_unit_test(test_sem_bound),
		cmocka_unit_test(test_sem_release_n),
		cmocka_unit_test(test_sem_cancel_conserves),
		cmocka_unit_test(test_wait_group),
		cmocka_unit_test(test_event),
		cmocka_unit_test(test_wg_free_after_wait),
		cmocka_unit_test(test_event_free_after_wait),
		cmocka_unit_test(test_sem_free_after_acquire),
		cmocka_unit_test(test_cond_free_after_broadcast),
		cmocka_unit_test(test_deadline_timer_nomem),
	};
	apply_test_filters();
	return cmocka_run_group_tests(tests, NULL, NULL);
}
