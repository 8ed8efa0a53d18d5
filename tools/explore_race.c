/* explore_race.c — a weft program with bugs that only some schedules show,
 * for weft-explore's test (explore_check.sh) and docs/testing.md.
 *
 *   explore_race [lazy]  two request handlers fetch a shared configuration
 *                        that is loaded on first use, with a check-then-act
 *                        race: the load suspends (a yield stands for
 *                        reading a file), and a handler that checks in
 *                        that window loads it again (about one seed in
 *                        ten). Exit 1 then.
 *   explore_race abba    two fibers take two mutexes in opposite orders,
 *                        with a yield in between: the schedules where both
 *                        hold their first lock deadlock (weft_run returns
 *                        -EDEADLK in a seeded run). Exit 1 then.
 *
 * The fiber functions are not static, so that weft_dump (the deadlock
 * report) can name them (CMakeLists.txt links with -rdynamic).
 *
 * Exit 0 when the run was fine, 2 when weft_run failed for another reason.
 * Runs under any seed, or unseeded (threaded) where the races are rarer.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <weft.h>

/* ---- lazy: check-then-act across a suspension point --------------------- */

struct config {
	int max_conns;
};

static struct config *config;  /* loaded on first use */
static int loads;              /* how many times it was loaded */
static struct config slots[2]; /* where the loads go (no malloc: a leak
				  would change the exit status under LSan) */

static struct config *config_get(void)
{
	if (!config) {                  /* check ... */
		struct config *c = &slots[loads++ % 2];
		weft_yield();           /* "read the file": other fibers run */
		c->max_conns = 100;
		config = c;             /* ... then act: a second load */
	}
	return config;
}

void *handler(void *arg)
{
	/* some work first, so the handlers reach config_get at
	 * schedule-dependent moments */
	for (uintptr_t i = 0; i < (uintptr_t)arg; i++)
		weft_yield();
	return config_get()->max_conns == 100 ? NULL : (void *)1;
}

void *lazy_main(void *arg)
{
	(void)arg;
	weft_task *t[2] = {weft_spawn(handler, (void *)0),
			   weft_spawn(handler, (void *)4)};
	void *res[2];
	if (!t[0] || !t[1] || weft_gather(t, 2, res) || res[0] || res[1])
		return (void *)1;
	return loads == 1 ? NULL : (void *)1;
}

/* ---- abba: lock order inversion ----------------------------------------- */

static weft_mutex a, b;

void *take(void *arg)
{
	int swap = arg != NULL;
	weft_mutex *first = swap ? &b : &a, *second = swap ? &a : &b;
	for (int i = 0; i < 3; i++)
		weft_yield();
	if (weft_mutex_lock(first))
		return NULL; /* cancelled: the deadlock was reported */
	weft_yield();
	if (weft_mutex_lock(second) == 0)
		weft_mutex_unlock(second);
	weft_mutex_unlock(first);
	return NULL;
}

void *abba_main(void *arg)
{
	(void)arg;
	weft_task *t[2] = {weft_spawn(take, NULL), weft_spawn(take, (void *)1)};
	if (!t[0] || !t[1])
		return (void *)1;
	weft_gather(t, 2, NULL);
	return NULL;
}

int main(int argc, char **argv)
{
	const char *mode = argc > 1 ? argv[1] : "lazy";
	void *(*fn)(void *) = !strcmp(mode, "abba") ? abba_main : lazy_main;
	if (strcmp(mode, "abba") && strcmp(mode, "lazy")) {
		fprintf(stderr, "usage: %s [lazy|abba]\n", argv[0]);
		return 2;
	}
	void *res = NULL;
	int r = weft_run(NULL, fn, NULL, &res);
	if (r == -EDEADLK) {
		printf("%s: deadlock\n", mode);
		return 1;
	}
	if (r) {
		fprintf(stderr, "weft_run: %s\n", weft_strerror(r));
		return 2;
	}
	if (res || (fn == lazy_main && loads != 1)) {
		printf("%s: BUG: the configuration was loaded %d times\n", mode,
		       loads);
		return 1;
	}
	printf("%s: ok\n", mode);
	return 0;
}
