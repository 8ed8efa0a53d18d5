/* weft/debug.h — seeing inside: fiber names, the fiber dump, and the two
 * reports weft writes to stderr by itself (docs/api/debug.md).
 *
 * Slow-fiber watchdog (asyncio debug mode's slow-callback warning): with
 * weft_config.slow_ms or env WEFT_SLOW_MS set, a fiber that runs that long
 * without yielding or waiting is reported while it runs, once per stretch:
 *   weft: slow fiber <id> "<name>" on worker <w>: running <ms> ms without yielding
 * Never-joined report ("coroutine was never awaited"): when weft_run ends,
 * each task neither joined nor detached gets one line (off with
 * weft_config.unjoined_report = -1 or WEFT_UNJOINED_REPORT=0):
 *   weft: task <id> "<name>" spawned at <site> was never joined or detached
 * Dump signal: with weft_config.dump_signal or env WEFT_DUMP_SIGNAL (QUIT,
 * USR1, USR2 or a number) that signal prints weft_dump to stderr, as Go
 * does on SIGQUIT. Off by default: weft takes no signal it was not given.
 * <name> is "" for an unnamed task. <site> is where weft_spawn was called
 * from: symbol+0xoff (an executable's own functions have names when linked
 * with -rdynamic), else file+0xoff (for addr2line -e file 0xoff).
 */
#ifndef WEFT_DEBUG_H
#define WEFT_DEBUG_H

#include <stdio.h>

#include "common.h"
#include "task.h"

WEFT_BEGIN_DECLS

/* Name t (NULL: the calling fiber) for the dump and the reports. The
 * string is not copied: it must stay valid until t is joined or detached
 * and ended (a literal is the usual choice); NULL removes the name.
 * Returns 0; -EINVAL if t is not a live task, or NULL outside a fiber. */
WEFT_API int weft_task_set_name(weft_task *t, const char *name);
/* t's name (NULL: the calling fiber's), NULL if it has none. */
WEFT_API const char *weft_task_name(const weft_task *t);

/* Write one line per live fiber to out, sorted by id, after a header line:
 *   fiber <id> "<name>": <state>, worker <w>, fn <fn>, spawned at <site>
 * <state>: "running on worker <n>", "runnable", "finished, not yet joined",
 * or "waiting <ms> ms on <what>", <what> one of: sleep <n> ms, join task
 * <id>, wait-any of <n> tasks, chan send|recv <addr>, select of <n> cases,
 * mutex|cond|sem|wg|event|group <addr>, blocking pool <fn>, io <op> fd <fd>.
 * <w> is the worker it last ran on ("-": never ran). Builds with
 * WEFT_FRAME_POINTERS add the return addresses of each waiting fiber.
 * A snapshot of a moving system: each line is consistent, not all at once.
 * Callable from any thread while weft_run runs (a fiber calling it blocks
 * its worker while it writes). Returns the number of fibers listed;
 * -EINVAL (out NULL), -ESRCH (no runtime running), -ENOMEM, -EIO (a write
 * to out failed). */
WEFT_API int weft_dump(FILE *out);

WEFT_END_DECLS

#endif
