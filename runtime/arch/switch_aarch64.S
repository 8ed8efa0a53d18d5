/* Context switch for AArch64 (AAPCS64).
 *
 * void *weft__ctx_switch(void **save_sp, void *load_sp, void *arg)
 *
 * Saves the callee-saved registers (x19-x28, x29 fp, x30 lr, d8-d15) and
 * the FPCR on the current stack, stores the stack pointer in *save_sp,
 * switches to load_sp, restores the same set from there and continues where
 * that context left off. The return value seen by the resumed context is
 * `arg` (x0), so a switch can hand one word across.
 *
 * Frame, 22 slots (176 bytes, keeps sp 16-byte aligned), from the saved
 * stack pointer upward, in 8-byte slots:
 *   [0] x19  [1] x20  [2] x21  [3] x22  [4] x23  [5] x24  [6] x25  [7] x26
 *   [8] x27  [9] x28  [10] x29  [11] x30 = resume address
 *   [12..19] d8-d15  [20] fpcr  [21] pad
 *
 * The resume address is branched to with `br x30` instead of `ret`: `ret`
 * hints a return-stack pop, and that predictor is always wrong across a
 * stack change, so `ret` would cost a mispredict every switch; `br` goes
 * through the indirect predictor instead. FPCR is only written when it
 * differs (an msr to FPCR can be slow on some cores).
 *
 * BTI: this file carries no GNU property note, so a binary linking it is
 * not BTI-marked and `br` to a plain return address is allowed.
 *
 * A new context is made by weft__ctx_make (C) with resume address
 * weft__ctx_entry, x19 = argument, x20 = entry function: the entry calls
 * fn(arg, switch_arg) on a 16-byte-aligned stack; fn must never return.
 */
	.text
	.globl	weft__ctx_switch
	.hidden	weft__ctx_switch
	.type	weft__ctx_switch, %function
	.p2align 4
weft__ctx_switch:
	.cfi_startproc
	sub	sp, sp, #176
	stp	x19, x20, [sp, #0]
	stp	x21, x22, [sp, #16]
	stp	x23, x24, [sp, #32]
	stp	x25, x26, [sp, #48]
	stp	x27, x28, [sp, #64]
	stp	x29, x30, [sp, #80]
	stp	d8, d9, [sp, #96]
	stp	d10, d11, [sp, #112]
	stp	d12, d13, [sp, #128]
	stp	d14, d15, [sp, #144]
	mrs	x9, fpcr
	str	x9, [sp, #160]
	mov	x10, sp
	str	x10, [x0]
	mov	sp, x1
	ldr	x10, [sp, #160]
	cmp	x9, x10
	b.eq	1f
	msr	fpcr, x10
1:	ldp	x19, x20, [sp, #0]
	ldp	x21, x22, [sp, #16]
	ldp	x23, x24, [sp, #32]
	ldp	x25, x26, [sp, #48]
	ldp	x27, x28, [sp, #64]
	ldp	x29, x30, [sp, #80]
	ldp	d8, d9, [sp, #96]
	ldp	d10, d11, [sp, #112]
	ldp	d12, d13, [sp, #128]
	ldp	d14, d15, [sp, #144]
	add	sp, sp, #176
	mov	x0, x2
	br	x30
	.cfi_endproc
	.size	weft__ctx_switch, .-weft__ctx_switch

	.globl	weft__ctx_entry
	.hidden	weft__ctx_entry
	.type	weft__ctx_entry, %function
	.p2align 4
weft__ctx_entry:
	.cfi_startproc
	.cfi_undefined x30
	mov	x1, x0
	mov	x0, x19
	mov	x29, xzr
	mov	x30, xzr
	blr	x20
	brk	#0x3e8
	.cfi_endproc
	.size	weft__ctx_entry, .-weft__ctx_entry

	.section .note.GNU-stack,"",%progbits
