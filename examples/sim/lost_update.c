/* lost_update.c — a planted bug found by seed exploration: a lost update.
 *
 * Two tellers share one balance. Teller 1 serves a customer every 10 us,
 * teller 2 every 15 us; each deposit is a read-modify-write with an await
 * in the middle (the audit service takes 2 us to answer):
 *
 *     long b = balance;        read
 *     weft_sleep(2 us);        await the audit service: other fibers run
 *     balance = b + AMOUNT;    write: b may be stale by now
 *
 * Most of the time the tellers' deposits do not overlap and every one
 * counts. Only when one teller reads while the other is inside its 2 us
 * window is a deposit lost, and whether that happens depends on how the
 * fibers' wake-ups line up. With a seed, weft_run draws every scheduling
 * choice (and the small steps of virtual time) from the seed, and
 * weft_sim_explore runs seeds, each in a child process, until one ends
 * with the wrong balance.
 *
 *   lost_update                  explore seeds 1..200 (random schedules)
 *   lost_update --pct 3          the same under PCT, depth 3
 *   WEFT_SEED=k lost_update ...  replay seed k here: what each teller saw,
 *                                and the run's trace hash
 *
 * Exit status: 0 when the bug was found (this is a demo of finding it),
 * 1 when no seed showed it. The fix: hold a weft_mutex from the read to
 * the write.
 */
#include "demo.h"

#define TELLERS 2
#define DEPOSITS 3
#define AMOUNT 10

static long balance; /* shared, unlocked: the planted bug */

static void *teller(void *arg)
{
	int id = (int)(intptr_t)arg;
	for (int i = 0; i < DEPOSITS; i++) {
		weft_sleep((uint64_t)(5 + 5 * id) * US); /* serve a customer */
		long b = balance;                        /* read */
		note("  %5.1f us  teller %d reads  %3ld", us_now(), id, b);
		weft_sleep(2 * US);                      /* await the audit */
		balance = b + AMOUNT;                    /* write */
		note("  %5.1f us  teller %d writes %3ld", us_now(), id,
		     b + AMOUNT);
	}
	return NULL;
}

/* One run. Non-NULL means a deposit was lost: the explorer's "this seed
 * failed". */
static void *bank(void *arg)
{
	(void)arg;
	balance = 0;
	trail_reset();
	weft_task *t[TELLERS];
	for (intptr_t i = 0; i < TELLERS; i++)
		if (!(t[i] = weft_spawn(teller, (void *)(i + 1))))
			abort();
	weft_gather(t, TELLERS, NULL);
	long want = TELLERS * DEPOSITS * AMOUNT;
	note("balance %ld, expected %ld", balance, want);
	return balance == want ? NULL : (void *)1;
}

int main(int argc, char **argv)
{
	return demo_main(argc, argv, bank, "lost an update");
}
