/* Description: cross-worker wakes when every MSG_RING fails.
 *
 * Built against a copy of the runtime whose MSG_RING wakes all fail
 * (WEFT_TEST_MSG_RING_FAIL: the target fd is no ring), so each wake of a
 * parked worker goes by the fallback: the waker's error CQE, reaped, writes
 * the target's eventfd (io/uring.c). Runs of weft_run on 2 to 4 workers,
 * fibers ping-ponging over channels and sleeping, must all end, also when
 * a fiber outlives main_fn (the other workers park again after the
 * shutdown's wake): the termination wake came from a worker that leaves
 * without reaping again, so its failed MSG_RING's CQE was never reaped and
 * a parked worker slept on: weft_run hung. Each batch runs in a child with
 * an alarm: a hang is a failure, not a stuck suite.
 */
#include <string.h>

#include "testutil.h"

static weft_chan *pp[2];

static void *pong(void *arg)
{
	(void)arg;
	int x;
	while (weft_chan_recv(pp[0], &x) == 0 && x >= 0)
		if (weft_chan_send(pp[1], &x))
			break;
	return NULL;
}

/* outlives main_fn by a few ms without a wait: the other workers, woken
 * by the shutdown, park again; the one that runs this terminates the run */
static void *straggler(void *arg)
{
	(void)arg;
	uint64_t until = real_ns() + 3 * MS;
	while (real_ns() < until)
		;
	return NULL;
}

static void *fb_main(void *arg)
{
	int rounds = (int)(intptr_t)arg;
	pp[0] = weft_chan_new(0, sizeof(int));
	pp[1] = weft_chan_new(0, sizeof(int));
	weft_task *t = weft_spawn(pong, NULL);
	for (int i = 0; i < rounds; i++) {
		int x = i;
		CHECK_EQ(weft_chan_send(pp[0], &x), 0);
		CHECK_EQ(weft_chan_recv(pp[1], &x), 0);
		CHECK_EQ(x, i);
		if (i % 16 == 0)
			weft_sleep(100 * US); /* the others park meanwhile */
	}
	int stop = -1;
	CHECK_EQ(weft_chan_send(pp[0], &stop), 0);
	CHECK_EQ(weft_join(t, NULL), 0);
	weft_chan_free(pp[0]);
	weft_chan_free(pp[1]);
	weft_detach(weft_spawn(straggler, NULL));
	weft_yield(); /* it runs elsewhere (a thief takes it) or next */
	return NULL;
}

static void fb_runs(void *arg)
{
	(void)arg;
	alarm(20);
	size_t runs = scaled(40, 4);
	for (size_t i = 0; i < runs; i++) {
		reset_fails();
		weft_config c = cfg_workers(2 + (unsigned)(i % 3));
		if (weft_run(&c, fb_main, (void *)(intptr_t)200, NULL) != 0 ||
		    atomic_load(&fails))
			_exit(2);
	}
}

static void test_runs_end_when_msg_ring_fails(void **state)
{
	(void)state;
	SKIP_IF_SEEDED("the threaded workers' wakes");
	int st = run_in_child(fb_runs, NULL, NULL, 0);
	if (WIFSIGNALED(st) && WTERMSIG(st) == SIGALRM)
		fail_msg("a weft_run hung (a lost wake)");
	assert_true(WIFEXITED(st));
	assert_int_equal(WEXITSTATUS(st), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_runs_end_when_msg_ring_fails),
	};
	apply_test_filters();
	return cmocka_run_group_tests(tests, NULL, NULL);
}
