/* runtime.c — weft_run: start the workers, run main_fn, shut down.
 *
 * Start: the calling thread becomes worker 0; workers 1..n-1 are threads.
 * Each worker creates its own ring on its own thread (SINGLE_ISSUER), then
 * all meet at a barrier; if any failed, all leave and weft_run returns that
 * error. main_fn runs as the first fiber, queued on worker 0.
 *
 * Shutdown: when main_fn returns, the runtime marks itself shutting down and
 * cancels every live fiber (fiber.c walks the slab); fibers spawned from then
 * on are born cancelled. Workers keep running until no fiber is alive; the
 * last one to go idle sees the live count at 0 and tells all to terminate.
 */

#include <ctype.h>
#include <limits.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stddef.h>
#include <string.h>
#include <time.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <linux/membarrier.h>

#include "internal.h"

#ifdef WEFT__TSAN
#include <sanitizer/tsan_interface.h>
#endif

struct weft__rt *_Atomic weft__rt_cur;
_Atomic unsigned weft__foreign_busy;
static atomic_int running;

void weft_config_init(weft_config *cfg)
{
	if (cfg)
		memset(cfg, 0, sizeof *cfg);
}

uint64_t weft_now(void)
{
	/* seeded: a preemption point, and each read moves virtual time a
	 * little, so a fiber (or a blocking call) that spins on the clock
	 * without yielding gets there */
	if (__builtin_expect(atomic_load_explicit(&weft__sim_on,
						  memory_order_relaxed), 0)) {
		weft__sim_preempt();
		return atomic_fetch_add_explicit(&weft__vclock, 20,
						 memory_order_relaxed) +
		       20;
	}
	return weft__clock_real();
}

unsigned weft_worker_id(void)
{
	struct weft__worker *w = weft__worker_self();
	return w ? w->index : WEFT_NO_WORKER;
}

unsigned weft_worker_count(void)
{
	struct weft__rt *rt = atomic_load(&weft__rt_cur);
	return rt ? rt->nworkers : 0;
}

/* strict unsigned decimal with optional k/m/g suffix (powers of 1024) */
static int parse_size(const char *s, uint64_t *out)
{
	if (!s || !isdigit((unsigned char)*s))
		return -EINVAL;
	uint64_t v = 0;
	while (isdigit((unsigned char)*s)) {
		if (v > UINT64_MAX / 10)
			return -EINVAL;
		v = v * 10 + (uint64_t)(*s++ - '0');
	}
	unsigned shift = 0;
	switch (*s) {
	case 'k': case 'K': shift = 10; s++; break;
	case 'm': case 'M': shift = 20; s++; break;
	case 'g': case 'G': shift = 30; s++; break;
	}
	if (*s || (shift && v > (UINT64_MAX >> shift)))
		return -EINVAL;
	*out = v << shift;
	return 0;
}

/* the observability knobs (dump.c): config first, then the environment */
static int debug_config(weft_config *c)
{
	const char *e;
	uint64_t v;
	if (c->slow_ms == 0 && (e = getenv("WEFT_SLOW_MS")) && *e) {
		if (parse_size(e, &v) || v > UINT_MAX)
			return -EINVAL;
		c->slow_ms = (unsigned)v;
	}
	if (c->dump_signal == 0 && (e = getenv("WEFT_DUMP_SIGNAL")) && *e) {
		if (!strncmp(e, "SIG", 3))
			e += 3;
		if (!strcmp(e, "QUIT"))
			c->dump_signal = SIGQUIT;
		else if (!strcmp(e, "USR1"))
			c->dump_signal = SIGUSR1;
		else if (!strcmp(e, "USR2"))
			c->dump_signal = SIGUSR2;
		else if (!parse_size(e, &v) && v < (uint64_t)SIGRTMIN)
			c->dump_signal = (int)v;
		else
			return -EINVAL;
	}
	/* the signals weft_signal_watch refuses, the fault signals among
	 * them: the handler returns and the faulting instruction runs again,
	 * forever */
	if (c->dump_signal < -1 || c->dump_signal >= SIGRTMIN ||
	    (c->dump_signal > 0 && weft__signal_refused(c->dump_signal)))
		return -EINVAL;
	if (c->unjoined_report == 0 && (e = getenv("WEFT_UNJOINED_REPORT")) &&
	    *e) {
		if (!strcmp(e, "0"))
			c->unjoined_report = -1;
		else if (!strcmp(e, "1"))
			c->unjoined_report = 1;
		else
			return -EINVAL;
	}
	if (c->unjoined_report < -1 || c->unjoined_report > 1)
		return -EINVAL;
	return 0;
}

static void *worker_thread(void *p);

static int worker_setup(struct weft__worker *w)
{
	weft__worker_set(w);
	/* seeded: one thread hosts every worker; one alternate stack */
	int r = w->sim && w->index ? 0 : weft__altstack_push(&w->altstack_save);
	if (r)
		return r;
	/* the scheduler context runs on this thread's own stack */
	pthread_attr_t a;
	if (pthread_getattr_np(pthread_self(), &a) == 0) {
		void *lo;
		size_t sz;
		pthread_attr_getstack(&a, &lo, &sz);
		w->sched.stack_lo = lo;
#ifdef WEFT__ASAN
		w->sched.stack_size = sz;
#endif
		(void)sz;
		pthread_attr_destroy(&a);
	}
#ifdef WEFT__TSAN
	w->sched.tsan_fiber = __tsan_get_current_fiber();
#endif
	return weft__ring_init(w);
}

/* The ring outlives the thread: foreign callers may still post wake-ups
 * to its eventfd until weft_run has drained them (then it closes rings). */
static void worker_teardown(struct weft__worker *w)
{
	weft__ring_thread_exit(w);
	weft__altstack_pop(w->altstack_save);
	w->altstack_save = NULL;
	weft__worker_set(NULL);
}

/* The start gate: every worker arrives once its ring exists; a worker that
 * could not be created is taken off the count (a pthread barrier cannot be
 * lowered while threads wait on it). */
static void gate_arrive(struct weft__rt *rt)
{
	pthread_mutex_lock(&rt->gate_lock);
	rt->gate_arrived++;
	pthread_cond_broadcast(&rt->gate_cond);
	while (rt->gate_arrived < rt->gate_expected)
		pthread_cond_wait(&rt->gate_cond, &rt->gate_lock);
	pthread_mutex_unlock(&rt->gate_lock);
}

static void gate_expect(struct weft__rt *rt, unsigned n)
{
	pthread_mutex_lock(&rt->gate_lock);
	rt->gate_expected = n;
	pthread_cond_broadcast(&rt->gate_cond);
	pthread_mutex_unlock(&rt->gate_lock);
}

static int start_failed(struct weft__rt *rt)
{
	for (unsigned i = 0; i < rt->nworkers; i++)
		if (rt->workers[i].start_err)
			return rt->workers[i].start_err;
	return 0;
}

static void *worker_thread(void *p)
{
	struct weft__worker *w = p;
	w->start_err = worker_setup(w);
	gate_arrive(w->rt);
	if (!start_failed(w->rt))
		weft__worker_loop(w);
	worker_teardown(w);
	return NULL;
}

/* A seeded run: every worker lives on this thread and the master loop
 * (sim.c) picks what runs where. */
static int sim_run(struct weft__rt *rt, void *(*main_fn)(void *), void *arg)
{
	int err = 0;
	for (unsigned i = 0; i < rt->nworkers && !err; i++) {
		struct weft__worker *w = &rt->workers[i];
		err = w->start_err = worker_setup(w);
		/* simulated workers never park: busy all along (metrics) */
		atomic_store_explicit(&w->m_busy_since, weft__clock(),
				      memory_order_release);
	}
	struct weft__worker *w0 = &rt->workers[0];
	weft__worker_set(w0);
	if (!err && !weft__spawn_flags(main_fn, arg, WEFT__F_MAIN,
				       __builtin_return_address(0)))
		err = -ENOMEM;
	if (!err) {
		weft__sim_loop(rt);
		err = weft__sim_result(rt);
	}
	worker_teardown(w0);
	return err;
}

static void rt_free(struct weft__rt *rt)
{
	if (rt->workers) {
		for (unsigned i = 0; i < rt->nworkers; i++)
			weft__timers_fini(&rt->workers[i].timers);
		free(rt->workers);
	}
	weft__slab_fini(&rt->fibers);
	weft__stacks_fini(&rt->stacks);
	weft__idle_fini(&rt->idle);
	weft__inject_fini(&rt->inject);
	pthread_mutex_destroy(&rt->gate_lock);
	pthread_cond_destroy(&rt->gate_cond);
	free(rt);
}

/* Register for membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED) (Linux 4.14),
 * once per process: weft__begin_shutdown then orders every thread's
 * spawns with one system call, and weft_spawn needs no fence of its own.
 * False where the kernel or a seccomp filter refuses it. */
static bool membarrier_register(void)
{
	static _Atomic int state; /* 0 unknown, 1 registered, -1 refused */
	int st = atomic_load(&state);
	if (st)
		return st > 0;
	long cmds = syscall(SYS_membarrier, MEMBARRIER_CMD_QUERY, 0, 0);
	bool ok = cmds > 0 &&
		  (cmds & MEMBARRIER_CMD_PRIVATE_EXPEDITED) &&
		  syscall(SYS_membarrier,
			  MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED, 0, 0) == 0;
	atomic_store(&state, ok ? 1 : -1);
	return ok;
}

int weft_run(const weft_config *cfg, void *(*main_fn)(void *), void *arg,
	     void **result)
{
	weft_config c;
	weft_config_init(&c);
	if (cfg)
		c = *cfg;
	if (!main_fn)
		return -EINVAL;
	/* deterministic simulation (sim.c): config first, then the env */
	const char *e;
	uint64_t v;
	if (c.seed == 0 && (e = getenv("WEFT_SEED")) && *e &&
	    weft__sim_parse_seed(e, &c.seed))
		return -EINVAL;
	if (!c.faults && (e = getenv("WEFT_FAULTS")) && *e)
		c.faults = e;
	if (c.faults && !*c.faults)
		c.faults = NULL; /* "": none */
	if (c.pct == 0 && (e = getenv("WEFT_PCT")) && *e) {
		if (parse_size(e, &v) || v > 64)
			return -EINVAL;
		c.pct = (unsigned)v;
	}
	if (c.pct > 64 || (c.faults && weft__sim_faults_check(c.faults)))
		return -EINVAL;
	if ((c.faults || c.pct) && !c.seed) {
		/* faults and PCT are seeded: pick one, and say which */
		c.seed = (weft__clock_real() ^ (uint64_t)getpid() << 32) %
				 1000000000ull +
			 1;
		fprintf(stderr, "weft: WEFT_SEED=%llu\n",
			(unsigned long long)c.seed);
	}
	if (c.workers == 0) {
		const char *e = getenv("WEFT_WORKERS");
		uint64_t v;
		if (e && *e) {
			if (parse_size(e, &v) || v == 0 ||
			    v > WEFT__MAX_WORKERS)
				return -EINVAL;
			c.workers = (unsigned)v;
		} else if (c.seed) {
			/* seeded: not the CPU count, so that a seed replays
			 * the same on every machine */
			c.workers = WEFT__SIM_WORKERS;
		} else {
			long n = sysconf(_SC_NPROCESSORS_ONLN);
			c.workers = n > 0 ? (unsigned)n : 1;
			if (c.workers > WEFT__MAX_WORKERS)
				c.workers = WEFT__MAX_WORKERS;
		}
	}
	if (c.workers > WEFT__MAX_WORKERS)
		return -EINVAL;
	if (c.stack_size == 0) {
		const char *e = getenv("WEFT_STACK_SIZE");
		uint64_t v;
		c.stack_size = WEFT__STACK_DEFAULT;
		if (e && *e) {
			if (parse_size(e, &v))
				return -EINVAL;
			c.stack_size = (size_t)v;
		}
	}
	if (c.stack_size < WEFT__STACK_MIN || c.stack_size > WEFT__STACK_MAX)
		return -EINVAL;
	int dr = debug_config(&c);
	if (dr)
		return dr;
	if (c.ring_entries == 0)
		c.ring_entries = 256;
	if (c.ring_entries < 4) /* an op and its linked timeout go in one submit */
		c.ring_entries = 4;
	if (c.ring_entries > 32768)
		return -EINVAL;
	if (c.blocking_threads == 0) {
		const char *e = getenv("WEFT_BLOCKING_THREADS");
		uint64_t v;
		c.blocking_threads = 64;
		if (e && *e) {
			if (parse_size(e, &v) || v == 0 || v > 4096)
				return -EINVAL;
			c.blocking_threads = (unsigned)v;
		}
	}
	if (c.blocking_threads > 4096)
		return -EINVAL;
	if (c.blocking_queue == 0)
		c.blocking_queue = 4096;
	if (c.conn_buffers == 0)
		c.conn_buffers = 1024;
	if (c.conn_buffer_size == 0)
		c.conn_buffer_size = 4096;
	if (c.conn_buffers > 32768 || (c.conn_buffers & (c.conn_buffers - 1)) ||
	    c.conn_buffer_size > (1u << 20))
		return -EINVAL;
	if (c.blocking_queue > (1u << 20))
		return -EINVAL;
	/* stack release (stack.c, "Release"): no config field, so that the
	 * struct keeps its layout; off in seeded runs (their steps would
	 * depend on when the coarse clock ticks) */
	uint32_t decay_ms = 1000;
	if ((e = getenv("WEFT_STACK_DECAY_MS")) && *e) {
		if (parse_size(e, &v) || !isdigit((unsigned char)e[strlen(e) - 1]) ||
		    v > 86400000)
			return -EINVAL;
		decay_ms = (uint32_t)v;
	}
	if (c.seed)
		decay_ms = 0;

	if (atomic_exchange(&running, 1))
		return -EBUSY;

	int err = -ENOMEM;
	struct weft__rt *rt = calloc(1, sizeof *rt);
	if (!rt)
		goto out_running;
	rt->nworkers = c.workers;
	rt->membarrier = membarrier_register();
	rt->ring_entries = c.ring_entries;
	rt->slow_ms = c.slow_ms;
	rt->dump_signal = c.dump_signal > 0 ? c.dump_signal : 0;
	rt->unjoined_report = c.unjoined_report >= 0;
	rt->start_ns = weft__clock();
	weft__wait_clock_tick(); /* not a past run's (internal.h) */
	rt->blocking_threads = c.blocking_threads;
	rt->blocking_queue = c.blocking_queue;
	rt->conn_buffers = c.conn_buffers;
	rt->conn_buffer_size = c.conn_buffer_size;
	weft__inject_init(&rt->inject);
	/* a free task's arg and result are nobody's (a stale handle's
	 * calls look at flags, a stale waker at the park word) */
	weft__slab_init(&rt->fibers, sizeof(weft_task),
			offsetof(weft_task, next), offsetof(weft_task, arg),
			sizeof(struct weft__task_side));
	pthread_mutex_init(&rt->gate_lock, NULL);
	pthread_cond_init(&rt->gate_cond, NULL);
	rt->gate_expected = c.workers;
	weft__stacks_init(&rt->stacks, c.stack_size, decay_ms);
	rt->fpctl = weft__ctx_fpctl();
	if (weft__idle_init(&rt->idle, rt->nworkers))
		goto out_rt;
	if (posix_memalign((void **)&rt->workers, WEFT__CACHELINE,
			   rt->nworkers * sizeof(struct weft__worker)))
		goto out_rt;
	memset(rt->workers, 0, rt->nworkers * sizeof(struct weft__worker));
	for (unsigned i = 0; i < rt->nworkers; i++) {
		struct weft__worker *w = &rt->workers[i];
		w->index = i;
		w->rt = rt;
		w->rng = 0x9E3779B97F4A7C15ull * (i + 1) ^ weft__clock();
		w->efd = -1;
		weft__dq_init(&w->dq);
		w->dq.solo = rt->nworkers == 1;
		w->dq.lazy = rt->nworkers > 1 && rt->membarrier;
		w->dq.idle_state = &rt->idle.state;
		w->dq.search_mask = 0xffffu; /* idle.c: state's low half */
		weft__timers_init(&w->timers);
	}
	if ((err = weft__guard_handler_install()))
		goto out_rt;
	if ((err = weft__blocking_init(rt)))
		goto out_rt;
	if ((err = weft__monitor_start(rt))) {
		weft__blocking_fini(rt);
		goto out_rt;
	}

	if (c.seed && (err = weft__sim_new(rt, c.seed, c.faults, c.pct))) {
		weft__monitor_stop(rt);
		weft__blocking_fini(rt);
		goto out_rt;
	}
	if (rt->sim) /* virtual time from here on */
		rt->start_ns = weft__clock();

	struct weft__worker *w0 = &rt->workers[0];
	/* publish before any thread starts (acquire in weft_spawn) */
	atomic_store_explicit(&weft__rt_cur, rt, memory_order_release);
	if (rt->sim) {
		err = sim_run(rt, main_fn, arg);
		goto ended;
	}
	unsigned started = 1;
	err = 0;
	for (; started < rt->nworkers; started++) {
		struct weft__worker *w = &rt->workers[started];
		int r = pthread_create(&w->thread, NULL, worker_thread, w);
		if (r) {
			err = -r;
			break;
		}
	}
	if (err) {
		for (unsigned i = started; i < rt->nworkers; i++)
			rt->workers[i].start_err = err;
		gate_expect(rt, started);
	}
	w0->start_err = worker_setup(w0);
	if (!w0->start_err && !err) {
		weft__worker_set(w0);
		if (!weft__spawn_flags(main_fn, arg, WEFT__F_MAIN,
				       __builtin_return_address(0)))
			w0->start_err = -ENOMEM;
	}
	gate_arrive(rt);
	err = start_failed(rt);
	if (!err)
		weft__worker_loop(w0);
	worker_teardown(w0);
	for (unsigned i = 1; i < started; i++)
		pthread_join(rt->workers[i].thread, NULL);
ended:
	/* foreign callers: a thread that entered before this store may still
	 * be using rt; one that enters after it sees NULL. seq_cst on both
	 * sides (weft__foreign_enter, then its load of weft__rt_cur). Before
	 * the pool and the monitor go: weft_metrics_get reads the pool under
	 * its lock, and a reader still inside would lock a freed mutex. */
	atomic_store(&weft__rt_cur, NULL);
	while (atomic_load(&weft__foreign_busy))
		sched_yield();
	weft__monitor_stop(rt);
	weft__blocking_fini(rt);
	weft__signal_fini(); /* before the rings close their eventfds */
	/* main_fn's fiber got no stack: nothing ran (weft/runtime.h) */
	if (!err && rt->main_nostack)
		err = -ENOMEM;
	if ((!err || err == -EDEADLK) && result)
		*result = rt->main_result;
	if (!err && rt->unjoined_report)
		weft__report_unjoined(rt);
	for (unsigned i = 0; i < rt->nworkers; i++)
		weft__ring_fini(&rt->workers[i]);
out_rt:
	weft__sim_free(rt);
	rt_free(rt);
out_running:
	atomic_store(&running, 0);
	return err;
}

const char *weft_strerror(int err)
{
	if (err == INT_MIN)
		return "unknown error";
	if (err < 0)
		err = -err;
	switch (err) {
	case 0: return "success";
	case EINVAL: return "invalid argument";
	case ECANCELED: return "operation cancelled";
	case ETIMEDOUT: return "deadline expired";
	case ENOMEM: return "out of memory";
	case EPIPE: return "broken pipe, or channel closed";
	case EBUSY: return "busy (lock held, or a runtime already running)";
	case EALREADY: return "task already finished";
	case ENOTSUP: return "not supported";
	case EBADF: return "bad file descriptor";
	case ECONNREFUSED: return "connection refused";
	case ECONNRESET: return "connection reset by peer";
	case EAGAIN: return "resource temporarily unavailable";
	case ENOSYS: return "io_uring not available in this kernel";
	case EPERM: return "operation not permitted";
	default: {
		const char *d = strerrordesc_np(err);
		return d ? d : "unknown error";
	}
	}
}
