/* dump.c — seeing inside a running runtime: the fiber dump, the slow-fiber
 * watchdog, the dump signal and the never-joined report.
 *
 * What a fiber publishes (all relaxed atomics, read racily: a dump is a
 * snapshot of a moving system and says so)
 *   id, name, fn        stored at spawn / weft_task_set_name;
 *   spawn site          in the slab's side area (weft__task_side): cold;
 *   wait, wait_ms       weft__wait_note, just before every park_begin: the
 *                       kind of wait, an io_uring opcode and a 48-bit
 *                       object (a pointer, an fd, a task id), and the
 *                       coarse-clock ms when the wait began; park_commit
 *                       clears it when the wait is over;
 *   last_worker         at every resume (0xffff: never ran).
 * What a worker publishes: `running` (the fiber on it now, NULL in its
 * scheduler; release at every switch) and m_polls, its resume count.
 * Together the park word (state), `running` and these fields give the
 * dump's line for each fiber. Cost on the hot paths: a few stores to lines
 * the switch touches anyway, and a load of the wait clock per park (the
 * coarse clock as the workers last read it between fibers: internal.h);
 * nothing per switch beyond the stores. Measured figures are in
 * docs/design.md.
 *
 * The watchdog ("sampling, not timing"): no timestamp is taken per
 * switch. A monitor thread wakes every period (slow_ms / 4, at most
 * 100 ms) and reads each worker's (running, m_polls). A pair seen unchanged
 * since it was first seen slow_ms ago means one fiber has run that long
 * without giving up its worker: it is reported once, while it still runs.
 * The first sighting comes after the fiber started, so the measured time
 * is a lower bound and a fiber that yields within slow_ms is never
 * reported. A yield with nothing else to run does not switch, but bumps
 * m_polls (fiber.c), so it counts as a yield here too.
 *
 * The dump signal: a handler that writes one byte to a non-blocking pipe
 * (async-signal-safe, no malloc, no locks); the monitor thread reads it and
 * dumps to stderr with ordinary stdio. The same thread runs the watchdog;
 * it exists only when one of the two is on, and weft_run stops it (a byte
 * 'q' and a flag) before it tears the runtime down.
 *
 * Rejected: a timestamp per switch (a clock read is ~20 ns here, as much
 * as three switches); signalfd (the signal must then be blocked in every
 * thread, including the user's own); dumping from the handler (stdio and
 * dladdr are not async-signal-safe).
 */
#include <dlfcn.h>
#include <link.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <string.h>
#include <unistd.h>

#include "internal.h"

_Atomic uint32_t weft__wait_clock; /* the wait notes' clock (internal.h) */

/* ---- symbols ------------------------------------------------------------- */

/* "sym+0xoff" when the dynamic symbol table names the function that holds
 * addr (its size covers addr), else "file+0xoff" (addr2line -e file
 * 0xoff), else the raw address. Functions of an executable have names only
 * if it was linked with -rdynamic. */
static void symbolize(char *buf, size_t n, const void *addr)
{
	Dl_info di;
	const ElfW(Sym) *sym = NULL;
	if (!addr) {
		snprintf(buf, n, "?");
		return;
	}
	if (!dladdr1(addr, &di, (void **)&sym, RTLD_DL_SYMENT)) {
		snprintf(buf, n, "%p", addr);
		return;
	}
	uintptr_t a = (uintptr_t)addr;
	if (di.dli_sname && di.dli_saddr && sym &&
	    a - (uintptr_t)di.dli_saddr < (sym->st_size ? sym->st_size : 1)) {
		uintptr_t off = a - (uintptr_t)di.dli_saddr;
		if (off)
			snprintf(buf, n, "%s+0x%" PRIxPTR, di.dli_sname, off);
		else
			snprintf(buf, n, "%s", di.dli_sname);
		return;
	}
	const char *file = di.dli_fname ? strrchr(di.dli_fname, '/') : NULL;
	file = file ? file + 1 : di.dli_fname;
	if (file && *file)
		snprintf(buf, n, "%s+0x%" PRIxPTR, file,
			 a - (uintptr_t)di.dli_fbase);
	else
		snprintf(buf, n, "%p", addr);
}

/* a name as printed between quotes: "" when none; quotes and control
 * characters become '?', and it is cut at 63 bytes */
static void quote_name(char *buf, size_t n, const char *name)
{
	size_t i = 0;
	if (name)
		for (; name[i] && i + 1 < n && i < 63; i++) {
			unsigned char ch = (unsigned char)name[i];
			buf[i] = ch < 0x20 || ch == '"' || ch == 0x7f ? '?'
								      : (char)ch;
		}
	buf[i] = 0;
}

static const char *const io_ops[] = {
	[IORING_OP_NOP] = "nop",
	[IORING_OP_READV] = "readv",
	[IORING_OP_WRITEV] = "writev",
	[IORING_OP_FSYNC] = "fsync",
	[IORING_OP_READ_FIXED] = "read_fixed",
	[IORING_OP_WRITE_FIXED] = "write_fixed",
	[IORING_OP_POLL_ADD] = "poll",
	[IORING_OP_SENDMSG] = "sendmsg",
	[IORING_OP_RECVMSG] = "recvmsg",
	[IORING_OP_TIMEOUT] = "timeout",
	[IORING_OP_ACCEPT] = "accept",
	[IORING_OP_CONNECT] = "connect",
	[IORING_OP_FALLOCATE] = "fallocate",
	[IORING_OP_OPENAT] = "openat",
	[IORING_OP_CLOSE] = "close",
	[IORING_OP_STATX] = "statx",
	[IORING_OP_READ] = "read",
	[IORING_OP_WRITE] = "write",
	[IORING_OP_SEND] = "send",
	[IORING_OP_RECV] = "recv",
	[IORING_OP_OPENAT2] = "openat2",
	[IORING_OP_SPLICE] = "splice",
	[IORING_OP_SHUTDOWN] = "shutdown",
};

/* what a wait word says, e.g. "chan recv 0x55d0c3a0", "io read fd 7" */
static void describe_wait(char *buf, size_t n, uint64_t wait)
{
	unsigned kind = WEFT__WAIT_KIND(wait), op = WEFT__WAIT_OP(wait);
	uint64_t obj = WEFT__WAIT_OBJ(wait);
	char sym[160];
	switch (kind) {
	case WEFT__W_SLEEP:
		snprintf(buf, n, "sleep %" PRIu64 " ms", obj);
		break;
	case WEFT__W_JOIN:
		snprintf(buf, n, "join task %" PRIu64, obj);
		break;
	case WEFT__W_WAIT_ANY:
		snprintf(buf, n, "wait-any of %" PRIu64 " tasks", obj);
		break;
	case WEFT__W_CHAN_SEND:
	case WEFT__W_CHAN_RECV:
		snprintf(buf, n, "chan %s 0x%" PRIx64,
			 kind == WEFT__W_CHAN_SEND ? "send" : "recv", obj);
		break;
	case WEFT__W_SELECT:
		snprintf(buf, n, "select of %" PRIu64 " cases", obj);
		break;
	case WEFT__W_MUTEX:
	case WEFT__W_COND:
	case WEFT__W_SEM:
	case WEFT__W_WG:
	case WEFT__W_EVENT:
	case WEFT__W_GROUP: {
		static const char *const names[] = {
			[WEFT__W_MUTEX] = "mutex", [WEFT__W_COND] = "cond",
			[WEFT__W_SEM] = "sem",	   [WEFT__W_WG] = "wg",
			[WEFT__W_EVENT] = "event", [WEFT__W_GROUP] = "group",
		};
		snprintf(buf, n, "%s 0x%" PRIx64, names[kind], obj);
		/* seeded runs dump from the master, nothing runs meanwhile:
		 * the mutex is there (its waiter is), and who holds it is
		 * the other half of a lock-order deadlock */
		if (kind == WEFT__W_MUTEX &&
		    atomic_load_explicit(&weft__sim_on, memory_order_relaxed)) {
			weft_mutex *m = (weft_mutex *)(uintptr_t)obj;
			weft_task *o = __atomic_load_n(&m->_owner,
						       __ATOMIC_RELAXED);
			size_t l = strlen(buf);
			if (o && l < n)
				snprintf(buf + l, n - l,
					 " held by fiber %" PRIu64, o->id);
		}
		break;
	}
	case WEFT__W_ONCE:
		snprintf(buf, n, "once 0x%" PRIx64, obj);
		break;
	case WEFT__W_SIGNAL: { /* "signal SIGTERM or 1 more" */
		const char *abbrev = sigabbrev_np((int)obj); /* NULL: none */
		char num[24];
		snprintf(num, sizeof num, "%" PRIu64, obj);
		snprintf(buf, n, "signal %s%s", abbrev ? "SIG" : "",
			 abbrev ? abbrev : num);
		size_t l = strlen(buf);
		if (op > 1 && l < n)
			snprintf(buf + l, n - l, " or %u more", op - 1);
		break;
	}
	case WEFT__W_RWLOCK:
		snprintf(buf, n, "rwlock 0x%" PRIx64 " to %s", obj,
			 op ? "write" : "read");
		break;
	case WEFT__W_BLOCKING:
		symbolize(sym, sizeof sym, (const void *)(uintptr_t)obj);
		snprintf(buf, n, "blocking pool %s", sym);
		break;
	case WEFT__W_IO: {
		const char *name = op < sizeof io_ops / sizeof io_ops[0]
					   ? io_ops[op]
					   : NULL;
		if (name)
			snprintf(buf, n, "io %s fd %d", name, (int)(uint32_t)obj);
		else
			snprintf(buf, n, "io op%u fd %d", op, (int)(uint32_t)obj);
		break;
	}
	default:
		snprintf(buf, n, "unknown");
	}
}

/* ---- the dump ------------------------------------------------------------ */

#define BT_MAX 16

struct snap {
	weft_task *f;
	uint64_t id, park, wait;
	const char *name;
	void *fn;
	const void *site;
	uint32_t flags, wait_ms;
	unsigned shield; /* shield scopes open */
	unsigned worker; /* last worker, 0xffff: never ran */
	int running_on;  /* worker it runs on now, -1 */
	unsigned nbt;
	const void *bt[BT_MAX];
};

struct walk {
	struct weft__rt *rt;
	weft_task **running; /* per worker */
	struct snap *v;
	size_t n, cap;
	bool failed;
	bool unjoined; /* collect only never-joined tasks (the report) */
};

/* Return addresses of a parked fiber, from its saved context: the resume
 * address, then the frame-pointer chain, each frame checked to lie within
 * its stack and above the last (no fault, no loop, whatever the stack
 * holds). Only where frame pointers are kept (WEFT_FRAME_POINTERS: the
 * build adds -fno-omit-frame-pointer) and not under a sanitizer (the
 * stack is the fiber's; ASan poisons it and TSan sees the race). */
static unsigned backtrace_of(struct weft__rt *rt, weft_task *f,
			     const void **out)
{
#if defined(WEFT_FRAME_POINTERS) && !defined(WEFT__ASAN) &&                  \
	!defined(WEFT__TSAN) && defined(__x86_64__)
	uintptr_t lo = (uintptr_t)f->ctx.stack_lo, sp = (uintptr_t)f->ctx.sp;
	uintptr_t hi = lo + rt->stacks.usable;
	unsigned n = 0;
	if (!lo || sp < lo || sp + 64 > hi)
		return 0;
	/* the switch frame: [48] rbp, [56] resume address */
	uintptr_t fp = ((uintptr_t *)sp)[6];
	out[n++] = (const void *)((uintptr_t *)sp)[7];
	uintptr_t last = sp;
	while (n < BT_MAX && fp > last && fp + 16 <= hi && !(fp & 7)) {
		uintptr_t ret = ((uintptr_t *)fp)[1];
		if (ret < 4096)
			break;
		out[n++] = (const void *)ret;
		last = fp;
		fp = ((uintptr_t *)fp)[0];
	}
	return n;
#else
	(void)rt;
	(void)f;
	(void)out;
	return 0;
#endif
}

static void walk_one(void *p, void *ctx)
{
	struct walk *wk = ctx;
	weft_task *f = p;
	/* acquire: pairs with spawn's seq_cst store of F_ALLOC */
	uint32_t fl = atomic_load_explicit(&f->flags, memory_order_acquire);
	if (!(fl & WEFT__F_ALLOC) || wk->failed)
		return;
	if (wk->unjoined &&
	    (fl & (WEFT__F_JOINING | WEFT__F_DETACHED | WEFT__F_MAIN)))
		return;
	if (wk->n == wk->cap) {
		size_t cap = wk->cap ? 2 * wk->cap : 64;
		struct snap *v = realloc(wk->v, cap * sizeof *v);
		if (!v) {
			wk->failed = true;
			return;
		}
		wk->v = v;
		wk->cap = cap;
	}
	struct snap *s = &wk->v[wk->n++];
	s->f = f;
	s->flags = fl;
	s->id = __atomic_load_n(&f->id, __ATOMIC_RELAXED);
	s->name = __atomic_load_n(&f->name, __ATOMIC_RELAXED);
	s->fn = (void *)__atomic_load_n(&f->fn, __ATOMIC_RELAXED);
	s->site = __atomic_load_n(&weft__task_side(f)->spawn_site,
				  __ATOMIC_RELAXED);
	s->park = atomic_load_explicit(&f->park, memory_order_acquire);
	s->wait = atomic_load_explicit(&f->wait, memory_order_relaxed);
	s->wait_ms = atomic_load_explicit(&f->wait_ms, memory_order_relaxed);
	s->worker = atomic_load_explicit(&f->last_worker, memory_order_relaxed);
	s->shield = atomic_load_explicit(&f->shield, memory_order_relaxed);
	s->running_on = -1;
	s->nbt = 0;
	if (wk->running)
		for (unsigned i = 0; i < wk->rt->nworkers; i++)
			if (wk->running[i] == f)
				s->running_on = (int)i;
	if (!wk->unjoined && WEFT__PW_ST(s->park) == WEFT__PARKED &&
	    !(fl & WEFT__F_EXITED) && s->running_on < 0)
		s->nbt = backtrace_of(wk->rt, f, s->bt);
}

static int cmp_id(const void *a, const void *b)
{
	const struct snap *x = a, *y = b;
	return x->id < y->id ? -1 : x->id > y->id;
}

/* Snapshot the live tasks of rt (all, or the never-joined ones), sorted by
 * id. Returns the count or -ENOMEM; *out is malloc'd. */
static ssize_t collect(struct weft__rt *rt, bool unjoined, struct snap **out)
{
	struct walk wk = {.rt = rt, .unjoined = unjoined};
	if (!unjoined) {
		wk.running = calloc(rt->nworkers, sizeof *wk.running);
		if (!wk.running)
			return -ENOMEM;
		for (unsigned i = 0; i < rt->nworkers; i++)
			/* acquire: pairs with the switch's release */
			wk.running[i] = atomic_load_explicit(
				&rt->workers[i].running, memory_order_acquire);
	}
	weft__slab_walk(&rt->fibers, walk_one, &wk);
	free(wk.running);
	if (wk.failed) {
		free(wk.v);
		return -ENOMEM;
	}
	if (wk.n)
		qsort(wk.v, wk.n, sizeof *wk.v, cmp_id);
	*out = wk.v;
	return (ssize_t)wk.n;
}

static void print_snap(FILE *out, const struct snap *s, uint32_t now_ms)
{
	char name[64], fn[160], site[160], what[200], worker[16];
	quote_name(name, sizeof name, s->name);
	symbolize(fn, sizeof fn, s->fn);
	symbolize(site, sizeof site, s->site);
	if (s->worker == 0xffff)
		snprintf(worker, sizeof worker, "-");
	else
		snprintf(worker, sizeof worker, "%u", s->worker);
	int st = WEFT__PW_ST(s->park);
	if (s->flags & WEFT__F_EXITED)
		snprintf(what, sizeof what, "finished, not yet joined");
	else if (s->running_on >= 0)
		snprintf(what, sizeof what, "running on worker %d",
			 s->running_on);
	else if (st == WEFT__PARKED || st == WEFT__PARKING) {
		char desc[180];
		describe_wait(desc, sizeof desc, s->wait);
		snprintf(what, sizeof what, "waiting %" PRIu32 " ms on %s",
			 now_ms - s->wait_ms, desc);
	} else
		snprintf(what, sizeof what, "runnable");
	fprintf(out, "fiber %" PRIu64 " \"%s\": %s, worker %s, fn %s, "
		     "spawned at %s%s%s\n",
		s->id, name, what, worker, fn, site,
		(s->flags & WEFT__F_CANCEL) ? ", cancelled" : "",
		s->shield ? ", shielded" : "");
	for (unsigned i = 0; i < s->nbt; i++) {
		symbolize(fn, sizeof fn, s->bt[i]);
		fprintf(out, "    #%u %s\n", i, fn);
	}
}

static int dump_rt(struct weft__rt *rt, FILE *out)
{
	struct snap *v = NULL;
	ssize_t n = collect(rt, false, &v);
	if (n < 0)
		return (int)n;
	uint64_t up = weft__clock() - rt->start_ns;
	uint32_t now_ms = weft__coarse_ms();
	fprintf(out,
		"weft: dump of %zd fibers on %u workers, %" PRIu64
		".%03" PRIu64 " s after start\n",
		n, rt->nworkers, up / 1000000000u, up / 1000000u % 1000u);
	for (ssize_t i = 0; i < n; i++)
		print_snap(out, &v[i], now_ms);
	free(v);
	fflush(out);
	return ferror(out) ? -EIO : (int)n;
}

int weft_dump(FILE *out)
{
	if (!out)
		return -EINVAL;
	struct weft__worker *w = weft__worker_self();
	bool foreign = !w;
	if (foreign)
		weft__foreign_enter();
	struct weft__rt *rt = atomic_load(&weft__rt_cur);
	int r = rt ? dump_rt(rt, out) : -ESRCH;
	if (foreign)
		weft__foreign_exit();
	return r;
}

/* ---- the never-joined report --------------------------------------------- */

/* At the end of weft_run (every fiber finished, every thread gone): a task
 * still allocated that nobody took (JOINING, DETACHED) was forgotten. The
 * main fiber is not a task anyone holds; group children are detached. */
void weft__report_unjoined(struct weft__rt *rt)
{
	struct snap *v = NULL;
	ssize_t n = collect(rt, true, &v);
	for (ssize_t i = 0; i < n; i++) {
		char name[64], site[160];
		quote_name(name, sizeof name, v[i].name);
		symbolize(site, sizeof site, v[i].site);
		fprintf(stderr,
			"weft: task %" PRIu64 " \"%s\" spawned at %s was never "
			"joined or detached\n",
			v[i].id, name, site);
	}
	free(v);
}

/* ---- the monitor thread: watchdog and dump signal ------------------------ */

struct wstate {
	weft_task *t;
	uint64_t polls, since;
	bool reported;
};

struct weft__monitor {
	pthread_t thread;
	int rd, wr; /* the self-pipe */
	_Atomic int stop;
	unsigned period_ms;
	struct sigaction old;
	bool sig_set;
	struct wstate *ws;
};

/* the pipe the dump signal's handler writes to, -1 when none */
static _Atomic int sig_fd = -1;
/* handlers between their load of sig_fd and the end of their write */
static _Atomic int sig_in_handler;

/* Stop the handler writing: -1 for the next ones, then wait for those
 * that loaded the fd before (their write must not reach a descriptor
 * reused after our close) */
static void sig_fd_retire(void)
{
	atomic_store(&sig_fd, -1);
	while (atomic_load(&sig_in_handler))
		sched_yield();
}

static void on_dump_signal(int sig)
{
	(void)sig;
	int e = errno;
	/* seq_cst: count in, then load the fd; weft__monitor_stop stores -1,
	 * then waits for the count before it closes the pipe */
	atomic_fetch_add(&sig_in_handler, 1);
	int fd = atomic_load(&sig_fd);
	if (fd >= 0) {
		char c = 'd';
		ssize_t r = write(fd, &c, 1); /* full pipe: a dump is due anyway */
		(void)r;
	}
	atomic_fetch_sub(&sig_in_handler, 1);
	errno = e;
}

static void watch(struct weft__rt *rt, struct weft__monitor *m)
{
	/* real time: in a seeded run the virtual clock stands still while a
	 * fiber runs without calling weft, the very case to report */
	uint64_t now = weft__clock_real();
	uint64_t limit = (uint64_t)rt->slow_ms * 1000000u;
	for (unsigned i = 0; i < rt->nworkers; i++) {
		struct weft__worker *w = &rt->workers[i];
		struct wstate *s = &m->ws[i];
		/* acquire: pairs with the switch's release; polls is stored
		 * before it, so it is at least that resume's count */
		weft_task *t = atomic_load_explicit(&w->running,
						    memory_order_acquire);
		uint64_t polls = atomic_load_explicit(&w->m_polls,
						      memory_order_relaxed);
		if (!t || t != s->t || polls != s->polls) {
			*s = (struct wstate){.t = t, .polls = polls,
					     .since = now};
			continue;
		}
		if (s->reported || now - s->since < limit)
			continue;
		s->reported = true;
		uint64_t id = __atomic_load_n(&t->id, __ATOMIC_RELAXED);
		char name[64], line[200];
		quote_name(name, sizeof name,
			   __atomic_load_n(&t->name, __ATOMIC_RELAXED));
		int len = snprintf(line, sizeof line,
				   "weft: slow fiber %" PRIu64
				   " \"%s\" on worker %u: running %" PRIu64
				   " ms without yielding\n",
				   id, name, i, (now - s->since) / 1000000u);
		/* one write: lines from several threads do not interleave */
		if (len > 0) {
			ssize_t r = write(2, line, (size_t)len < sizeof line
							   ? (size_t)len
							   : sizeof line - 1);
			(void)r;
		}
	}
}

static void *monitor_main(void *p)
{
	struct weft__rt *rt = p;
	struct weft__monitor *m = rt->mon;
	for (;;) {
		struct pollfd pfd = {.fd = m->rd, .events = POLLIN};
		int n = poll(&pfd, 1, rt->slow_ms ? (int)m->period_ms : -1);
		bool dump = false;
		if (n > 0) {
			char buf[64];
			ssize_t k = read(m->rd, buf, sizeof buf);
			dump = k > 0 && memchr(buf, 'd', (size_t)k);
		}
		if (atomic_load(&m->stop))
			break;
		if (dump)
			dump_rt(rt, stderr);
		if (rt->slow_ms)
			watch(rt, m);
	}
	return NULL;
}

int weft__monitor_start(struct weft__rt *rt)
{
	if (!rt->slow_ms && !rt->dump_signal)
		return 0;
	struct weft__monitor *m = calloc(1, sizeof *m);
	if (!m)
		return -ENOMEM;
	m->ws = calloc(rt->nworkers, sizeof *m->ws);
	int fds[2];
	if (!m->ws || pipe2(fds, O_CLOEXEC | O_NONBLOCK)) {
		int err = m->ws ? -errno : -ENOMEM;
		free(m->ws);
		free(m);
		return err;
	}
	m->rd = fds[0];
	m->wr = fds[1];
	m->period_ms = rt->slow_ms / 4;
	if (m->period_ms < 1)
		m->period_ms = 1;
	if (m->period_ms > 100)
		m->period_ms = 100;
	rt->mon = m;
	int err = 0;
	if (rt->dump_signal) {
		atomic_store(&sig_fd, m->wr);
		struct sigaction sa;
		memset(&sa, 0, sizeof sa);
		sa.sa_handler = on_dump_signal;
		sa.sa_flags = SA_RESTART;
		sigemptyset(&sa.sa_mask);
		if (sigaction(rt->dump_signal, &sa, &m->old)) {
			err = -errno;
		} else {
			m->sig_set = true;
			atomic_fetch_or(&weft__sig_installed, WEFT__SIG_DUMP);
		}
	}
	if (!err) {
		int r = pthread_create(&m->thread, NULL, monitor_main, rt);
		err = -r;
	}
	if (err) {
		if (m->sig_set) {
			sigaction(rt->dump_signal, &m->old, NULL);
			atomic_fetch_and(&weft__sig_installed, ~WEFT__SIG_DUMP);
		}
		sig_fd_retire();
		close(m->rd);
		close(m->wr);
		free(m->ws);
		free(m);
		rt->mon = NULL;
	}
	return err;
}

void weft__monitor_stop(struct weft__rt *rt)
{
	struct weft__monitor *m = rt->mon;
	if (!m)
		return;
	if (m->sig_set) {
		sigaction(rt->dump_signal, &m->old, NULL);
		atomic_fetch_and(&weft__sig_installed, ~WEFT__SIG_DUMP);
	}
	sig_fd_retire();
	atomic_store(&m->stop, 1);
	char c = 'q';
	/* a full pipe already wakes the thread, which then sees stop */
	ssize_t r = write(m->wr, &c, 1);
	(void)r;
	pthread_join(m->thread, NULL);
	close(m->rd);
	close(m->wr);
	free(m->ws);
	free(m);
	rt->mon = NULL;
}
