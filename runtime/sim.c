/* sim.c — deterministic simulation: seeded scheduling, virtual time, seeded
 * faults, deadlock detection, and the seed explorer. (docs/design.md,
 * "Deterministic simulation"; the user's guide is docs/testing.md.)
 *
 * With a seed, weft_run starts no worker threads. The calling thread is the
 * master: it owns every worker's ring and timer heap and resumes fibers one
 * at a time, each on a worker it picks, until the fiber gives the worker up
 * (a fiber never hands off to the next directly in this mode: sched.c). So
 * every choice the threaded runtime leaves to races is a draw from one
 * PRNG (splitmix64) seeded with the seed:
 *   - which worker steps next, and which fiber it runs: one of its own
 *     queue, the newest (the LIFO slot) or any; or, when its queue is empty
 *     and one time in eight anyway, a fiber stolen from a random victim;
 *     under PCT (pct = depth d) the fiber of highest priority, priorities
 *     random at first queueing, the running one dropping below all at d-1
 *     steps drawn among the first WEFT_PCT_STEPS (100) (Burckhardt et al.,
 *     ASPLOS 2010); a yielder goes below every fiber that has not yielded,
 *     the latest lowest, until it is picked again, when it draws afresh
 *     (PCT has no yield; weft_yield asks the others to go first, and a
 *     polling loop must not starve the fiber it waits for, even one a
 *     change point dropped; a seeded preemption draws afresh: PRIO_*
 *     below); and a fiber waiting in the run set past 100 horizons runs
 *     first (PCT_STARVE_STEPS: strict priorities are not fair);
 *   - preemption points: the synchronizing calls (weft__sim_point) switch
 *     fibers one time in four, as a fiber on another worker could get in;
 *   - when timers fire and when which ring is submitted to and reaped;
 *   - which faults hit (weft__fault) and how (short lengths, delays).
 * Runnable fibers sit in one array per worker (the run set; under PCT, a
 * pool in two heaps: "PCT's run set"), not in the deques: this mode tests
 * the program, not weft's lock-free queues (their own stress tests and
 * the sanitizers cover those).
 *
 * Virtual time (weft__vclock, read by weft__clock) starts at 1 s and moves
 * 100-500 ns per step and 20 ns per weft_now(). When nothing can run, the
 * master submits and reaps every ring, fires due timers, waits for the
 * blocking pool, and if still nothing can run: waits for I/O completions
 * (real ones; file ops, "sure ops", as long as they take, others up to
 * WAIT_REAL_MS of real time while a timer is pending), else jumps the clock
 * to the earliest timer or held-back completion. It also jumps when only
 * yielders have run for YIELD_STREAK steps and no I/O is in flight (a
 * polling loop waiting for a timer). With nothing pending anywhere and
 * fibers alive, that is a deadlock: it says so, dumps the wait graph, and
 * cancels every fiber; weft_run returns -EDEADLK.
 *
 * Determinism holds as long as the program's own inputs do (no real clock,
 * no other threads, no outside peers): real I/O completions are reaped at
 * seeded moments; file ops are waited for at each reap (poll_ring), the
 * rest (sockets, pipes) are there or not as the kernel has it.
 * The blocking pool is made deterministic by waiting for it (pool_sync):
 * after each step the master waits until the pool is idle, so a call's
 * wake-up lands at a fixed step; a call still running after POOL_WAIT_MS
 * becomes an outside event. Wakes from other threads (a pool thread, the
 * user's own threads) go through the inbox, under a lock; the master takes
 * them in at each step.
 *
 * The trace hash folds in, in order, every resume (fiber id, worker, virtual
 * time), every fault, inbox arrival and clock jump. Equal hashes: equal runs.
 */
#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "internal.h"

#define STEP_NS_MIN 100
#define STEP_NS_SPAN 400
#define WAIT_REAL_MS 5          /* real wait for I/O before a clock jump */
#define FOREIGN_GRACE_MS 100    /* real wait for other threads' wakes */
#define FOREIGN_GRACE_LONG_MS 2000 /* ... while threads of the program's
				      own exist: one the OS did not run for
				      100 ms (a loaded machine) made false
				      deadlocks */
#define SURE_WAIT_MS 100        /* a reap's real wait for file ops */
#define YIELD_STREAK 64
#define DELAY_MAX_NS 10000000ull /* WEFT_FAULT_DELAY: up to 10 ms */
#define VCLOCK_START 1000000000ull
#define PCT_STEPS 100 /* PCT change points fall in the first 100 steps
			 (env WEFT_PCT_STEPS: a test of about that length) */
#define POOL_WAIT_MS 1000        /* a blocking call runs this long, then
				    it is an outside event (pool_sync) */

_Atomic int weft__sim_on;
_Atomic uint64_t weft__vclock;

struct ent {
	weft_task *f;
	unsigned w;
	bool yield;
	uint64_t since; /* the step it was queued at (PCT: pct_best) */
};

/* a PCT run set entry (pct_add): pool index 0 is unused */
struct pent {
	struct ent e;
	uint64_t ord;    /* queueing number: the oldest has the least */
	uint32_t hp, ho; /* positions in hprio and hold; hp links free ones */
};

struct held { /* a held-back completion (WEFT_FAULT_DELAY) */
	struct weft__worker *w;
	struct weft__op *op;
	int res;
	unsigned flags;
	uint64_t due;
};

struct weft__sim {
	uint64_t seed, rng, trace;
	weft_sim_report rep;
	unsigned pct;
	uint64_t pct_at[64]; /* steps at which the running fiber drops */
	uint64_t pct_steps;  /* the horizon the change points fall in */
	uint64_t pct_yields; /* yields so far (the yielded band, run_add) */
	bool preempting;     /* weft__sim_preempt's yield is under way */
	/* PCT's run set (pct_add): entries in a pool, in two heaps */
	struct pent *pool;
	size_t cappool, npool;
	uint32_t pfree;       /* free pool entries, linked by hp; 0: none */
	uint32_t *hprio, *hold; /* pool indices by priority, by age */
	size_t caphp, capho;
	uint64_t pct_ord;     /* queueings so far: an entry's age */
	struct runq { /* the fibers queued on one worker */
		struct ent *e;
		size_t n, cap;
		_Atomic size_t len; /* n, for weft_metrics_get from any
				       thread (relaxed: a gauge) */
	} *run;               /* one per worker */
	unsigned nworkers;
	size_t n, nyield;     /* runnable in all, of which yielders */
	unsigned yield_streak;
	struct held *held;
	size_t nheld, capheld;
	uint32_t fault_p[WEFT_FAULT_COUNT]; /* probability * 2^32 */
	pthread_mutex_t lock; /* the inbox: wakes from other threads */
	pthread_cond_t cond;
	struct ent *inbox;
	size_t nin, capin;
	int deadlocks;
	bool pool_late, pool_warned; /* pool_sync */
};

static int set_reserve(void **a, size_t *cap, size_t esz);
static void set_free(void *a); /* the run set's arrays (below) */

/* the report of the last seeded run (weft_sim_report_get) */
static pthread_mutex_t last_lock = PTHREAD_MUTEX_INITIALIZER;
static weft_sim_report last;
static bool have_last;

/* ---- randomness and the trace -------------------------------------------- */

static uint64_t splitmix(uint64_t *s)
{
	uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
	z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
	z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
	return z ^ (z >> 31);
}

static uint64_t rnd(struct weft__sim *s) { return splitmix(&s->rng); }
static uint64_t below(struct weft__sim *s, uint64_t n)
{
	return n ? rnd(s) % n : 0;
}

static void mix(struct weft__sim *s, uint64_t v)
{
	s->trace ^= v;
	s->trace *= 0x100000001B3ull;
	s->trace ^= s->trace >> 29;
}

static struct weft__sim *cur_sim(void)
{
	struct weft__rt *rt = atomic_load_explicit(&weft__rt_cur,
						   memory_order_acquire);
	return rt ? rt->sim : NULL;
}

uint64_t weft__sim_rand(uint64_t n)
{
	struct weft__sim *s = cur_sim();
	return s ? below(s, n) : 0;
}

bool weft__sim_fault_slow(int kind)
{
	struct weft__sim *s = cur_sim();
	/* the master thread only: another thread's draw would race */
	if (!s || !s->fault_p[kind] || !weft__worker_self())
		return false;
	if ((uint32_t)rnd(s) >= s->fault_p[kind])
		return false;
	s->rep.faults[kind]++;
	mix(s, 0xFA000000ull + (uint64_t)kind);
	return true;
}

/* Whether a short transfer is legal on fd: files, pipes, stream sockets
 * (not datagrams, eventfds, ...: cutting those changes their meaning). */
static bool stream_fd(int fd)
{
	struct stat st;
	if (fstat(fd, &st))
		return false;
	if (S_ISREG(st.st_mode) || S_ISFIFO(st.st_mode))
		return true;
	int type = 0;
	socklen_t len = sizeof type;
	return S_ISSOCK(st.st_mode) &&
	       !getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) &&
	       type == SOCK_STREAM;
}

bool weft__sim_sure(const struct io_uring_sqe *sqe)
{
	struct stat st;
	switch (sqe->opcode) {
	case IORING_OP_OPENAT:
	case IORING_OP_CLOSE:
	case IORING_OP_FSYNC:
	case IORING_OP_STATX:
	case IORING_OP_FALLOCATE:
	case IORING_OP_UNLINKAT:
	case IORING_OP_RENAMEAT:
	case IORING_OP_MKDIRAT:
		return true;
	case IORING_OP_READ:
	case IORING_OP_WRITE:
	case IORING_OP_READV:
	case IORING_OP_WRITEV:
		return !fstat(sqe->fd, &st) &&
		       (S_ISREG(st.st_mode) || S_ISBLK(st.st_mode));
	default:
		return false;
	}
}

size_t weft__sim_short(int fd, size_t n)
{
	if (n < 2 || !stream_fd(fd) || !weft__fault(WEFT_FAULT_SHORT))
		return n;
	return 1 + (size_t)weft__sim_rand(n - 1);
}

/* A preemption point (weft__sim_point): the calls that synchronize give
 * the seed a chance to switch fibers there, as another worker running at
 * the same time could have got in between. One in four, from a running
 * fiber that is not half-way into a park; never with one worker, where
 * nothing can get in between (a fiber runs until it suspends). */
void weft__sim_preempt(void)
{
	struct weft__worker *w = weft__worker_self();
	if (!w || !w->sim || !w->cur || w->rt->nworkers == 1)
		return;
	uint64_t pw = atomic_load_explicit(&w->cur->park, memory_order_relaxed);
	if (WEFT__PW_ST(pw) != WEFT__RUNNING || below(w->rt->sim, 4))
		return;
	w->rt->sim->preempting = true; /* not the program's yield (run_add) */
	weft_yield();
}

/* ---- set-up ----------------------------------------------------------- */

static const char *const fault_names[WEFT_FAULT_COUNT] = {
	"short", "reset", "nomem", "delay", "spurious"};

/* "kind=p,kind=p" with p a decimal in [0, 1]; "all=p"; a bare "p" = all */
static int parse_faults(const char *spec, uint32_t *p)
{
	char buf[256];
	size_t len = strlen(spec);
	if (len >= sizeof buf ||
	    (len && (spec[0] == ',' || spec[len - 1] == ',')) ||
	    strstr(spec, ",,"))
		return -EINVAL;
	strcpy(buf, spec);
	char *save = NULL;
	for (char *tok = strtok_r(buf, ",", &save); tok;
	     tok = strtok_r(NULL, ",", &save)) {
		char *eq = strchr(tok, '=');
		const char *name = eq ? tok : "all", *val = eq ? eq + 1 : tok;
		if (eq)
			*eq = 0;
		char *end;
		double v = strtod(val, &end);
		if (end == val || *end || !(v >= 0.0 && v <= 1.0))
			return -EINVAL;
		uint32_t q = v >= 1.0 ? UINT32_MAX : (uint32_t)(v * 4294967296.0);
		int k;
		for (k = 0; k < WEFT_FAULT_COUNT; k++)
			if (!strcmp(name, fault_names[k]))
				break;
		if (k < WEFT_FAULT_COUNT)
			p[k] = q;
		else if (!strcmp(name, "all"))
			for (k = 0; k < WEFT_FAULT_COUNT; k++)
				p[k] = q;
		else
			return -EINVAL;
	}
	return 0;
}

/* a seed: decimal digits, > 0 (WEFT_SEED, for weft_run and the explorer) */
int weft__sim_parse_seed(const char *e, uint64_t *out)
{
	uint64_t v = 0;
	if (!e || !*e)
		return -EINVAL;
	for (; *e; e++) {
		uint64_t d = (uint64_t)(*e - '0');
		if (*e < '0' || *e > '9' || v > (UINT64_MAX - d) / 10)
			return -EINVAL;
		v = v * 10 + d;
	}
	if (!v)
		return -EINVAL;
	*out = v;
	return 0;
}

int weft__sim_faults_check(const char *spec)
{
	uint32_t p[WEFT_FAULT_COUNT];
	return parse_faults(spec, p);
}

int weft__sim_new(struct weft__rt *rt, uint64_t seed, const char *faults,
		  unsigned pct)
{
	struct weft__sim *s = calloc(1, sizeof *s);
	if (!s)
		return -ENOMEM;
	if (faults && parse_faults(faults, s->fault_p)) {
		free(s);
		return -EINVAL;
	}
	s->seed = seed;
	s->rng = seed;
	s->trace = 0xCBF29CE484222325ull ^ seed;
	s->rep.seed = seed;
	s->pct = pct;
	const char *e = getenv("WEFT_PCT_STEPS");
	s->pct_steps = e && *e ? strtoull(e, NULL, 10) : 0;
	if (!s->pct_steps)
		s->pct_steps = PCT_STEPS;
	for (unsigned i = 1; i < pct; i++)
		s->pct_at[i] = 1 + below(s, s->pct_steps);
	s->nworkers = rt->nworkers;
	s->run = calloc(rt->nworkers, sizeof *s->run);
	bool ok = s->run &&
		  !set_reserve((void **)&s->inbox, &s->capin, sizeof *s->inbox) &&
		  !set_reserve((void **)&s->held, &s->capheld, sizeof *s->held);
	for (unsigned i = 0; ok && i < rt->nworkers; i++)
		ok = !set_reserve((void **)&s->run[i].e, &s->run[i].cap,
				  sizeof *s->run[i].e);
	if (ok && pct)
		ok = !set_reserve((void **)&s->pool, &s->cappool,
				  sizeof *s->pool) &&
		     !set_reserve((void **)&s->hprio, &s->caphp,
				  sizeof *s->hprio) &&
		     !set_reserve((void **)&s->hold, &s->capho,
				  sizeof *s->hold);
	s->npool = 1; /* index 0 means none */
	if (!ok) {
		for (unsigned i = 0; s->run && i < rt->nworkers; i++)
			set_free(s->run[i].e);
		set_free(s->pool);
		set_free(s->hprio);
		set_free(s->hold);
		set_free(s->inbox);
		set_free(s->held);
		free(s->run);
		free(s);
		return -ENOMEM;
	}
	pthread_mutex_init(&s->lock, NULL);
	pthread_cond_init(&s->cond, NULL);
	rt->sim = s;
	for (unsigned i = 0; i < rt->nworkers; i++) {
		rt->workers[i].sim = true;
		uint64_t x = seed ^ (0x51ED270B27ull * (i + 1));
		rt->workers[i].rng = splitmix(&x) | 1;
	}
	atomic_store(&weft__vclock, VCLOCK_START);
	atomic_store(&weft__sim_on, 1);
	return 0;
}

static void save_report(struct weft__sim *s)
{
	s->rep.trace = s->trace;
	s->rep.virtual_ns = atomic_load(&weft__vclock) - VCLOCK_START;
	s->rep.deadlock = s->deadlocks > 0;
	pthread_mutex_lock(&last_lock);
	last = s->rep;
	have_last = true;
	pthread_mutex_unlock(&last_lock);
}

void weft__sim_free(struct weft__rt *rt)
{
	struct weft__sim *s = rt->sim;
	if (!s)
		return;
	save_report(s);
	const char *e = getenv("WEFT_SIM_REPORT");
	if (e && *e && strcmp(e, "0")) {
		fprintf(stderr,
			"weft: seed %llu trace %016llx steps %llu steals %llu "
			"virtual %.6f s faults",
			(unsigned long long)s->seed,
			(unsigned long long)s->rep.trace,
			(unsigned long long)s->rep.steps,
			(unsigned long long)s->rep.steals,
			(double)s->rep.virtual_ns / 1e9);
		for (int k = 0; k < WEFT_FAULT_COUNT; k++)
			fprintf(stderr, " %s=%llu", fault_names[k],
				(unsigned long long)s->rep.faults[k]);
		fprintf(stderr, "%s\n", s->deadlocks ? " DEADLOCK" : "");
	}
	atomic_store(&weft__sim_on, 0);
	pthread_cond_destroy(&s->cond);
	pthread_mutex_destroy(&s->lock);
	for (unsigned i = 0; s->run && i < s->nworkers; i++)
		set_free(s->run[i].e);
	set_free(s->pool);
	set_free(s->hprio);
	set_free(s->hold);
	free(s->run);
	set_free(s->held);
	set_free(s->inbox);
	free(s);
	rt->sim = NULL;
}

int weft__sim_result(struct weft__rt *rt)
{
	return rt->sim && rt->sim->deadlocks ? -EDEADLK : 0;
}

int weft_sim_report_get(weft_sim_report *out)
{
	if (!out)
		return -EINVAL;
	struct weft__worker *w = weft__worker_self();
	if (w && w->rt->sim) { /* a fiber of the seeded run itself */
		struct weft__sim *s = w->rt->sim;
		*out = s->rep;
		out->trace = s->trace;
		out->virtual_ns = atomic_load(&weft__vclock) - VCLOCK_START;
		out->deadlock = s->deadlocks > 0;
		return 0;
	}
	pthread_mutex_lock(&last_lock);
	bool have = have_last;
	if (have)
		*out = last;
	pthread_mutex_unlock(&last_lock);
	return have ? 0 : -ENOENT;
}

/* ---- the run set ---------------------------------------------------------- */

/* The run set's arrays (each worker's queue, the inbox, held completions)
 * each live in one mapping reserved when the run starts (MAP_NORESERVE:
 * pages are committed as they are touched) and never moved: growing them
 * needs no new mapping, so a program that has used up its map entries (as
 * test_overflow does on purpose, with 30,000 fibers parked) can still
 * wake them all. A realloc there had to mremap, and the simulator died. */
#define SET_RESERVE (16u << 20) /* bytes: 699k entries of 24 (struct ent),
				  419k of PCT's 40 (struct pent) */

static int set_reserve(void **a, size_t *cap, size_t esz)
{
	void *p = mmap(NULL, SET_RESERVE, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (p == MAP_FAILED)
		return -ENOMEM;
	*a = p;
	*cap = SET_RESERVE / esz;
	return 0;
}

/* an array reserved by set_reserve must hold need entries */
static void room(size_t cap, size_t need)
{
	if (need > cap)
		weft__die("sim: run set over %zu entries", cap);
}

static void set_free(void *a)
{
	if (a)
		munmap(a, SET_RESERVE);
}

/* PCT priorities, in three bands (sim_prio 0: none yet):
 *   fresh     PRIO_FRESH + random, at first queueing, and when a yielder
 *             is picked again;
 *   dropped   PRIO_DROPPED + (d - k), by change point k (below every fresh
 *             one; a later change point drops below an earlier one);
 *   yielded   PRIO_YIELD - n for the n-th weft_yield of the run: below
 *             every fiber that has not yielded, the latest yielder lowest,
 *             so yielders take turns once nothing else can run.
 * A seeded preemption (weft__sim_preempt: a yield at one switch point in
 * four) is not the program's yield: its fiber draws a fresh priority.
 * The program's yielder used to draw one too: a fiber dropped by a
 * change point then stayed below every yielder, and a loop of trylock and
 * weft_yield waiting for that fiber's unlock never ended (test_sync's
 * mutex stress, seed 5001 at depth 3, hung for good). */
#define PRIO_FRESH (1ull << 62)
#define PRIO_DROPPED (1ull << 61)
#define PRIO_YIELD (1ull << 60)

static void pct_add(struct weft__sim *s, struct ent e);

static void run_add(struct weft__sim *s, weft_task *f, unsigned w, bool yield,
		    bool preempted)
{
	struct runq *q = &s->run[w];
	struct ent e = {f, w, yield, s->rep.steps};
	if (s->pct) {
		uint64_t *p = &weft__task_side(f)->sim_prio;
		if (yield && !preempted)
			*p = PRIO_YIELD - ++s->pct_yields;
		else if (!*p || preempted) /* a preemption redraws, as before */
			*p = PRIO_FRESH + (rnd(s) >> 2);
		pct_add(s, e); /* q holds a count only */
		q->n++;
	} else {
		room(q->cap, q->n + 1);
		q->e[q->n++] = e;
	}
	atomic_store_explicit(&q->len, q->n, memory_order_relaxed);
	s->n++;
	s->nyield += yield;
}

void weft__sim_push(struct weft__rt *rt, struct weft__worker *w, weft_task *f,
		    bool yield)
{
	struct weft__sim *s = rt->sim;
	if (w) {
		bool pre = yield && s->preempting;
		if (yield) /* the preemption's own push (a wake between keeps it) */
			s->preempting = false;
		run_add(s, f, w->index, yield, pre);
		return;
	}
	/* another thread: the inbox; the master takes it in at its next step */
	pthread_mutex_lock(&s->lock);
	room(s->capin, s->nin + 1);
	s->inbox[s->nin++] = (struct ent){f, 0, false, 0};
	pthread_cond_signal(&s->cond);
	pthread_mutex_unlock(&s->lock);
}

static void take_inbox(struct weft__rt *rt, struct weft__sim *s)
{
	pthread_mutex_lock(&s->lock);
	for (size_t i = 0; i < s->nin; i++) {
		mix(s, 0x1B000000ull ^ s->inbox[i].f->id);
		run_add(s, s->inbox[i].f, (unsigned)below(s, rt->nworkers),
			false, false);
	}
	s->nin = 0;
	pthread_mutex_unlock(&s->lock);
}

size_t weft__sim_queued(struct weft__rt *rt, unsigned i)
{
	return atomic_load_explicit(&rt->sim->run[i].len, memory_order_relaxed);
}

/* ---- PCT's run set ----------------------------------------------------------
 *
 * Under PCT every pick wants the runnable fiber of highest priority, or
 * the one queued longest ago (pct_best). A scan of the run set made a
 * pick O(n): test_steal's tree of 120,000 fibers (77,000 runnable at
 * once) spent 98% of its time there and ran for hours. So PCT keeps its
 * entries in a pool, indexed by two binary heaps: hprio by priority
 * (highest first; the older entry on a tie) and hold by queueing number
 * (oldest first). Each entry knows its place in both, so taking any
 * entry, or moving one whose priority changed, is O(log n). The workers'
 * queues then hold only their counts (q->n, for the metrics). The pick is
 * the one the scan made (priorities are distinct: random fresh draws, a
 * band's counters), except among fibers queued at the same step when the
 * fairness bound picks the longest-waiting: the scan took the first in
 * its arrays' order, the heap takes the first queued. With that bound
 * off, both gave the same trace for every seed of test_sync, test_chan
 * and test_cancel at depths 2 and 3 (seed 5003). test_steal at depth 2:
 * killed after 100 s before, 2.6 s now; test_sim's
 * test_pct_large_run_set: 76 s before, 1.7 s now. */

static inline struct pent *pent_at(struct weft__sim *s, uint32_t i)
{
	return &s->pool[i];
}

/* does pool entry a go above b in heap h (0: hprio, 1: hold)? */
static inline bool heap_above(struct weft__sim *s, int h, uint32_t a,
			      uint32_t b)
{
	struct pent *x = pent_at(s, a), *y = pent_at(s, b);
	if (h == 0) {
		uint64_t px = weft__task_side(x->e.f)->sim_prio;
		uint64_t py = weft__task_side(y->e.f)->sim_prio;
		if (px != py)
			return px > py;
	}
	return x->ord < y->ord;
}

static inline uint32_t *heap_arr(struct weft__sim *s, int h)
{
	return h == 0 ? s->hprio : s->hold;
}

static inline void heap_set(struct weft__sim *s, int h, size_t at, uint32_t i)
{
	heap_arr(s, h)[at] = i;
	if (h == 0)
		pent_at(s, i)->hp = (uint32_t)at;
	else
		pent_at(s, i)->ho = (uint32_t)at;
}

/* restore heap h (of n entries) around position at, either way */
static void heap_fix(struct weft__sim *s, int h, size_t n, size_t at)
{
	uint32_t *a = heap_arr(s, h);
	uint32_t i = a[at];
	while (at > 0 && heap_above(s, h, i, a[(at - 1) / 2])) {
		heap_set(s, h, at, a[(at - 1) / 2]);
		at = (at - 1) / 2;
	}
	for (;;) {
		size_t c = 2 * at + 1;
		if (c >= n)
			break;
		if (c + 1 < n && heap_above(s, h, a[c + 1], a[c]))
			c++;
		if (!heap_above(s, h, a[c], i))
			break;
		heap_set(s, h, at, a[c]);
		at = c;
	}
	heap_set(s, h, at, i);
}

/* heap h held n entries; take the one at position at */
static void heap_del(struct weft__sim *s, int h, size_t n, size_t at)
{
	uint32_t *a = heap_arr(s, h);
	if (at != n - 1) {
		heap_set(s, h, at, a[n - 1]);
		heap_fix(s, h, n - 1, at);
	}
}

static void pct_add(struct weft__sim *s, struct ent e)
{
	size_t n = s->n; /* entries before this one */
	uint32_t i = s->pfree;
	if (i) {
		s->pfree = pent_at(s, i)->hp;
	} else {
		room(s->cappool, s->npool + 1);
		i = (uint32_t)s->npool++;
	}
	room(s->caphp, n + 1);
	room(s->capho, n + 1);
	*pent_at(s, i) = (struct pent){.e = e, .ord = ++s->pct_ord};
	heap_set(s, 0, n, i);
	heap_fix(s, 0, n + 1, n);
	heap_set(s, 1, n, i);
	heap_fix(s, 1, n + 1, n);
}

/* take pool entry i out of the run set (s->n still counts it) */
static struct ent pct_take(struct weft__sim *s, uint32_t i)
{
	struct pent *p = pent_at(s, i);
	struct ent e = p->e;
	heap_del(s, 0, s->n, p->hp);
	heap_del(s, 1, s->n, p->ho);
	p->hp = s->pfree;
	s->pfree = i;
	return e;
}

/* the pick's entry: for PCT i is a pool index (pick, pct_best) */
static struct ent run_take(struct weft__sim *s, unsigned w, size_t i)
{
	struct runq *q = &s->run[w];
	struct ent e;
	if (s->pct) {
		e = pct_take(s, (uint32_t)i);
		q->n--;
	} else {
		e = q->e[i];
		q->e[i] = q->e[--q->n];
	}
	atomic_store_explicit(&q->len, q->n, memory_order_relaxed);
	s->n--;
	s->nyield -= e.yield;
	return e;
}

/* PCT: the runnable fiber of highest priority (the top of hprio); but one
 * that has waited in the run set more than PCT_STARVE_STEPS times the
 * horizon (WEFT_PCT_STEPS) runs first, the longest-waiting first (the
 * top of hold). Strict priorities are not fair: a fiber of low
 * priority never ran while others stayed runnable, and a program whose
 * progress needs it (main closing a channel that senders and receivers
 * loop on until it closes; a latecomer to a busy lock) ran for ever
 * (tests/test_chan.c test_close_races_sends hung at depth 2, seed 5000).
 * The change points all fall within the horizon, so the bugs PCT looks
 * for are looked for as before; past it, every runnable fiber gets a
 * step within the bound (Coyote's PCT turns fair past its step bound for
 * the same reason). Returns a pool index; the run set is not empty. */
#define PCT_STARVE_STEPS 100
static uint32_t pct_best(struct weft__sim *s)
{
	uint32_t old = s->hold[0];
	if (s->rep.steps - pent_at(s, old)->e.since >
	    PCT_STARVE_STEPS * s->pct_steps)
		return old;
	return s->hprio[0];
}

/* entry i's priority changed: its place in hprio */
static void pct_moved(struct weft__sim *s, uint32_t i)
{
	heap_fix(s, 0, s->n, pent_at(s, i)->hp);
}

/* Choose the next fiber (its queue *qw and index *qi; under PCT a pool
 * index) and the worker *rw it runs on. Random walk: a worker at random;
 * it runs one of its own queue, the newest (the LIFO slot) or any, or if
 * its queue is empty (or one time in eight), steals one from a random
 * victim's. PCT: the highest priority fiber, on its own worker or (one in
 * four) another. */
static void pick(struct weft__sim *s, unsigned *qw, size_t *qi, unsigned *rw)
{
	if (s->pct) {
		uint32_t i;
		for (unsigned k = 1; k < s->pct; k++)
			if (s->pct_at[k] == s->rep.steps + 1) {
				/* change point k: the fiber that would run
				 * now drops below every other */
				i = pct_best(s);
				weft__task_side(pent_at(s, i)->e.f)->sim_prio =
					PRIO_DROPPED + s->pct - k;
				pct_moved(s, i);
			}
		i = pct_best(s);
		uint64_t *p = &weft__task_side(pent_at(s, i)->e.f)->sim_prio;
		if (*p < PRIO_DROPPED) { /* a yielder's turn: it draws afresh */
			*p = PRIO_FRESH + (rnd(s) >> 2);
			pct_moved(s, i);
		}
		*qw = pent_at(s, i)->e.w;
		*qi = i;
		*rw = s->nworkers > 1 && below(s, 4) == 0
			      ? (unsigned)below(s, s->nworkers)
			      : *qw;
		return;
	}
	unsigned w = (unsigned)below(s, s->nworkers);
	*rw = w;
	/* steal: from a random victim with work, when w has none, and one
	 * time in eight anyway (a worker that is never idle in this
	 * schedule would otherwise never take from the others) */
	if (!s->run[w].n || below(s, 8) == 0) {
		unsigned v = (unsigned)below(s, s->nworkers);
		while (!s->run[v].n)
			v = (v + 1) % s->nworkers;
		w = v;
	}
	*qw = w;
	struct runq *q = &s->run[w];
	uint64_t r = rnd(s);
	if ((r & 1) && !q->e[q->n - 1].yield)
		*qi = q->n - 1; /* the LIFO slot: the newest runs next */
	else
		*qi = (size_t)((r >> 1) % q->n);
}

/* ---- events: timers, held completions, rings ----------------------------- */

static uint64_t vnow(void) { return atomic_load_explicit(&weft__vclock, memory_order_relaxed); }

static void fire_due(struct weft__rt *rt, struct weft__sim *s)
{
	uint64_t now = vnow();
	for (unsigned i = 0; i < rt->nworkers; i++) {
		struct weft__worker *w = &rt->workers[i];
		if (weft__timers_next(w) <= now) {
			weft__worker_set(w);
			weft__timers_fire(w, now);
		}
	}
	for (size_t i = 0; i < s->nheld;) {
		if (s->held[i].due > now) {
			i++;
			continue;
		}
		struct held h = s->held[i];
		memmove(&s->held[i], &s->held[i + 1],
			(s->nheld - i - 1) * sizeof *s->held);
		s->nheld--;
		weft__worker_set(h.w);
		weft__io_complete(h.op, h.res, h.flags);
	}
}

bool weft__sim_delay(struct weft__worker *w, struct weft__op *op, int res,
		     unsigned flags)
{
	struct weft__sim *s = w->rt->sim;
	if (!weft__fault(WEFT_FAULT_DELAY))
		return false;
	room(s->capheld, s->nheld + 1);
	op->held = true; /* no CQE will come: not a sure op from now */
	s->held[s->nheld++] = (struct held){w, op, res, flags,
					    vnow() + 1000 + below(s, DELAY_MAX_NS)};
	return true;
}

/* Submit and reap w's ring. File ops (sure ops) in flight are waited for
 * first: they complete by themselves, but whether one done by the kernel's
 * io-wq thread has completed at a given reap is up to the kernel, so a run
 * with file I/O did not always replay (test_fault_short: about 1 run in
 * 200 gave another trace). Waited for, each sure op completes at the step
 * of the reap after its submission, in every run. */
static void poll_ring(struct weft__worker *w)
{
	weft__worker_set(w);
	weft__ring_poll(w);
	/* bounded: an open of a FIFO is a sure op that waits for its peer,
	 * which may be a fiber of this run; after SURE_WAIT_MS it is left to
	 * complete when it does */
	uint64_t now = weft__clock_real();
	uint64_t until = now + SURE_WAIT_MS * 1000000ull;
	for (; w->sim_sure && now < until; now = weft__clock_real())
		weft__ring_wait(w, until - now);
}

/* A timer at or past FOREVER_NS is never due: a threaded run's monotonic
 * clock never gets there (292 years of uptime), and weft_sleep and
 * weft_deadline_push saturate "forever" at UINT64_MAX - 1. A jump there
 * fired such sleeps and deadlines, and the steps after it wrapped the
 * clock around to 0 (weft_now went backwards). Fibers that wait only on
 * such timers are deadlocked, as they would hang in threaded mode. */
#define FOREVER_NS (UINT64_MAX / 2)

static uint64_t next_event(struct weft__rt *rt, struct weft__sim *s)
{
	uint64_t next = UINT64_MAX;
	for (unsigned i = 0; i < rt->nworkers; i++) {
		uint64_t t = weft__timers_next(&rt->workers[i]);
		if (t < next && t < FOREVER_NS)
			next = t;
	}
	for (size_t i = 0; i < s->nheld; i++)
		if (s->held[i].due < next)
			next = s->held[i].due;
	return next;
}

static unsigned inflight(struct weft__rt *rt)
{
	unsigned n = 0;
	for (unsigned i = 0; i < rt->nworkers; i++)
		n += rt->workers[i].inflight;
	return n;
}

/* Wait up to ms of real time (UINT64_MAX: until something) for a
 * completion on any ring with ops in flight. True if anything became
 * runnable. */
static bool wait_io(struct weft__rt *rt, struct weft__sim *s, uint64_t ms)
{
	uint64_t until = ms == UINT64_MAX ? UINT64_MAX
					  : weft__clock_real() + ms * 1000000ull;
	for (;;) {
		unsigned busy = 0;
		for (unsigned i = 0; i < rt->nworkers; i++)
			busy += rt->workers[i].inflight != 0;
		for (unsigned i = 0; i < rt->nworkers; i++) {
			struct weft__worker *w = &rt->workers[i];
			if (!w->inflight)
				continue;
			weft__worker_set(w);
			/* one ring busy: wait on it; several: take turns */
			weft__ring_wait(w, busy == 1 ? 1000000ull : 200000ull);
		}
		take_inbox(rt, s);
		if (s->n || !busy)
			return s->n != 0;
		if (weft__clock_real() >= until)
			return false;
	}
}

/* The blocking pool: wait for it, so that a call's wake-up lands at a step
 * the seed fixes. A call that runs over POOL_WAIT_MS (it may be waiting
 * for a fiber) is left to finish when it does, as an outside event. */
static void pool_sync(struct weft__rt *rt, struct weft__sim *s)
{
	if (weft__blocking_quiesce(rt, s->pool_late ? 0 : POOL_WAIT_MS)) {
		s->pool_late = false;
		return;
	}
	if (!s->pool_late && !s->pool_warned) {
		fprintf(stderr,
			"weft: seed %llu: a blocking call ran over %d ms; its "
			"completion is an outside event from here (this run "
			"may not replay exactly)\n",
			(unsigned long long)s->seed, POOL_WAIT_MS);
		s->pool_warned = true;
	}
	s->pool_late = true;
}

/* weft_blocking, seeded: the call it just queued runs now, before the
 * fiber parks (as the master would wait for it at the next step). */
void weft__sim_pool_sync(struct weft__rt *rt)
{
	pool_sync(rt, rt->sim);
}

/* ---- deadlock ------------------------------------------------------------- */

static void deadlock(struct weft__rt *rt, struct weft__sim *s)
{
	if (s->deadlocks++)
		weft__die("sim (seed %llu): still deadlocked after cancelling "
			  "every fiber",
			  (unsigned long long)s->seed);
	mix(s, 0xDEAD10CCull);
	fprintf(stderr,
		"weft: all fibers parked, no timers, no I/O: deadlock "
		"(seed %llu, virtual time %.6f s)\n",
		(unsigned long long)s->seed,
		(double)(vnow() - VCLOCK_START) / 1e9);
	weft__worker_set(NULL);
	weft_dump(stderr);
	weft__worker_set(&rt->workers[0]);
	weft__begin_shutdown(rt); /* cancel all: they unwind and end */
}

/* Whether the process has a thread that may yet wake a fiber: one that is
 * not the master (the caller, which runs every worker), a blocking-pool or
 * monitor thread, or one of io_uring's own (iou-wrk-*). Asked only when
 * the run looks deadlocked. (ThreadSanitizer's background thread cannot be
 * told apart: under TSan a deadlock takes the 2 s.) */
static bool outside_threads(struct weft__rt *rt)
{
	DIR *d = opendir("/proc/self/task");
	if (!d)
		return true; /* cannot tell: assume one */
	unsigned n = 0;
	struct dirent *e;
	while ((e = readdir(d))) {
		if (e->d_name[0] == '.')
			continue;
		char path[64], comm[32] = "";
		snprintf(path, sizeof path, "/proc/self/task/%.20s/comm",
			 e->d_name);
		int fd = open(path, O_RDONLY | O_CLOEXEC);
		if (fd >= 0) {
			ssize_t k = read(fd, comm, sizeof comm - 1);
			(void)k;
			close(fd);
		}
		if (strncmp(comm, "iou-", 4))
			n++;
	}
	closedir(d);
	unsigned threads, idle, queued;
	weft__blocking_stats(rt, &threads, &idle, &queued);
	return n > 1 + threads + (rt->mon ? 1u : 0u);
}

/* Nothing is runnable. Make something runnable, or conclude. False when
 * the run is over. */
static bool idle(struct weft__rt *rt, struct weft__sim *s)
{
	for (unsigned i = 0; i < rt->nworkers; i++)
		poll_ring(&rt->workers[i]);
	fire_due(rt, s);
	take_inbox(rt, s);
	if (s->n)
		return true;
	if (weft__try_terminate(rt)) /* the foreign spawn pair (sched.c) */
		return false;
	pool_sync(rt, s);
	bool pool_quiet = !s->pool_late;
	take_inbox(rt, s);
	if (s->n)
		return true;
	uint64_t next = next_event(rt, s);
	/* file ops complete by themselves: wait for them, however long;
	 * the rest (a recv, an accept) may wait on a peer that is itself
	 * waiting for the clock: give them WAIT_REAL_MS */
	unsigned sure = 0;
	for (unsigned i = 0; i < rt->nworkers; i++)
		sure += rt->workers[i].sim_sure;
	if (inflight(rt) &&
	    wait_io(rt, s, next == UINT64_MAX || sure ? UINT64_MAX
						       : WAIT_REAL_MS))
		return true;
	if (next != UINT64_MAX) {
		if (next > vnow())
			atomic_store(&weft__vclock, next);
		mix(s, 0x7100000000000000ull ^ next);
		fire_due(rt, s);
		return true;
	}
	if (inflight(rt))
		return true; /* completions came but woke no one: look again */
	/* other threads may still wake someone (weft_spawn, a channel) */
	long grace = outside_threads(rt) ? FOREIGN_GRACE_LONG_MS
					 : FOREIGN_GRACE_MS;
	pthread_mutex_lock(&s->lock);
	if (!s->nin) {
		struct timespec ts;
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_nsec += grace * 1000000l;
		ts.tv_sec += ts.tv_nsec / 1000000000l;
		ts.tv_nsec %= 1000000000l;
		pthread_cond_timedwait(&s->cond, &s->lock, &ts);
	}
	bool got = s->nin != 0;
	pthread_mutex_unlock(&s->lock);
	if (got || !pool_quiet)
		return true; /* a blocking call still runs: it may wake one */
	if (weft__try_terminate(rt))
		return false; /* every fiber ended (main first: shutdown) */
	deadlock(rt, s);
	return true;
}

/* ---- the master loop -------------------------------------------------------- */


void weft__sim_loop(struct weft__rt *rt)
{
	struct weft__sim *s = rt->sim;
	for (;;) {
		if (atomic_load(&rt->terminate))
			break;
		pool_sync(rt, s);
		take_inbox(rt, s);
		atomic_store_explicit(&weft__vclock,
				      vnow() + STEP_NS_MIN + below(s, STEP_NS_SPAN),
				      memory_order_relaxed);
		uint64_t r = rnd(s);
		if (r & 1)
			fire_due(rt, s);
		if (((r >> 1) & 7) == 0)
			poll_ring(&rt->workers[(r >> 4) % rt->nworkers]);
		if (s->n && s->nyield == s->n && ++s->yield_streak > YIELD_STREAK &&
		    !inflight(rt)) {
			/* only yielders: a polling loop waits for time to pass */
			uint64_t next = next_event(rt, s);
			if (next != UINT64_MAX && next > vnow()) {
				atomic_store(&weft__vclock, next);
				mix(s, 0x7200000000000000ull ^ next);
				fire_due(rt, s);
			}
			s->yield_streak = 0;
		}
		if (!s->n) {
			s->yield_streak = 0;
			if (!idle(rt, s))
				break;
			continue;
		}
		if (s->nyield != s->n)
			s->yield_streak = 0;
		unsigned qw, wi;
		size_t qi;
		pick(s, &qw, &qi, &wi);
		struct ent e = run_take(s, qw, qi);
		if (wi != qw) { /* the metrics see a steal of one */
			s->rep.steals++;
			WEFT__BUMP(rt->workers[wi].m_steals, 1);
			WEFT__BUMP(rt->workers[wi].m_stolen, 1);
		}
		s->rep.steps++;
		mix(s, e.f->id);
		mix(s, ((uint64_t)wi << 40) ^ vnow());
		struct weft__worker *w = &rt->workers[wi];
		weft__worker_set(w);
		weft__run_on(w, e.f);
		if (w->io_dirty && below(s, 2))
			poll_ring(w);
	}
	weft__worker_set(&rt->workers[0]);
}

/* ---- the explorer ---------------------------------------------------------- */

/* the command line of this process, for the replay hint; arguments with
 * anything but [A-Za-z0-9_./=:,+-] in single quotes */
static void print_cmdline(FILE *out)
{
	FILE *f = fopen("/proc/self/cmdline", "r");
	if (!f)
		return;
	char arg[4096];
	size_t n = 0;
	bool first = true;
	int c;
	while ((c = fgetc(f)) != EOF) {
		if (c && n < sizeof arg - 1) {
			arg[n++] = (char)c;
			continue;
		}
		if (c)
			continue; /* too long: cut */
		arg[n] = 0;
		bool plain = n > 0;
		for (size_t i = 0; i < n; i++)
			if (!strchr("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
				    "0123456789_./=:,+-", arg[i]))
				plain = false;
		fputs(first ? "" : " ", out);
		first = false;
		if (plain) {
			fputs(arg, out);
		} else {
			fputc('\'', out);
			for (size_t i = 0; i < n; i++)
				if (arg[i] == '\'')
					fputs("'\\''", out);
				else
					fputc(arg[i], out);
			fputc('\'', out);
		}
		n = 0;
	}
	fclose(f);
}

static int run_one(const weft_config *cfg, uint64_t seed, void *(*fn)(void *),
		   void *arg)
{
	weft_config c;
	if (cfg)
		c = *cfg;
	else
		weft_config_init(&c);
	c.seed = seed;
	void *res = NULL;
	int r = weft_run(&c, fn, arg, &res);
	if (r == -EDEADLK)
		return 3;
	if (r)
		return 2;
	return res ? 1 : 0;
}

int64_t weft_sim_explore(const weft_config *cfg, uint64_t first,
			 uint64_t count, unsigned timeout_ms,
			 void *(*fn)(void *), void *arg)
{
	if (!fn || !first || !count || first + count < first ||
	    first > INT64_MAX || first + count - 1 > INT64_MAX)
		return -EINVAL;
	if (cfg && (cfg->pct > 64 ||
		    (cfg->faults && weft__sim_faults_check(cfg->faults))))
		return -EINVAL;
	if (atomic_load(&weft__rt_cur)) /* its children could not run one */
		return -EBUSY;
	const char *e = getenv("WEFT_SEED");
	if (e && *e) { /* the replay: that seed, here */
		uint64_t seed;
		if (weft__sim_parse_seed(e, &seed) || seed > INT64_MAX)
			return -EINVAL;
		return run_one(cfg, seed, fn, arg) ? (int64_t)seed : 0;
	}
	if (!timeout_ms)
		timeout_ms = 60000;
	for (uint64_t seed = first; seed - first < count; seed++) {
		fflush(NULL);
		pid_t pid = fork();
		if (pid < 0)
			return -errno;
		if (pid == 0) {
			setpgid(0, 0); /* a timeout kills what it started too */
			int rc = run_one(cfg, seed, fn, arg);
			/* _exit skips stdio: what the run printed to a file
			 * or pipe (a CI log) would be lost */
			fflush(NULL);
			_exit(rc);
		}
		setpgid(pid, pid);
		int st = 0;
		uint64_t until = weft__clock_real() +
				 (uint64_t)timeout_ms * 1000000ull;
		pid_t got;
		while ((got = waitpid(pid, &st, WNOHANG)) == 0 &&
		       weft__clock_real() < until) {
			struct timespec ts = {0, 1000000};
			nanosleep(&ts, NULL);
		}
		const char *why = NULL;
		char buf[64];
		if (got == 0) {
			kill(-pid, SIGKILL);
			waitpid(pid, &st, 0);
			snprintf(buf, sizeof buf, "ran over %u ms", timeout_ms);
			why = buf;
		} else if (got < 0) {
			return -errno;
		} else if (WIFSIGNALED(st)) {
			snprintf(buf, sizeof buf, "killed by signal %d (%s)",
				 WTERMSIG(st), strsignal(WTERMSIG(st)));
			why = buf;
		} else if (WEXITSTATUS(st) == 1) {
			why = "the test returned failure";
		} else if (WEXITSTATUS(st) == 3) {
			why = "deadlock";
		} else if (WEXITSTATUS(st)) {
			snprintf(buf, sizeof buf, "weft_run failed (exit %d)",
				 WEXITSTATUS(st));
			why = buf;
		}
		if (why) {
			fprintf(stderr, "weft: seed %llu failed: %s\n"
					"weft: replay: WEFT_SEED=%llu ",
				(unsigned long long)seed, why,
				(unsigned long long)seed);
			/* what else the run read from the environment */
			static const char *const vars[] = {
				"WEFT_WORKERS", "WEFT_FAULTS", "WEFT_PCT",
				"WEFT_PCT_STEPS", "WEFT_STACK_SIZE"};
			for (size_t i = 0; i < sizeof vars / sizeof *vars; i++) {
				const char *v = getenv(vars[i]);
				if (v && *v)
					fprintf(stderr, "%s='%s' ", vars[i], v);
			}
			print_cmdline(stderr);
			fputc('\n', stderr);
			return (int64_t)seed;
		}
	}
	return 0;
}
