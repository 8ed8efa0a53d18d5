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
#include "demo.h"

#define HANDLERS 3

static weft_mutex m = WEFT_MUTEX_INIT;
static weft_cond loaded;
static int ready; /* written under m, read without it: the planted bug */

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
	trail_reset();
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
	return demo_main(argc, argv, server, "lost a wake-up");
}
