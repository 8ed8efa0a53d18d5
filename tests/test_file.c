/* Description: file I/O through the worker rings (weft/io.h).
 *
 * - random writes and reads at random offsets against a shadow copy, and
 *   the whole file checked with pread(2) at the end;
 * - off = -1 (the file position) for read, write, readv and writev: the
 *   position moves as read(2)/write(2) move it (checked with lseek);
 * - readv/writev with uneven iovecs, scattered both ways;
 * - weft_open (O_CREAT|O_TRUNC in a mkdtemp dir, O_CLOEXEC added), fsync,
 *   close, a second close is -EBADF;
 * - a 4 MiB weft_write to a file is complete; a 4 MiB weft_write to a pipe
 *   (the kernel writes it in short pieces) is complete too, read back by
 *   another fiber, every byte checked;
 * - read at and past EOF returns 0;
 * - bad input: fd -1 and a closed fd give -EBADF, a missing file -ENOENT,
 *   a NULL path -EFAULT, a bad buffer -EFAULT, bad iovec counts -EINVAL,
 *   a write whose offset + length passes INT64_MAX -EINVAL,
 *   and every call outside a fiber (no runtime, and a plain pthread while a
 *   runtime runs) -EINVAL;
 * - 200 fibers on 2 workers write and read back disjoint regions of one
 *   file at once (chunks of random size, write/writev mixed, yields in
 *   between); every byte is checked in the fibers and again with pread(2);
 * - a cancelled weft_open of a FIFO with O_CREAT (it waits in the
 *   kernel's worker threads for a writer) returns -ECANCELED;
 * - nothing leaks: the number of open fds is the same before and after
 *   each test.
 *
 * Fibers never call assert_* (cmocka longjmps): they record into globals and
 * the test function checks after weft_run returns. Counts scale with env
 * WEFT_TEST_SCALE (default 1.0) for sanitizer builds.
 */
#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include "testutil.h"


static int count_fds(void)
{
	return count_dir_entries("/proc/self/fd") - 1; /* the DIR's own fd */
}

/* a fresh temp dir per test, removed (with its files) in teardown */
static char tmpdir[256];
static int fds_before;

static int setup(void **state)
{
	(void)state;
	fds_before = count_fds();
	snprintf(tmpdir, sizeof tmpdir, "/tmp/weft-test-file-XXXXXX");
	return mkdtemp(tmpdir) ? 0 : -1;
}

static void rm_tmpdir(void)
{
	DIR *d = opendir(tmpdir);
	if (d) {
		struct dirent *e;
		char p[512];
		while ((e = readdir(d))) {
			if (e->d_name[0] == '.')
				continue;
			snprintf(p, sizeof p, "%s/%s", tmpdir, e->d_name);
			unlink(p);
		}
		closedir(d);
	}
	rmdir(tmpdir);
}

static int teardown(void **state)
{
	(void)state;
	rm_tmpdir();
	return 0;
}

/* every test ends with this: no fd left open, the temp dir removable */
static void check_no_leak(void)
{
	assert_int_equal(count_fds(), fds_before);
}

static void tmp_path(char *out, size_t n, const char *name)
{
	snprintf(out, n, "%s/%s", tmpdir, name);
}

/* ---- random offsets vs a shadow copy --------------------------------------- */

#define RW_SIZE (1u << 20)

static struct {
	char path[300];
	unsigned char *shadow, *buf;
	size_t ops;
	int open_fd, cloexec;
	ssize_t first_write;
	_Atomic int errs; /* any unexpected return */
	int bad_read_len, bad_bytes;
	int close_ret, close2_ret, read_closed_ret, fsync_ret;
	char where[160]; /* the first error, for the message */
} R;

static void r_err(const char *what, long got, long want)
{
	if (atomic_fetch_add(&R.errs, 1) == 0)
		snprintf(R.where, sizeof R.where, "%s: got %ld want %ld", what,
			 got, want);
}

static void *rw_main(void *arg)
{
	(void)arg;
	int fd = weft_open(R.path, O_CREAT | O_TRUNC | O_RDWR, 0600);
	R.open_fd = fd;
	if (fd < 0)
		return NULL;
	R.cloexec = fcntl(fd, F_GETFD) & FD_CLOEXEC;
	uint64_t s = 0x1234567;
	for (size_t i = 0; i < RW_SIZE; i++)
		R.shadow[i] = (unsigned char)rnd(&s);
	R.first_write = weft_write(fd, R.shadow, RW_SIZE, 0);
	for (size_t k = 0; k < R.ops; k++) {
		size_t off = rnd(&s) % RW_SIZE;
		size_t len = 1 + rnd(&s) % 65536;
		if (off + len > RW_SIZE)
			len = RW_SIZE - off;
		if (rnd(&s) & 1) {
			for (size_t i = 0; i < len; i++)
				R.buf[i] = (unsigned char)rnd(&s);
			ssize_t w = weft_write(fd, R.buf, len, (int64_t)off);
			if (w != (ssize_t)len)
				r_err("write", w, (long)len);
			memcpy(R.shadow + off, R.buf, len);
		} else {
			memset(R.buf, 0xEE, len);
			ssize_t r = weft_read(fd, R.buf, len, (int64_t)off);
			if (r != (ssize_t)len)
				r_err("read", r, (long)len);
			else if (memcmp(R.buf, R.shadow + off, len) != 0)
				r_err("read bytes differ at", (long)off, 0);
		}
	}
	R.fsync_ret = weft_fsync(fd);
	R.close_ret = weft_close(fd);
	R.close2_ret = weft_close(fd);
	char b[16];
	R.read_closed_ret = (int)weft_read(fd, b, sizeof b, 0);
	return NULL;
}

static void test_file_random_rw(void **state)
{
	(void)state;
	memset(&R, 0, sizeof R);
	tmp_path(R.path, sizeof R.path, "rw");
	R.shadow = malloc(RW_SIZE);
	R.buf = malloc(65536);
	assert_non_null(R.shadow);
	assert_non_null(R.buf);
	R.ops = scaled(2000, 200);
	weft_config c = cfg_workers(2);
	assert_int_equal(weft_run(&c, rw_main, NULL, NULL), 0);
	assert_true(R.open_fd >= 0);
	assert_true(R.cloexec);
	assert_int_equal(R.first_write, RW_SIZE);
	if (atomic_load(&R.errs))
		fail_msg("%d errors, first: %s", atomic_load(&R.errs), R.where);
	assert_int_equal(R.fsync_ret, 0);
	assert_int_equal(R.close_ret, 0);
	assert_int_equal(R.close2_ret, -EBADF);
	assert_int_equal(R.read_closed_ret, -EBADF);
	/* the file as the kernel has it, read with plain pread(2) */
	int fd = open(R.path, O_RDONLY);
	assert_true(fd >= 0);
	unsigned char *back = malloc(RW_SIZE + 1);
	assert_non_null(back);
	ssize_t got = pread(fd, back, RW_SIZE + 1, 0);
	close(fd);
	assert_int_equal(got, RW_SIZE);
	assert_memory_equal(back, R.shadow, RW_SIZE);
	free(back);
	free(R.shadow);
	free(R.buf);
	check_no_leak();
}

/* ---- off = -1: the file position; readv/writev; EOF ------------------------ */

static struct {
	char path[300];
	int fd;
	ssize_t w1, w2, wv, wvpos;
	off_t pos_after_writes, pos_after_wv;
	ssize_t r1, r2, r3, rv, rvpos, r_eof_pos, r_eof_off, r_past_eof,
		rv_eof;
	off_t pos_after_reads;
	char rbuf1[8], rbuf2[8], rbuf3[8];
	char va[3], vb[5], vc[9];
	char pa[2], pb[7];
	ssize_t r_zero;
	int fsync_ret, close_ret;
} P;

static void *pos_main(void *arg)
{
	(void)arg;
	int fd = P.fd = weft_open(P.path, O_CREAT | O_TRUNC | O_RDWR, 0644);
	if (fd < 0)
		return NULL;
	/* write at the position: "hello" then " world" */
	P.w1 = weft_write(fd, "hello", 5, -1);
	P.w2 = weft_write(fd, " world", 6, -1);
	P.pos_after_writes = lseek(fd, 0, SEEK_CUR);
	/* writev at an offset does not move the position */
	struct iovec wv[3] = {{"ABC", 3}, {"", 0}, {"DEFGH", 5}};
	P.wv = weft_writev(fd, wv, 3, 20); /* a hole 11..19 */
	P.pos_after_wv = lseek(fd, 0, SEEK_CUR);
	/* writev at the position: appends at 11 (the hole's start) */
	struct iovec wv2[2] = {{"xy", 2}, {"z", 1}};
	P.wvpos = weft_writev(fd, wv2, 2, -1);
	/* file: "hello worldxyz\0\0\0\0\0\0ABCDEFGH" (28 bytes) */
	if (lseek(fd, 0, SEEK_SET) != 0)
		return NULL;
	P.r1 = weft_read(fd, P.rbuf1, 5, -1);
	P.r2 = weft_read(fd, P.rbuf2, 6, -1);
	P.r3 = weft_read(fd, P.rbuf3, 3, -1);
	P.pos_after_reads = lseek(fd, 0, SEEK_CUR);
	/* readv at an offset, scattered over uneven pieces */
	struct iovec rv[3] = {{P.va, 3}, {P.vb, 5}, {P.vc, 9}};
	P.rv = weft_readv(fd, rv, 3, 11); /* 17 bytes: 11..27 */
	/* readv at the position (14): the 6-byte hole, then "A" */
	struct iovec rv2[2] = {{P.pa, 2}, {P.pb, 7}};
	P.rvpos = weft_readv(fd, rv2, 2, -1); /* 9 bytes */
	/* EOF: at the position, at the size, past the size, readv */
	lseek(fd, 0, SEEK_END);
	char b[4];
	P.r_eof_pos = weft_read(fd, b, sizeof b, -1);
	P.r_eof_off = weft_read(fd, b, sizeof b, 28);
	P.r_past_eof = weft_read(fd, b, sizeof b, 1 << 20);
	struct iovec rv3[1] = {{b, sizeof b}};
	P.rv_eof = weft_readv(fd, rv3, 1, 28);
	P.r_zero = weft_read(fd, b, 0, 0); /* zero bytes asked: 0 */
	P.fsync_ret = weft_fsync(fd);
	P.close_ret = weft_close(fd);
	return NULL;
}

static void test_file_position_vectored_eof(void **state)
{
	(void)state;
	memset(&P, 0, sizeof P);
	tmp_path(P.path, sizeof P.path, "pos");
	assert_int_equal(weft_run(NULL, pos_main, NULL, NULL), 0);
	assert_true(P.fd >= 0);
	assert_int_equal(P.w1, 5);
	assert_int_equal(P.w2, 6);
	assert_int_equal(P.pos_after_writes, 11);
	assert_int_equal(P.wv, 8);
	assert_int_equal(P.pos_after_wv, 11);
	assert_int_equal(P.wvpos, 3);
	assert_int_equal(P.r1, 5);
	assert_int_equal(P.r2, 6);
	assert_int_equal(P.r3, 3);
	assert_memory_equal(P.rbuf1, "hello", 5);
	assert_memory_equal(P.rbuf2, " world", 6);
	assert_memory_equal(P.rbuf3, "xyz", 3);
	assert_int_equal(P.pos_after_reads, 14);
	assert_int_equal(P.rv, 17);
	assert_memory_equal(P.va, "xyz", 3);
	assert_memory_equal(P.vb, "\0\0\0\0\0", 5);
	assert_memory_equal(P.vc, "\0ABCDEFGH", 9);
	assert_int_equal(P.rvpos, 9);
	assert_memory_equal(P.pa, "\0\0", 2);
	assert_memory_equal(P.pb, "\0\0\0\0ABC", 7);
	assert_int_equal(P.r_eof_pos, 0);
	assert_int_equal(P.r_eof_off, 0);
	assert_int_equal(P.r_past_eof, 0);
	assert_int_equal(P.rv_eof, 0);
	assert_int_equal(P.r_zero, 0);
	assert_int_equal(P.fsync_ret, 0);
	assert_int_equal(P.close_ret, 0);
	/* and as pread(2) sees it */
	char want[28] = "hello worldxyz";
	memcpy(want + 20, "ABCDEFGH", 8);
	char got[40];
	int fd = open(P.path, O_RDONLY);
	assert_true(fd >= 0);
	assert_int_equal(pread(fd, got, sizeof got, 0), 28);
	close(fd);
	assert_memory_equal(got, want, 28);
	check_no_leak();
}

/* ---- 4 MiB: one weft_write to a file and to a pipe ------------------------- */

#define BIG (4u << 20)

static struct {
	char path[300];
	unsigned char *src, *dst;
	ssize_t file_w, pipe_w;
	size_t pipe_got;
	ssize_t pipe_eof;
	int reader_err, bad_byte_at;
	size_t reads; /* how many pieces the reader got */
	int pfd[2];
	int close_ret;
} B;

static void *big_reader(void *arg)
{
	(void)arg;
	size_t got = 0;
	B.bad_byte_at = -1;
	unsigned char *chunk = malloc(70000);
	if (!chunk) {
		B.reader_err = -ENOMEM;
		return NULL;
	}
	uint64_t s = 99;
	for (;;) {
		size_t want = 1 + rnd(&s) % 70000;
		ssize_t r = weft_read(B.pfd[0], chunk, want, -1);
		if (r < 0) {
			B.reader_err = (int)r;
			break;
		}
		if (r == 0)
			break;
		B.reads++;
		for (ssize_t i = 0; i < r; i++)
			if (got + (size_t)i >= BIG ||
			    chunk[i] != pat(7, got + (size_t)i)) {
				if (B.bad_byte_at < 0)
					B.bad_byte_at = (int)(got + (size_t)i);
				break;
			}
		got += (size_t)r;
	}
	B.pipe_got = got;
	free(chunk);
	return NULL;
}

static void *big_main(void *arg)
{
	(void)arg;
	int fd = weft_open(B.path, O_CREAT | O_TRUNC | O_WRONLY, 0600);
	if (fd < 0) {
		B.file_w = fd;
		return NULL;
	}
	B.file_w = weft_write(fd, B.src, BIG, 0);
	B.close_ret = weft_close(fd);
	/* the pipe holds 64 KiB: the 4 MiB go in many short writes */
	weft_task *rd = weft_spawn(big_reader, NULL);
	B.pipe_w = weft_write(B.pfd[1], B.src, BIG, -1);
	close(B.pfd[1]); /* the reader then sees EOF */
	B.pfd[1] = -1;
	weft_join(rd, NULL);
	return NULL;
}

static void test_file_big_write_complete(void **state)
{
	(void)state;
	memset(&B, 0, sizeof B);
	tmp_path(B.path, sizeof B.path, "big");
	B.src = malloc(BIG);
	assert_non_null(B.src);
	for (size_t i = 0; i < BIG; i++)
		B.src[i] = pat(7, i);
	assert_int_equal(pipe(B.pfd), 0);
	weft_config c = cfg_workers(2);
	assert_int_equal(weft_run(&c, big_main, NULL, NULL), 0);
	close(B.pfd[0]);
	assert_int_equal(B.file_w, BIG);
	assert_int_equal(B.close_ret, 0);
	assert_int_equal(B.pipe_w, BIG);
	assert_int_equal(B.reader_err, 0);
	assert_int_equal(B.bad_byte_at, -1);
	assert_int_equal(B.pipe_got, BIG);
	assert_true(B.reads >= 2);
	struct stat st;
	assert_int_equal(stat(B.path, &st), 0);
	assert_int_equal(st.st_size, BIG);
	B.dst = malloc(BIG);
	assert_non_null(B.dst);
	int fd = open(B.path, O_RDONLY);
	assert_true(fd >= 0);
	size_t got = 0;
	while (got < BIG) {
		ssize_t r = pread(fd, B.dst + got, BIG - got, (off_t)got);
		if (r <= 0)
			break;
		got += (size_t)r;
	}
	close(fd);
	assert_int_equal(got, BIG);
	assert_memory_equal(B.dst, B.src, BIG);
	free(B.src);
	free(B.dst);
	check_no_leak();
}

/* ---- bad input --------------------------------------------------------------- */

static struct {
	char path[300], missing[300];
	int read_m1, write_m1, readv_m1, writev_m1, close_m1, fsync_m1, poll_m1;
	int read_closed, write_closed, fsync_closed, close_closed;
	int open_missing, open_null, open_dir_w, open_excl;
	int read_nullbuf, write_nullbuf, read_badbuf, write_off_ovf;
	int readv_neg, readv_many, readv_null, writev_neg;
	int read_wronly, write_rdonly;
	int fd_ok;
} X;

static void *bad_main(void *arg)
{
	(void)arg;
	char b[8] = "1234567";
	struct iovec iov = {b, sizeof b};
	X.read_m1 = (int)weft_read(-1, b, sizeof b, 0);
	X.write_m1 = (int)weft_write(-1, b, sizeof b, 0);
	X.readv_m1 = (int)weft_readv(-1, &iov, 1, 0);
	X.writev_m1 = (int)weft_writev(-1, &iov, 1, 0);
	X.close_m1 = weft_close(-1);
	X.fsync_m1 = weft_fsync(-1);
	X.poll_m1 = weft_poll(-1, POLLIN);
	/* an fd number that was valid and is closed now */
	int fd = weft_open(X.path, O_CREAT | O_TRUNC | O_RDWR, 0600);
	X.fd_ok = fd;
	if (fd < 0)
		return NULL;
	X.read_nullbuf = (int)weft_read(fd, NULL, 4, 0);
	X.write_nullbuf = (int)weft_write(fd, NULL, 4, 0);
	weft_write(fd, "abcd", 4, 0);
	X.read_badbuf = (int)weft_read(fd, (void *)(uintptr_t)8, 4, 0);
	/* an offset + length past INT64_MAX (the loop's offset would wrap) */
	X.write_off_ovf = (int)weft_write(fd, b, 8, INT64_MAX - 4);
	X.readv_neg = (int)weft_readv(fd, &iov, -1, 0);
	X.readv_many = (int)weft_readv(fd, &iov, 100000, 0);
	X.readv_null = (int)weft_readv(fd, NULL, 1, 0);
	X.writev_neg = (int)weft_writev(fd, &iov, -1, 0);
	weft_close(fd);
	X.read_closed = (int)weft_read(fd, b, sizeof b, 0);
	X.write_closed = (int)weft_write(fd, b, sizeof b, 0);
	X.fsync_closed = weft_fsync(fd);
	X.close_closed = weft_close(fd);
	/* open errors */
	X.open_missing = weft_open(X.missing, O_RDONLY, 0);
	X.open_null = weft_open(NULL, O_RDONLY, 0);
	X.open_dir_w = weft_open(tmpdir, O_WRONLY, 0);
	X.open_excl = weft_open(X.path, O_CREAT | O_EXCL | O_WRONLY, 0600);
	if (X.open_excl >= 0)
		weft_close(X.open_excl);
	/* the wrong direction */
	int ro = weft_open(X.path, O_RDONLY, 0);
	int wo = weft_open(X.path, O_WRONLY, 0);
	X.write_rdonly = ro >= 0 ? (int)weft_write(ro, b, 1, 0) : ro;
	X.read_wronly = wo >= 0 ? (int)weft_read(wo, b, 1, 0) : wo;
	if (ro >= 0)
		weft_close(ro);
	if (wo >= 0)
		weft_close(wo);
	return NULL;
}

/* every call from a thread that is not a fiber: -EINVAL (the fd is valid) */
struct outside {
	int read, write, readv, writev, open, close, fsync, poll;
};

static void outside_calls(struct outside *o, int fd, const char *path)
{
	char b[4];
	struct iovec iov = {b, sizeof b};
	o->read = (int)weft_read(fd, b, sizeof b, 0);
	o->write = (int)weft_write(fd, "x", 1, 0);
	o->readv = (int)weft_readv(fd, &iov, 1, 0);
	o->writev = (int)weft_writev(fd, &iov, 1, 0);
	o->open = weft_open(path, O_RDONLY, 0);
	o->close = weft_close(fd);
	o->fsync = weft_fsync(fd);
	o->poll = weft_poll(fd, POLLIN);
}

static void check_outside(const struct outside *o)
{
	assert_int_equal(o->read, -EINVAL);
	assert_int_equal(o->write, -EINVAL);
	assert_int_equal(o->readv, -EINVAL);
	assert_int_equal(o->writev, -EINVAL);
	assert_int_equal(o->open, -EINVAL);
	assert_int_equal(o->close, -EINVAL);
	assert_int_equal(o->fsync, -EINVAL);
	assert_int_equal(o->poll, -EINVAL);
}

static struct {
	int fd;
	char path[300];
	struct outside o;
	_Atomic int done;
} O;

static void *outside_thread(void *arg)
{
	(void)arg;
	outside_calls(&O.o, O.fd, O.path);
	atomic_store(&O.done, 1);
	return NULL;
}

static void *outside_main(void *arg)
{
	(void)arg;
	/* a plain pthread while the runtime runs */
	pthread_t th;
	if (pthread_create(&th, NULL, outside_thread, NULL) != 0)
		return NULL;
	while (!atomic_load(&O.done))
		weft_sleep(1 * MS);
	pthread_join(th, NULL);
	return NULL;
}

static void test_file_bad_input(void **state)
{
	(void)state;
	memset(&X, 0, sizeof X);
	tmp_path(X.path, sizeof X.path, "bad");
	tmp_path(X.missing, sizeof X.missing, "no/such/file");
	assert_int_equal(weft_run(NULL, bad_main, NULL, NULL), 0);
	assert_int_equal(X.read_m1, -EBADF);
	assert_int_equal(X.write_m1, -EBADF);
	assert_int_equal(X.readv_m1, -EBADF);
	assert_int_equal(X.writev_m1, -EBADF);
	assert_int_equal(X.close_m1, -EBADF);
	assert_int_equal(X.fsync_m1, -EBADF);
	assert_int_equal(X.poll_m1, -EBADF);
	assert_true(X.fd_ok >= 0);
	assert_int_equal(X.read_nullbuf, -EFAULT);
	assert_int_equal(X.write_nullbuf, -EFAULT);
	assert_int_equal(X.read_badbuf, -EFAULT);
	assert_int_equal(X.write_off_ovf, -EINVAL);
	assert_int_equal(X.readv_neg, -EINVAL);
	assert_int_equal(X.readv_many, -EINVAL);
	assert_int_equal(X.readv_null, -EINVAL);
	assert_int_equal(X.writev_neg, -EINVAL);
	assert_int_equal(X.read_closed, -EBADF);
	assert_int_equal(X.write_closed, -EBADF);
	assert_int_equal(X.fsync_closed, -EBADF);
	assert_int_equal(X.close_closed, -EBADF);
	assert_int_equal(X.open_missing, -ENOENT);
	assert_int_equal(X.open_null, -EFAULT);
	assert_int_equal(X.open_dir_w, -EISDIR);
	assert_int_equal(X.open_excl, -EEXIST);
	assert_int_equal(X.write_rdonly, -EBADF);
	assert_int_equal(X.read_wronly, -EBADF);

	/* outside any runtime */
	int fd = open(X.path, O_RDWR);
	assert_true(fd >= 0);
	struct outside o;
	outside_calls(&o, fd, X.path);
	check_outside(&o);
	/* the fd was not closed by the refused weft_close */
	assert_true(fcntl(fd, F_GETFD) >= 0);
	/* from a plain pthread while a runtime runs */
	memset(&O, 0, sizeof O);
	O.fd = fd;
	snprintf(O.path, sizeof O.path, "%s", X.path);
	assert_int_equal(weft_run(NULL, outside_main, NULL, NULL), 0);
	assert_int_equal(atomic_load(&O.done), 1);
	check_outside(&O.o);
	assert_true(fcntl(fd, F_GETFD) >= 0);
	close(fd);
	check_no_leak();
}

/* ---- 200 fibers, disjoint regions of one file -------------------------------- */

#define CF_REGION 20000 /* bytes per fiber; not a multiple of a page */

static struct {
	int fd;
	size_t n;
	_Atomic int errs, bad_bytes, started, workers_mask;
	char where[160];
	_Atomic int ops;
} C;

static void c_err(const char *what, size_t i, long got, long want)
{
	if (atomic_fetch_add(&C.errs, 1) == 0)
		snprintf(C.where, sizeof C.where,
			 "fiber %zu: %s: got %ld want %ld", i, what, got, want);
}

static void *conc_fiber(void *arg)
{
	size_t i = (size_t)(uintptr_t)arg;
	uint64_t s = 0xC0FFEE + i * 7919;
	unsigned char *buf = malloc(CF_REGION);
	if (!buf) {
		c_err("malloc", i, 0, 0);
		return NULL;
	}
	uint64_t base = (uint64_t)i * CF_REGION;
	atomic_fetch_add(&C.started, 1);
	/* write the region in chunks of random size, in random order halves */
	size_t off = 0;
	while (off < CF_REGION) {
		size_t len = 1 + rnd(&s) % 3000;
		if (off + len > CF_REGION)
			len = CF_REGION - off;
		for (size_t k = 0; k < len; k++)
			buf[k] = pat(i, base + off + k);
		unsigned w = weft_worker_id();
		if (w < 31)
			atomic_fetch_or(&C.workers_mask, 1 << w);
		ssize_t r;
		if (rnd(&s) & 1) {
			r = weft_write(C.fd, buf, len, (int64_t)(base + off));
		} else {
			/* writev in two pieces */
			size_t h = len / 2;
			struct iovec v[2] = {{buf, h}, {buf + h, len - h}};
			r = weft_writev(C.fd, v, 2, (int64_t)(base + off));
		}
		atomic_fetch_add(&C.ops, 1);
		if (r != (ssize_t)len) {
			c_err("write", i, r, (long)len);
			break;
		}
		off += len;
		if ((rnd(&s) & 3) == 0)
			weft_yield();
	}
	/* read it back, also in random pieces, every byte checked */
	off = 0;
	while (off < CF_REGION) {
		size_t len = 1 + rnd(&s) % 5000;
		if (off + len > CF_REGION)
			len = CF_REGION - off;
		memset(buf, 0, len);
		ssize_t r = weft_read(C.fd, buf, len, (int64_t)(base + off));
		atomic_fetch_add(&C.ops, 1);
		if (r != (ssize_t)len) {
			c_err("read", i, r, (long)len);
			break;
		}
		for (size_t k = 0; k < len; k++)
			if (buf[k] != pat(i, base + off + k)) {
				atomic_fetch_add(&C.bad_bytes, 1);
				break;
			}
		off += len;
	}
	free(buf);
	return NULL;
}

static void *conc_main(void *arg)
{
	(void)arg;
	weft_task **t = calloc(C.n, sizeof *t);
	if (!t)
		return NULL;
	for (size_t i = 0; i < C.n; i++)
		t[i] = weft_spawn(conc_fiber, (void *)(uintptr_t)i);
	for (size_t i = 0; i < C.n; i++)
		if (!t[i] || weft_join(t[i], NULL) != 0)
			c_err("spawn/join", i, 0, 0);
	free(t);
	return NULL;
}

static void test_file_concurrent_regions(void **state)
{
	(void)state;
	memset(&C, 0, sizeof C);
	char path[300];
	tmp_path(path, sizeof path, "conc");
	C.fd = open(path, O_CREAT | O_TRUNC | O_RDWR | O_CLOEXEC, 0600);
	assert_true(C.fd >= 0);
	C.n = 200;
	weft_config c = cfg_workers(2);
	uint64_t t0 = weft_now();
	assert_int_equal(weft_run(&c, conc_main, NULL, NULL), 0);
	uint64_t dt = weft_now() - t0;
	if (atomic_load(&C.errs))
		fail_msg("%d errors, first: %s", atomic_load(&C.errs), C.where);
	assert_int_equal(atomic_load(&C.started), (int)C.n);
	assert_int_equal(atomic_load(&C.bad_bytes), 0);
	/* the whole file as pread(2) sees it */
	size_t total = C.n * CF_REGION;
	unsigned char *all = malloc(total + 1);
	assert_non_null(all);
	assert_int_equal(pread(C.fd, all, total + 1, 0), (ssize_t)total);
	size_t bad = 0;
	for (size_t i = 0; i < C.n; i++)
		for (size_t k = 0; k < CF_REGION; k++)
			if (all[i * CF_REGION + k] !=
			    pat(i, (uint64_t)i * CF_REGION + k))
				bad++;
	free(all);
	close(C.fd);
	assert_int_equal(bad, 0);
	print_message("  %zu fibers, %d ops in %.0f ms, workers mask %#x\n",
		      C.n, atomic_load(&C.ops), (double)dt / 1e6,
		      atomic_load(&C.workers_mask));
	check_no_leak();
}

/* ---- deadlines and cancellation around file/pipe writes -------------------- */

#define DW_LEN (1u << 20)

static struct {
	char path[300];
	int pfd[2];
	unsigned char *src;
	/* under a long deadline: plain file ops succeed */
	_Atomic int long_dl_errs;
	/* a full pipe under a 100 ms deadline */
	ssize_t dl_w1, dl_w2;
	uint64_t dl_elapsed;
	/* a full pipe, cancelled */
	ssize_t cn_w1, cn_w2, cn_r;
	uint64_t cn_after_cancel;
	_Atomic int cn_blocked;
	_Atomic uint64_t cn_cancel_at;
	int cancel_ret;
	/* an expired deadline fails at once, the buffer untouched */
	ssize_t past_r;
	unsigned char past_buf[8];
	int pop_sleep;
} D;

static void *dw_long(void *arg)
{
	(void)arg;
	weft_deadline d;
	weft_deadline_push(&d, 30 * SEC);
	int fd = weft_open(D.path, O_CREAT | O_TRUNC | O_RDWR, 0600);
	if (fd < 0) {
		atomic_fetch_add(&D.long_dl_errs, 1);
		weft_deadline_pop(&d);
		return NULL;
	}
	char b[512];
	for (int i = 0; i < 300; i++) {
		memset(b, i & 0xff, sizeof b);
		if (weft_write(fd, b, sizeof b, i * 512) != 512)
			atomic_fetch_add(&D.long_dl_errs, 1);
		memset(b, 0, sizeof b);
		if (weft_read(fd, b, sizeof b, i * 512) != 512 ||
		    b[0] != (char)(i & 0xff) || b[511] != (char)(i & 0xff))
			atomic_fetch_add(&D.long_dl_errs, 1);
	}
	if (weft_fsync(fd) != 0 || weft_close(fd) != 0)
		atomic_fetch_add(&D.long_dl_errs, 1);
	weft_deadline_pop(&d);
	/* no stale linked timeout hits a later wait */
	D.pop_sleep = weft_sleep(20 * MS);
	return NULL;
}

static void *dw_cancelled_writer(void *arg)
{
	(void)arg;
	/* the pipe was emptied: fill it and block */
	atomic_store(&D.cn_blocked, 1);
	D.cn_w1 = weft_write(D.pfd[1], D.src, DW_LEN, -1);
	D.cn_after_cancel = weft_now() - atomic_load(&D.cn_cancel_at);
	D.cn_w2 = weft_write(D.pfd[1], D.src, 1, -1);
	return NULL;
}

static ssize_t drain_pipe(int fd)
{
	/* read what the pipe holds without blocking */
	int fl = fcntl(fd, F_GETFL);
	fcntl(fd, F_SETFL, fl | O_NONBLOCK);
	ssize_t total = 0;
	char b[4096];
	for (;;) {
		ssize_t r = read(fd, b, sizeof b);
		if (r <= 0)
			break;
		total += r;
	}
	fcntl(fd, F_SETFL, fl);
	return total;
}

static void *dw_main(void *arg)
{
	(void)arg;
	weft_task *t = weft_spawn(dw_long, NULL);
	weft_join(t, NULL);

	/* a 1 MiB write into a pipe nobody reads: the first 64 KiB go, the
	 * rest waits until the deadline; the bytes written are returned */
	weft_deadline d;
	uint64_t t0 = weft_now();
	weft_deadline_push(&d, 100 * MS);
	D.dl_w1 = weft_write(D.pfd[1], D.src, DW_LEN, -1);
	D.dl_elapsed = weft_now() - t0;
	D.dl_w2 = weft_write(D.pfd[1], D.src, DW_LEN, -1); /* -ETIMEDOUT */
	weft_deadline_pop(&d);
	weft_sleep(30 * MS); /* a late write would land now */
	D.cn_r = drain_pipe(D.pfd[0]);

	/* the same, cancelled by another fiber */
	t = weft_spawn(dw_cancelled_writer, NULL);
	while (!atomic_load(&D.cn_blocked))
		weft_sleep(1 * MS);
	weft_sleep(50 * MS);
	atomic_store(&D.cn_cancel_at, weft_now());
	D.cancel_ret = weft_cancel(t);
	weft_join(t, NULL);
	weft_sleep(30 * MS);

	/* a deadline already passed: fails before touching anything */
	weft_deadline_push(&d, 0);
	memset(D.past_buf, 0x5A, sizeof D.past_buf);
	int pfd[2];
	if (pipe(pfd) == 0) {
		write(pfd[1], "data", 4);
		D.past_r = weft_read(pfd[0], D.past_buf, sizeof D.past_buf, -1);
		close(pfd[0]);
		close(pfd[1]);
	}
	weft_deadline_pop(&d);
	return NULL;
}

static void test_file_deadline_cancel_partial_write(void **state)
{
	(void)state;
	memset(&D, 0, sizeof D);
	tmp_path(D.path, sizeof D.path, "dl");
	D.src = malloc(DW_LEN);
	assert_non_null(D.src);
	memset(D.src, 'w', DW_LEN);
	assert_int_equal(pipe(D.pfd), 0);
	weft_config c = cfg_workers(2);
	assert_int_equal(weft_run(&c, dw_main, NULL, NULL), 0);
	assert_int_equal(atomic_load(&D.long_dl_errs), 0);
	assert_int_equal(D.pop_sleep, 0);
	/* deadline: a short write, counted; the next call reports the error */
	assert_true(D.dl_w1 > 0 && D.dl_w1 < (ssize_t)DW_LEN);
	assert_true(D.dl_elapsed >= 100 * MS && D.dl_elapsed < 2 * SEC);
	assert_int_equal(D.dl_w2, -ETIMEDOUT);
	assert_int_equal(D.cn_r, D.dl_w1); /* nothing written after return */
	/* cancel: the same shape */
	assert_int_equal(D.cancel_ret, 0);
	assert_true(D.cn_w1 > 0 && D.cn_w1 < (ssize_t)DW_LEN);
	assert_true(D.cn_after_cancel < 1 * SEC);
	assert_int_equal(D.cn_w2, -ECANCELED);
	assert_int_equal(drain_pipe(D.pfd[0]), D.cn_w1);
	/* passed deadline */
	assert_int_equal(D.past_r, -ETIMEDOUT);
	for (size_t i = 0; i < sizeof D.past_buf; i++)
		assert_int_equal(D.past_buf[i], 0x5A);
	close(D.pfd[0]);
	close(D.pfd[1]);
	free(D.src);
	check_no_leak();
}

/* ---- weft_close is not cancellable ------------------------------------------ */

/* A cancelled fiber, or one past its deadline, still closes: a server
 * cancelled at shutdown closes its connections on its way out (before,
 * weft_close returned -ECANCELED and the fd stayed open). */
static struct {
	int fds[4];
	int r_cancelled, r_deadline, r_plain;
	weft_event go;
} CL;

static void *cl_cancelled(void *arg)
{
	(void)arg;
	weft_event_wait(&CL.go); /* -ECANCELED: we are cancelled */
	CL.r_cancelled = weft_close(CL.fds[0]);
	return NULL;
}

static void *cl_main(void *arg)
{
	(void)arg;
	weft_event_init(&CL.go);
	weft_task *t = weft_spawn(cl_cancelled, NULL);
	weft_sleep(5 * MS);
	weft_cancel(t);
	weft_join(t, NULL);
	weft_deadline d;
	weft_deadline_push(&d, 1 * MS);
	weft_sleep(2 * MS); /* -ETIMEDOUT: the deadline has passed */
	CL.r_deadline = weft_close(CL.fds[1]);
	weft_deadline_pop(&d);
	CL.r_plain = weft_close(CL.fds[2]);
	return NULL;
}

static void test_close_not_cancellable(void **state)
{
	(void)state;
	int p[2];
	assert_int_equal(pipe(p), 0);
	CL.fds[0] = p[0];
	CL.fds[1] = p[1];
	CL.fds[2] = dup(p[0]);
	weft_config c = cfg_workers(2);
	assert_int_equal(weft_run(&c, cl_main, NULL, NULL), 0);
	assert_int_equal(CL.r_cancelled, 0);
	assert_int_equal(CL.r_deadline, 0);
	assert_int_equal(CL.r_plain, 0);
	for (int i = 0; i < 3; i++) /* all three are closed */
		assert_int_equal(fcntl(CL.fds[i], F_GETFD), -1);
}

/* ---- a cancelled blocking open ------------------------------------------------
 * With O_CREAT the kernel opens in its worker threads, where the open of a
 * FIFO waits for a writer; weft_cancel interrupts it, and the kernel ended
 * it with -ERESTARTSYS (-512), which weft_open handed on. It is
 * -ECANCELED. A thread opens the other end after 3 s if the cancel did
 * not end the open (then the open succeeds and the check fails). */
static struct {
	char path[300];
	int r;
	atomic_int joined;
} FO;

static void *fo_opener(void *arg)
{
	(void)arg;
	FO.r = weft_open(FO.path, O_RDONLY | O_CREAT, 0600);
	if (FO.r >= 0)
		close(FO.r);
	return NULL;
}

static void *fo_main(void *arg)
{
	(void)arg;
	weft_task *t = weft_spawn(fo_opener, NULL);
	weft_sleep(50 * MS); /* it is inside the open, in the kernel */
	CHECK_EQ(weft_cancel(t), 0);
	CHECK_EQ(weft_join(t, NULL), -ECANCELED); /* it was cancelled */
	atomic_store(&FO.joined, 1);
	return NULL;
}

static void *fo_rescue(void *arg)
{
	(void)arg;
	for (int i = 0; i < 300 && !atomic_load(&FO.joined); i++)
		usleep(10000);
	if (!atomic_load(&FO.joined)) {
		int fd = open(FO.path, O_WRONLY | O_NONBLOCK);
		if (fd >= 0)
			close(fd);
	}
	return NULL;
}

static void test_open_fifo_cancel(void **state)
{
	(void)state;
	if (seeded())
		skip(); /* the simulated ring does not model io-wq opens */
	tmp_path(FO.path, sizeof FO.path, "fifo");
	assert_int_equal(mkfifo(FO.path, 0600), 0);
	FO.r = 1;
	atomic_store(&FO.joined, 0);
	pthread_t th;
	assert_int_equal(pthread_create(&th, NULL, fo_rescue, NULL), 0);
	reset_fails();
	weft_config c = cfg_workers(1);
	assert_int_equal(weft_run(&c, fo_main, NULL, NULL), 0);
	atomic_store(&FO.joined, 1);
	pthread_join(th, NULL);
	assert_no_fails();
	assert_int_equal(FO.r, -ECANCELED);
	check_no_leak();
}

/* ---- seeded: no memory for a deadline's timer --------------------------------
 * In a seeded run an I/O deadline is a virtual-time timer (no linked
 * timeout). When the worker's timer heap cannot grow, the op is cancelled
 * in the kernel; the read then returned -ECANCELED to a fiber nobody
 * cancelled. As every other wait does (weft/deadline.h), it reports
 * -ENOMEM. Interposed realloc: fails while nomem_realloc is set (the first
 * timer of a worker allocates its heap). */
NOMEM_REALLOC_DEFINE()

static struct {
	ssize_t r;
	int failed;
} NT;

static void *nomem_timer_main(void *arg)
{
	(void)arg;
	int p[2];
	CHECK_EQ(pipe(p), 0);
	char b[8];
	weft_deadline d;
	CHECK_EQ(weft_deadline_push(&d, 10 * SEC), 0);
	atomic_store(&nomem_realloc, 1);
	NT.r = weft_read(p[0], b, sizeof b, -1);
	NT.failed = atomic_exchange(&nomem_realloc, 0) - 1;
	weft_deadline_pop(&d);
	close(p[0]);
	close(p[1]);
	return NULL;
}

static void test_seeded_deadline_timer_nomem(void **state)
{
	(void)state;
	if (!INTERPOSE)
		skip(); /* sanitizers keep realloc */
	weft_config c = cfg_workers(1);
	c.seed = seeded() ? 0 : 1; /* 0: the WEFT_SEED of the suite */
	reset_fails();
	memset(&NT, 0, sizeof NT);
	assert_int_equal(weft_run(&c, nomem_timer_main, NULL, NULL), 0);
	assert_no_fails();
	assert_true(NT.failed > 0);
	assert_int_equal(NT.r, -ENOMEM);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_close_not_cancellable),
		cmocka_unit_test_setup_teardown(test_file_random_rw, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_file_position_vectored_eof,
						setup, teardown),
		cmocka_unit_test_setup_teardown(test_file_big_write_complete,
						setup, teardown),
		cmocka_unit_test_setup_teardown(test_file_bad_input, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_file_concurrent_regions,
						setup, teardown),
		cmocka_unit_test_setup_teardown(
			test_file_deadline_cancel_partial_write, setup, teardown),
		cmocka_unit_test_setup_teardown(test_open_fifo_cancel, setup,
						teardown),
		cmocka_unit_test(test_seeded_deadline_timer_nomem),
	};
	apply_test_filters();
	return cmocka_run_group_tests(tests, NULL, NULL);
}
