/* Description: guard pages and running out of stacks.
 *
 * A fiber that recurses without bound hits the guard page below its stack;
 * the SIGSEGV handler (on an alternate stack) names the fiber and aborts.
 * Checked in a child process: it must die by SIGABRT with the message.
 * Then: when no more stack memory can be mapped (RLIMIT_AS), a fiber that
 * cannot get a stack ends at once and its joiner gets -ENOMEM; the runtime
 * keeps working once memory is back.
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
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>
#include <weft.h>

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define UNDER_SANITIZER 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define UNDER_SANITIZER 1
#endif
#endif

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

static void *nomem_main(void *arg)
{
	(void)arg;
	struct rlimit old, lim;
	getrlimit(RLIMIT_AS, &old);
	/* current address-space size, plus 8 MiB: fiber structs and a few
	 * stack regions fit, 3000 live 256 KiB stacks (750 MiB) do not */
	FILE *f = fopen("/proc/self/statm", "r");
	unsigned long pages = 0;
	if (!f || fscanf(f, "%lu", &pages) != 1)
		abort();
	fclose(f);
	lim = old;
	lim.rlim_cur = pages * (unsigned long)sysconf(_SC_PAGESIZE) +
		       8ul * 1024 * 1024;
	setrlimit(RLIMIT_AS, &lim);

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
#ifdef UNDER_SANITIZER
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

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_guard_page),
		cmocka_unit_test(test_out_of_stacks),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
