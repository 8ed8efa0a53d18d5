/* deadlock.c — a planted bug found by seed exploration: two locks taken in
 * opposite orders.
 *
 * Two clerks move money between accounts A and B, each account under its
 * own weft_mutex. A transfer locks the account it takes from, checks the
 * payment with a fraud service (an await: 2 us), then locks the account it
 * pays into:
 *
 *     weft_mutex_lock(&from->lock);
 *     weft_sleep(2 us);                  other fibers run
 *     weft_mutex_lock(&to->lock);        the other clerk may hold it...
 *
 * Clerk 1 pays A -> B every 10 us, clerk 2 pays B -> A every 15 us. If
 * both are inside their 2 us check at once, each holds the lock the other
 * waits for, forever. With a seed, weft_run notices: every fiber parked,
 * no timer, no I/O. It prints "all fibers parked, no timers, no I/O:
 * deadlock" and the wait graph (weft_dump) on stderr, cancels every fiber
 * and returns -EDEADLK; weft_sim_explore runs seeds, each in a child
 * process, until one deadlocks.
 *
 *   deadlock                  explore seeds 1..200 (random schedules)
 *   deadlock --pct 3          the same under PCT, depth 3
 *   WEFT_SEED=k deadlock ...  replay seed k here: the dump, who locked
 *                             what when, and the run's trace hash
 *
 * Exit status: 0 when the bug was found (this is a demo of finding it),
 * 1 when no seed showed it. The fix: always lock the two accounts in one
 * global order (say, by account number).
 */
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <weft.h>

#define TRANSFERS 3
#define US 1000ull /* weft_sleep takes ns */

struct account {
	const char *name;
	long balance;
	weft_mutex lock;
};
static struct account A = {"A", 100, WEFT_MUTEX_INIT},
		      B = {"B", 100, WEFT_MUTEX_INIT};
static uint64_t t0;

/* what happened, in order: printed when a seed is replayed */
static char trail[8192];
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

static void transfer(int clerk, struct account *from, struct account *to)
{
	weft_mutex_lock(&from->lock); /* can only fail when cancelled */
	note("  %5.1f us  clerk %d locked %s", us_now(), clerk, from->name);
	weft_sleep(2 * US);           /* the fraud check */
	int r = weft_mutex_lock(&to->lock);
	if (r < 0) { /* cancelled: weft_run found the deadlock */
		note("  %5.1f us  clerk %d, locking %s: %s", us_now(), clerk,
		     to->name, weft_strerror(r));
		weft_mutex_unlock(&from->lock);
		return;
	}
	note("  %5.1f us  clerk %d locked %s, pays 10", us_now(), clerk,
	     to->name);
	from->balance -= 10;
	to->balance += 10;
	weft_mutex_unlock(&to->lock);
	weft_mutex_unlock(&from->lock);
}

static void *clerk(void *arg)
{
	int id = (int)(intptr_t)arg;
	for (int i = 0; i < TRANSFERS; i++) {
		if (weft_sleep((uint64_t)(5 + 5 * id) * US) < 0)
			break; /* cancelled */
		if (id == 1)
			transfer(id, &A, &B);
		else
			transfer(id, &B, &A);
	}
	return NULL;
}

/* One run: a deadlock makes weft_run return -EDEADLK, which the explorer
 * counts as a failure (fn itself never fails here). */
static void *bank(void *arg)
{
	(void)arg;
	A.balance = B.balance = 100;
	trail_len = 0;
	t0 = weft_now();
	weft_task *t[2];
	if (!(t[0] = weft_spawn(clerk, (void *)1)) ||
	    !(t[1] = weft_spawn(clerk, (void *)2)))
		abort();
	/* names for the dump (weft/debug.h) */
	weft_task_set_name(NULL, "bank");
	weft_task_set_name(t[0], "clerk 1");
	weft_task_set_name(t[1], "clerk 2");
	weft_gather(t, 2, NULL);
	note("balances A %ld, B %ld", A.balance, B.balance);
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

	int64_t seed = weft_sim_explore(&cfg, 1, 200, 0, bank, NULL);
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
		printf("no seed deadlocked\n");
		return 1;
	}
	printf("seed %" PRId64 " deadlocked\n", seed);
	return 0;
}
