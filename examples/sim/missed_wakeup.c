/* missed_wakeup.c — a planted bug found by seed exploration: a wake-up
 * sent before its waiter waits.
 *
 * A loader reads the configuration (10 us), then sets `ready` and
 * broadcasts on a condition variable. Request handlers arrive every 4 us;
 * one that finds the configuration not ready logs that it waits (an
 * await: 2 us), then waits on the condition, without looking at `ready`
 * again under the mutex:
 *
 *     if (!ready) {                           check, unlocked
 *             weft_sleep(2 us);               log "waiting": others run
 *             weft_mutex_lock(&m);
 *             weft_cond_wait(&loaded, &m);    no re-check: the broadcast
 *             weft_mutex_unlock(&m);          may already have gone
 *     }
 *
 * A handler whose check comes just before the broadcast and whose wait
 * comes just after it sleeps forever, and so does main, joining it. With a
 * seed, weft_run notices: every fiber parked, no timer, no I/O. It prints
 * "all fibers parked, no timers, no I/O: deadlock" and the wait graph
 * (weft_dump) on stderr, cancels every fiber and returns -EDEADLK;
 * weft_sim_explore runs seeds, each in a child process, until one hangs.
 *
 *   missed_wakeup                  explore seeds 1..200 (random schedules)
 *   missed_wakeup --pct 3          the same under PCT, depth 3
 *   WEFT_SEED=k missed_wakeup ...  replay seed k here: the dump, who
 *                                  checked and waited when, and the hash
 *
 * Exit status: 0 when the bug was found (this is a demo of finding it),
 * 1 when no seed showed it. The fix: lock, then `while (!ready)
 * weft_cond_wait(...)`, which also covers spurious wake-ups.
 */
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <weft.h>

#define HANDLERS 3
#define US 1000ull /* weft_sleep takes ns */

static weft_mutex m = WEFT_MUTEX_INIT;
static weft_cond loaded;
static int ready; /* written under m, read without it: the planted bug */
static uint64_t t0;

/* what happened, in order: printed when a seed is replayed */
static char trail[4096];
static size_t trail_len;

static void note(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(trail + trail_len, sizeof trail - trail_len, fmt, ap);
	va_end(ap);
	if (n > 0 && trail_len + (size_t)n + 1 < sizeof trail) {
		trail_len += (size_t)n;
		trail[trail_len++] = '\n';
	}
}

static double us_now(void) { return (double)(weft_now() - t0) / 1e3; }

static void *loader(void *arg)
{
	(void)arg;
	weft_sleep(10 * US); /* read the configuration */
	weft_mutex_lock(&m);
	ready = 1;
	weft_cond_broadcast(&loaded);
	weft_mutex_unlock(&m);
	note("  %5.1f us  loader: ready, broadcast", us_now());
	return NULL;
}

static void *handler(void *arg)
{
	int id = (int)(intptr_t)arg;
	weft_sleep((uint64_t)(4 * id) * US); /* the request arrives */
	if (!ready) {
		note("  %5.1f us  handler %d: not ready", us_now(), id);
		weft_sleep(2 * US);              /* log that it waits */
		weft_mutex_lock(&m);
		note("  %5.1f us  handler %d: waits", us_now(), id);
		int r = weft_cond_wait(&loaded, &m);
		weft_mutex_unlock(&m);
		note("  %5.1f us  handler %d: woken (%s)", us_now(), id,
		     weft_strerror(r));
	}
	note("  %5.1f us  handler %d: serves", us_now(), id);
	return NULL;
}

/* One run: a hang makes weft_run return -EDEADLK, which the explorer
 * counts as a failure (fn itself never fails here). */
static void *server(void *arg)
{
	(void)arg;
	ready = 0;
	weft_cond_init(&loaded);
	trail_len = 0;
	t0 = weft_now();
	static const char *const names[HANDLERS + 1] = {
		"loader", "handler 1", "handler 2", "handler 3"};
	weft_task *t[HANDLERS + 1];
	if (!(t[0] = weft_spawn(loader, NULL)))
		abort();
	for (intptr_t i = 1; i <= HANDLERS; i++)
		if (!(t[i] = weft_spawn(handler, (void *)i)))
			abort();
	/* names for the dump (weft/debug.h) */
	weft_task_set_name(NULL, "server");
	for (int i = 0; i <= HANDLERS; i++)
		weft_task_set_name(t[i], names[i]);
	weft_gather(t, HANDLERS + 1, NULL);
	return NULL;
}

int main(int argc, char **argv)
{
	weft_config cfg;
	weft_config_init(&cfg);
	cfg.workers = 2; /* fixed, so a seed means the same on every machine */
	if (argc == 3 && !strcmp(argv[1], "--pct"))
		cfg.pct = (unsigned)atoi(argv[2]); /* PCT depth, 1..64 */
	if (argc != 1 && (argc != 3 || cfg.pct < 1 || cfg.pct > 64))
		return fprintf(stderr, "usage: %s [--pct depth]\n", argv[0]), 2;

	int64_t seed = weft_sim_explore(&cfg, 1, 200, 0, server, NULL);
	if (seed < 0) {
		fprintf(stderr, "weft_sim_explore: %s\n", weft_strerror((int)seed));
		return 2;
	}
	const char *replay = getenv("WEFT_SEED");
	weft_sim_report rep;
	if (replay && *replay && weft_sim_report_get(&rep) == 0) {
		/* ran in this process: show what happened */
		fputs(trail, stdout);
		printf("seed %" PRIu64 ": trace %016" PRIx64 ", %" PRIu64
		       " steps%s\n", rep.seed, rep.trace, rep.steps,
		       rep.deadlock ? ", deadlock" : "");
	}
	if (seed == 0) {
		printf("no seed lost a wake-up\n");
		return 1;
	}
	printf("seed %" PRId64 " lost a wake-up\n", seed);
	return 0;
}
