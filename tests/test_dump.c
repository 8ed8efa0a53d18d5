/* Description: fiber names, weft_dump (a fiber blocked on each kind of wait
 * shows the right state and how long it has waited; a shielded one says
 * so), the dump signal, the slow-fiber watchdog (fires
 * for a spinning fiber, once per stretch, not for one that yields) and the
 * never-joined report (exactly the tasks nobody joined or detached).
 * Reports go to stderr, so those tests run in a forked child whose stderr
 * the parent reads (run_in_child). Fibers record; asserts run after. */
#define _GNU_SOURCE /* memfd_create */
#include <pthread.h>
#include <stdbool.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>

#include "testutil.h"

/* not static: with -rdynamic (tests/CMakeLists.txt) the dump names them;
 * not cloned either (gcc -O3 makes a local dt_spawn_named.constprop.N) */
#if defined(__GNUC__) && !defined(__clang__)
#define DT_KEEP __attribute__((noinline, noipa))
#else
#define DT_KEEP __attribute__((noinline))
#endif
DT_KEEP weft_task *dt_spawn_named(void *(*fn)(void *), void *arg,
						   const char *name);
void *dt_nop(void *arg);
void *dt_hold(void *arg);

weft_task *dt_spawn_named(void *(*fn)(void *), void *arg, const char *name)
{
	weft_task *t = weft_spawn(fn, arg);
	if (t)
		weft_task_set_name(t, name);
	return t;
}

void *dt_nop(void *arg) { return arg; }

static char *dump_buf;
static size_t dump_len;
static int dump_ret;

static void assert_line_has(const char *dump, const char *name,
			    const char *want)
{
	char line[512];
	if (!dump_line_of(dump, name, line, sizeof line))
		fail_msg("no line for \"%s\" in the dump:\n%s", name, dump);
	if (!strstr(line, want))
		fail_msg("line for \"%s\" lacks \"%s\": %s", name, want, line);
}

static void assert_line_lacks(const char *dump, const char *name,
			      const char *what)
{
	char line[512];
	if (dump_line_of(dump, name, line, sizeof line) && strstr(line, what))
		fail_msg("line for \"%s\" has \"%s\": %s", name, what, line);
}

/* ---- misuse ------------------------------------------------------------------- */

static void *names_main(void *arg)
{
	(void)arg;
	CHECK_EQ(weft_task_set_name(NULL, "me"), 0);
	CHECK(strcmp(weft_task_name(NULL), "me") == 0);
	weft_task *t = weft_spawn(dt_nop, NULL);
	CHECK(weft_task_name(t) == NULL);
	CHECK_EQ(weft_task_set_name(t, "child"), 0);
	CHECK(strcmp(weft_task_name(t), "child") == 0);
	CHECK_EQ(weft_join(t, NULL), 0);
	CHECK_EQ(weft_task_set_name(t, "stale"), -EINVAL); /* freed */
	/* no signal is taken by default */
	struct sigaction sa;
	sigaction(SIGQUIT, NULL, &sa);
	CHECK(sa.sa_handler == SIG_DFL);
	sigaction(SIGUSR1, NULL, &sa);
	CHECK(sa.sa_handler == SIG_DFL);
	return NULL;
}

static void dump_misuse(void **state)
{
	(void)state;
	assert_int_equal(weft_dump(stderr), -ESRCH);
	assert_int_equal(weft_dump(NULL), -EINVAL);
	assert_int_equal(weft_task_set_name(NULL, "x"), -EINVAL);
	assert_null(weft_task_name(NULL));
	run(1, names_main, NULL);
}

/* ---- every kind of wait ----------------------------------------------------------- */

static weft_chan *c_recv, *c_send, *c_sel1, *c_sel2;
static weft_mutex mtx, mtx2;
static weft_cond cond;
static weft_sem sem;
static weft_wg wg;
static weft_event ev;
static weft_rwlock rwl;
static weft_group *grp;
static int pfd[2];
static atomic_int pool_in, pool_release;
static weft_task *target, *target2;
static char want[32][160];

static void *w_sleep(void *a) { (void)a; weft_sleep(60 * SEC); return NULL; }
static void *w_event(void *a) { (void)a; weft_event_wait(&ev); return NULL; }
static int w_event_child(void *a) { (void)a; return weft_event_wait(&ev); }
static void *w_join(void *a) { (void)a; weft_join(target, NULL); return NULL; }
static void *w_wait_any(void *a)
{
	(void)a;
	weft_wait_any(&target2, 1);
	return NULL;
}
static void *w_recv(void *a)
{
	(void)a;
	int x;
	weft_chan_recv(c_recv, &x);
	return NULL;
}
static void *w_send(void *a)
{
	(void)a;
	int x = 2;
	weft_chan_send(c_send, &x);
	return NULL;
}
static void *w_select(void *a)
{
	(void)a;
	int x, y;
	weft_select_case cs[2] = {{c_sel1, WEFT_RECV, &x, 0},
				  {c_sel2, WEFT_RECV, &y, 0}};
	weft_select(cs, 2, 0);
	return NULL;
}
static void *w_mutex(void *a)
{
	(void)a;
	if (weft_mutex_lock(&mtx) == 0)
		weft_mutex_unlock(&mtx);
	return NULL;
}
static void *w_cond(void *a)
{
	(void)a;
	weft_mutex_lock(&mtx2);
	weft_cond_wait(&cond, &mtx2);
	weft_mutex_unlock(&mtx2);
	return NULL;
}
static void *w_sem(void *a) { (void)a; weft_sem_acquire(&sem); return NULL; }
static void *w_wg(void *a) { (void)a; weft_wg_wait(&wg); return NULL; }
static void *w_group(void *a) { (void)a; weft_group_wait(grp); return NULL; }
void *dt_hold(void *a)
{
	(void)a;
	atomic_store(&pool_in, 1);
	while (!atomic_load(&pool_release))
		usleep(1000);
	return NULL;
}
static void *w_blocking(void *a)
{
	(void)a;
	weft_blocking(dt_hold, NULL, NULL);
	return NULL;
}
static void *w_rwlock(void *a)
{
	(void)a;
	if (weft_rwlock_rdlock(&rwl) == 0)
		weft_rwlock_unlock(&rwl);
	return NULL;
}
static void *w_shielded(void *a)
{
	(void)a;
	weft_shield s;
	weft_shield_push(&s);
	weft_event_wait(&ev); /* the cancel at the end does not end it */
	weft_shield_pop(&s);
	return NULL;
}
static void *w_signal(void *a)
{
	(void)a;
	static const int sigs[] = {SIGUSR1, SIGUSR2};
	weft_signal_wait(sigs, 2);
	return NULL;
}
static void *w_io(void *a)
{
	(void)a;
	char c;
	weft_read(pfd[0], &c, 1, -1);
	return NULL;
}

static const struct {
	const char *name;
	void *(*fn)(void *);
} waiters[] = {
	{"sleep", w_sleep},	{"join", w_join},   {"wait-any", w_wait_any},
	{"recv", w_recv},	{"send", w_send},   {"select", w_select},
	{"mutex", w_mutex},	{"cond", w_cond},   {"sem", w_sem},
	{"wg", w_wg},		{"event", w_event}, {"group", w_group},
	{"blocking", w_blocking}, {"io", w_io},
	{"rwlock", w_rwlock},	{"shielded", w_shielded},
	{"signal", w_signal},
};
#define NW (sizeof waiters / sizeof waiters[0])

static void *states_main(void *arg)
{
	(void)arg;
	weft_task_set_name(NULL, "main");
	c_recv = weft_chan_new(1, sizeof(int));
	c_send = weft_chan_new(1, sizeof(int));
	c_sel1 = weft_chan_new(0, sizeof(int));
	c_sel2 = weft_chan_new(0, sizeof(int));
	int one = 1;
	CHECK_EQ(weft_chan_try_send(c_send, &one), 0); /* now full */
	weft_mutex_init(&mtx);
	weft_mutex_init(&mtx2);
	weft_cond_init(&cond);
	weft_sem_init(&sem, 0);
	weft_wg_init(&wg);
	weft_wg_add(&wg, 1);
	weft_event_init(&ev);
	grp = weft_group_new();
	CHECK_EQ(weft_group_spawn(grp, w_event_child, NULL), 0);
	CHECK_EQ(weft_mutex_lock(&mtx), 0);
	weft_rwlock_init(&rwl);
	CHECK_EQ(weft_rwlock_wrlock(&rwl), 0);
	target = dt_spawn_named(w_event, NULL, "target");
	target2 = dt_spawn_named(w_event, NULL, "target2");
	weft_task *t[NW];
	for (size_t i = 0; i < NW; i++)
		t[i] = dt_spawn_named(waiters[i].fn, NULL, waiters[i].name);
	weft_task *fin = dt_spawn_named(dt_nop, NULL, "finished");
	/* one worker: each yield runs every queued fiber once */
	for (int i = 0; i < 50; i++)
		weft_yield();
	CHECK_EQ(wait_flag(&pool_in), 0);
	weft_sleep(20 * MS);
	weft_task *rn = dt_spawn_named(dt_nop, NULL, "runnable");

	snprintf(want[0], 160, " ms on sleep 60000 ms, worker 0, fn ");
	snprintf(want[1], 160, " ms on join task %llu,",
		 (unsigned long long)weft_task_id(target));
	snprintf(want[2], 160, " ms on wait-any of 1 tasks,");
	snprintf(want[3], 160, " ms on chan recv %p,", (void *)c_recv);
	snprintf(want[4], 160, " ms on chan send %p,", (void *)c_send);
	snprintf(want[5], 160, " ms on select of 2 cases,");
	/* seeded runs also name the holder (dump from the master thread) */
	snprintf(want[6], 160, seeded() ? " ms on mutex %p held by fiber "
					: " ms on mutex %p,",
		 (void *)&mtx);
	snprintf(want[7], 160, " ms on cond %p,", (void *)&cond);
	snprintf(want[8], 160, " ms on sem %p,", (void *)&sem);
	snprintf(want[9], 160, " ms on wg %p,", (void *)&wg);
	snprintf(want[10], 160, " ms on event %p,", (void *)&ev);
	snprintf(want[11], 160, " ms on group %p,", (void *)grp);
	snprintf(want[12], 160, " ms on blocking pool dt_hold,");
	snprintf(want[13], 160, " ms on io read fd %d,", pfd[0]);
	snprintf(want[14], 160, " ms on rwlock %p to read,", (void *)&rwl);
	snprintf(want[15], 160, " ms on event %p,", (void *)&ev);
	snprintf(want[16], 160, " ms on signal SIGUSR1 or 1 more,");

	FILE *f = open_memstream(&dump_buf, &dump_len);
	CHECK(f != NULL);
	dump_ret = weft_dump(f);
	fclose(f);

	/* let everything go */
	atomic_store(&pool_release, 1);
	for (size_t i = 0; i < NW; i++)
		weft_cancel(t[i]);
	weft_event_set(&ev);
	weft_mutex_unlock(&mtx);
	CHECK_EQ(weft_rwlock_unlock(&rwl), 0);
	for (size_t i = 0; i < NW; i++)
		weft_join(t[i], NULL);
	CHECK_EQ(weft_join(fin, NULL), 0);
	CHECK_EQ(weft_join(rn, NULL), 0);
	weft_join(target2, NULL);
	weft_group_free(grp);
	weft_chan_free(c_recv);
	weft_chan_free(c_send);
	weft_chan_free(c_sel1);
	weft_chan_free(c_sel2);
	return NULL;
}

static void dump_states(void **state)
{
	(void)state;
	assert_int_equal(pipe(pfd), 0);
	run(1, states_main, NULL);
	close(pfd[0]);
	close(pfd[1]);
	assert_non_null(dump_buf);
	/* main, target, target2, the group's child, NW waiters, finished,
	 * runnable */
	size_t nfib = 3 + 1 + NW + 2;
	assert_int_equal(dump_ret, (int)nfib);
	char head[64];
	snprintf(head, sizeof head, "weft: dump of %zu fibers on 1 workers",
		 nfib);
	if (strncmp(dump_buf, head, strlen(head)))
		fail_msg("bad header: %.80s", dump_buf);
	for (size_t i = 0; i < NW; i++) {
		assert_line_has(dump_buf, waiters[i].name, "\": waiting ");
		assert_line_has(dump_buf, waiters[i].name, want[i]);
		if (strcmp(waiters[i].name, "shielded"))
			assert_line_lacks(dump_buf, waiters[i].name,
					  ", shielded");
		assert_line_has(dump_buf, waiters[i].name,
				"spawned at dt_spawn_named+0x");
	}
	assert_line_has(dump_buf, "shielded", ", shielded");
	assert_line_has(dump_buf, "target", " ms on event ");
	assert_line_has(dump_buf, "main", "\"main\": running on worker 0, "
					  "worker 0, fn ");
	assert_line_has(dump_buf, "finished",
			"\"finished\": finished, not yet joined, worker 0, "
			"fn dt_nop, spawned at dt_spawn_named+0x");
	assert_line_has(dump_buf, "runnable",
			"\"runnable\": runnable, worker -, fn dt_nop");
	/* the group's child is unnamed, spawned by weft_group_spawn */
	assert_non_null(strstr(dump_buf, "\"\": waiting "));
	free(dump_buf);
	dump_buf = NULL;
}

/* ---- running on another worker ------------------------------------------------------ */

static atomic_int spin_started, spin_stop;
static int main_worker = -1;

static void *spinner(void *a)
{
	(void)a;
	atomic_store(&spin_started, 1);
	while (!atomic_load(&spin_stop))
		;
	return NULL;
}

static void *running_main(void *arg)
{
	(void)arg;
	weft_task_set_name(NULL, "main");
	weft_task *s = dt_spawn_named(spinner, NULL, "spinner");
	uint64_t t0 = weft_now();
	while (!atomic_load(&spin_started) && weft_now() - t0 < 10 * SEC)
		weft_yield(); /* one of us is stolen by the other worker */
	FILE *f = open_memstream(&dump_buf, &dump_len);
	dump_ret = weft_dump(f);
	main_worker = (int)weft_worker_id();
	fclose(f);
	atomic_store(&spin_stop, 1);
	CHECK_EQ(weft_join(s, NULL), 0);
	return NULL;
}

static void dump_running(void **state)
{
	(void)state;
	SKIP_IF_SEEDED("a fiber running while another thread dumps");
	run(2, running_main, NULL);
	assert_int_equal(dump_ret, 2);
	char w[64];
	snprintf(w, sizeof w, "\"main\": running on worker %d,", main_worker);
	assert_line_has(dump_buf, "main", w);
	snprintf(w, sizeof w, "\"spinner\": running on worker %d,",
		 1 - main_worker);
	assert_line_has(dump_buf, "spinner", w);
	free(dump_buf);
	dump_buf = NULL;
}

/* ---- how long a wait has lasted -------------------------------------------------------- */

/* The dump's "waiting <ms> ms" comes from the wait clock workers refresh
 * between fibers (runtime/internal.h), not from a clock read per park:
 * it must still match the wait, to the coarse clock's few ms. */
static weft_chan *wt_chan;
static uint64_t wt_parked_at, wt_dumped_at;

static void *wt_waiter(void *arg)
{
	int x;
	/* a wait that begins long after weft_run's start: a clock refreshed
	 * only then would show it 200 ms too long */
	if (arg) { /* alone on the only worker, yielding all along */
		uint64_t t0 = weft_now();
		while (weft_now() - t0 < 200 * MS)
			weft_yield();
	} else {
		CHECK_EQ(weft_sleep(200 * MS), 0);
	}
	wt_parked_at = weft_now();
	CHECK_EQ(weft_chan_recv(wt_chan, &x), 0);
	return NULL;
}

static void *wait_time_main(void *arg)
{
	(void)arg;
	CHECK((wt_chan = weft_chan_new(0, sizeof(int))) != NULL);
	weft_task *t = dt_spawn_named(wt_waiter, arg, "wt-waiter");
	CHECK_EQ(weft_sleep(500 * MS), 0);
	FILE *f = open_memstream(&dump_buf, &dump_len);
	wt_dumped_at = weft_now();
	dump_ret = weft_dump(f);
	fclose(f);
	int one = 1;
	CHECK_EQ(weft_chan_send(wt_chan, &one), 0);
	CHECK_EQ(weft_join(t, NULL), 0);
	weft_chan_free(wt_chan);
	return NULL;
}

static void check_wait_time(unsigned workers, bool yielder)
{
	run(workers, wait_time_main, yielder ? "yield" : NULL);
	assert_int_equal(dump_ret, 2);
	char line[512];
	assert_non_null(dump_line_of(dump_buf, "wt-waiter", line, sizeof line));
	const char *p = strstr(line, "waiting ");
	assert_non_null(p);
	unsigned ms = 0;
	assert_int_equal(sscanf(p, "waiting %u ms on chan recv", &ms), 1);
	uint64_t waited = (wt_dumped_at - wt_parked_at) / MS;
	assert_true(waited >= 250);
	/* the coarse clock ticks every few ms (CONFIG_HZ); the wait clock
	 * may lag it by a little more: the waiter parked just after a
	 * worker's tick here */
	assert_in_range(ms, waited - 20, waited + 50);
	free(dump_buf);
	dump_buf = NULL;
}

static void dump_wait_time(void **state)
{
	(void)state;
	check_wait_time(2, false);
	/* no scheduler pass and no other worker: the yields refresh it */
	SKIP_IF_SEEDED("a fiber yielding until real time has passed");
	check_wait_time(1, true);
}

/* ---- the dump signal ------------------------------------------------------------------ */

static int sig_to_send;

static void *sig_main(void *arg)
{
	(void)arg;
	weft_task *t = dt_spawn_named(w_sleep, NULL, "sig-sleeper");
	weft_sleep(20 * MS);
	kill(getpid(), sig_to_send);
	weft_sleep(300 * MS); /* the monitor thread dumps meanwhile */
	weft_cancel(t);
	weft_join(t, NULL);
	return NULL;
}

static void sig_child(void *arg)
{
	int cfg_sig = (int)(intptr_t)arg;
	weft_config c = cfg_workers(2);
	c.dump_signal = cfg_sig;
	int r = weft_run(&c, sig_main, NULL, NULL);
	struct sigaction sa;
	sigaction(sig_to_send, NULL, &sa);
	fprintf(stderr, "run=%d restored=%d\n", r, sa.sa_handler == SIG_DFL);
}

/* The dump signal, one at a time, while fibers start and end on both
 * workers: every one gives a dump. Under TSan a signal the thread takes
 * is kept for the fiber state that is current, and one kept for a fiber
 * that ended, or parked for good, was lost (sched.c, ctx_jump and
 * weft__after_switch). The child's stderr is a memfd it counts dumps in. */
static int ds_fd;
static _Atomic int ds_stop;
static int ds_rounds, ds_seen;

static int count_dumps(int fd)
{
	struct stat st;
	if (fstat(fd, &st) || st.st_size <= 0)
		return 0;
	char *b = malloc((size_t)st.st_size + 1);
	if (!b)
		return -1;
	ssize_t n = pread(fd, b, (size_t)st.st_size, 0);
	b[n > 0 ? n : 0] = 0;
	int k = 0;
	for (char *p = b; (p = strstr(p, "weft: dump of ")); p++)
		k++;
	free(b);
	return k;
}

/* a plain thread sends, so that the signal always lands on a worker
 * from outside (one a fiber sends to its own thread TSan runs at once) */
static void *ds_sender(void *arg)
{
	(void)arg;
	for (int i = 0; i < ds_rounds; i++) {
		kill(getpid(), SIGUSR1);
		uint64_t t0 = real_ns();
		while ((ds_seen = count_dumps(ds_fd)) <= i &&
		       real_ns() - t0 < 5 * SEC)
			usleep(200);
		if (ds_seen <= i)
			break; /* lost */
	}
	atomic_store(&ds_stop, 1);
	return NULL;
}

static void *ds_main(void *arg)
{
	(void)arg;
	weft_task *ch[4];
	for (int i = 0; i < 4; i++)
		ch[i] = weft_spawn(churn_fibers, (void *)&ds_stop);
	pthread_t th;
	if (pthread_create(&th, NULL, ds_sender, NULL))
		atomic_store(&ds_stop, 1);
	else
		while (!atomic_load(&ds_stop))
			weft_sleep(MS);
	for (int i = 0; i < 4; i++)
		weft_join(ch[i], NULL);
	pthread_join(th, NULL);
	return NULL;
}

static void ds_child(void *arg)
{
	(void)arg;
	int keep = dup(2);
	ds_fd = memfd_create("weft-dumps", 0);
	if (keep < 0 || ds_fd < 0 || dup2(ds_fd, 2) < 0)
		_exit(3);
	weft_config c = cfg_workers(2);
	c.dump_signal = SIGUSR1;
	int r = weft_run(&c, ds_main, NULL, NULL);
	dprintf(keep, "run=%d dumps=%d of %d\n", r, ds_seen, ds_rounds);
}

static void dump_signal_churn(void **state)
{
	(void)state;
	SKIP_IF_SEEDED("the monitor thread works in real time");
	static char err[4096];
	ds_rounds = (int)scaled(300, 200);
	int st = run_in_child(ds_child, NULL, err, sizeof err);
	char want[64];
	snprintf(want, sizeof want, "run=0 dumps=%d of %d", ds_rounds,
		 ds_rounds);
	if (!strstr(err, want))
		fail_msg("want \"%s\", got: %s", want, err);
	assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
}

static void dump_signal(void **state)
{
	(void)state;
	SKIP_IF_SEEDED("the monitor thread works in real time");
	static char err[16384];
	/* by config */
	sig_to_send = SIGUSR1;
	int st = run_in_child(sig_child, (void *)(intptr_t)SIGUSR1, err,
			      sizeof err);
	assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
	assert_non_null(strstr(err, "weft: dump of "));
	assert_line_has(err, "sig-sleeper", " ms on sleep 60000 ms,");
	assert_non_null(strstr(err, "run=0 restored=1"));
	/* by environment, by name */
	sig_to_send = SIGUSR2;
	setenv("WEFT_DUMP_SIGNAL", "SIGUSR2", 1);
	st = run_in_child(sig_child, (void *)0, err, sizeof err);
	unsetenv("WEFT_DUMP_SIGNAL");
	assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
	assert_line_has(err, "sig-sleeper", " ms on sleep 60000 ms,");
	assert_non_null(strstr(err, "run=0 restored=1"));
	/* malformed: weft_run refuses */
	setenv("WEFT_DUMP_SIGNAL", "SIGNOPE", 1);
	weft_config c = cfg_workers(1);
	assert_int_equal(weft_run(&c, sig_main, NULL, NULL), -EINVAL);
	unsetenv("WEFT_DUMP_SIGNAL");
	c.dump_signal = SIGKILL;
	assert_int_equal(weft_run(&c, sig_main, NULL, NULL), -EINVAL);
	/* the fault signals: the handler would return to the faulting
	 * instruction, which faults again, forever (SIGFPE was taken) */
	const int faults[] = {SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGTRAP, SIGSYS};
	for (size_t i = 0; i < sizeof faults / sizeof faults[0]; i++) {
		c.dump_signal = faults[i];
		assert_int_equal(weft_run(&c, sig_main, NULL, NULL), -EINVAL);
	}
}

/* ---- the watchdog ----------------------------------------------------------------------- */

static void spin_for(uint64_t ns)
{
	uint64_t until = weft_now() + ns;
	while (weft_now() < until)
		;
}

static void *slow(void *a)
{
	(void)a;
	spin_for(500 * MS);
	weft_yield();
	spin_for(500 * MS);
	return NULL;
}

static void *polite(void *a)
{
	(void)a;
	uint64_t until = weft_now() + 1000 * MS;
	while (weft_now() < until) {
		spin_for(50 * US);
		weft_yield();
	}
	return NULL;
}

static void *watch_main(void *arg)
{
	(void)arg;
	weft_task *a = dt_spawn_named(slow, NULL, "slowpoke");
	weft_task *b = dt_spawn_named(polite, NULL, "polite");
	weft_join(a, NULL);
	weft_join(b, NULL);
	return NULL;
}

static void watch_child(void *arg)
{
	unsetenv("WEFT_SLOW_MS");
	weft_config c = cfg_workers(2);
	c.slow_ms = (unsigned)(uintptr_t)arg;
	fprintf(stderr, "run=%d\n", weft_run(&c, watch_main, NULL, NULL));
}

/* lines "weft: slow fiber <id> "<name>" on worker <w>: running <ms> ms
 * without yielding" for name; each ms must be >= min_ms */
static int count_slow(const char *err, const char *name, unsigned min_ms)
{
	int n = 0;
	for (const char *p = err; (p = strstr(p, "weft: slow fiber "));) {
		unsigned long long id;
		char nm[64];
		unsigned w, ms;
		char tail[64];
		const char *e = strchr(p, '\n');
		int k = sscanf(p,
			       "weft: slow fiber %llu \"%63[^\"]\" on worker %u: "
			       "running %u ms %63[^\n]",
			       &id, nm, &w, &ms, tail);
		if (k != 5 || strcmp(tail, "without yielding"))
			fail_msg("malformed watchdog line: %.*s",
				 e ? (int)(e - p) : 80, p);
		if (!strcmp(nm, name)) {
			n++;
			if (ms < min_ms || ms > 100000 || w > 1)
				fail_msg("bad watchdog line: %.*s",
					 e ? (int)(e - p) : 80, p);
		}
		p += 17;
	}
	return n;
}

static void watchdog(void **state)
{
	(void)state;
	SKIP_IF_SEEDED("the monitor thread works in real time");
	static char err[16384];
	int st = run_in_child(watch_child, (void *)(uintptr_t)100, err,
			      sizeof err);
	assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
	assert_non_null(strstr(err, "run=0"));
	/* two stretches of 500 ms: reported once each, while running */
	if (count_slow(err, "slowpoke", 100) != 2)
		fail_msg("want 2 reports of slowpoke:\n%s", err);
	assert_int_equal(count_slow(err, "polite", 0), 0);
	/* off by default */
	st = run_in_child(watch_child, (void *)0, err, sizeof err);
	assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
	assert_non_null(strstr(err, "run=0"));
	assert_null(strstr(err, "slow fiber"));
	/* by environment */
	setenv("WEFT_SLOW_MS", "bad", 1);
	weft_config c = cfg_workers(1);
	assert_int_equal(weft_run(&c, watch_main, NULL, NULL), -EINVAL);
	unsetenv("WEFT_SLOW_MS");
}

/* In a seeded run the virtual clock stands still while a fiber runs
 * without calling weft: the watchdog read it, and never fired there. It
 * reads real time now. (The fiber spins on real time: weft_now() would
 * not move either.) */
static void *real_spinner(void *a)
{
	(void)a;
	struct timespec t0, t;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	do
		clock_gettime(CLOCK_MONOTONIC, &t);
	while ((t.tv_sec - t0.tv_sec) * 1000000000ll + (t.tv_nsec - t0.tv_nsec) <
	       300 * (long long)MS);
	return NULL;
}

static void *seeded_watch_main(void *arg)
{
	(void)arg;
	weft_join(dt_spawn_named(real_spinner, NULL, "spinner"), NULL);
	return NULL;
}

static void seeded_watch_child(void *arg)
{
	(void)arg;
	unsetenv("WEFT_SLOW_MS");
	weft_config c = cfg_workers(2);
	c.seed = 7;
	c.slow_ms = 50;
	fprintf(stderr, "run=%d\n", weft_run(&c, seeded_watch_main, NULL, NULL));
}

static void watchdog_seeded(void **state)
{
	(void)state;
	static char err[16384];
	int st = run_in_child(seeded_watch_child, NULL, err, sizeof err);
	assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
	assert_non_null(strstr(err, "run=0"));
	if (count_slow(err, "spinner", 50) != 1)
		fail_msg("want 1 report of spinner:\n%s", err);
}

/* ---- the never-joined report -------------------------------------------------------------- */

static void *ev_wait(void *a)
{
	weft_event_wait(a);
	return NULL;
}
static int child_ok(void *a) { (void)a; return 0; }

static void expect(weft_task *t)
{
	fprintf(stderr, "expect %llu\n", (unsigned long long)weft_task_id(t));
}

static void *unjoined_main(void *arg)
{
	(void)arg;
	static weft_event e1, e2;
	weft_task *a = dt_spawn_named(dt_nop, NULL, "joined");
	CHECK_EQ(weft_join(a, NULL), 0);
	weft_detach(dt_spawn_named(dt_nop, NULL, "detached"));
	expect(dt_spawn_named(dt_nop, NULL, "forgotten"));
	expect(weft_spawn(dt_nop, NULL)); /* unnamed */
	weft_group *g = weft_group_new();
	weft_group_spawn(g, child_ok, NULL);
	weft_group_spawn(g, child_ok, NULL);
	CHECK_EQ(weft_group_wait(g), 0);
	weft_group_free(g);
	/* a join that timed out, then joined for real: not reported */
	weft_task *e = dt_spawn_named(ev_wait, &e1, "late-joined");
	weft_deadline d;
	weft_deadline_push(&d, 5 * MS);
	CHECK_EQ(weft_join(e, NULL), -ETIMEDOUT);
	weft_deadline_pop(&d);
	weft_event_set(&e1);
	CHECK_EQ(weft_join(e, NULL), 0);
	/* a join that timed out and was never retried: reported */
	weft_task *f = dt_spawn_named(ev_wait, &e2, "timed-out");
	weft_deadline_push(&d, 5 * MS);
	CHECK_EQ(weft_join(f, NULL), -ETIMEDOUT);
	weft_deadline_pop(&d);
	weft_event_set(&e2);
	expect(f);
	weft_task *g2 = dt_spawn_named(dt_nop, NULL, "cancelled");
	weft_cancel(g2);
	expect(g2);
	/* still sleeping at shutdown: cancelled then, and reported */
	expect(dt_spawn_named(w_sleep, NULL, "sleeping"));
	weft_yield();
	return NULL;
}

static void unjoined_child(void *arg)
{
	int mode = (int)(intptr_t)arg;
	weft_config c = cfg_workers(2);
	if (mode == 1)
		c.unjoined_report = -1;
	if (mode == 2)
		setenv("WEFT_UNJOINED_REPORT", "0", 1);
	fprintf(stderr, "run=%d\n", weft_run(&c, unjoined_main, NULL, NULL));
}

static void unjoined_report(void **state)
{
	(void)state;
	static char err[16384];
	int st = run_in_child(unjoined_child, (void *)0, err, sizeof err);
	assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
	assert_non_null(strstr(err, "run=0"));
	/* the reported ids are exactly the expected ones */
	unsigned long long want_ids[16], got[16];
	int nwant = 0, ngot = 0;
	for (const char *p = err; (p = strstr(p, "expect ")); p += 7)
		if (nwant < 16 && sscanf(p, "expect %llu", &want_ids[nwant]) == 1)
			nwant++;
	assert_int_equal(nwant, 5);
	for (const char *p = err; (p = strstr(p, "weft: task ")); p += 11) {
		unsigned long long id;
		char name[64] = "", site[128], tail[64];
		const char *e = strchr(p, '\n');
		int k = sscanf(p, "weft: task %llu \"%63[^\"]\" spawned at %127s "
				  "%63[^\n]",
			       &id, name, site, tail);
		if (k != 4) /* an unnamed task: "" */
			k = sscanf(p, "weft: task %llu \"\" spawned at %127s "
				      "%63[^\n]",
				   &id, site, tail) + 1;
		if (k != 4 || strcmp(tail, "was never joined or detached"))
			fail_msg("malformed report line: %.*s",
				 e ? (int)(e - p) : 80, p);
		assert_true(ngot < 16);
		got[ngot++] = id;
		if (!strcmp(name, "forgotten") &&
		    strncmp(site, "dt_spawn_named+0x", 17))
			fail_msg("bad site: %s", site);
		if (!strcmp(name, "joined") || !strcmp(name, "detached") ||
		    !strcmp(name, "late-joined"))
			fail_msg("reported wrongly: %.*s",
				 e ? (int)(e - p) : 80, p);
	}
	if (ngot != nwant)
		fail_msg("want %d reports, got %d:\n%s", nwant, ngot, err);
	for (int i = 0; i < nwant; i++) {
		int found = 0;
		for (int j = 0; j < ngot; j++)
			found |= got[j] == want_ids[i];
		if (!found)
			fail_msg("task %llu not reported:\n%s", want_ids[i],
				 err);
	}
	assert_non_null(strstr(err, "\"forgotten\" spawned at dt_spawn_named+0x"));
	assert_non_null(strstr(err, "\"\" spawned at "));
	/* silenced by config, and by environment */
	for (intptr_t mode = 1; mode <= 2; mode++) {
		st = run_in_child(unjoined_child, (void *)mode, err, sizeof err);
		assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
		assert_non_null(strstr(err, "run=0"));
		assert_null(strstr(err, "weft: task "));
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(dump_misuse),
		cmocka_unit_test(dump_states),
		cmocka_unit_test(dump_running),
		cmocka_unit_test(dump_wait_time),
		cmocka_unit_test(dump_signal),
		cmocka_unit_test(dump_signal_churn),
		cmocka_unit_test(watchdog),
		cmocka_unit_test(watchdog_seeded),
		cmocka_unit_test(unjoined_report),
	};
	apply_test_filters();
	return cmocka_run_group_tests(tests, NULL, NULL);
}
