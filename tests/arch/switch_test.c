/* switch_test.c — standalone test of runtime/arch (weft__ctx_make and
 * weft__ctx_switch), shared by x86-64 (native) and aarch64 (qemu-user);
 * run by tests/arch/aarch64.sh. Plain C, no runtime, no cmocka.
 *
 *  - 1,000 round trips main <-> coroutine, many live values on both sides
 *    (hashes checked both ways against volatile mirrors), and the word
 *    handed across each switch;
 *  - exact callee-saved registers survive a switch (x19-x29 + d8-d15, or
 *    rbx rbp r12-r15) while the other side runs with different values;
 *  - doubles kept live in loops across switches;
 *  - the entry: its two arguments, a 16-byte-aligned stack, a zeroed frame
 *    chain, and a returning entry traps instead of running on;
 *  - FP control (FPCR / MXCSR + x87 cw) is per context and inherited by a
 *    new context.
 */
#define _DEFAULT_SOURCE /* fork, waitpid, setrlimit under -std=c11 */
#include <fcntl.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#if defined(__x86_64__)
#include <xmmintrin.h>
#endif

#define HIDDEN __attribute__((visibility("hidden")))
void *weft__ctx_switch(void **save_sp, void *load_sp, void *arg) HIDDEN;
void weft__ctx_entry(void) HIDDEN;
void *weft__ctx_make(void *top, void (*entry)(void *, void *),
		     void *arg) HIDDEN;

#define STACK_SIZE (256 * 1024)
#define ROUNDS 1000

static int errs; /* failures in the current test, either context */
#define CHECK(c)                                                           \
	do {                                                               \
		if (!(c) && errs++ < 5)                                    \
			fprintf(stderr, "%s:%d: check failed: %s\n",       \
				__FILE__, __LINE__, #c);                   \
	} while (0)

static void *main_sp, *co_sp;
static char *stack;

static void new_co(void (*fn)(void *, void *), void *arg)
{
	stack = aligned_alloc(4096, STACK_SIZE);
	if (!stack)
		abort();
	memset(stack, 0xa5, STACK_SIZE);
	co_sp = weft__ctx_make(stack + STACK_SIZE, fn, arg);
}

/* ---- round trips with many live values ---------------------------------- */
#define NV 10
static volatile unsigned long main_mirror[NV], co_mirror[NV];

#define VARS X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7) X(8) X(9)
#define STEP(v, k) ((v) * 6364136223846793005ul + 1442695040888963407ul + (k))
#define HASH_INIT 14695981039346656037ul

static unsigned long mirror_hash(volatile unsigned long *m)
{
	unsigned long h = HASH_INIT;
	for (int k = 0; k < NV; k++)
		h = h * 31 + m[k];
	return h;
}

static void rt_co(void *arg, void *first)
{
	CHECK(arg == (void *)0x1234);
	CHECK(first == (void *)(uintptr_t)mirror_hash(main_mirror));
#define X(k) unsigned long v##k = co_mirror[k];
	VARS
#undef X
	for (int i = 0; i < ROUNDS; i++) {
		unsigned long h = HASH_INIT;
#define X(k) h = h * 31 + v##k;
		VARS
#undef X
		CHECK(h == mirror_hash(co_mirror));
		void *got = weft__ctx_switch(&co_sp, main_sp, (void *)h);
		CHECK(got == (void *)(uintptr_t)mirror_hash(main_mirror));
#define X(k) v##k = STEP(v##k, k); co_mirror[k] = STEP(co_mirror[k], k);
		VARS
#undef X
	}
	weft__ctx_switch(&co_sp, main_sp, (void *)0);
	abort();
}

static void test_round_trips(void)
{
	for (int k = 0; k < NV; k++) {
		main_mirror[k] = 0x1000 + k * 0x9e3779b9ul;
		co_mirror[k] = 0x2000 + k * 0x7f4a7c15ul;
	}
	new_co(rt_co, (void *)0x1234);
#define X(k) unsigned long v##k = main_mirror[k];
	VARS
#undef X
	for (int i = 0; i < ROUNDS; i++) {
		unsigned long h = HASH_INIT;
#define X(k) h = h * 31 + v##k;
		VARS
#undef X
		CHECK(h == mirror_hash(main_mirror));
		void *got = weft__ctx_switch(&main_sp, co_sp, (void *)h);
		CHECK(got == (void *)(uintptr_t)mirror_hash(co_mirror));
#define X(k) v##k = STEP(v##k, k); main_mirror[k] = STEP(main_mirror[k], k);
		VARS
#undef X
	}
	/* the coroutine's last hash is taken, let it park */
	CHECK(weft__ctx_switch(&main_sp, co_sp, (void *)(uintptr_t)mirror_hash(
				       main_mirror)) == (void *)0);
	free(stack);
}

/* ---- exact callee-saved registers ---------------------------------------- */
/* probe_switch(p): loads p->in into the callee-saved registers, calls
 * weft__ctx_switch(p->save, p->load, p->arg), stores the registers into
 * p->out and the return value into p->ret (it saves/restores its own
 * caller's registers, so it is an ordinary C-callable function). */
#if defined(__aarch64__)
#define NPR 19 /* x19-x29, d8-d15 */
#else
#define NPR 6 /* rbx rbp r12-r15 */
#endif
struct probe {
	void **save;
	void *load;
	void *arg;
	void *ret;
	uint64_t in[NPR];
	uint64_t out[NPR];
};
_Static_assert(offsetof(struct probe, in) == 32, "asm below");
_Static_assert(offsetof(struct probe, out) == 32 + 8 * NPR, "asm below");
void probe_switch(struct probe *p) HIDDEN;

#if defined(__aarch64__)
__asm__(".text\n"
	".p2align 2\n"
	".type probe_switch, %function\n"
	"probe_switch:\n"
	"	stp x29, x30, [sp, #-176]!\n"
	"	mov x29, sp\n"
	"	stp x19, x20, [sp, #16]\n"
	"	stp x21, x22, [sp, #32]\n"
	"	stp x23, x24, [sp, #48]\n"
	"	stp x25, x26, [sp, #64]\n"
	"	stp x27, x28, [sp, #80]\n"
	"	stp d8, d9, [sp, #96]\n"
	"	stp d10, d11, [sp, #112]\n"
	"	stp d12, d13, [sp, #128]\n"
	"	stp d14, d15, [sp, #144]\n"
	"	str x0, [sp, #160]\n"
	"	ldp x19, x20, [x0, #32]\n"
	"	ldp x21, x22, [x0, #48]\n"
	"	ldp x23, x24, [x0, #64]\n"
	"	ldp x25, x26, [x0, #80]\n"
	"	ldp x27, x28, [x0, #96]\n"
	"	ldr x29, [x0, #112]\n"
	"	ldp d8, d9, [x0, #120]\n"
	"	ldp d10, d11, [x0, #136]\n"
	"	ldp d12, d13, [x0, #152]\n"
	"	ldp d14, d15, [x0, #168]\n"
	"	ldp x1, x2, [x0, #8]\n"
	"	ldr x0, [x0]\n"
	"	bl weft__ctx_switch\n"
	"	ldr x1, [sp, #160]\n"
	"	str x0, [x1, #24]\n"
	"	stp x19, x20, [x1, #184]\n"
	"	stp x21, x22, [x1, #200]\n"
	"	stp x23, x24, [x1, #216]\n"
	"	stp x25, x26, [x1, #232]\n"
	"	stp x27, x28, [x1, #248]\n"
	"	str x29, [x1, #264]\n"
	"	stp d8, d9, [x1, #272]\n"
	"	stp d10, d11, [x1, #288]\n"
	"	stp d12, d13, [x1, #304]\n"
	"	stp d14, d15, [x1, #320]\n"
	"	ldp x19, x20, [sp, #16]\n"
	"	ldp x21, x22, [sp, #32]\n"
	"	ldp x23, x24, [sp, #48]\n"
	"	ldp x25, x26, [sp, #64]\n"
	"	ldp x27, x28, [sp, #80]\n"
	"	ldp d8, d9, [sp, #96]\n"
	"	ldp d10, d11, [sp, #112]\n"
	"	ldp d12, d13, [sp, #128]\n"
	"	ldp d14, d15, [sp, #144]\n"
	"	ldp x29, x30, [sp], #176\n"
	"	ret\n"
	".size probe_switch, .-probe_switch\n");
#elif defined(__x86_64__)
__asm__(".text\n"
	".p2align 4\n"
	".type probe_switch, @function\n"
	"probe_switch:\n"
	"	pushq %rbp\n"
	"	pushq %rbx\n"
	"	pushq %r12\n"
	"	pushq %r13\n"
	"	pushq %r14\n"
	"	pushq %r15\n"
	"	pushq %rdi\n" /* 7 pushes: rsp % 16 == 0 at the call */
	"	movq 32(%rdi), %rbx\n"
	"	movq 40(%rdi), %rbp\n"
	"	movq 48(%rdi), %r12\n"
	"	movq 56(%rdi), %r13\n"
	"	movq 64(%rdi), %r14\n"
	"	movq 72(%rdi), %r15\n"
	"	movq 8(%rdi), %rsi\n"
	"	movq 16(%rdi), %rdx\n"
	"	movq (%rdi), %rdi\n"
	"	call weft__ctx_switch\n"
	"	popq %rcx\n"
	"	movq %rax, 24(%rcx)\n"
	"	movq %rbx, 80(%rcx)\n"
	"	movq %rbp, 88(%rcx)\n"
	"	movq %r12, 96(%rcx)\n"
	"	movq %r13, 104(%rcx)\n"
	"	movq %r14, 112(%rcx)\n"
	"	movq %r15, 120(%rcx)\n"
	"	popq %r15\n"
	"	popq %r14\n"
	"	popq %r13\n"
	"	popq %r12\n"
	"	popq %rbx\n"
	"	popq %rbp\n"
	"	ret\n"
	".size probe_switch, .-probe_switch\n");
#endif

static uint64_t pattern(int side, int i, int k)
{
	return 0xc0de000000000000ull | (uint64_t)side << 40 |
	       (uint64_t)i << 8 | (uint64_t)k;
}

static void probe_round(int side, int i, void **save, void *load)
{
	struct probe p = { save, load, (void *)pattern(side, i, 0xff), 0,
			   { 0 }, { 0 } };
	for (int k = 0; k < NPR; k++)
		p.in[k] = pattern(side, i, k);
	probe_switch(&p);
	int bad = 0;
	for (int k = 0; k < NPR; k++)
		bad += p.out[k] != p.in[k];
	CHECK(bad == 0);
	/* main's round i is answered by co's round i, co's by main's i+1 */
	CHECK(p.ret == (void *)pattern(!side, side ? i + 1 : i, 0xff));
}

static void probe_co(void *arg, void *first)
{
	CHECK(first == (void *)pattern(0, 0, 0xff));
	for (int i = 0; i < ROUNDS; i++)
		probe_round(1, i, &co_sp, main_sp);
	abort(); /* the last round is never answered */
}

static void test_callee_saved_regs(void)
{
	new_co(probe_co, NULL);
	for (int i = 0; i < ROUNDS; i++)
		probe_round(0, i, &main_sp, co_sp);
	free(stack);
}

/* ---- doubles live across switches ---------------------------------------- */
#define ND 8
#define DVARS D(0) D(1) D(2) D(3) D(4) D(5) D(6) D(7)
static volatile double main_dm[ND], co_dm[ND];
/* (x + a) * b: no a*b+c shape, so nothing is fused into an fma */
#define DSTEP(x, k) (((x) + 0.25 * ((k) + 1)) * (0.5 + 0.0625 * (k)))

static void fp_co(void *arg, void *first)
{
#define D(k) double d##k = co_dm[k];
	DVARS
#undef D
	for (int i = 0; i < ROUNDS; i++) {
		weft__ctx_switch(&co_sp, main_sp, NULL);
#define D(k) CHECK(d##k == co_dm[k]); d##k = DSTEP(d##k, k); co_dm[k] = DSTEP(co_dm[k], k);
		DVARS
#undef D
	}
	weft__ctx_switch(&co_sp, main_sp, NULL);
	abort();
}

static void test_fp_values(void)
{
	for (int k = 0; k < ND; k++) {
		main_dm[k] = 1.0 / (k + 3);
		co_dm[k] = -7.0 / (k + 5);
	}
	new_co(fp_co, NULL);
#define D(k) double d##k = main_dm[k];
	DVARS
#undef D
	for (int i = 0; i <= ROUNDS; i++) {
		weft__ctx_switch(&main_sp, co_sp, NULL);
#define D(k) CHECK(d##k == main_dm[k]); d##k = DSTEP(d##k, k); main_dm[k] = DSTEP(main_dm[k], k);
		DVARS
#undef D
	}
	free(stack);
}

/* ---- the entry ------------------------------------------------------------ */
static uintptr_t co_fa, co_local, co_chain;
static void *co_arg, *co_first;

static void align_co(void *arg, void *first)
{
	__attribute__((aligned(16))) volatile char buf[16];
	uintptr_t p = (uintptr_t)buf;
	__asm__("" : "+r"(p)); /* hide the address from alignment folding */
	buf[0] = 1;
	co_fa = (uintptr_t)__builtin_frame_address(0);
	co_chain = (uintptr_t)*(void **)__builtin_frame_address(0);
	co_local = p;
	co_arg = arg;
	co_first = first;
	weft__ctx_switch(&co_sp, main_sp, NULL);
	abort();
}

static void test_entry(void)
{
	new_co(align_co, (void *)0xabcdef);
	weft__ctx_switch(&main_sp, co_sp, (void *)0x777);
	CHECK(co_arg == (void *)0xabcdef);
	CHECK(co_first == (void *)0x777);
	CHECK(co_fa % 16 == 0);
	CHECK(co_local % 16 == 0);
	CHECK(co_fa > (uintptr_t)stack && co_fa < (uintptr_t)stack + STACK_SIZE);
	CHECK(co_chain == 0); /* frame pointer zeroed: backtraces stop here */
	free(stack);
}

static void returning_entry(void *arg, void *first)
{
	(void)arg;
	(void)first;
}

static void test_entry_return_traps(void)
{
	fflush(NULL);
	pid_t pid = fork();
	if (pid == 0) {
		struct rlimit no_core = { 0, 0 };
		setrlimit(RLIMIT_CORE, &no_core);
		int null = open("/dev/null", O_WRONLY);
		if (null >= 0)
			dup2(null, 2); /* qemu reports the signal on stderr */
		new_co(returning_entry, NULL);
		weft__ctx_switch(&main_sp, co_sp, NULL);
		_exit(0); /* must not get here */
	}
	int st = 0;
	CHECK(pid > 0 && waitpid(pid, &st, 0) == pid);
#if defined(__aarch64__)
	CHECK(WIFSIGNALED(st) && WTERMSIG(st) == SIGTRAP); /* brk */
#else
	CHECK(WIFSIGNALED(st) && WTERMSIG(st) == SIGILL); /* ud2 */
#endif
}

/* ---- FP control per context ---------------------------------------------- */
#if defined(__aarch64__)
#define RMODE_MASK (3ull << 22)
#define RMODE_UP (1ull << 22) /* RP: toward +inf */
static uint64_t get_fpctl(void)
{
	uint64_t v;
	__asm__ volatile("mrs %0, fpcr" : "=r"(v));
	return v;
}
static void set_round_up(void)
{
	uint64_t v = (get_fpctl() & ~RMODE_MASK) | RMODE_UP;
	__asm__ volatile("msr fpcr, %0" : : "r"(v));
}
#else
/* MXCSR in the low 32 bits, x87 control word above */
static uint64_t get_fpctl(void)
{
	uint16_t cw;
	__asm__ volatile("fnstcw %0" : "=m"(cw));
	return (uint64_t)cw << 32 | _mm_getcsr();
}
static void set_round_up(void)
{
	uint16_t cw;
	_MM_SET_ROUNDING_MODE(_MM_ROUND_UP);
	__asm__ volatile("fnstcw %0" : "=m"(cw));
	cw = (cw & ~0x0c00) | 0x0800; /* x87 RC = up */
	__asm__ volatile("fldcw %0" : : "m"(cw));
}
#endif

static volatile double one = 1.0, three = 3.0;
#define THIRD_NEAREST 0x1.5555555555555p-2
#define THIRD_UP 0x1.5555555555556p-2
static uint64_t main_fpctl, co_fpctl_set;

static void fpctl_co(void *arg, void *first)
{
	CHECK(get_fpctl() == main_fpctl); /* inherited from the creator */
	set_round_up();
	co_fpctl_set = get_fpctl();
	CHECK(co_fpctl_set != main_fpctl);
	for (int i = 0; i < 3; i++) {
		CHECK(one / three == THIRD_UP);
		weft__ctx_switch(&co_sp, main_sp, NULL);
		CHECK(get_fpctl() == co_fpctl_set);
	}
	weft__ctx_switch(&co_sp, main_sp, NULL);
	abort();
}

static void test_fp_control(void)
{
	main_fpctl = get_fpctl();
	CHECK(one / three == THIRD_NEAREST);
	new_co(fpctl_co, NULL);
	for (int i = 0; i < 4; i++) {
		weft__ctx_switch(&main_sp, co_sp, NULL);
		CHECK(get_fpctl() == main_fpctl);
		CHECK(one / three == THIRD_NEAREST);
	}
	free(stack);
}

/* -------------------------------------------------------------------------- */
int main(void)
{
	static const struct {
		const char *name;
		void (*fn)(void);
	} tests[] = {
		{ "round_trips", test_round_trips },
		{ "callee_saved_regs", test_callee_saved_regs },
		{ "fp_values", test_fp_values },
		{ "entry", test_entry },
		{ "entry_return_traps", test_entry_return_traps },
		{ "fp_control", test_fp_control },
	};
	int passed = 0, failed = 0;
	for (size_t t = 0; t < sizeof tests / sizeof tests[0]; t++) {
		errs = 0;
		tests[t].fn();
		printf("%s %s\n", errs ? "FAIL" : "ok  ", tests[t].name);
		errs ? failed++ : passed++;
	}
	printf("%d passed, %d failed\n", passed, failed);
	return failed != 0;
}
