/* file_randread: 32 fibers each keep one 4 KiB random read in flight on a
 * file (queue depth 32, like fio --iodepth=32), for SECS seconds.
 *
 *     bench_file_randread FILE DIRECT(0|1) SECS
 *
 * Runs on one worker (WEFT_WORKERS overrides), as fio runs one job. */
#define _GNU_SOURCE 1 /* O_DIRECT */
#include <fcntl.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bench.h"

#define QD 32
#define BS 4096

static const char *path;
static int direct;
static double secs_want, secs;
static unsigned long long ios;
static int fd = -1;
static off_t nblocks;
static _Atomic int stop;
static atomic_ullong done;

static void *reader(void *arg)
{
	uint64_t x = (uintptr_t)arg * 0x9E3779B97F4A7C15ull + 1;
	void *buf = aligned_alloc(BS, BS);
	unsigned long long n = 0;
	while (!atomic_load_explicit(&stop, memory_order_relaxed)) {
		x ^= x << 13, x ^= x >> 7, x ^= x << 17;
		off_t off = (off_t)(x % (uint64_t)nblocks) * BS;
		ssize_t r = weft_read(fd, buf, BS, off);
		if (r != BS) {
			fprintf(stderr, "read: %zd (%s)\n", r,
				r < 0 ? weft_strerror((int)r) : "short");
			abort();
		}
		n++;
	}
	atomic_fetch_add(&done, n);
	free(buf);
	return NULL;
}

static void *run(void *arg)
{
	(void)arg;
	fd = weft_open(path, O_RDONLY | (direct ? O_DIRECT : 0), 0);
	if (fd < 0) {
		fprintf(stderr, "open %s: %s\n", path, weft_strerror(fd));
		exit(1);
	}
	weft_task *t[QD];
	double t0 = bench_secs();
	for (int i = 0; i < QD; i++)
		t[i] = weft_spawn(reader, (void *)(uintptr_t)(i + 1));
	weft_sleep((uint64_t)(secs_want * 1e9));
	atomic_store(&stop, 1);
	weft_gather(t, QD, NULL);
	secs = bench_secs() - t0;
	ios = atomic_load(&done);
	weft_close(fd);
	return NULL;
}

int main(int argc, char **argv)
{
	if (argc < 4) {
		fprintf(stderr, "usage: bench_file_randread FILE 0|1 SECS\n");
		return 2;
	}
	path = argv[1];
	direct = atoi(argv[2]);
	secs_want = atof(argv[3]);
	struct stat st;
	if (stat(path, &st) != 0 || st.st_size < BS) {
		perror(path);
		return 1;
	}
	nblocks = st.st_size / BS;
	weft_config cfg;
	weft_config_init(&cfg);
	if (!getenv("WEFT_WORKERS"))
		cfg.workers = 1;
	if (weft_run(&cfg, run, NULL, NULL) < 0)
		return 1;
	printf("RESULT name=file_randread_%s impl=weft n=%llu secs=%.6f "
	       "iops=%.0f\n",
	       direct ? "direct" : "cached", ios, secs, (double)ios / secs);
	return 0;
}
