/* weft-explore — run a program under seed after seed until one fails.
 *
 *   weft-explore [-n SEEDS] [-s FIRST] [-p DEPTH] [-f FAULTS] [-t SECONDS]
 *                [-v] [--] PROGRAM [ARGS...]
 *
 * For s = FIRST .. FIRST+SEEDS-1 it runs PROGRAM (fork + execvp, PATH
 * searched) with WEFT_SEED=s, WEFT_SIM_REPORT=1, and WEFT_PCT / WEFT_FAULTS
 * when -p / -f are given, one run at a time. A run fails when it exits with
 * a status other than 0, dies by a signal, or runs over the timeout. Each
 * run is a process group of its own, killed as a whole when the run ends,
 * times out or is interrupted: nothing it started outlives it. At the first
 * failure it prints the run's output (captured in an unlinked file in
 * $TMPDIR or /tmp; -v streams every run's output instead), why it failed,
 * and the command line that replays it: WEFT_SEED=s, then every WEFT_*
 * variable the run saw (WEFT_PCT, WEFT_FAULTS, WEFT_WORKERS, ...) except
 * WEFT_SIM_REPORT, then PROGRAM and ARGS, shell-quoted where needed.
 *
 * It reads each run's output for weft's report lines ("weft: seed N trace
 * ...", WEFT_SIM_REPORT) and the deadlock report, to say whether weft saw a
 * deadlock and to warn when runs were not seeded (no report line) or were
 * seeded otherwise (a report with another seed).
 *
 * Exit status: 0 every seed passed ("N seeds passed"), 1 a seed failed,
 * 2 usage error or PROGRAM could not be started, 128+sig when interrupted
 * by SIGINT, SIGTERM or SIGHUP (the running child is killed first).
 *
 * Each run's stdin is /dev/null (a run in a process group of its own that
 * read the terminal would be stopped). Plain C11 + POSIX; it does not link
 * weft: it only sets the environment that weft_run reads (docs/testing.md).
 */
#define _POSIX_C_SOURCE 200809L

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

#define PROG "weft-explore"
#define TAIL_MAX (64 * 1024)        /* the failing run's output shown */
#define TIMEOUT_MAX_S 1000000.0     /* -t at most (11.5 days) */

static const char usage_text[] =
	"usage: " PROG " [-n SEEDS] [-s FIRST] [-p DEPTH] [-f FAULTS] "
	"[-t SECONDS] [-v] [--] PROGRAM [ARGS...]\n";

static const char help_text[] =
	"Run PROGRAM (a weft program) once per seed, with WEFT_SEED=s for\n"
	"s = FIRST .. FIRST+SEEDS-1, one run at a time, and stop at the first\n"
	"run that exits non-zero, dies by a signal or runs over the timeout:\n"
	"print its output, why it failed and the command that replays it.\n"
	"\n"
	"  -n SEEDS    how many seeds (default 100)\n"
	"  -s FIRST    the first seed, >= 1 (default 1)\n"
	"  -p DEPTH    PCT schedules of that depth, 1..64 (sets WEFT_PCT)\n"
	"  -f FAULTS   seeded faults, e.g. short=0.1,reset=0.01 or all=0.02\n"
	"              (sets WEFT_FAULTS; kinds: short reset nomem delay\n"
	"              spurious all)\n"
	"  -t SECONDS  kill a run after this long; 0: never (default 60)\n"
	"  -v          show every run's output as it comes (default: only the\n"
	"              failing run's, at the end)\n"
	"  -h          this help\n"
	"\n"
	"Every run also gets WEFT_SIM_REPORT=1 (weft prints 'weft: seed N\n"
	"trace H ...' at the end of each weft_run) and stdin from /dev/null.\n"
	"Exit status: 0 all seeds passed, 1 a seed failed, 2 usage error or\n"
	"PROGRAM could not be started, 128+N interrupted by signal N.\n"
	"Guide: docs/testing.md.\n";

static int usage_error(const char *fmt, ...)
	__attribute__((format(printf, 1, 2)));
static int usage_error(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fputs(PROG ": ", stderr);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
	fputs(usage_text, stderr);
	fputs("(" PROG " -h for help)\n", stderr);
	return 2;
}

/* ---- argument parsing ---------------------------------------------------- */

/* A whole decimal number, digits only (no sign, no space, no suffix). */
static bool parse_u64(const char *s, uint64_t *out)
{
	if (!*s)
		return false;
	uint64_t v = 0;
	for (; *s; s++) {
		if (*s < '0' || *s > '9')
			return false;
		unsigned d = (unsigned)(*s - '0');
		if (v > (UINT64_MAX - d) / 10)
			return false;
		v = v * 10 + d;
	}
	*out = v;
	return true;
}

/* Seconds: digits, optionally a '.' and more digits ("60", "0.5", "2."). */
static bool parse_seconds(const char *s, double *out)
{
	const char *p = s;
	size_t before = 0, after = 0;
	while (*p >= '0' && *p <= '9')
		p++, before++;
	if (*p == '.')
		for (p++; *p >= '0' && *p <= '9'; p++)
			after++;
	if (*p || before + after == 0)
		return false;
	*out = strtod(s, NULL);
	return *out <= TIMEOUT_MAX_S;
}

/* The grammar weft_run accepts for WEFT_FAULTS (runtime/sim.c,
 * parse_faults): "kind=p" or a bare "p" (= all), comma-separated, p a
 * decimal in [0, 1]. NULL if fine, else what is wrong. */
static const char *check_faults(const char *spec, char *why, size_t whylen)
{
	static const char *const kinds[] = {"short", "reset", "nomem", "delay",
					    "spurious", "all"};
	size_t len = strlen(spec);
	if (!len)
		return "is empty";
	if (len >= 256)
		return "is longer than 255 characters";
	if (spec[0] == ',' || spec[len - 1] == ',' || strstr(spec, ",,"))
		return "has an empty item";
	char buf[256];
	memcpy(buf, spec, len + 1);
	for (char *tok = buf; tok;) {
		char *comma = strchr(tok, ',');
		if (comma)
			*comma = 0;
		char *eq = strchr(tok, '=');
		const char *val = eq ? eq + 1 : tok;
		if (eq) {
			*eq = 0;
			size_t k;
			for (k = 0; k < sizeof kinds / sizeof *kinds; k++)
				if (!strcmp(tok, kinds[k]))
					break;
			if (k == sizeof kinds / sizeof *kinds) {
				snprintf(why, whylen,
					 "has an unknown kind '%s' (kinds: short "
					 "reset nomem delay spurious all)",
					 tok);
				return why;
			}
		}
		char *end;
		double v = strtod(val, &end);
		if (end == val || *end || !(v >= 0.0 && v <= 1.0)) {
			snprintf(why, whylen,
				 "has '%s' where a probability from 0 to 1 "
				 "goes",
				 val);
			return why;
		}
		tok = comma ? comma + 1 : NULL;
	}
	return NULL;
}

struct opts {
	uint64_t count, first;
	unsigned pct;       /* 0: not given */
	const char *faults; /* NULL: not given */
	double timeout_s;   /* 0: none */
	bool verbose;
	char **argv;        /* PROGRAM ARGS..., NULL-terminated */
};

/* 0 on success, 2 after a usage error was printed, -1 after -h. */
static int parse_args(int argc, char **argv, struct opts *o)
{
	*o = (struct opts){.count = 100, .first = 1, .timeout_s = 60};
	int i = 1;
	while (i < argc) {
		const char *a = argv[i];
		if (!strcmp(a, "--")) {
			i++;
			break;
		}
		if (!strcmp(a, "-h") || !strcmp(a, "--help"))
			return -1;
		if (a[0] != '-' || !a[1])
			break; /* PROGRAM */
		char opt = a[1];
		if (opt == 'v') {
			if (a[2])
				return usage_error("unknown option '%s'", a);
			o->verbose = true;
			i++;
			continue;
		}
		if (!strchr("nspft", opt))
			return usage_error("unknown option '%s'", a);
		const char *val = a[2] ? a + 2 : NULL; /* "-n5" or "-n 5" */
		if (!val) {
			if (i + 1 >= argc)
				return usage_error("option -%c needs a value",
						   opt);
			val = argv[++i];
		}
		i++;
		uint64_t v;
		char why[512];
		switch (opt) {
		case 'n':
			if (!parse_u64(val, &v) || v == 0)
				return usage_error(
					"-n wants a number of seeds, a whole "
					"number from 1 to %" PRIu64 ", not '%s'",
					UINT64_MAX, val);
			o->count = v;
			break;
		case 's':
			if (!parse_u64(val, &v) || v == 0)
				return usage_error(
					"-s wants the first seed, a whole number "
					"from 1 to %" PRIu64 " (0 means no seed), "
					"not '%s'",
					UINT64_MAX, val);
			o->first = v;
			break;
		case 'p':
			if (!parse_u64(val, &v) || v == 0 || v > 64)
				return usage_error("-p wants a PCT depth, a whole "
						   "number from 1 to 64, not "
						   "'%s'",
						   val);
			o->pct = (unsigned)v;
			break;
		case 'f': {
			const char *bad = check_faults(val, why, sizeof why);
			if (bad)
				return usage_error("-f '%s' %s", val, bad);
			o->faults = val;
			break;
		}
		case 't':
			if (!parse_seconds(val, &o->timeout_s))
				return usage_error(
					"-t wants seconds, like 60 or 0.5 (0: "
					"no limit, at most %.0f), not '%s'",
					TIMEOUT_MAX_S, val);
			break;
		}
	}
	if (i >= argc)
		return usage_error("no PROGRAM to run");
	if (!argv[i][0])
		return usage_error("PROGRAM is an empty string");
	if (o->first - 1 > UINT64_MAX - o->count)
		return usage_error("-s %" PRIu64 " -n %" PRIu64 ": the seeds "
				   "would run past %" PRIu64,
				   o->first, o->count, UINT64_MAX);
	o->argv = argv + i;
	return 0;
}

/* ---- shell quoting ------------------------------------------------------- */

static bool shell_safe(const char *s)
{
	if (!*s)
		return false;
	for (; *s; s++)
		if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') ||
		      (*s >= '0' && *s <= '9') || strchr("_@%+=:,./-", *s)))
			return false;
	return true;
}

/* s as one shell word: as is if safe, else in single quotes */
static void put_quoted(FILE *out, const char *s)
{
	if (shell_safe(s)) {
		fputs(s, out);
		return;
	}
	fputc('\'', out);
	for (; *s; s++) {
		if (*s == '\'')
			fputs("'\\''", out);
		else
			fputc(*s, out);
	}
	fputc('\'', out);
}

/* ---- the replay's environment ----------------------------------------------- */

/* The WEFT_* variables of the runs' environment ("NAME=value"), WEFT_PCT
 * and WEFT_FAULTS first, without WEFT_SEED and WEFT_SIM_REPORT. */
static char **replay_env(size_t *n)
{
	size_t cap = 0;
	for (char **e = environ; *e; e++)
		cap++;
	char **v = calloc(cap + 1, sizeof *v);
	if (!v)
		return NULL;
	*n = 0;
	static const char *const first[] = {"WEFT_PCT=", "WEFT_FAULTS="};
	for (size_t k = 0; k < 2; k++)
		for (char **e = environ; *e; e++)
			if (!strncmp(*e, first[k], strlen(first[k])))
				v[(*n)++] = strdup(*e);
	for (char **e = environ; *e; e++)
		if (!strncmp(*e, "WEFT_", 5) &&
		    strncmp(*e, "WEFT_SEED=", 10) &&
		    strncmp(*e, "WEFT_SIM_REPORT=", 16) &&
		    strncmp(*e, "WEFT_PCT=", 9) && strncmp(*e, "WEFT_FAULTS=", 12))
			v[(*n)++] = strdup(*e);
	for (size_t k = 0; k < *n; k++)
		if (!v[k])
			return NULL;
	return v;
}

static void put_assignment(FILE *out, const char *nv)
{
	const char *eq = strchr(nv, '=');
	fwrite(nv, 1, (size_t)(eq - nv) + 1, out);
	put_quoted(out, eq + 1);
}

static void put_replay(FILE *out, uint64_t seed, char **env, size_t nenv,
		       char **argv)
{
	fprintf(out, "WEFT_SEED=%" PRIu64, seed);
	for (size_t k = 0; k < nenv; k++) {
		fputc(' ', out);
		put_assignment(out, env[k]);
	}
	for (char **a = argv; *a; a++) {
		fputc(' ', out);
		put_quoted(out, *a);
	}
	fputc('\n', out);
}

/* ---- one run --------------------------------------------------------------- */

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

enum verdict { PASSED, FAILED, INTERRUPTED, NOT_STARTED };

struct run {
	int status;      /* from waitpid, unless timed_out */
	bool timed_out;
	int interrupt;   /* the signal that interrupted us */
	int exec_err;    /* errno of a failed execvp */
	double secs;
};

/* A signal's name, for the common ones. */
static const char *sig_name(int sig)
{
	switch (sig) {
	case SIGHUP: return "SIGHUP";
	case SIGINT: return "SIGINT";
	case SIGQUIT: return "SIGQUIT";
	case SIGILL: return "SIGILL";
	case SIGTRAP: return "SIGTRAP";
	case SIGABRT: return "SIGABRT";
	case SIGBUS: return "SIGBUS";
	case SIGFPE: return "SIGFPE";
	case SIGKILL: return "SIGKILL";
	case SIGUSR1: return "SIGUSR1";
	case SIGSEGV: return "SIGSEGV";
	case SIGUSR2: return "SIGUSR2";
	case SIGPIPE: return "SIGPIPE";
	case SIGALRM: return "SIGALRM";
	case SIGTERM: return "SIGTERM";
	case SIGSYS: return "SIGSYS";
	case SIGXCPU: return "SIGXCPU";
	case SIGXFSZ: return "SIGXFSZ";
	}
	return "signal";
}

static void kill_group(pid_t pid)
{
	kill(-pid, SIGKILL); /* the run's process group (setpgid below) */
	kill(pid, SIGKILL);  /* a no-op for a zombie */
}

static void on_sigchld(int sig) { (void)sig; }

/* Run argv with WEFT_SEED=seed (already in the environment), output to
 * out_fd (-1: ours). The caller blocks SIGCHLD, SIGINT, SIGTERM and SIGHUP
 * (*oldmask: the mask to give the child). */
static enum verdict run_one(char **argv, int out_fd, double timeout_s,
			    const sigset_t *waitset, const sigset_t *oldmask,
			    struct run *r)
{
	*r = (struct run){0};
	int ep[2]; /* the child reports a failed exec through it */
	if (pipe(ep)) {
		r->exec_err = errno;
		return NOT_STARTED;
	}
	fcntl(ep[0], F_SETFD, FD_CLOEXEC);
	fcntl(ep[1], F_SETFD, FD_CLOEXEC);
	fflush(NULL);
	double t0 = now_s();
	pid_t pid = fork();
	if (pid < 0) {
		r->exec_err = errno;
		close(ep[0]);
		close(ep[1]);
		return NOT_STARTED;
	}
	if (pid == 0) {
		close(ep[0]);
		setpgid(0, 0);
		int in = open("/dev/null", O_RDONLY);
		if (in >= 0 && in != 0) {
			dup2(in, 0);
			close(in);
		}
		if (out_fd >= 0) {
			dup2(out_fd, 1);
			dup2(out_fd, 2);
			if (out_fd > 2)
				close(out_fd);
		}
		sigprocmask(SIG_SETMASK, oldmask, NULL);
		execvp(argv[0], argv);
		int e = errno;
		ssize_t w = write(ep[1], &e, sizeof e);
		(void)w;
		_exit(127);
	}
	setpgid(pid, 0); /* also here: no window where a kill misses it */
	close(ep[1]);
	int e = 0;
	ssize_t got;
	while ((got = read(ep[0], &e, sizeof e)) < 0 && errno == EINTR)
		;
	close(ep[0]);
	if (got == (ssize_t)sizeof e) {
		waitpid(pid, NULL, 0);
		r->exec_err = e;
		return NOT_STARTED;
	}
	double until = timeout_s > 0 ? t0 + timeout_s : 0;
	for (;;) {
		/* exited? WNOWAIT: the zombie keeps its pid and group id ours
		 * until we reap it, so the group kill below hits no stranger */
		siginfo_t si;
		si.si_pid = 0;
		if (waitid(P_PID, (id_t)pid, &si, WEXITED | WNOHANG | WNOWAIT) &&
		    errno != EINTR) {
			r->exec_err = errno;
			kill_group(pid);
			return NOT_STARTED;
		}
		if (si.si_pid == pid)
			break;
		double left = until ? until - now_s() : 3600;
		if (until && left <= 0) {
			r->timed_out = true;
			break;
		}
		struct timespec ts = {(time_t)left,
				      (long)((left - (double)(time_t)left) * 1e9)};
		int sig = sigtimedwait(waitset, NULL, &ts);
		if (sig == SIGINT || sig == SIGTERM || sig == SIGHUP) {
			r->interrupt = sig;
			break;
		}
		/* SIGCHLD, the time is up, or EINTR: look again */
	}
	/* the run, if still there, and whatever it started and left behind */
	kill_group(pid);
	while (waitpid(pid, &r->status, 0) < 0 && errno == EINTR)
		;
	r->secs = now_s() - t0;
	if (r->interrupt)
		return INTERRUPTED;
	if (r->timed_out)
		return FAILED;
	if (WIFEXITED(r->status) && WEXITSTATUS(r->status) == 0)
		return PASSED;
	return FAILED;
}

/* ---- the captured output ------------------------------------------------------ */

struct scan {
	unsigned reports;      /* "weft: seed N trace" lines */
	unsigned wrong_seed;   /* of them, with another seed than the run's */
	bool deadlock;         /* weft reported a deadlock */
	char last[512];        /* the last report line */
};

static void scan_line(const char *line, uint64_t seed, struct scan *sc)
{
	static const char rep[] = "weft: seed ";
	if (!strncmp(line, rep, sizeof rep - 1)) {
		const char *p = line + sizeof rep - 1;
		char *end;
		errno = 0;
		unsigned long long s = strtoull(p, &end, 10);
		if (end == p || strncmp(end, " trace ", 7))
			return;
		sc->reports++;
		if (errno || s != seed)
			sc->wrong_seed++;
		snprintf(sc->last, sizeof sc->last, "%s", line);
		size_t n = strlen(line);
		if (n >= 9 && !strcmp(line + n - 9, " DEADLOCK"))
			sc->deadlock = true;
	} else if (strstr(line, "weft: all fibers parked") &&
		   strstr(line, "deadlock")) {
		sc->deadlock = true;
	}
}

/* Read the run's output from fd (size bytes) line by line. */
static void scan_output(int fd, off_t size, uint64_t seed, struct scan *sc)
{
	*sc = (struct scan){0};
	char buf[65536], line[512];
	size_t ll = 0;
	bool longline = false;
	for (off_t off = 0; off < size;) {
		ssize_t n = pread(fd, buf, sizeof buf, off);
		if (n <= 0)
			break;
		off += n;
		for (ssize_t i = 0; i < n; i++) {
			if (buf[i] == '\n') {
				line[ll] = 0;
				if (!longline)
					scan_line(line, seed, sc);
				ll = 0;
				longline = false;
			} else if (ll < sizeof line - 1) {
				line[ll++] = buf[i];
			} else {
				longline = true; /* not one of weft's lines */
			}
		}
	}
	if (ll && !longline) {
		line[ll] = 0;
		scan_line(line, seed, sc);
	}
}

/* Print the end of the run's output (at most TAIL_MAX bytes, from a line
 * start). */
static void show_output(int fd, off_t size, uint64_t seed)
{
	off_t from = size > TAIL_MAX ? size - TAIL_MAX : 0;
	char buf[65536];
	if (from) {
		/* start after the first newline at or past from */
		char c;
		while (from < size && pread(fd, &c, 1, from) == 1) {
			from++;
			if (c == '\n')
				break;
		}
		printf("---- seed %" PRIu64 ": the last %lld of %lld bytes of "
		       "its output (-v shows it all) ----\n",
		       seed, (long long)(size - from), (long long)size);
	} else {
		printf("---- seed %" PRIu64 ": its output (%lld bytes) ----\n",
		       seed, (long long)size);
	}
	fflush(stdout);
	bool nl = true;
	for (off_t off = from; off < size;) {
		ssize_t n = pread(fd, buf, sizeof buf, off);
		if (n <= 0)
			break;
		fwrite(buf, 1, (size_t)n, stdout);
		nl = buf[n - 1] == '\n';
		off += n;
	}
	if (!nl)
		fputc('\n', stdout);
	printf("---- end of seed %" PRIu64 "'s output ----\n", seed);
}

/* ---- main ------------------------------------------------------------------------ */

static void describe(FILE *out, const struct run *r, double timeout_s)
{
	if (r->timed_out) {
		fprintf(out, "ran over the %g s timeout (killed)", timeout_s);
	} else if (WIFSIGNALED(r->status)) {
		int sig = WTERMSIG(r->status);
		fprintf(out, "killed by signal %d (%s, %s)", sig, sig_name(sig),
			strsignal(sig));
#ifdef WCOREDUMP
		if (WCOREDUMP(r->status))
			fputs(", core dumped", out);
#endif
	} else {
		fprintf(out, "exit status %d", WEXITSTATUS(r->status));
	}
}

int main(int argc, char **argv)
{
	struct opts o;
	int pr = parse_args(argc, argv, &o);
	if (pr < 0) {
		fputs(usage_text, stdout);
		fputs(help_text, stdout);
		return 0;
	}
	if (pr)
		return pr;

	char num[32];
	if (o.pct) {
		snprintf(num, sizeof num, "%u", o.pct);
		setenv("WEFT_PCT", num, 1);
	}
	if (o.faults)
		setenv("WEFT_FAULTS", o.faults, 1);
	setenv("WEFT_SIM_REPORT", "1", 1);
	/* static: kept until exit (and so not a leak to LeakSanitizer) */
	static size_t nenv;
	static char **env;
	env = replay_env(&nenv);
	if (!env) {
		fprintf(stderr, PROG ": out of memory\n");
		return 2;
	}

	/* the runs' output: one temporary file (in $TMPDIR, else /tmp),
	 * unlinked at once, emptied before each run */
	int out_fd = -1;
	if (!o.verbose) {
		const char *dir = getenv("TMPDIR");
		if (!dir || !*dir)
			dir = "/tmp";
		size_t len = strlen(dir) + sizeof "/weft-explore.XXXXXX";
		char *path = malloc(len);
		if (!path) {
			fprintf(stderr, PROG ": out of memory\n");
			return 2;
		}
		snprintf(path, len, "%s/weft-explore.XXXXXX", dir);
		out_fd = mkstemp(path);
		if (out_fd < 0) {
			fprintf(stderr,
				PROG ": cannot make a temporary file in %s: "
				"%s\n",
				dir, strerror(errno));
			return 2;
		}
		unlink(path);
		free(path);
		fcntl(out_fd, F_SETFD, FD_CLOEXEC);
	}

	/* SIGCHLD and the interrupting signals are taken by sigtimedwait */
	sigset_t waitset, oldmask;
	sigemptyset(&waitset);
	sigaddset(&waitset, SIGCHLD);
	sigaddset(&waitset, SIGINT);
	sigaddset(&waitset, SIGTERM);
	sigaddset(&waitset, SIGHUP);
	sigprocmask(SIG_BLOCK, &waitset, &oldmask);
	/* a handler, not SIG_DFL or an inherited SIG_IGN: an ignored SIGCHLD
	 * may be dropped (and SIG_IGN would reap the runs behind our back);
	 * exec resets it to the default for the runs */
	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = on_sigchld;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGCHLD, &sa, NULL);

	uint64_t last = o.first + (o.count - 1);
	printf(PROG ": seeds %" PRIu64 "..%" PRIu64, o.first, last);
	if (o.pct)
		printf(", PCT depth %u", o.pct);
	if (o.faults)
		printf(", faults %s", o.faults);
	if (o.timeout_s > 0)
		printf(", timeout %g s", o.timeout_s);
	printf(":");
	for (char **a = o.argv; *a; a++) {
		putchar(' ');
		put_quoted(stdout, *a);
	}
	putchar('\n');
	fflush(stdout);

	bool progress = !o.verbose && isatty(2);
	unsigned long long no_report = 0, wrong_seed = 0;
	double t_all = now_s();
	for (uint64_t seed = o.first;; seed++) {
		if (progress)
			fprintf(stderr, "\r" PROG ": seed %" PRIu64 " ...", seed);
		snprintf(num, sizeof num, "%" PRIu64, seed);
		setenv("WEFT_SEED", num, 1);
		if (out_fd >= 0) {
			if (ftruncate(out_fd, 0) || lseek(out_fd, 0, SEEK_SET)) {
				fprintf(stderr, PROG ": temporary file: %s\n",
					strerror(errno));
				return 2;
			}
		}
		struct run r;
		enum verdict v = run_one(o.argv, out_fd, o.timeout_s, &waitset,
					 &oldmask, &r);
		if (progress)
			fprintf(stderr, "\r%*s\r", 40, "");
		if (v == NOT_STARTED) {
			fprintf(stderr, PROG ": cannot run %s: %s\n", o.argv[0],
				strerror(r.exec_err));
			return 2;
		}
		off_t size = 0;
		struct scan sc = {0};
		if (out_fd >= 0) {
			struct stat st;
			if (!fstat(out_fd, &st))
				size = st.st_size;
			scan_output(out_fd, size, seed, &sc);
			no_report += sc.reports == 0;
			wrong_seed += sc.wrong_seed != 0;
		}
		if (v == INTERRUPTED) {
			printf(PROG ": interrupted by %s during seed %" PRIu64
			       " (killed it)",
			       sig_name(r.interrupt), seed);
			if (seed - 1 == o.first)
				printf("; seed %" PRIu64 " had passed", o.first);
			else if (seed > o.first)
				printf("; seeds %" PRIu64 "..%" PRIu64
				       " had passed",
				       o.first, seed - 1);
			printf("\n");
			return 128 + r.interrupt;
		}
		if (v == FAILED) {
			if (out_fd >= 0)
				show_output(out_fd, size, seed);
			printf(PROG ": seed %" PRIu64 " failed: ", seed);
			describe(stdout, &r, o.timeout_s);
			if (sc.deadlock)
				printf("; weft reported a deadlock");
			printf(" (after %.3f s)\n", r.secs);
			if (seed - 1 == o.first)
				printf(PROG ": seed %" PRIu64
				       " passed before it\n",
				       o.first);
			else if (seed > o.first)
				printf(PROG ": seeds %" PRIu64 "..%" PRIu64
				       " passed before it\n",
				       o.first, seed - 1);
			if (sc.last[0])
				printf(PROG ": its report: %s\n", sc.last);
			else if (out_fd >= 0)
				printf(PROG ": the run printed no 'weft: seed' "
				       "report: was it seeded? (see the "
				       "warning below)\n");
			printf(PROG ": replay it with:\n");
			put_replay(stdout, seed, env, nenv, o.argv);
		}
		if (v == FAILED || seed == last) {
			fflush(stdout); /* the warnings come last */
			if (no_report)
				fprintf(stderr,
					PROG ": warning: %llu run(s) printed no "
					"'weft: seed' report: is PROGRAM a weft "
					"program? (a run is seeded only inside "
					"weft_run)\n",
					no_report);
			if (wrong_seed)
				fprintf(stderr,
					PROG ": warning: %llu run(s) reported "
					"another seed than their WEFT_SEED: a "
					"weft_config.seed set in the program "
					"wins over WEFT_SEED\n",
					wrong_seed);
			if (v == FAILED)
				return 1;
			printf(PROG ": %" PRIu64 " seed%s passed (%" PRIu64
			       "..%" PRIu64 ", %.1f s)\n",
			       o.count, o.count == 1 ? "" : "s", o.first, last,
			       now_s() - t_all);
			return 0;
		}
	}
}
