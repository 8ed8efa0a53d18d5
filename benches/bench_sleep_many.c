/* sleep_many: N fibers suspended at once. Each increments `started`, then
 * sleeps D = 5 s. The main fiber spawns all N, waits (polling every 1 ms)
 * until all have started, notes the time and the RSS, then joins them all.
 * secs = (end - start) - D: spawning, starting every fiber with its stack,
 * the timers, waking and joining, without the sleep itself. */
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>

#include "bench.h"

#define D_NS 5000000000ull /* longer than starting a million takes here */

static unsigned long long N;
static weft_task **tasks;
static atomic_ullong started;
static atomic_ullong bad_sleep;   /* weft_sleep returned non-zero */
static atomic_ullong early;       /* woke before its start + D */
static atomic_ullong woken;       /* sleeps over */
static unsigned long long woken_at_start; /* ... when the last had started */
static unsigned long long bad_join;
static double secs, started_secs;
static long rss_kb = -1;

static long vm_rss_kb(void)
{
	FILE *f = fopen("/proc/self/status", "r");
	char line[256];
	long kb = -1;
	if (!f)
		return -1;
	while (fgets(line, sizeof line, f))
		if (!strncmp(line, "VmRSS:", 6)) {
			kb = strtol(line + 6, NULL, 10);
			break;
		}
	fclose(f);
	return kb;
}

static void *sleeper(void *arg)
{
	(void)arg;
	atomic_fetch_add_explicit(&started, 1, memory_order_relaxed);
	uint64_t s = weft_now();
	int r = weft_sleep(D_NS);
	uint64_t e = weft_now();
	atomic_fetch_add_explicit(&woken, 1, memory_order_relaxed);
	if (r != 0)
		atomic_fetch_add_explicit(&bad_sleep, 1, memory_order_relaxed);
	else if (e < s + D_NS)
		atomic_fetch_add_explicit(&early, 1, memory_order_relaxed);
	return NULL;
}

static void *run(void *arg)
{
	(void)arg;
	double t0 = bench_secs();
	for (unsigned long long i = 0; i < N; i++)
		if (!(tasks[i] = weft_spawn(sleeper, NULL)))
			abort();
	while (atomic_load_explicit(&started, memory_order_relaxed) < N)
		weft_sleep(1000000);
	started_secs = bench_secs() - t0;
	rss_kb = vm_rss_kb();
	woken_at_start = atomic_load_explicit(&woken, memory_order_relaxed);
	for (unsigned long long i = 0; i < N; i++)
		if (weft_join(tasks[i], NULL))
			bad_join++;
	secs = bench_secs() - t0 - (double)D_NS * 1e-9;
	return NULL;
}

int main(int argc, char **argv)
{
	N = bench_arg(argc, argv, 1000000);
	tasks = calloc(N ? N : 1, sizeof *tasks);
	if (!tasks) {
		fprintf(stderr, "sleep_many: out of memory\n");
		return 1;
	}
	/* the handle array is harness (Go's WaitGroup needs none): fault it
	 * in before timing, as spawn_many does */
	memset(tasks, 0, N * sizeof *tasks);
	bench_run(run, NULL);
	fprintf(stderr, "sleep_many: started all in %.3f s, rss %.0f MB at that point\n",
		started_secs, rss_kb / 1024.0);
	if (woken_at_start)
		fprintf(stderr, "sleep_many: %llu of %llu had already woken by then "
			"(starting took longer than the sleep): fewer were "
			"suspended at once\n", woken_at_start, N);
	unsigned long long bs = atomic_load(&bad_sleep), ea = atomic_load(&early);
	if (bs || ea || bad_join) {
		fprintf(stderr, "sleep_many: FAILED: %llu sleep(s) returned non-zero, "
			"%llu woke early, %llu join(s) failed\n", bs, ea, bad_join);
		return 1;
	}
	bench_result("sleep_many", N, secs);
	return 0;
}
