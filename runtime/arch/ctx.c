/* ctx.c — build the first frame of a new context, per ISA.
 *
 * weft__ctx_make lays out, at the top of a fresh stack, the frame that
 * weft__ctx_switch (switch_<isa>.S) pops: callee-saved registers with the
 * entry function and its argument in two of them, and weft__ctx_entry as
 * the resume address. entry(arg, switch_arg) then runs on that stack and
 * must never return.
 */
#include <string.h>

#ifdef WEFT_ARCH_STANDALONE /* tests/arch: toolchains without liburing */
#include <stdint.h>
void weft__ctx_entry(void) __attribute__((visibility("hidden")));
void *weft__ctx_make(void *top, void (*entry)(void *, void *), void *arg)
	__attribute__((visibility("hidden")));
void *weft__ctx_make_fp(void *top, void (*entry)(void *, void *), void *arg,
			uint64_t fpctl) __attribute__((visibility("hidden")));
uint64_t weft__ctx_fpctl(void) __attribute__((visibility("hidden")));
#else
#include "../internal.h"
#endif

#if defined(__x86_64__)
uint64_t weft__ctx_fpctl(void)
{
	uint32_t mxcsr;
	uint16_t fpucw;
	__asm__ volatile("stmxcsr %0" : "=m"(mxcsr));
	__asm__ volatile("fnstcw %0" : "=m"(fpucw));
	return (uint64_t)fpucw << 32 | mxcsr;
}

void *weft__ctx_make_fp(void *top, void (*entry)(void *, void *), void *arg,
			uint64_t fpctl)
{
	/* top is page aligned; after the 8 pops rsp == top (16-aligned), so
	 * the entry's call leaves the SysV-required rsp % 16 == 8 */
	uint64_t *sp = (uint64_t *)top - 8;
	memset(sp, 0, 8 * sizeof(uint64_t));
	sp[0] = fpctl; /* mxcsr in the low 4 bytes, the x87 cw in the next 2 */
	sp[3] = (uint64_t)(uintptr_t)entry; /* r13 */
	sp[4] = (uint64_t)(uintptr_t)arg;   /* r12 */
	sp[7] = (uint64_t)(uintptr_t)weft__ctx_entry;
	return sp;
}
#elif defined(__aarch64__)
uint64_t weft__ctx_fpctl(void)
{
	uint64_t fpcr;
	__asm__ volatile("mrs %0, fpcr" : "=r"(fpcr));
	return fpcr;
}

/* see switch_aarch64.S for the frame */
void *weft__ctx_make_fp(void *top, void (*entry)(void *, void *), void *arg,
			uint64_t fpcr)
{
	/* top is page aligned; 22 slots keep sp 16-aligned, and after the
	 * switch pops the frame sp == top for the entry's blr */
	uint64_t *sp = (uint64_t *)top - 22;
	memset(sp, 0, 22 * sizeof(uint64_t));
	sp[0] = (uint64_t)(uintptr_t)arg;   /* x19 */
	sp[1] = (uint64_t)(uintptr_t)entry; /* x20 */
	sp[11] = (uint64_t)(uintptr_t)weft__ctx_entry; /* x30 (lr) */
	sp[20] = fpcr;
	return sp;
}
#else
#error "weft: no context switch for this ISA (x86_64 and aarch64 exist)"
#endif

/* a new context inherits its creator's FP control */
void *weft__ctx_make(void *top, void (*entry)(void *, void *), void *arg)
{
	return weft__ctx_make_fp(top, entry, arg, weft__ctx_fpctl());
}
