/* 04_forgotten.c — the Python tour, part d: a task that is never joined.
 *
 * Every task must be joined (weft_join, weft_gather) or detached
 * (weft_detach) exactly once. Forgetting is a bug — its result and its
 * failure are lost — like the coroutine asyncio warns "was never awaited".
 * weft_run cancels such a task at shutdown, lets it finish, and reports it
 * on stderr with its name and where it was spawned:
 *
 *     weft: task 4 "forgotten" spawned at ... was never joined or detached
 *
 * The joined and the detached task are not reported.
 */
#include <stdint.h>
#include <stdio.h>
#include <weft.h>

static void *work(void *arg)
{
	weft_sleep(10 * 1000000); /* 10 ms; cancelled at shutdown if still here */
	return NULL;
}

/* Not static, and the program is linked with -rdynamic (CMake:
 * ENABLE_EXPORTS), so that the report can name the function that spawned
 * the task; otherwise it gives the file and offset, for addr2line. */
void *main_fiber(void *arg);

void *main_fiber(void *arg)
{
	static const char *const names[3] = {"joined", "detached", "forgotten"};
	weft_task *t[3];
	for (int i = 0; i < 3; i++) {
		t[i] = weft_spawn(work, NULL);
		if (!t[i]) { /* out of memory: join the ones that started */
			fprintf(stderr, "weft_spawn: out of memory\n");
			weft_gather(t, (size_t)i, NULL);
			return (void *)1;
		}
		weft_task_set_name(t[i], names[i]);
		printf("spawned task %llu \"%s\"\n",
		       (unsigned long long)weft_task_id(t[i]), names[i]);
	}
	int r = weft_join(t[0], NULL);
	weft_detach(t[1]);
	if (r < 0) /* e.g. -ENOMEM: it never ran */
		fprintf(stderr, "weft_join: %s\n", weft_strerror(r));
	/* the bug: nothing joins or detaches t[2] */
	printf("main returns without joining task %llu\n",
	       (unsigned long long)weft_task_id(t[2]));
	return r < 0 ? (void *)1 : NULL;
}

int main(void)
{
	setvbuf(stdout, NULL, _IOLBF, 0); /* lines interleave with stderr */
	void *res = NULL;
	int r = weft_run(NULL, main_fiber, NULL, &res);
	if (r < 0)
		fprintf(stderr, "weft_run: %s\n", weft_strerror(r));
	else
		printf("weft_run returned (the report is on stderr)\n");
	return r < 0 || res;
}
