/* example.c — a target for docs/gdb/weft.py: fibers parked in different
 * waits (sleep, channel receive, mutex, join) on 2 workers, one spinning,
 * then a SIGTRAP from the main fiber so gdb stops with everything in place.
 * Built by hand (see docs/gdb/README.md), not by CMake:
 *
 *   cmake -S . -B /tmp/gdbb -DCMAKE_BUILD_TYPE=Debug \
 *         -DWEFT_BUILD_TESTS=OFF -DWEFT_BUILD_BENCHES=OFF
 *   cmake --build /tmp/gdbb -j2
 *   cc -g -O0 -Iinclude docs/gdb/example.c -o /tmp/weft-gdb-example \
 *      -L/tmp/gdbb -lweft -Wl,-rpath,/tmp/gdbb
 *   gdb -batch -x docs/gdb/weft.py -ex run -ex 'weft fibers' \
 *       -ex 'weft bt 9' /tmp/weft-gdb-example
 *
 * After the trap, `continue` lets it undo every wait and exit 0. Run
 * outside a debugger, the SIGTRAP ends it (that is the point).
 */
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <weft.h>

static weft_chan *chan;
static weft_mutex mu;
static atomic_int stop;

static void *sleeper(void *arg)
{
	(void)arg;
	weft_sleep(60ull * 1000000000u); /* cancelled at the end */
	return NULL;
}

static void *receiver(void *arg)
{
	(void)arg;
	int v = 0;
	weft_chan_recv(chan, &v);
	return NULL;
}

static void *locker(void *arg)
{
	(void)arg;
	if (weft_mutex_lock(&mu) == 0)
		weft_mutex_unlock(&mu);
	return NULL;
}

static void *joiner(void *arg)
{
	weft_join(arg, NULL); /* waits for the sleeper */
	return NULL;
}

static void *spinner(void *arg)
{
	(void)arg;
	/* never yields: it keeps the other worker busy until told to stop */
	while (!atomic_load_explicit(&stop, memory_order_relaxed))
		;
	return NULL;
}

static void *main_fiber(void *arg)
{
	(void)arg;
	weft_task_set_name(NULL, "main");
	chan = weft_chan_new(0, sizeof(int));
	weft_mutex_init(&mu);
	weft_mutex_lock(&mu); /* held by main: the locker waits */

	weft_task *sl = weft_spawn(sleeper, NULL);
	weft_task_set_name(sl, "sleeper");
	weft_task *rc = weft_spawn(receiver, NULL);
	weft_task_set_name(rc, "receiver");
	weft_task *lk = weft_spawn(locker, NULL);
	weft_task_set_name(lk, "locker");
	weft_task *jn = weft_spawn(joiner, sl);
	weft_task_set_name(jn, "joiner");
	weft_task *sp = weft_spawn(spinner, NULL);
	weft_task_set_name(sp, "spinner");

	weft_sleep(100ull * 1000000u); /* let them all reach their waits */
	raise(SIGTRAP);                /* gdb stops here */

	atomic_store(&stop, 1);
	int v = 42;
	weft_chan_send(chan, &v);
	weft_mutex_unlock(&mu);
	weft_cancel(sl);
	weft_join(sp, NULL);
	weft_join(lk, NULL);
	weft_join(rc, NULL);
	weft_join(jn, NULL); /* the joiner joined the sleeper */
	weft_chan_free(chan);
	return NULL;
}

int main(void)
{
	weft_config cfg;
	weft_config_init(&cfg);
	cfg.workers = 2;
	int r = weft_run(&cfg, main_fiber, NULL, NULL);
	if (r < 0)
		fprintf(stderr, "weft_run: %s\n", weft_strerror(r));
	else
		printf("example: done\n");
	return r < 0;
}
