/* check_then_act.c — a planted bug found by seed exploration: check, then
 * act, with an await in between.
 *
 * A producer queues four jobs on a channel, one every 5 us. Two workers
 * poll it, one every 7 us, the other every 10 us; a worker that sees a job
 * waiting first reserves a place for the result (an await: 1 us), then
 * takes the job, sure that it is there:
 *
 *     if (weft_chan_len(jobs) > 0) {          check
 *             weft_sleep(1 us);               reserve: other fibers run
 *             weft_chan_try_recv(jobs, &j);   act: "cannot fail"
 *
 * It can fail: when both workers see the same job, the one that comes back
 * from its reservation second finds the queue empty (-EAGAIN). That needs
 * the two workers' polls to come close together, so most runs are fine.
 * With a seed, weft_run draws every scheduling choice (and the small steps
 * of virtual time) from the seed, and weft_sim_explore runs seeds, each in
 * a child process, until a worker comes back empty-handed.
 *
 *   check_then_act                  explore seeds 1..200 (random schedules)
 *   check_then_act --pct 3          the same under PCT, depth 3
 *   WEFT_SEED=k check_then_act ...  replay seed k here: who saw and took
 *                                   which job, and the run's trace hash
 *
 * Exit status: 0 when the bug was found (this is a demo of finding it),
 * 1 when no seed showed it. The fix: take first (weft_chan_recv or
 * try_recv), then reserve; or handle -EAGAIN as "someone was quicker".
 */
#include <errno.h>
#include "demo.h"

#define JOBS 4

static weft_chan *jobs;
static int produced_all; /* set by the producer once every job is queued */
static int missing;      /* a worker checked, then found nothing */

static void *producer(void *arg)
{
	(void)arg;
	for (int j = 1; j <= JOBS; j++) {
		weft_sleep(5 * US);
		weft_chan_send(jobs, &j);
	}
	produced_all = 1;
	return NULL;
}

static void *worker(void *arg)
{
	int id = (int)(intptr_t)arg, job;
	while (!missing) {
		if (weft_chan_len(jobs) == 0) {             /* check */
			if (produced_all)
				break;
			weft_sleep((uint64_t)(4 + 3 * id) * US); /* poll */
			continue;
		}
		note("  %5.1f us  worker %d sees a job", us_now(), id);
		weft_sleep(1 * US);                         /* reserve */
		if (weft_chan_try_recv(jobs, &job) != 0) {  /* act */
			note("  %5.1f us  worker %d finds the queue empty",
			     us_now(), id);
			missing = 1;
			break;
		}
		note("  %5.1f us  worker %d takes job %d", us_now(), id, job);
	}
	return NULL;
}

/* One run. Non-NULL means a worker checked and then found nothing: the
 * explorer's "this seed failed". */
static void *queue_run(void *arg)
{
	(void)arg;
	produced_all = missing = 0;
	trail_reset();
	weft_task *t[3];
	if (!(jobs = weft_chan_new(JOBS, sizeof(int))) ||
	    !(t[0] = weft_spawn(producer, NULL)) ||
	    !(t[1] = weft_spawn(worker, (void *)1)) ||
	    !(t[2] = weft_spawn(worker, (void *)2)))
		abort();
	weft_gather(t, 3, NULL);
	weft_chan_free(jobs);
	return missing ? (void *)1 : NULL;
}

int main(int argc, char **argv)
{
	return demo_main(argc, argv, queue_run, "made a worker come back empty-handed");
}
