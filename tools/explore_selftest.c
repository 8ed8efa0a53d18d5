/* explore_selftest.c — a stand-in for a test program, for weft-explore's
 * own test (explore_check.sh): what it does depends on WEFT_SEED only.
 *
 *   explore_selftest mod K    exit 3 when the seed is a multiple of K
 *   explore_selftest abort K  abort() when the seed is a multiple of K
 *   explore_selftest hang K   sleep for ever when the seed is a multiple of K,
 *                             and a child process with it
 *   explore_selftest env      exit 0
 *
 * Each prints first the WEFT_* variables and the arguments it was given
 * ("seen: ...", so the check can compare a failing run with its replay)
 * and its pid, and reads stdin (weft-explore gives it /dev/null: the
 * read returns at once).
 */
#define _POSIX_C_SOURCE 200809L

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char *env(const char *name)
{
	const char *v = getenv(name);
	return v ? v : "(unset)";
}

int main(int argc, char **argv)
{
	const char *seed_s = getenv("WEFT_SEED");
	if (!seed_s || argc < 2) {
		fprintf(stderr, "usage: WEFT_SEED=s %s mod|abort|hang K | env\n",
			argv[0]);
		return 2;
	}
	unsigned long long seed = strtoull(seed_s, NULL, 10);
	printf("seen: WEFT_SEED=%s WEFT_PCT=%s WEFT_FAULTS=%s "
	       "WEFT_WORKERS=%s WEFT_SIM_REPORT=%s args",
	       seed_s, env("WEFT_PCT"), env("WEFT_FAULTS"),
	       env("WEFT_WORKERS"), env("WEFT_SIM_REPORT"));
	for (int i = 1; i < argc; i++)
		printf(" [%s]", argv[i]);
	printf("\npid: %ld\n", (long)getpid());
	char c;
	if (read(0, &c, 1) > 0)
		printf("stdin had data\n");
	fflush(stdout);
	if (!strcmp(argv[1], "env"))
		return 0;
	unsigned long long k = argc > 2 ? strtoull(argv[2], NULL, 10) : 0;
	if (!k || seed % k)
		return 0;
	fprintf(stderr, "selftest: seed %llu is a multiple of %llu\n", seed, k);
	if (!strcmp(argv[1], "abort"))
		abort();
	if (!strcmp(argv[1], "hang")) {
		/* and a child that hangs too: weft-explore kills the group */
		pid_t c = fork();
		if (c == 0)
			for (;;)
				pause();
		printf("child: %ld\n", (long)c);
		fflush(stdout);
		for (;;)
			pause();
	}
	return 3;
}
