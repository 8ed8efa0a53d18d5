/* consumer — a program from outside the weft tree, built against an
 * installed weft (tests/consumer/check.sh builds it with pkg-config and with
 * CMake's find_package, shared and static).
 *
 * main spawns a few fibers that sleep, yield and return a value, joins them
 * and checks the results; prints "consumer ok" and exits 0 on success.
 */
#include <inttypes.h>
#include <stdio.h>
#include <weft.h>

#define NFIBERS 16

static void *twice(void *arg)
{
	uintptr_t i = (uintptr_t)arg;
	if (weft_sleep(100000 * (i % 4)) != 0) /* 0..0.3 ms */
		return (void *)UINTPTR_MAX;
	weft_yield();
	return (void *)(2 * i);
}

static void *main_fiber(void *arg)
{
	(void)arg;
	weft_task *t[NFIBERS];
	for (uintptr_t i = 0; i < NFIBERS; i++) {
		t[i] = weft_spawn(twice, (void *)i);
		if (!t[i]) {
			fprintf(stderr, "consumer: weft_spawn failed\n");
			return (void *)1;
		}
	}
	uintptr_t bad = 0;
	for (uintptr_t i = 0; i < NFIBERS; i++) {
		void *res;
		int r = weft_join(t[i], &res);
		if (r != 0 || (uintptr_t)res != 2 * i) {
			fprintf(stderr, "consumer: fiber %" PRIuPTR ": %s, %p\n",
				i, weft_strerror(r), res);
			bad = 1;
		}
	}
	return (void *)bad;
}

int main(void)
{
	weft_config cfg;
	weft_config_init(&cfg);
	cfg.workers = 2;
	void *bad = NULL;
	int r = weft_run(&cfg, main_fiber, NULL, &bad);
	if (r < 0) {
		fprintf(stderr, "consumer: weft_run: %s\n", weft_strerror(r));
		return 1;
	}
	if (bad)
		return 1;
	printf("consumer ok (weft %d.%d.%d, %d fibers)\n", WEFT_VERSION_MAJOR,
	       WEFT_VERSION_MINOR, WEFT_VERSION_PATCH, NFIBERS);
	return 0;
}
