/* 01_fetch.c — the Python tour, part a: one thing after another, or both
 * at once (docs/python.md shows the asyncio program beside it).
 *
 * fetch() stands for a network call: it suspends its fiber for a while
 * (weft_sleep) and returns. Called one after the other, the waits add up
 * (2 s + 1 s = 3 s); spawned as two fibers, they overlap (2 s). As in
 * asyncio, nothing runs in parallel here: both fibers are just waiting.
 * Unlike asyncio, fetch is a plain function — no async, no await.
 */
#include <stdint.h>
#include <stdio.h>
#include <weft.h>

static double secs(void)
{
	return (double)weft_now() * 1e-9;
}

/* returns name, or NULL if the wait failed (a negative errno: cancelled,
 * out of memory; asyncio would raise) */
static void *fetch(void *arg)
{
	const char *name = arg;
	uint64_t s = name[0] == 'a' ? 2 : 1; /* "a" takes 2 s, "b" 1 s */
	int r = weft_sleep(s * 1000000000ull);
	if (r < 0) {
		fprintf(stderr, "fetch %s: %s\n", name, weft_strerror(r));
		return NULL;
	}
	return (void *)name;
}

/* join t: its result, or NULL (and a message) if it failed */
static void *join(weft_task *t)
{
	void *res = NULL;
	int r = weft_join(t, &res);
	if (r < 0) {
		fprintf(stderr, "weft_join: %s\n", weft_strerror(r));
		return NULL;
	}
	return res;
}

static void *main_fiber(void *arg)
{
	void *ra, *rb;

	/* sequential: call one, then the other */
	double t0 = secs();
	ra = fetch("a");
	rb = fetch("b");
	if (!ra || !rb)
		return (void *)1;
	printf("sequential: got %s and %s in %.2f s\n", (char *)ra,
	       (char *)rb, secs() - t0);

	/* concurrent: start both, then wait for both */
	t0 = secs();
	weft_task *ta = weft_spawn(fetch, "a");
	weft_task *tb = weft_spawn(fetch, "b");
	if (!ta || !tb) { /* NULL: out of memory; join the one that started */
		fprintf(stderr, "weft_spawn: out of memory\n");
		if (ta || tb)
			weft_join(ta ? ta : tb, NULL);
		return (void *)1;
	}
	ra = join(ta);
	rb = join(tb);
	if (!ra || !rb)
		return (void *)1;
	printf("concurrent: got %s and %s in %.2f s\n", (char *)ra,
	       (char *)rb, secs() - t0);
	return NULL;
}

int main(void)
{
	void *res = NULL;
	int r = weft_run(NULL, main_fiber, NULL, &res);
	if (r < 0)
		fprintf(stderr, "weft_run: %s\n", weft_strerror(r));
	return r < 0 || res;
}
