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
#include "demo.h"

#define TRANSFERS 3

struct account {
	const char *name;
	long balance;
	weft_mutex lock;
};
static struct account A = {"A", 100, WEFT_MUTEX_INIT},
		      B = {"B", 100, WEFT_MUTEX_INIT};

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
	trail_reset();
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
	return demo_main(argc, argv, bank, "deadlocked");
}
