/* Description: guard pages and running out of stacks.
 *
 * A fiber that recurses without bound hits the guard page below its stack;
 * the SIGSEGV handler (on an alternate stack) names the fiber and aborts.
 * Checked in a child process: it must die by SIGABRT with the message.
 * Then: when no more stack memory can be mapped (RLIMIT_AS), a fiber that
 * cannot get a stack ends at once and its joiner gets -ENOMEM; the runtime
 * keeps working once memory is back.
 *
 * Built twice: test_overflow guards stacks as this kernel allows
 * (MADV_GUARD_INSTALL, no map entry per stack); test_overflow_mprotect
 * against a runtime that starts with the mprotect fallback (kernels before
 * 6.13), where each guarded stack costs two of vm.max_map_count's entries:
 * there, fibers started until the entries run out (~32k) must end with
 * -ENOMEM for the one that found none, 0 for the others, and the runtime
 * must go on (pooled stacks need no new entry).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>
#include <weft.h>

#include "testutil.h"


static int __attribute__((noinline)) recurse(int n)
{
	volatile char pad[512];
	pad[0] = (char)n;
	return n > 1000000000 ? pad[0] : recurse(n + 1) + pad[0];
}

static void *deep(void *arg)
{
	(void)arg;
	return (void *)(intptr_t)recurse(0);
}

static void *overflow_main(void *arg)
{
	(void)arg;
	weft_task *t = weft_spawn(deep, NULL);
	weft_join(t, NULL);
	return NULL;
}

static void test_guard_page(void **state)
{
	(void)state;
	int pipefd[2];
	assert_int_equal(pipe(pipefd), 0);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		dup2(pipefd[1], 2);
		close(pipefd[0]);
		weft_config cfg;
		weft_config_init(&cfg);
		cfg.workers = 2;
		weft_run(&cfg, overflow_main, NULL, NULL);
		_exit(0); /* not reached: the overflow aborts */
	}
	close(pipefd[1]);
	char buf[4096] = {0};
	size_t got = 0;
	ssize_t r;
	while (got < sizeof buf - 1 &&
	       (r = read(pipefd[0], buf + got, sizeof buf - 1 - got)) > 0)
		got += (size_t)r;
	close(pipefd[0]);
	int status;
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFSIGNALED(status));
	assert_int_equal(WTERMSIG(status), SIGABRT);
	if (!strstr(buf, "overflowed its stack"))
		fail_msg("child stderr: %s", buf);
	assert_non_null(strstr(buf, "weft: fiber "));
}

/* ---- out of stack memory ----------------------------------------------- */

#define HOLDERS 3000
static atomic_int enomem_joins, ok_joins, after_ok;

static void *holder(void *arg)
{
	weft_sleep(20 * 1000000ull); /* keep the stack while others start */
	return arg;
}

/* RLIMIT_AS to the current address-space size plus 8 MiB: fiber structs
 * and a few stack regions fit, 3000 live 256 KiB stacks (750 MiB) do not.
 * *old gets the limit to put back. */
static void limit_address_space(struct rlimit *old)
{
	getrlimit(RLIMIT_AS, old);
	FILE *f = fopen("/proc/self/statm", "r");
	unsigned long pages = 0;
	if (!f || fscanf(f, "%lu", &pages) != 1)
		abort();
	fclose(f);
	struct rlimit lim = *old;
	lim.rlim_cur = pages * (unsigned long)sysconf(_SC_PAGESIZE) +
		       8ul * 1024 * 1024;
	setrlimit(RLIMIT_AS, &lim);
}

static void *nomem_main(void *arg)
{
	(void)arg;
	struct rlimit old;
	limit_address_space(&old);

	weft_task *t[HOLDERS];
	for (int i = 0; i < HOLDERS; i++)
		t[i] = weft_spawn(holder, (void *)(intptr_t)i);
	for (int i = 0; i < HOLDERS; i++) {
		if (!t[i])
			continue;
		int r = weft_join(t[i], NULL);
		if (r == -ENOMEM)
			atomic_fetch_add(&enomem_joins, 1);
		else if (r == 0)
			atomic_fetch_add(&ok_joins, 1);
	}
	setrlimit(RLIMIT_AS, &old);
	/* memory is back: fibers start again */
	for (int i = 0; i < 100; i++) {
		weft_task *x = weft_spawn(holder, (void *)(intptr_t)i);
		void *res = NULL;
		if (x && weft_join(x, &res) == 0 && res == (void *)(intptr_t)i)
			atomic_fetch_add(&after_ok, 1);
	}
	return NULL;
}

static void test_out_of_stacks(void **state)
{
	(void)state;
#if UNDER_SANITIZER
	skip(); /* sanitizers reserve terabytes of shadow: no RLIMIT_AS */
#endif
	weft_config cfg;
	weft_config_init(&cfg);
	cfg.workers = 2;
	cfg.stack_size = 256 * 1024;
	assert_int_equal(weft_run(&cfg, nomem_main, NULL, NULL), 0);
	/* some fibers got a stack before the limit bit, the rest -ENOMEM */
	assert_true(atomic_load(&enomem_joins) > 0);
	assert_true(atomic_load(&ok_joins) > 0);
	assert_int_equal(atomic_load(&enomem_joins) + atomic_load(&ok_joins),
			 HOLDERS);
	assert_int_equal(atomic_load(&after_ok), 100);
}

/* ---- a detached fiber that gets no stack is reported --------------------
 * Nobody joins it, so nobody learns its -ENOMEM, and what it was to do (a
 * server's fiber closing its connection) silently never happens: the
 * runtime says so on stderr, for the first 10. */
static int dn_group = 1;

static int group_holder(void *arg)
{
	(void)arg;
	weft_sleep(20 * 1000000ull);
	return 0;
}

static void *detached_nomem_main(void *arg)
{
	(void)arg;
	struct rlimit old;
	limit_address_space(&old);
	/* group children are detached too, but their group reports them
	 * (-ENOMEM from weft_group_wait): no line for those */
	weft_group *g = weft_group_new();
	for (int i = 0; g && i < 300; i++)
		weft_group_spawn(g, group_holder, NULL);
	for (int i = 0; i < HOLDERS; i++) {
		weft_task *t = weft_spawn(holder, NULL);
		if (t) {
			weft_task_set_name(t, "conn");
			weft_detach(t);
		}
	}
	weft_sleep(100 * 1000000ull); /* every holder started or failed */
	if (g) {
		dn_group = weft_group_wait(g);
		weft_group_free(g);
	}
	setrlimit(RLIMIT_AS, &old);
	return NULL;
}

static void detached_nomem_child(void *arg)
{
	(void)arg;
	weft_config cfg;
	weft_config_init(&cfg);
	cfg.workers = 2;
	cfg.stack_size = 256 * 1024;
	int r = weft_run(&cfg, detached_nomem_main, NULL, NULL);
	_exit(r ? 3 : dn_group != -ENOMEM ? 4 : 0);
}

static void test_detached_without_stack_reported(void **state)
{
	(void)state;
#if UNDER_SANITIZER
	skip(); /* sanitizers reserve terabytes of shadow: no RLIMIT_AS */
#endif
	if (seeded())
		skip(); /* seeded runs do not report (injected faults) */
	static char err[16384];
	int st = run_in_child(detached_nomem_child, NULL, err, sizeof err);
	assert_true(WIFEXITED(st));
	assert_int_equal(WEXITSTATUS(st), 0);
	int lines = 0;
	for (const char *p = err; (p = strstr(p, "weft: detached fiber "));
	     p++) {
		lines++;
		assert_non_null(strstr(p, "\"conn\" got no stack"));
	}
	if (lines < 1 || lines > 10)
		fail_msg("%d reports (want 1 to 10): %s", lines, err);
}

/* ---- main_fn itself gets no stack ----------------------------------------- */

/* weft_run must say so (-ENOMEM, *result untouched), not return 0 as if
 * main_fn had run and returned NULL. */
static int mn_ran;

static void *mn_main(void *arg)
{
	(void)arg;
	mn_ran = 1;
	return (void *)7;
}

static void test_main_out_of_stack(void **state)
{
	(void)state;
#if UNDER_SANITIZER
	skip(); /* sanitizers reserve terabytes of shadow: no RLIMIT_AS */
#endif
	struct rlimit old, lim;
	getrlimit(RLIMIT_AS, &old);
	FILE *f = fopen("/proc/self/statm", "r");
	unsigned long pages = 0;
	assert_non_null(f);
	assert_int_equal(fscanf(f, "%lu", &pages), 1);
	fclose(f);
	/* room for a runtime with 64 KiB stacks, not for one 1 GiB stack */
	lim = old;
	lim.rlim_cur = pages * (unsigned long)sysconf(_SC_PAGESIZE) +
		       256ul * 1024 * 1024;
	assert_int_equal(setrlimit(RLIMIT_AS, &lim), 0);
	weft_config cfg;
	weft_config_init(&cfg);
	cfg.workers = 1;
	cfg.stack_size = 1ul << 30;
	void *res = (void *)1;
	mn_ran = 0;
	int big = weft_run(&cfg, mn_main, NULL, &res);
	int big_ran = mn_ran;
	void *big_res = res;
	cfg.stack_size = 64 * 1024; /* the control: the limit leaves room */
	mn_ran = 0;
	int small = weft_run(&cfg, mn_main, NULL, &res);
	setrlimit(RLIMIT_AS, &old);
	assert_int_equal(big, -ENOMEM);
	assert_int_equal(big_ran, 0);
	assert_ptr_equal(big_res, (void *)1);
	assert_int_equal(small, 0);
	assert_int_equal(mn_ran, 1);
	assert_ptr_equal(res, (void *)7);
}

/* ---- out of map entries (the mprotect fallback) ------------------------ */

#define MAP_MAX_FIBERS 60000 /* 65530 entries, two per stack: never reached */
static weft_event me_go;
static atomic_int me_started;
static int me_spawned, me_failed_at, me_got, me_enomem, me_ok, me_other,
	me_after;

static void *map_holder(void *arg)
{
	atomic_fetch_add(&me_started, 1); /* it got a stack */
	weft_event_wait(&me_go);
	return arg;
}

static void *map_main(void *arg)
{
	(void)arg;
	static weft_task *t[MAP_MAX_FIBERS];
	weft_event_init(&me_go);
	me_failed_at = -1;
	/* one worker: each new fiber runs at our yield, takes a stack (two
	 * more map entries) and parks; the first that cannot ends at once,
	 * without counting itself */
	for (int i = 0; i < MAP_MAX_FIBERS; i++) {
		int before = atomic_load(&me_started);
		if (!(t[i] = weft_spawn(map_holder, (void *)(intptr_t)i)))
			break;
		me_spawned = i + 1;
		/* one yield runs it on one worker; a seeded run may pick
		 * others first, so give it a bounded number of turns */
		for (int k = 0; k < 1000 && atomic_load(&me_started) == before;
		     k++)
			weft_yield();
		if (atomic_load(&me_started) == before) {
			me_failed_at = i;
			break;
		}
	}
	me_got = atomic_load(&me_started);
	weft_event_set(&me_go);
	for (int i = 0; i < me_spawned; i++) {
		void *res = NULL;
		int r = weft_join(t[i], &res);
		if (r == -ENOMEM)
			me_enomem++;
		else if (r == 0 && res == (void *)(intptr_t)i)
			me_ok++;
		else
			me_other++;
	}
	/* stacks come from the pool now: no new map entry needed */
	for (int i = 0; i < 100; i++) {
		weft_task *x = weft_spawn(map_holder, (void *)(intptr_t)i);
		void *res = NULL;
		if (x && weft_join(x, &res) == 0 && res == (void *)(intptr_t)i)
			me_after++;
	}
	return NULL;
}

static void test_out_of_map_entries(void **state)
{
	(void)state;
#ifndef WEFT_STACK_GUARD_MPROTECT
	skip(); /* guards cost no map entry here: see test_overflow_mprotect */
#endif
#if UNDER_SANITIZER
	skip(); /* the sanitizers' own mappings would fail first */
#endif
	long max_map = 0;
	FILE *f = fopen("/proc/sys/vm/max_map_count", "r");
	if (!f || fscanf(f, "%ld", &max_map) != 1)
		skip();
	fclose(f);
	if (max_map > 2 * MAP_MAX_FIBERS - 10000)
		skip(); /* a raised limit: this many fibers would not reach it */
	weft_config cfg;
	weft_config_init(&cfg);
	cfg.workers = 1;
	assert_int_equal(weft_run(&cfg, map_main, NULL, NULL), 0);
	print_message("  vm.max_map_count %ld: %d fibers got a stack, fiber %d "
		      "found no map entry\n",
		      max_map, me_got, me_failed_at);
	/* the limit was the map count: two entries per stack, a few left to
	 * the rest of the process */
	assert_true(me_failed_at > 0);
	assert_int_equal(me_got, me_failed_at);
	assert_true(me_got > max_map / 2 - 4000);
	assert_true(me_got < max_map / 2 + 100);
	assert_int_equal(me_enomem, 1);
	assert_int_equal(me_other, 0);
	assert_int_equal(me_ok, me_spawned - 1);
	assert_int_equal(me_after, 100);
}


/* ---- a named fiber, stolen to the second worker, overflows ------------- */

static void *named_deep(void *arg)
{
	weft_task_set_name(NULL, "deep-one");
	if ((int)weft_worker_id() == *(int *)arg)
		_exit(3); /* not stolen: the test proves nothing */
	return (void *)(intptr_t)recurse(0);
}

static void *named_main(void *arg)
{
	(void)arg;
	/* our worker stays busy here: the idle other one steals the fiber */
	static int mine;
	mine = (int)weft_worker_id();
	weft_spawn(named_deep, &mine);
	uint64_t t0 = real_ns();
	while (real_ns() - t0 < 10 * SEC)
		;
	_exit(4); /* the overflow should have ended the process */
}

static void named_child(void *arg)
{
	(void)arg;
	weft_config cfg;
	weft_config_init(&cfg);
	cfg.workers = 2;
	weft_run(&cfg, named_main, NULL, NULL);
}

static void test_guard_named_stolen(void **state)
{
	(void)state;
	SKIP_IF_SEEDED("needs a real second worker");
	char err[4096];
	int st = run_in_child(named_child, NULL, err, sizeof err);
	if (!WIFSIGNALED(st) || WTERMSIG(st) != SIGABRT)
		fail_msg("status %#x, stderr: %s", st, err);
	if (!strstr(err, " (deep-one) overflowed its stack of 65536 bytes on "
			 "worker "))
		fail_msg("child stderr: %s", err);
}

/* ---- a big frame jumps over the guard page ------------------------------ */

/* A frame bigger than the guard, first touched at its bottom (a local
 * array written from index 0, an alloca), lands below the guard. What is
 * there is the top of the next lower stack of the region, mapped and
 * writable: without a bigger guard nothing faults and that stack's frames
 * (or the free list's link in its top word) are overwritten. */
static char *bf_lo;

static int __attribute__((noinline)) big_frame(int n)
{
	volatile char big[12 * 1024];
	big[0] = (char)n; /* the lowest byte first, as memset would */
	return big[0];
}

static int __attribute__((noinline)) near_bottom(int n)
{
	volatile char pad[256];
	pad[0] = (char)n;
	if ((char *)__builtin_frame_address(0) - bf_lo < 1024)
		return big_frame(n) + pad[0];
	return near_bottom(n + 1) + pad[0];
}

static void *bf_fiber(void *arg)
{
	(void)arg;
	/* the stack's top is the next page boundary up: 64 KiB stacks */
	uintptr_t top = ((uintptr_t)__builtin_frame_address(0) + 4095) &
			~(uintptr_t)4095;
	bf_lo = (char *)(top - 64 * 1024);
	return (void *)(intptr_t)near_bottom(0);
}

static void *bf_main(void *arg)
{
	(void)arg;
	/* a neighbour below: started second, it gets the next lower slot */
	weft_task *t = weft_spawn(bf_fiber, NULL);
	weft_join(t, NULL);
	return NULL;
}

static void bf_child(void *arg)
{
	(void)arg;
	weft_config cfg;
	weft_config_init(&cfg);
	cfg.workers = 1;
	cfg.stack_size = 64 * 1024;
	weft_run(&cfg, bf_main, NULL, NULL);
}

static void test_guard_big_frame(void **state)
{
	(void)state;
#if UNDER_SANITIZER
	skip(); /* ASan's redzones move the frames */
#endif
	char err[4096];
	int st = run_in_child(bf_child, NULL, err, sizeof err);
	if (!WIFSIGNALED(st) || WTERMSIG(st) != SIGABRT ||
	    !strstr(err, "overflowed its stack"))
		fail_msg("not reported as an overflow: status %#x, stderr: %s",
			 st, err);
}


/* ---- out of map entries, whichever way guards are set ------------------- */

/* The process's map entries are used up (one-page mappings of alternating
 * protection, which cannot merge) while fibers start: the ones that need a
 * new region (or, with mprotect, a new guard) end with -ENOMEM; once the
 * entries are back, fibers start again. */
#define EX_FIBERS 300
#define EX_MAPS 70000
static void *ex_maps[EX_MAPS];
static int ex_nmaps, ex_enomem, ex_ok, ex_other, ex_after;
static weft_event ex_go;

static void *ex_holder(void *arg)
{
	weft_event_wait(&ex_go);
	return arg;
}

static void *ex_main(void *arg)
{
	(void)arg;
	static weft_task *t[EX_FIBERS];
	weft_event_init(&ex_go);
	/* spawned (task memory taken) before the entries run out; they start
	 * at our yields below */
	for (int i = 0; i < EX_FIBERS; i++)
		t[i] = weft_spawn(ex_holder, (void *)(intptr_t)i);
	ex_nmaps = 0;
	while (ex_nmaps < EX_MAPS) {
		void *p = mmap(NULL, 4096,
			       ex_nmaps & 1 ? PROT_READ : PROT_NONE,
			       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (p == MAP_FAILED)
			break;
		ex_maps[ex_nmaps++] = p;
	}
	for (int i = 0; i < 2 * EX_FIBERS; i++)
		weft_yield();
	while (ex_nmaps > 0)
		munmap(ex_maps[--ex_nmaps], 4096);
	weft_event_set(&ex_go);
	for (int i = 0; i < EX_FIBERS; i++) {
		void *res = NULL;
		int r = t[i] ? weft_join(t[i], &res) : -ENOMEM;
		if (r == -ENOMEM)
			ex_enomem++;
		else if (r == 0 && res == (void *)(intptr_t)i)
			ex_ok++;
		else
			ex_other++;
	}
	for (int i = 0; i < EX_FIBERS; i++) {
		t[i] = weft_spawn(ex_holder, (void *)(intptr_t)i);
		void *res = NULL;
		if (t[i] && weft_join(t[i], &res) == 0 &&
		    res == (void *)(intptr_t)i)
			ex_after++;
	}
	return NULL;
}

static void test_map_entries_exhausted(void **state)
{
	(void)state;
#if UNDER_SANITIZER
	skip(); /* the sanitizers' own mappings would fail first */
#endif
	weft_config cfg;
	weft_config_init(&cfg);
	cfg.workers = 1;
	assert_int_equal(weft_run(&cfg, ex_main, NULL, NULL), 0);
	print_message("  %d fibers got a stack, %d -ENOMEM\n", ex_ok,
		      ex_enomem);
	assert_int_equal(ex_other, 0);
	assert_true(ex_ok > 0);
	assert_true(ex_enomem > 0);
	assert_int_equal(ex_ok + ex_enomem, EX_FIBERS);
	assert_int_equal(ex_after, EX_FIBERS);
}


/* ---- a fault that is not ours, then an overflow ------------------------- */

/* A program's own SIGSEGV handler that recovers (a probe of a protected
 * page; cmocka's, a GC's, a JIT's): after it has handled one fault while
 * weft runs, an overflow must still be reported. */
static sigjmp_buf probe_jb;
static volatile int probe_faults;

static void probe_handler(int sig)
{
	(void)sig;
	probe_faults++;
	siglongjmp(probe_jb, 1);
}

static void *probe_fiber(void *arg)
{
	volatile char *page = arg;
	if (sigsetjmp(probe_jb, 1) == 0)
		(void)*page; /* faults: the program's handler jumps back */
	return NULL;
}

static void *chain_main(void *arg)
{
	(void)arg;
	void *page = mmap(NULL, 4096, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS,
			  -1, 0);
	weft_join(weft_spawn(probe_fiber, page), NULL);
	if (probe_faults != 1)
		_exit(3);
	weft_join(weft_spawn(deep, NULL), NULL);
	return NULL;
}

static void chain_child(void *arg)
{
	(void)arg;
	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = probe_handler;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGSEGV, &sa, NULL);
	weft_config cfg;
	weft_config_init(&cfg);
	cfg.workers = 1;
	weft_run(&cfg, chain_main, NULL, NULL);
}

static void test_guard_after_foreign_fault(void **state)
{
	(void)state;
	char err[4096];
	int st = run_in_child(chain_child, NULL, err, sizeof err);
	if (!WIFSIGNALED(st) || WTERMSIG(st) != SIGABRT ||
	    !strstr(err, "overflowed its stack"))
		fail_msg("not reported as an overflow: status %#x, stderr: %s",
			 st, err);
}

/* ---- the alternate signal stack has a guard too ---------------------------
 * Each worker thread runs on an alternate signal stack of 64 KiB (the
 * overflow report needs one). A handler of the program's own installed
 * with SA_ONSTACK runs there; one that goes deeper than 64 KiB used to
 * write below a malloc'd block, over the heap, and carry on. With a guard
 * page below the alternate stack it faults, and the kernel, unable to
 * deliver the fault on the stack that overflowed, ends the process with
 * SIGSEGV. */
static int deep_handler_depth(int n)
{
	volatile char frame[1024];
	frame[0] = (char)n;
	frame[sizeof frame - 1] = (char)n;
	if (n == 0)
		return frame[0];
	return deep_handler_depth(n - 1) + frame[sizeof frame - 1];
}

static void deep_handler(int sig)
{
	(void)sig;
	(void)deep_handler_depth(200); /* ~200 KiB */
}

static void *raise_main(void *arg)
{
	(void)arg;
	raise(SIGUSR1); /* on this worker thread: its alternate stack */
	return NULL;
}

static void altstack_child(void *arg)
{
	(void)arg;
	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = deep_handler;
	sa.sa_flags = SA_ONSTACK;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGUSR1, &sa, NULL);
	weft_config cfg;
	weft_config_init(&cfg);
	cfg.workers = 1;
	weft_run(&cfg, raise_main, NULL, NULL);
	_exit(0);
}

static void test_altstack_guard(void **state)
{
	(void)state;
#if defined(__SANITIZE_THREAD__)
	skip(); /* TSan defers signal handlers: not on the alternate stack */
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
	skip();
#endif
#endif
	char err[4096];
	int st = run_in_child(altstack_child, NULL, err, sizeof err);
	if (!WIFSIGNALED(st) || WTERMSIG(st) != SIGSEGV)
		fail_msg("a handler that overran the alternate stack was not "
			 "stopped: status %#x, stderr: %s",
			 st, err);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_guard_page),
		cmocka_unit_test(test_guard_named_stolen),
		cmocka_unit_test(test_guard_big_frame),
		cmocka_unit_test(test_guard_after_foreign_fault),
		cmocka_unit_test(test_out_of_stacks),
		cmocka_unit_test(test_detached_without_stack_reported),
		cmocka_unit_test(test_main_out_of_stack),
		cmocka_unit_test(test_out_of_map_entries),
		cmocka_unit_test(test_map_entries_exhausted),
		cmocka_unit_test(test_altstack_guard),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
