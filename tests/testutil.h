/* Description: helpers shared by weft's cmocka tests.
 *
 * Each test is its own executable built from one .c file, so the static
 * state below (the failure record) is per test program. Everything is
 * static inline or a macro: a test that does not use a helper pays nothing
 * and gets no unused-function warning.
 *
 * - time units (US, MS, SEC in ns) and WEFT_TEST_SCALE scaling;
 * - cfg_workers: a default config with a worker count;
 * - rnd, pat: a seeded PRNG and a seeded byte pattern for data checks;
 * - failure recording for fibers and helper threads (CHECK, CHECK_EQ,
 *   assert_no_fails), since fibers must never call assert_* (cmocka
 *   longjmps), and run(), which runs a main fiber and checks the record;
 * - waiting from a fiber for an atomic flag (wait_flag, await_at_least);
 * - count_dir_entries: count threads (/proc/self/task) or fds;
 * - run_in_child: run a function in a forked child and get its status
 *   (and stderr);
 * - apply_test_filters: WEFT_TEST_FILTER / WEFT_TEST_SKIP;
 * - seeded, SKIP_IF_SEEDED: the suite under WEFT_SEED (weft/sim.h);
 * - UNDER_SANITIZER: 1 in ASan and TSan builds, else 0;
 * - INTERPOSE: 1 where a test may define a libc function (realloc,
 *   getaddrinfo) to steer the static libweft; 0 under the sanitizers, whose
 *   runtimes intercept those themselves (TSan's is linked in statically:
 *   ours would bypass its allocator).
 */
#ifndef WEFT_TESTUTIL_H
#define WEFT_TESTUTIL_H

/* cmocka.h needs setjmp.h, stdarg.h, stddef.h and stdint.h first */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <signal.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>

#include <cmocka.h>
#include <weft.h>

/* ---- time units (ns, as weft_now / weft_sleep use) ----------------------- */

#define US 1000ull
#define MS 1000000ull
#define SEC 1000000000ull

/* ---- seeded runs ---------------------------------------------------------- */

/* Under WEFT_SEED (weft/sim.h, docs/testing.md) every weft_run simulates
 * its workers on one thread in virtual time. A test whose point is real OS
 * threads running at once, the real clock against virtual time, or the
 * threaded scheduler's own queues skips itself there and says why (CI runs
 * the suite under a few fixed seeds). */
static inline int seeded(void)
{
	const char *e = getenv("WEFT_SEED");
	return e && *e;
}
#define SKIP_IF_SEEDED(why)                                                  \
	do {                                                                 \
		if (seeded()) {                                              \
			print_message("  skipped under WEFT_SEED: %s\n", why); \
			skip();                                              \
		}                                                            \
	} while (0)

/* ---- scaling ------------------------------------------------------------- */

/* env WEFT_TEST_SCALE (default 1.0; junk, <= 0 or > 1000 also give 1.0):
 * sanitizer builds run smaller counts */
static inline double test_scale(void)
{
	const char *e = getenv("WEFT_TEST_SCALE");
	if (!e || !*e)
		return 1.0;
	char *end;
	double v = strtod(e, &end);
	if (end == e || *end || !(v > 0.0) || v > 1000.0)
		return 1.0;
	return v;
}

/* n scaled by WEFT_TEST_SCALE, at least lo */
static inline size_t scaled(size_t n, size_t lo)
{
	size_t m = (size_t)((double)n * test_scale());
	return m < lo ? lo : m;
}

/* ---- deterministic data -------------------------------------------------- */

/* xorshift64*: deterministic per seed (*s must not be 0) */
static inline uint64_t rnd(uint64_t *s)
{
	uint64_t x = *s;
	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	*s = x;
	return x * 0x2545F4914F6CDD1Dull;
}

/* the byte at offset off of the data stream numbered seed */
static inline unsigned char pat(uint64_t seed, uint64_t off)
{
	uint64_t x = (off + 1) * 0x9E3779B97F4A7C15ull ^ (seed * 0x100000001b3ull);
	x ^= x >> 29;
	return (unsigned char)(x * 0xBF58476D1CE4E5B9ull >> 56);
}

/* ---- configuration ------------------------------------------------------- */

/* the default config with n workers (0: the default count) */
static inline weft_config cfg_workers(unsigned n)
{
	weft_config c;
	weft_config_init(&c);
	c.workers = n;
	return c;
}

/* ---- failure recording (fibers and helper threads) ----------------------- */

/* how many checks failed, and the line and values of the first */
static atomic_int fails;
static _Atomic int fail_line;
static _Atomic long fail_a, fail_b;

/* record a failed check at line (a, b: the values compared, or 0) */
static inline void note_fail(int line, long a, long b)
{
	int zero = 0;
	if (atomic_compare_exchange_strong(&fail_line, &zero, line)) {
		atomic_store(&fail_a, a);
		atomic_store(&fail_b, b);
	}
	atomic_fetch_add(&fails, 1);
}

/* CHECK / CHECK_EQ: safe in fibers and threads; recorded, not asserted */
#define CHECK(c)                                                            \
	do {                                                                \
		if (!(c))                                                   \
			note_fail(__LINE__, 0, 0);                          \
	} while (0)
#define CHECK_EQ(a, b)                                                      \
	do {                                                                \
		long a_ = (long)(a), b_ = (long)(b);                        \
		if (a_ != b_)                                               \
			note_fail(__LINE__, a_, b_);                        \
	} while (0)

/* like CHECK_EQ, but says which call on stderr (fibers: no assert_*) */
#define EXPECT(expr, want)                                                  \
	do {                                                                \
		long g_ = (long)(expr), w_ = (long)(want);                  \
		if (g_ != w_) {                                             \
			fprintf(stderr, "  line %d: %s = %ld, want %ld\n",  \
				__LINE__, #expr, g_, w_);                   \
			note_fail(__LINE__, g_, w_);                        \
		}                                                           \
	} while (0)

/* forget every recorded failure */
static inline void reset_fails(void)
{
	atomic_store(&fails, 0);
	atomic_store(&fail_line, 0);
}

/* on the main stack: fail the test if any check failed */
static inline void assert_no_fails(void)
{
	if (atomic_load(&fails))
		fail_msg("%d checks failed in fibers; first at line %d "
			 "(%ld vs %ld)",
			 atomic_load(&fails), atomic_load(&fail_line),
			 atomic_load(&fail_a), atomic_load(&fail_b));
}

/* run fn on `workers` workers; every recorded check must have passed */
static inline void run(unsigned workers, void *(*fn)(void *), void *arg)
{
	reset_fails();
	weft_config c = cfg_workers(workers);
	assert_int_equal(weft_run(&c, fn, arg, NULL), 0);
	assert_no_fails();
}

/* ---- sockets (fiber only) ------------------------------------------------ */

static inline uint16_t port_of(int fd)
{
	struct sockaddr_storage ss;
	socklen_t len = sizeof ss;
	if (getsockname(fd, (struct sockaddr *)&ss, &len) != 0)
		return 0;
	if (ss.ss_family == AF_INET)
		return ntohs(((struct sockaddr_in *)&ss)->sin_port);
	if (ss.ss_family == AF_INET6)
		return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
	return 0;
}

/* A connected TCP pair over 127.0.0.1 (fiber only): *c the client end,
 * *s the accepted end. 0 or a negative errno. */
static inline int tcp_pair(int *c, int *s)
{
	int l = weft_tcp_listen("127.0.0.1", 0, 16);
	if (l < 0)
		return l;
	*c = weft_tcp_connect("127.0.0.1", port_of(l)); /* done by backlog */
	if (*c < 0) {
		close(l);
		return *c;
	}
	*s = weft_accept(l, NULL, NULL);
	close(l);
	if (*s < 0) {
		close(*c);
		return *s;
	}
	return 0;
}

/* ---- waiting from a fiber ------------------------------------------------ */

/* ms since weft_now() was t0 */
static inline uint64_t ms_since(uint64_t t0)
{
	return (weft_now() - t0) / MS;
}

/* From a fiber: wait (sleeping 1 ms steps, at most 10 s) until *flag.
 * 0 if it got there, -1 on timeout. */
/* real time: the bounds below hold in seeded runs too, where weft_now is
 * virtual and the flag may come from a plain thread */
static inline uint64_t real_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * SEC + (uint64_t)ts.tv_nsec;
}

static inline int wait_flag(_Atomic int *flag)
{
	uint64_t until = real_ns() + 10 * SEC;
	while (!atomic_load(flag)) {
		if (real_ns() > until)
			return -1;
		weft_sleep(1 * MS);
	}
	return 0;
}

/* The line of weft_dump's output `dump` for the fiber named `name`
 * (weft_task_set_name), copied to out (cut at outsz), or NULL. */
static inline char *dump_line_of(const char *dump, const char *name,
				 char *out, size_t outsz)
{
	char key[96];
	snprintf(key, sizeof key, "\"%s\": ", name);
	for (const char *p = dump; p && *p;) {
		const char *e = strchr(p, '\n');
		size_t len = e ? (size_t)(e - p) : strlen(p);
		if (!strncmp(p, "fiber ", 6)) {
			snprintf(out, outsz, "%.*s", (int)len, p);
			if (strstr(out, key))
				return out;
		}
		p = e ? e + 1 : NULL;
	}
	return NULL;
}

/* From a fiber: wait until the fiber named `name` is parked in a wait
 * whose weft_dump line says " ms on <what...>", e.g. "io recv" (bounded
 * at 10 s of real time). 0 once it is, -1 if not. A flag the fiber sets
 * just before a call says only that it is about to enter; a test that
 * must act while it is inside (close a conn it waits on: a call made
 * after the close would use freed memory) waits for this. */
static inline int wait_parked(const char *name, const char *what)
{
	char on[96], line[512];
	snprintf(on, sizeof on, " ms on %s", what);
	uint64_t until = real_ns() + 10 * SEC;
	for (;;) {
		char *buf = NULL;
		size_t len = 0;
		FILE *f = open_memstream(&buf, &len);
		if (!f)
			return -1;
		weft_dump(f);
		fclose(f);
		int found = dump_line_of(buf, name, line, sizeof line) &&
			    strstr(line, on);
		free(buf);
		if (found)
			return 0;
		if (real_ns() > until)
			return -1;
		weft_sleep(100 * US);
	}
}

/* From a fiber: sleep until *flag reaches want (polling; bounded at 10 s);
 * a CHECK fails if it did not. */
static inline void await_at_least(atomic_int *flag, int want)
{
	uint64_t t0 = real_ns();
	while (atomic_load(flag) < want && real_ns() - t0 < 10 * SEC)
		weft_sleep(1 * MS);
	CHECK(atomic_load(flag) >= want);
}

/* ---- /proc counts ---------------------------------------------------------- */

/* entries of directory path, without . and .. (for /proc/self/fd the count
 * includes the DIR's own fd); -1 if it cannot be opened */
static inline int count_dir_entries(const char *path)
{
	DIR *d = opendir(path);
	if (!d)
		return -1;
	int n = 0;
	struct dirent *e;
	while ((e = readdir(d)))
		if (e->d_name[0] != '.')
			n++;
	closedir(d);
	return n;
}

/* ---- forked children ----------------------------------------------------- */

/* cmocka catches SIGSEGV & co. to report a failed test; a forked child must
 * die of them instead, for its parent to see */
static inline void child_default_signals(void)
{
	static const int sigs[] = {SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGABRT,
				   SIGSYS};
	for (size_t i = 0; i < sizeof sigs / sizeof sigs[0]; i++)
		signal(sigs[i], SIG_DFL);
}

/* Runs fn(arg) in a forked child (default signal actions, no core dump);
 * the child exits 0 when fn returns. With err, the child's stderr is
 * captured into err (errsz bytes, NUL-terminated); with err NULL it goes
 * where ours goes. Returns the child's wait status. */
static inline int run_in_child(void (*fn)(void *), void *arg, char *err,
			       size_t errsz)
{
	int p[2] = {-1, -1};
	if (err)
		assert_int_equal(pipe(p), 0);
	fflush(NULL);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		child_default_signals();
		struct rlimit no_core = {0, 0};
		setrlimit(RLIMIT_CORE, &no_core);
		if (err) {
			close(p[0]);
			dup2(p[1], 2);
		}
		fn(arg);
		_exit(0);
	}
	if (err) {
		close(p[1]);
		size_t len = 0;
		ssize_t n;
		while (len < errsz - 1 &&
		       (n = read(p[0], err + len, errsz - 1 - len)) > 0)
			len += (size_t)n;
		err[len] = 0;
		close(p[0]);
	}
	int st = 0;
	assert_int_equal(waitpid(pid, &st, 0), pid);
	return st;
}

/* ---- churn ------------------------------------------------------------- */

/* A fiber that spawns and joins short fibers until *(_Atomic int *)stop:
 * fibers start and end all the time, on whichever worker. Each end tears
 * down the fiber's ThreadSanitizer state: a window in which TSan once lost
 * a signal the thread took (runtime/sched.c, weft__after_switch). */
static inline void *churn_leaf_(void *arg) { return arg; }
static inline void *churn_fibers(void *stop)
{
	while (!atomic_load((_Atomic int *)stop)) {
		weft_task *t = weft_spawn(churn_leaf_, NULL);
		if (!t || weft_join(t, NULL))
			break;
	}
	return NULL;
}

/* ---- test selection ------------------------------------------------------ */

/* WEFT_TEST_FILTER / WEFT_TEST_SKIP: a glob of test names to run only / to
 * leave out; call in main() before cmocka_run_group_tests */
static inline void apply_test_filters(void)
{
	const char *filter = getenv("WEFT_TEST_FILTER");
	if (filter && *filter)
		cmocka_set_test_filter(filter);
	const char *skip = getenv("WEFT_TEST_SKIP");
	if (skip && *skip)
		cmocka_set_skip_filter(skip);
}

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define UNDER_SANITIZER 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define UNDER_SANITIZER 1
#endif
#endif
#ifndef UNDER_SANITIZER
#define UNDER_SANITIZER 0
#endif
#define INTERPOSE (!UNDER_SANITIZER)

/* NOMEM_REALLOC_DEFINE(): at file scope, defines `static _Atomic int
 * nomem_realloc` and (where INTERPOSE) a realloc that fails while it is
 * non-zero, counting the failures in it (so a test can check it hit). */
#if INTERPOSE
#include <dlfcn.h>
#define NOMEM_REALLOC_DEFINE()                                               \
	static _Atomic int nomem_realloc;                                    \
	void *realloc(void *p, size_t n)                                     \
	{                                                                    \
		static void *(*real)(void *, size_t);                        \
		if (atomic_load(&nomem_realloc) && n) {                      \
			atomic_fetch_add(&nomem_realloc, 1);                 \
			return NULL;                                         \
		}                                                            \
		if (!real)                                                   \
			real = (void *(*)(void *, size_t))dlsym(RTLD_NEXT,   \
								"realloc");  \
		return real(p, n);                                           \
	}
#else
#define NOMEM_REALLOC_DEFINE() static _Atomic int nomem_realloc;
#endif

#endif /* WEFT_TESTUTIL_H */
