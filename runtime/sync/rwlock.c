/* rwlock.c — reader-writer lock, after Go's sync.RWMutex: readers enter
 * with one CAS unless a writer holds or waits; writers take a weft_mutex
 * among themselves, then announce themselves and wait for the readers
 * inside to leave.
 *
 * State (l->_state, atomic): readers * RD | WRITER | WPEND | RWAIT | WSPIN.
 *   WRITER  a writer holds (_owner: which fiber);
 *   WPEND   a writer (the one holding _w) waits for the readers inside to
 *           leave: no reader enters meanwhile (no writer starves);
 *   RWAIT   readers are queued on _q (they came while WRITER or WPEND);
 *   WSPIN   with WPEND: that writer spins (2+ workers) instead of parking,
 *           and the last reader out hands it the lock in its own CAS.
 * _w, a weft_mutex, is held by the writer from before it announces until
 * after its unlock, so at most one writer pends or holds, and writers
 * queue for each other with the mutex's policy (barging, hand-off after
 * 1 ms). _drain is that writer's record while it waits for the readers.
 *
 * Paths (the queue lock _q._lock guards the queue, _drain, RWAIT, and
 * every change of WPEND and WRITER but two, made by a CAS: the last
 * reader's hand-over to a spinning writer, and a writer's unlock with no
 * reader queued (WRITER -> 0); readers' counts change by CAS):
 *   rdlock   CAS +RD while none of WRITER, WPEND, RWAIT is set; else
 *            on 2+ workers the same a few more times, far apart (the
 *            spin); else under the queue lock: the same, or set RWAIT,
 *            queue, park.
 *   wrlock   lock _w; under the queue lock: no readers -> set WRITER;
 *            else set WPEND (on 2+ workers with WSPIN, then unlock the
 *            queue and spin a little for WRITER; if it did not come,
 *            clear WSPIN under the queue lock, unless WRITER came
 *            meanwhile); file _drain, park.
 *   unlock   a reader: CAS -RD; the last one out with WSPIN set makes that
 *            CAS WPEND|WSPIN -> WRITER (its last touch of l, as a
 *            handing reader's queue unlock is: the writer may free l
 *            once it holds it); the last one out with WPEND alone,
 *            under the queue lock, hands the lock to _drain (WPEND ->
 *            WRITER). The writer: CAS WRITER -> 0, or (RWAIT) under the
 *            queue lock clear WRITER and let in every queued reader at
 *            once; then unlock _w.
 * Invariants (at every release of the queue lock)
 *   RW1  RWAIT <=> readers are queued; then WRITER or WPEND is set.
 *   RW2  _drain set <=> WPEND set and WSPIN clear; then readers are
 *        inside. WSPIN => WPEND, readers inside, no _drain.
 *   RW3  WRITER => no readers inside, WPEND clear, _w held by _owner.
 * No lost wake-up: a queuer sets RWAIT or WPEND by a CAS under the queue
 * lock, from a word in which what it waits for is still there; whoever
 * removes that (the writer's unlock, the last reader out) sees the bit in
 * the word its own CAS replaced and takes the queue lock, where it finds
 * the queued record.
 *
 * Waits follow the waitq rule (waitq.c): a record is claimed and the word
 * updated for it (it holds the lock from then on) under the queue lock;
 * its wake comes after the queue unlock (past WAKE_MAX readers, under it:
 * weft__wake_held). A waiter woken by cancel or deadline settles under the
 * queue lock: a reader still queued leaves the queue; a writer still in
 * _drain withdraws (clears WPEND, lets in the queued readers) and unlocks
 * _w; then it fails. One already claimed holds the lock: success wins.
 */
#include "waitq.h"

#define WRITER 1ul
#define WPEND 2ul
#define RWAIT 4ul
#define WSPIN 8ul
#define RD 16ul
#define WAKE_MAX 32 /* wakes done after the queue unlock, per release */
/* Before parking, a reader (for a writer to leave) and a writer (for the
 * readers inside to leave, new ones held back) spin as the mutex does
 * (waitq.h): the holder is a fiber running on another worker, and
 * sections are short. Without it, on 2 workers every conflict parked a
 * fiber: benches/bench_rwlock (8 fibers, 1 write in 10) took 0.077 s,
 * 0.19x Go's RWMutex; docs/benchmarks.md, "Reader-writer lock". */

struct wakes {
	struct weft__wakeup k[WAKE_MAX];
	int n;
};

static inline unsigned long ld(weft_rwlock *l)
{
	return __atomic_load_n(&l->_state, __ATOMIC_ACQUIRE);
}
static inline bool cas(weft_rwlock *l, unsigned long *old, unsigned long nw)
{
	/* acquire: a hold starts; release: a hold ends */
	return __atomic_compare_exchange_n(&l->_state, old, nw, false,
					   __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE);
}
static inline void set_owner(weft_rwlock *l, void *o)
{
	__atomic_store_n(&l->_owner, o, __ATOMIC_RELAXED);
}
static inline void *owner(weft_rwlock *l)
{
	return __atomic_load_n(&l->_owner, __ATOMIC_RELAXED);
}

void weft_rwlock_init(weft_rwlock *l)
{
	if (l)
		*l = (weft_rwlock)WEFT_RWLOCK_INIT;
}

static inline bool read_fast(weft_rwlock *l)
{
	unsigned long s = ld(l);
	while (!(s & (WRITER | WPEND | RWAIT)))
		if (cas(l, &s, s + RD))
			return true;
	return false;
}

static void add_wake(struct wakes *wk, struct weft__waiter *w)
{
	if (wk->n < WAKE_MAX)
		wk->k[wk->n++] = weft__complete(w, 0);
	else
		weft__wake_held(w, 0);
}

static void wake_all(struct wakes *wk)
{
	for (int i = 0; i < wk->n; i++)
		weft__wakeup_do(wk->k[i]);
}

/* Under the queue lock: replace the bits `clear` and let every queued
 * reader in, in one CAS (readers inside may leave meanwhile). */
static void admit_readers(weft_rwlock *l, unsigned long clear,
			  struct wakes *wk)
{
	struct weft__wlist *q = weft__wq_list(&l->_q);
	unsigned long n = 0;
	for (struct weft__waiter *w = q->head; w; w = w->next)
		n++;
	unsigned long s = ld(l);
	while (!cas(l, &s, (s & ~(clear | RWAIT)) + n * RD))
		;
	struct weft__waiter *w;
	while ((w = weft__wl_claim(q)))
		add_wake(wk, w);
}

/* ---- readers ----------------------------------------------------------------- */

static int read_slow(weft_rwlock *l, weft_task *self)
{
	struct weft__wlist *q = weft__wq_list(&l->_q);
	weft__spin_lock(&l->_q._lock);
	unsigned long s = ld(l);
	for (;;) {
		if (!(s & (WRITER | WPEND | RWAIT))) {
			if (cas(l, &s, s + RD))
				break;
			continue;
		}
		if ((s & WRITER) && owner(l) == self) {
			weft__spin_unlock(&l->_q._lock);
			return -EDEADLK; /* it would wait for itself */
		}
		if (!(s & (WRITER | WPEND))) { /* RWAIT alone: RW1 says no */
			weft__spin_unlock(&l->_q._lock);
			weft__die("weft_rwlock %p: corrupt state %#lx",
				  (void *)l, s);
		}
		if (weft__cancelled(self)) {
			weft__spin_unlock(&l->_q._lock);
			return -ECANCELED;
		}
		if ((s & RWAIT) || cas(l, &s, s | RWAIT)) {
			struct weft__waiter me = {.f = self, .reader = true};
			weft__wait_note(self, WEFT__W_RWLOCK, 0, (uintptr_t)l);
			me.seq = weft__park_begin(self, true);
			weft__wl_push(q, &me);
			weft__spin_unlock(&l->_q._lock);
			int r = weft__park_wait(self);
			if (r == WEFT__R_WOKEN) {
				if (me.held) /* let the waker's unlock pass */
					weft__spin_wait_free(&l->_q._lock);
				return 0;
			}
			weft__spin_lock(&l->_q._lock);
			if (me.queued) {
				weft__wl_remove(q, &me);
				if (!q->head) { /* RW1 */
					s = ld(l);
					while (!cas(l, &s, s & ~RWAIT))
						;
				}
				weft__spin_unlock(&l->_q._lock);
				return weft__reason_err(r);
			}
			break; /* let in meanwhile: success wins */
		}
	}
	weft__spin_unlock(&l->_q._lock);
	return 0;
}

/* The last reader left while a writer pends: hand it the lock (RW2). */
static WEFT__NOINLINE void hand_to_writer(weft_rwlock *l)
{
	struct weft__wakeup wk = {0};
	weft__spin_lock(&l->_q._lock);
	unsigned long s = ld(l);
	struct weft__waiter *d = l->_drain;
	/* no reader can enter (WPEND), none is inside: ours to set */
	if (d && s < RD && (s & WPEND) &&
	    cas(l, &s, (s & ~WPEND) | WRITER)) {
		l->_drain = NULL;
		d->queued = false;
		set_owner(l, d->f);
		wk = weft__complete(d, 0);
	}
	weft__spin_unlock(&l->_q._lock);
	weft__wakeup_do(wk);
}

/* ---- writers ----------------------------------------------------------------- */

/* A writer's spin, WPEND | WSPIN set: true once the last reader out has
 * handed us the lock (WRITER; WPEND keeps new readers out). Acquire, in
 * ld: their sections end before ours begins. */
static bool drain_spin(weft_rwlock *l)
{
	for (int i = 0; i < WEFT__SPIN_LOOKS; i++) {
		weft__spin_gap();
		if (ld(l) & WRITER)
			return true;
	}
	return false;
}

static int write_lock(weft_rwlock *l, weft_task *self, bool block, bool spin)
{
	if (self && owner(l) == self && (ld(l) & WRITER))
		return block ? -EDEADLK : -EBUSY;
	int r = block ? weft_mutex_lock(&l->_w) : weft_mutex_trylock(&l->_w);
	if (r)
		return r; /* -ECANCELED, -ETIMEDOUT, -ENOMEM, -EBUSY */
	weft__spin_lock(&l->_q._lock);
	unsigned long s = ld(l);
	for (;;) {
		if (s < RD) { /* no reader inside; RW3: no WRITER, WPEND */
			if (cas(l, &s, s | WRITER))
				break;
			continue;
		}
		if (!block) {
			weft__spin_unlock(&l->_q._lock);
			weft_mutex_unlock(&l->_w);
			return -EBUSY;
		}
		if (cas(l, &s, s | WPEND | (spin ? WSPIN : 0))) {
			if (spin) {
				weft__spin_unlock(&l->_q._lock);
				if (drain_spin(l)) {
					set_owner(l, self);
					return 0;
				}
				/* stop: clear WSPIN, under the queue lock (a last
				 * reader then hands over the old way, through
				 * _drain), unless the lock came meanwhile */
				weft__spin_lock(&l->_q._lock);
				s = ld(l);
				while (!(s & WRITER) && !cas(l, &s, s & ~WSPIN))
					;
				if (s & WRITER)
					break;
				/* readers still inside: with WSPIN set, the
				 * last one out would have set WRITER */
			}
			struct weft__waiter me = {.f = self};
			weft__wait_note(self, WEFT__W_RWLOCK, 1, (uintptr_t)l);
			me.seq = weft__park_begin(self, true);
			me.queued = true;
			l->_drain = &me;
			weft__spin_unlock(&l->_q._lock);
			r = weft__park_wait(self);
			if (r == WEFT__R_WOKEN)
				return 0; /* handed after the unlock: _owner set */
			weft__spin_lock(&l->_q._lock);
			if (!me.queued) { /* handed meanwhile: success wins */
				weft__spin_unlock(&l->_q._lock);
				return 0;
			}
			/* withdraw: readers may enter again, the queued first */
			l->_drain = NULL;
			struct wakes wk = {.n = 0};
			admit_readers(l, WPEND, &wk);
			weft__spin_unlock(&l->_q._lock);
			wake_all(&wk);
			weft_mutex_unlock(&l->_w);
			return weft__reason_err(r);
		}
	}
	set_owner(l, self);
	weft__spin_unlock(&l->_q._lock);
	return 0;
}

/* A reader's spin: true if it got in. Not while it holds the lock for
 * writing itself (read_slow says -EDEADLK). */
static bool read_spin(weft_rwlock *l, weft_task *self)
{
	for (int i = 0; i < WEFT__SPIN_LOOKS; i++) {
		weft__spin_gap();
		if ((ld(l) & WRITER) && owner(l) == self)
			return false;
		if (read_fast(l))
			return true;
	}
	return false;
}

static int lock(weft_rwlock *l, bool reader, bool block)
{
	weft__sim_point();
	struct weft__worker *w;
	weft_task *self = weft__self(&w);
	if (!l || (block && !self))
		return -EINVAL;
	if (!reader)
		return write_lock(l, self, block, block && weft__may_spin(w));
	if (read_fast(l))
		return 0;
	if (!block)
		return -EBUSY;
	if (weft__may_spin(w) && read_spin(l, self))
		return 0;
	return read_slow(l, self);
}

int weft_rwlock_rdlock(weft_rwlock *l)
{
	return lock(l, true, true);
}
int weft_rwlock_wrlock(weft_rwlock *l)
{
	return lock(l, false, true);
}
int weft_rwlock_tryrdlock(weft_rwlock *l)
{
	return lock(l, true, false);
}
int weft_rwlock_trywrlock(weft_rwlock *l)
{
	return lock(l, false, false);
}

/* ---- unlock ------------------------------------------------------------------ */

int weft_rwlock_unlock(weft_rwlock *l)
{
	/* no preemption point: the next lock (ours or another's) is one */
	if (!l)
		return -EINVAL;
	unsigned long s = ld(l);
	if (s & WRITER) {
		if (owner(l) != weft__self(NULL))
			return -EPERM;
		set_owner(l, NULL);
		for (;;) {
			if (s & RWAIT) { /* let the queued readers in */
				struct wakes wk = {.n = 0};
				weft__spin_lock(&l->_q._lock);
				admit_readers(l, WRITER, &wk);
				weft__spin_unlock(&l->_q._lock);
				wake_all(&wk);
				break;
			}
			if (cas(l, &s, s & ~WRITER))
				break;
		}
		/* after the word: the next writer announces to a free lock */
		weft_mutex_unlock(&l->_w);
		return 0;
	}
	for (;;) {
		if (s < RD)
			return -EPERM; /* nobody holds it */
		unsigned long n = s - RD;
		if (n < RD && (s & WSPIN)) /* last out, a writer spins: */
			n = (n & ~(WPEND | WSPIN)) | WRITER; /* it holds now */
		if (cas(l, &s, n))
			break;
	}
	/* we were the last one inside, a writer parked or about to */
	if (s - RD < RD && (s & WPEND) && !(s & WSPIN))
		hand_to_writer(l);
	return 0;
}
