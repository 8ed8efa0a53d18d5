/* demo.h — what the four planted-bug programs of examples/sim share: the
 * log of what happened (printed when a seed is replayed), and main's
 * driver: explore seeds 1..200 (or, with WEFT_SEED set, replay that one).
 *
 *   usage: PROGRAM [--pct depth]    exit 0: the bug was found; 1: it was
 *                                   not; 2: usage or explorer error
 */
#ifndef WEFT_SIM_DEMO_H
#define WEFT_SIM_DEMO_H

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <weft.h>

#define US 1000ull /* weft_sleep takes ns */

static uint64_t t0; /* virtual time the run started */

/* what happened, in order */
static char trail[8192];
static size_t trail_len;

/* at the start of each run */
static void trail_reset(void)
{
	trail_len = 0;
	trail[0] = 0;
	t0 = weft_now();
}

/* one line of the log */
static void note(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(trail + trail_len, sizeof trail - trail_len, fmt, ap);
	va_end(ap);
	if (n > 0 && trail_len + (size_t)n + 2 < sizeof trail) {
		trail_len += (size_t)n;
		trail[trail_len++] = '\n';
		trail[trail_len] = 0;
	}
}

/* virtual microseconds since the run started */
static double us_now(void) { return (double)(weft_now() - t0) / 1e3; }

/* run is one run of the scenario (non-NULL: the bug showed); what says
 * what the bug did, after "seed N" or "no seed" */
static int demo_main(int argc, char **argv, void *(*run)(void *),
		     const char *what)
{
	weft_config cfg;
	weft_config_init(&cfg);
	cfg.workers = 2; /* fixed, so a seed means the same on every machine */
	if (argc == 3 && !strcmp(argv[1], "--pct"))
		cfg.pct = (unsigned)atoi(argv[2]); /* PCT depth, 1..64 */
	if (argc != 1 && (argc != 3 || cfg.pct < 1 || cfg.pct > 64))
		return fprintf(stderr, "usage: %s [--pct depth]\n", argv[0]), 2;

	int64_t seed = weft_sim_explore(&cfg, 1, 200, 0, run, NULL);
	if (seed < 0) {
		fprintf(stderr, "weft_sim_explore: %s\n", weft_strerror((int)seed));
		return 2;
	}
	const char *replay = getenv("WEFT_SEED");
	weft_sim_report rep;
	if (replay && *replay && weft_sim_report_get(&rep) == 0) {
		/* ran in this process: show what happened */
		fputs(trail, stdout);
		printf("seed %" PRIu64 ": trace %016" PRIx64 ", %" PRIu64
		       " steps%s\n", rep.seed, rep.trace, rep.steps,
		       rep.deadlock ? ", deadlock" : "");
	}
	if (seed == 0) {
		printf("no seed %s\n", what);
		return 1;
	}
	printf("seed %" PRId64 " %s\n", seed, what);
	return 0;
}

#endif
