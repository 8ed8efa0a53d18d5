/* 09_signal.c — the Python tour, part g: stop on a signal.
 *
 * asyncio: loop.add_signal_handler(SIGTERM, stop.set), then
 * `await stop.wait()`. weft: weft_signal_watch(SIGTERM) (from here on the
 * signal is caught, not fatal), then weft_signal_wait parks the fiber until
 * it comes, while the other fibers go on, on every worker. A server watches
 * before it announces its port, and its stop waiter cancels the acceptor
 * (examples/echo_server.c). When weft_run returns, SIGTERM has its default
 * action again, as when asyncio's loop closes.
 */
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <unistd.h>
#include <weft.h>

static const int stop[] = {SIGTERM};
static atomic_uint ticks;

static void *ticker(void *arg)
{
	(void)arg;
	while (weft_sleep(10 * 1000000ull) == 0) /* until cancelled */
		atomic_fetch_add(&ticks, 1);
	return NULL;
}

static void *sender(void *arg)
{
	(void)arg;
	if (weft_sleep(200 * 1000000ull) == 0)
		kill(getpid(), SIGTERM); /* as `kill <pid>` from a shell would */
	return NULL;
}

static void *main_fiber(void *arg)
{
	(void)arg;
	int r = weft_signal_watch(stop, 1);
	if (r < 0) {
		fprintf(stderr, "weft_signal_watch: %s\n", weft_strerror(r));
		return (void *)1;
	}
	weft_task *t = weft_spawn(ticker, NULL);
	weft_task *s = t ? weft_spawn(sender, NULL) : NULL;
	int sig = -ENOMEM;
	uint64_t t0 = weft_now();
	if (s) {
		/* asyncio.wait_for(stop.wait(), 5): a sender that never ran
		 * (out of memory) must not leave us waiting for ever */
		weft_deadline d;
		weft_deadline_push(&d, 5000 * 1000000ull);
		sig = weft_signal_wait(stop, 1);
		weft_deadline_pop(&d);
	}
	uint64_t ms = (weft_now() - t0) / 1000000;
	if (t) {
		weft_cancel(t);
		weft_join(t, NULL); /* -ECANCELED: its sleep was cancelled */
	}
	int rs = s ? weft_join(s, NULL) : -ENOMEM;
	if (sig < 0 || rs < 0) {
		fprintf(stderr, "the signal never came: %s\n",
			weft_strerror(sig < 0 ? sig : rs));
		return (void *)1;
	}
	printf("caught %s after %llu ms\n", sig == SIGTERM ? "SIGTERM" : "?",
	       (unsigned long long)ms);
	printf("the ticker ticked %u times meanwhile\n", atomic_load(&ticks));
	return NULL;
}

int main(void)
{
	void *res = NULL;
	int r = weft_run(NULL, main_fiber, NULL, &res);
	if (r < 0)
		fprintf(stderr, "weft_run: %s\n", weft_strerror(r));
	if (r < 0 || res)
		return 1;
	struct sigaction sa;
	sigaction(SIGTERM, NULL, &sa);
	printf("after weft_run: SIGTERM's action is %s\n",
	       sa.sa_handler == SIG_DFL ? "the default again"
					: "NOT the default");
	return 0;
}
