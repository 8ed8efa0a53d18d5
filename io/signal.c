/* signal.c — POSIX signals delivered to waiting fibers.
 *
 * The handler may run on any thread, in the middle of anything (a worker
 * between two instructions of the scheduler, a blocking-pool thread, a
 * thread of the user's), so it only does what is async-signal-safe: it
 * sets the signal's bit in `pending` and writes worker 0's eventfd, which
 * that worker's ring always has a read armed on (uring.c). The worker's
 * reap looks at `pending` after every batch (one relaxed load) and, when a
 * bit is set, dispatches here: on a worker, where waking fibers is allowed.
 *
 * State (under `lock`, a spin lock like every waitq's):
 *   count[s]     deliveries of s dispatched so far (coalesced: the handler
 *                may run several times between two dispatches)
 *   seen[s]      count[s] when a wait last returned s
 *   waiters      fibers parked with their list of signals (data)
 * Invariants
 *   S1  count[s] != seen[s] <=> s arrived and no wait has returned it since:
 *       a wait that names s returns at once (and sets seen[s] = count[s]).
 *   S2  A waiter is queued only while count[s] == seen[s] for every s it
 *       names (it looked under the lock before queuing; a dispatch that
 *       bumps count[s] claims every waiter naming s, under the same lock).
 *   No delivery is lost: the handler sets the bit before it writes the
 *   eventfd; the reap that sees the eventfd's completion loads the bits
 *   after it (the write is a system call; the completion is posted by the
 *   kernel after it), and a bit set after the exchange is followed by its
 *   own write, hence by another completion and another look.
 *
 * ThreadSanitizer runs a handler only when the thread that took the signal
 * next enters a function TSan intercepts; a worker parked in the ring (a
 * raw system call) never would, so TSan builds wake parked workers every
 * 20 ms while handlers are installed and make such a call after each reap
 * (uring.c, weft__signal_tsan_point).
 *
 * Seeded runs: a signal is an outside event, as a socket's data is: a
 * waiter counts as an op in flight on worker 0's ring (sim.c waits for
 * those in real time) and arrives when the signal does.
 *
 * Dispositions: weft_signal_watch, or the first wait, for s installs the
 * handler for s
 * (sigaction, SA_RESTART), under `install` (a pthread mutex: a system call
 * on the waiting fiber, once per signal per run). weft_run restores the
 * old actions when its workers have stopped (weft__signal_fini), before
 * the eventfds close; a handler already running on another thread at that
 * moment loads the fd -1, or is counted (in_handler) and waited for before
 * the eventfd closes (the dump signal's handler does the same, dump.c).
 */
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <string.h>
#include <unistd.h>

#include "../runtime/sync/waitq.h"
#include "io.h"

#define NSIGS 65 /* signal numbers 1..64 */

_Atomic uint64_t weft__sig_pending; /* bit s-1: s arrived, not dispatched */
_Atomic int weft__sig_installed;    /* internal.h */
static _Atomic int sig_efd = -1;    /* worker 0's eventfd while installed */

static pthread_mutex_t install = PTHREAD_MUTEX_INITIALIZER;
static uint64_t installed;           /* under install: bit s-1 */
static struct sigaction old_act[NSIGS]; /* under install */

static unsigned lock;
static uint32_t count[NSIGS], seen[NSIGS]; /* under lock */
static struct weft__wlist waiters;         /* under lock */

/* handlers between their load of sig_efd and the end of their write: the
 * teardown waits for 0 before the eventfd may close (weft__signal_fini) */
static _Atomic int in_handler;

static void on_signal(int sig)
{
	int e = errno;
	atomic_fetch_or(&weft__sig_pending, 1ull << (sig - 1));
	/* seq_cst: count ourselves in, then load the fd; the teardown stores
	 * -1, then loads the count. So it waits for us, or we see -1 */
	atomic_fetch_add(&in_handler, 1);
	int fd = atomic_load(&sig_efd);
	if (fd >= 0) {
		uint64_t one = 1;
		ssize_t r = write(fd, &one, sizeof one);
		(void)r; /* a counter near its limit is awake anyway */
	}
	atomic_fetch_sub(&in_handler, 1);
	errno = e;
}

struct siglist { /* a waiter's data: the signals it waits for */
	const int *sigs;
	size_t n;
};

static bool names(const struct weft__waiter *w, int s)
{
	const struct siglist *l = w->data;
	for (size_t i = 0; i < l->n; i++)
		if (l->sigs[i] == s)
			return true;
	return false;
}

/* A worker saw bits in weft__sig_pending after a reap. */
void weft__signal_dispatch(void)
{
	uint64_t bits = atomic_exchange(&weft__sig_pending, 0);
	if (!bits)
		return;
	weft__spin_lock(&lock);
	for (int s = 1; s < NSIGS; s++)
		if (bits & 1ull << (s - 1))
			count[s]++;
	/* S2: every waiter naming a signal that arrived; lowest first */
	struct weft__waiter *w = waiters.head;
	while (w) {
		struct weft__waiter *next = w->next;
		for (int s = 1; s < NSIGS; s++) {
			if (!(bits & 1ull << (s - 1)) || !names(w, s))
				continue;
			seen[s] = count[s];
			weft__wl_remove(&waiters, w);
			/* under the lock (a broadcast: the waiter waits for it
			 * to go free before it returns, waitq.c) */
			weft__wake_held(w, s);
			break;
		}
		w = next;
	}
	weft__spin_unlock(&lock);
}

bool weft__signal_refused(int s) /* internal.h */
{
	/* the C library's own (glibc: 32 and 33, its thread cancellation
	 * and set*id signals): sigaction would refuse them */
	if (s > 31 && s < SIGRTMIN)
		return true;
	switch (s) {
	case SIGKILL: case SIGSTOP: case SIGSEGV: case SIGBUS:
	case SIGFPE: case SIGILL: case SIGTRAP: case SIGSYS:
		return true;
	}
	return false;
}

/* Install the handler for every signal of sigs not yet installed; all or
 * none (a refusal puts back what this call installed). */
static int install_all(struct weft__rt *rt, const int *sigs, size_t n)
{
	int err = 0;
	uint64_t mine = 0;
	pthread_mutex_lock(&install);
	atomic_store(&sig_efd, rt->workers[0].efd);
	for (size_t i = 0; i < n && !err; i++) {
		int s = sigs[i];
		if ((installed | mine) & 1ull << (s - 1))
			continue;
		struct sigaction sa;
		memset(&sa, 0, sizeof sa);
		sa.sa_handler = on_signal;
		sa.sa_flags = SA_RESTART;
		sigemptyset(&sa.sa_mask);
		if (sigaction(s, &sa, &old_act[s]))
			err = -errno;
		else
			mine |= 1ull << (s - 1);
	}
	if (err) {
		for (int s = 1; s < NSIGS; s++)
			if (mine & 1ull << (s - 1))
				sigaction(s, &old_act[s], NULL);
	} else {
		installed |= mine;
		if (installed)
			atomic_fetch_or(&weft__sig_installed, WEFT__SIG_WAITS);
	}
	pthread_mutex_unlock(&install);
	return err;
}

/* 0, or what weft_signal_wait returns for a list it refuses */
static int check(struct weft__worker *w, const int *sigs, size_t n)
{
	if (!sigs || n == 0)
		return -EINVAL;
	sigset_t mask;
	pthread_sigmask(SIG_BLOCK, NULL, &mask);
	for (size_t i = 0; i < n; i++) {
		int s = sigs[i];
		if (s <= 0 || s >= NSIGS || weft__signal_refused(s) ||
		    sigismember(&mask, s))
			return -EINVAL;
		if (s == w->rt->dump_signal)
			return -EBUSY;
	}
	return 0;
}

int weft_signal_watch(const int *sigs, size_t n)
{
	struct weft__worker *w;
	weft_task *self = weft__self(&w);
	if (!self)
		return -EINVAL;
	int r = check(w, sigs, n);
	return r ? r : install_all(w->rt, sigs, n);
}

int weft_signal_wait(const int *sigs, size_t n)
{
	weft__sim_point();
	struct weft__worker *w;
	weft_task *self = weft__self(&w);
	if (!self)
		return -EINVAL;
	int r = check(w, sigs, n);
	if (r || (r = weft__io_check(self)) ||
	    (r = install_all(w->rt, sigs, n)))
		return r;

	weft__spin_lock(&lock);
	/* S1: the lowest of ours that arrived since a wait last returned it */
	int got = 0;
	for (size_t i = 0; i < n; i++) {
		int s = sigs[i];
		if (count[s] != seen[s] && (!got || s < got))
			got = s;
	}
	if (got) {
		seen[got] = count[got];
		weft__spin_unlock(&lock);
		return got;
	}
	struct siglist l = {sigs, n};
	struct weft__waiter me = {.f = self, .data = &l};
	weft__wait_note(self, WEFT__W_SIGNAL, n > 255 ? 255 : (unsigned)n,
			(uint64_t)sigs[0]);
	me.seq = weft__park_begin(self, true);
	weft__wl_push(&waiters, &me);
	/* seeded runs: an op in flight on the ring whose eventfd the handler
	 * writes, so that the master waits for it (real time) before it
	 * calls the run deadlocked (sim.c; all on one thread there) */
	struct weft__worker *w0 = &w->rt->workers[0];
	if (w->sim)
		w0->inflight++;
	r = weft__wl_wait(&lock, &waiters, &me);
	if (w->sim)
		w0->inflight--;
	return r;
}

/* TSan holds a signal for a handler until the thread enters a function
 * it intercepts (pthread_sigmask is one); the workers call this after
 * each reap while handlers of ours are installed (TSan builds only). */
void weft__signal_tsan_point(void)
{
	sigset_t m;
	pthread_sigmask(SIG_BLOCK, NULL, &m);
}

/* weft_run, its workers stopped: the old actions back, nothing pending. */
void weft__signal_fini(void)
{
	pthread_mutex_lock(&install);
	for (int s = 1; s < NSIGS; s++)
		if (installed & 1ull << (s - 1))
			sigaction(s, &old_act[s], NULL);
	installed = 0;
	atomic_fetch_and(&weft__sig_installed, ~WEFT__SIG_WAITS);
	atomic_store(&sig_efd, -1);
	pthread_mutex_unlock(&install);
	/* a handler that loaded the fd before the store still writes it: the
	 * ring closes it next, and a descriptor reused by then is someone
	 * else's */
	while (atomic_load(&in_handler))
		sched_yield();
	weft__spin_lock(&lock);
	atomic_store(&weft__sig_pending, 0);
	memset(count, 0, sizeof count);
	memset(seen, 0, sizeof seen);
	waiters.head = waiters.tail = NULL; /* every fiber has ended */
	weft__spin_unlock(&lock);
}
