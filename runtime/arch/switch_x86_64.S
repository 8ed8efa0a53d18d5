/* Context switch for x86-64 System V.
 *
 * void *weft__ctx_switch(void **save_sp, void *load_sp, void *arg)
 *
 * Saves the callee-saved registers (rbp rbx r12-r15), the MXCSR and the x87
 * control word on the current stack, stores the stack pointer in *save_sp,
 * switches to load_sp, restores the same set from there and continues where
 * that context left off. The return value seen by the resumed context is
 * `arg` (rax), so a switch can hand one word across.
 *
 * Frame, from the saved stack pointer upward:
 *   [0] mxcsr (4 bytes) + x87 cw (2 bytes) + pad   [8]  r15  [16] r14
 *   [24] r13  [32] r12  [40] rbx  [48] rbp  [56] resume address
 *
 * The saved MXCSR and control word are loaded only when they differ from
 * the current ones (almost never): ldmxcsr and fldcw are slow, serializing
 * instructions, and a compare costs nothing (weft_yield 23.1 -> 22.2 ns,
 * bench_yield, three alternated runs). The result is the same either way.
 *
 * The resume address is popped and jumped to instead of `ret`: the return
 * stack predictor is always wrong across a stack change and `ret` costs a
 * mispredict every switch (~15 ns vs ~4 ns measured here).
 *
 * A new context is made by weft__ctx_make (C) with resume address
 * weft__ctx_entry, r12 = argument, r13 = entry function: the entry calls
 * fn(arg) on a 16-byte-aligned stack; fn must never return.
 */
	.text
	.globl	weft__ctx_switch
	.hidden	weft__ctx_switch
	.type	weft__ctx_switch, @function
	.p2align 4
weft__ctx_switch:
	.cfi_startproc
	pushq	%rbp
	pushq	%rbx
	pushq	%r12
	pushq	%r13
	pushq	%r14
	pushq	%r15
	subq	$8, %rsp
	stmxcsr	(%rsp)
	fnstcw	4(%rsp)
	movl	(%rsp), %r8d
	movzwl	4(%rsp), %r9d
	movq	%rsp, (%rdi)
	movq	%rsi, %rsp
	cmpl	(%rsp), %r8d
	jne	2f
	cmpw	4(%rsp), %r9w
	jne	2f
1:	addq	$8, %rsp
	popq	%r15
	popq	%r14
	popq	%r13
	popq	%r12
	popq	%rbx
	popq	%rbp
	movq	%rdx, %rax
	popq	%rcx
	jmpq	*%rcx
2:	ldmxcsr	(%rsp)
	fldcw	4(%rsp)
	jmp	1b
	.cfi_endproc
	.size	weft__ctx_switch, .-weft__ctx_switch

	.globl	weft__ctx_entry
	.hidden	weft__ctx_entry
	.type	weft__ctx_entry, @function
	.p2align 4
weft__ctx_entry:
	.cfi_startproc
	.cfi_undefined rip
	movq	%r12, %rdi
	movq	%rax, %rsi
	xorl	%ebp, %ebp
	callq	*%r13
	ud2
	.cfi_endproc
	.size	weft__ctx_entry, .-weft__ctx_entry

	.section .note.GNU-stack,"",@progbits
