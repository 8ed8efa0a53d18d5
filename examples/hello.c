/* hello.c — fork-join on every core: the 20-line tour of weft.
 *
 * main spawns one fiber per item; each sleeps a little (suspending only
 * itself), then computes; weft_gather collects the results in order.
 */
#include <inttypes.h>
#include <stdio.h>
#include <weft.h>

static void *square(void *arg)
{
	uintptr_t x = (uintptr_t)arg;
	weft_sleep(1000000 * (10 - x)); /* 1..10 ms: later items finish first */
	printf("  fiber %2" PRIuPTR " ran on worker %u\n", x, weft_worker_id());
	return (void *)(x * x);
}

static void *main_fiber(void *arg)
{
	weft_task *t[10];
	void *res[10];
	(void)arg;
	for (uintptr_t i = 0; i < 10; i++) {
		t[i] = weft_spawn(square, (void *)i);
		if (!t[i]) { /* out of memory (or WEFT_FAULTS=nomem=...) */
			fprintf(stderr, "weft_spawn: out of memory\n");
			for (uintptr_t k = 0; k < i; k++)
				weft_join(t[k], NULL);
			return (void *)1;
		}
	}
	int r = weft_gather(t, 10, res);
	if (r < 0) { /* a fiber could not start: its result is not there */
		fprintf(stderr, "weft_gather: %s\n", weft_strerror(r));
		return (void *)1;
	}
	printf("gather: %s; squares in order:", weft_strerror(r));
	for (int i = 0; i < 10; i++)
		printf(" %" PRIuPTR, (uintptr_t)res[i]);
	printf("\n");
	return NULL;
}

int main(void)
{
	void *failed = NULL;
	int r = weft_run(NULL, main_fiber, NULL, &failed);
	if (r < 0)
		fprintf(stderr, "weft_run: %s\n", weft_strerror(r));
	return r < 0 || failed;
}
