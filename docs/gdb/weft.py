"""weft.py -- gdb commands for looking at weft fibers (x86-64 Linux).

Load it with `source docs/gdb/weft.py` in gdb (or `gdb -x docs/gdb/weft.py`).
It adds:

  weft fibers            one line per live fiber, like weft_dump's:
                         fiber <id> "<name>": <state>, worker <w>, fn <fn>,
                         spawned at <site>
  weft bt <id> [ARGS]    the backtrace of a fiber that is not on a worker
                         now (parked, queued, or finished but not joined),
                         by gdb's own `bt ARGS` (e.g. `weft bt 7 full`)
  weft bt -fp <id>       the same from the frame-pointer chain instead
                         (what weft_dump's backtraces walk)

Needs a libweft (and program) built with debug info -- CMake's Debug or
RelWithDebInfo, or -g -- since it reads the runtime's private structs
(struct weft__rt, struct weft__worker, struct weft_task) by their DWARF
types. x86-64 only: it decodes the frame weft__ctx_switch saves
(runtime/arch/switch_x86_64.S).

How it works (mirroring runtime/dump.c): weft__rt_cur is the running
runtime; its fiber slab (rt->fibers) is a list of 2 MiB chunks, each a
64-byte header (next, carved, cap) and then `carved` items of rt->fibers.isz
bytes; an item whose flags have WEFT__F_ALLOC is a live fiber. Its state
comes from the park word, `running` of each worker, and the wait word that
weft__wait_note stored before it parked.

`weft bt` loads the fiber's saved registers (the frame at ctx.sp: [0]
mxcsr/x87 cw, [8] r15, [16] r14, [24] r13, [32] r12, [40] rbx, [48] rbp,
[56] resume address; sp after the switch returns = ctx.sp + 64) into the
selected thread, runs `bt`, and puts the thread's registers back, as Go's
runtime-gdb.py does for goroutines. Nothing in the inferior runs. Where the
registers cannot be written (a core file) it falls back to the frame-pointer
walk, which needs frame pointers (-O0, or -fno-omit-frame-pointer).

A fiber running on a worker is on that worker's thread: its stack is that
thread's stack, so `weft fibers` shows it as running (with the gdb thread)
and `weft bt` tells you to use `thread N` and `bt`.
"""

import os
import struct
import time

import gdb

# ---- constants: keep in step with runtime/internal.h ----------------------

# park word: seq (32) | reason (8 at 16) | cancellable (8 at 8) | state (8)
PS_RUNNING, PS_PARKING, PS_PARKED, PS_NOTIFIED, PS_RUNNABLE = range(5)
PSTATE_NAMES = ["running", "parking", "parked", "notified", "runnable"]

F_ALLOC = 1 << 0
F_JOINING = 1 << 1
F_DETACHED = 1 << 2
F_EXITED = 1 << 3
F_CANCEL = 1 << 4
F_MAIN = 1 << 5

# wait word: kind (8 at 56) | op (8 at 48) | obj (48)
(W_NONE, W_SLEEP, W_JOIN, W_WAIT_ANY, W_CHAN_SEND, W_CHAN_RECV, W_SELECT,
 W_MUTEX, W_COND, W_SEM, W_WG, W_EVENT, W_GROUP, W_BLOCKING, W_IO) = range(15)
OBJ_NAMES = {W_MUTEX: "mutex", W_COND: "cond", W_SEM: "sem", W_WG: "wg",
             W_EVENT: "event", W_GROUP: "group"}

# io_uring opcodes, as runtime/dump.c names them
IO_OPS = {0: "nop", 1: "readv", 2: "writev", 3: "fsync", 4: "read_fixed",
          5: "write_fixed", 6: "poll", 9: "sendmsg", 10: "recvmsg",
          11: "timeout", 13: "accept", 16: "connect", 17: "fallocate",
          18: "openat", 19: "close", 21: "statx", 22: "read", 23: "write",
          26: "send", 27: "recv", 28: "openat2", 30: "splice",
          34: "shutdown"}

SLAB_CHUNK = 2 << 20  # WEFT__SLAB_CHUNK
SLAB_HDR = 64         # WEFT__SLAB_HDR: struct chunk {next, carved, cap, pad}
CLOCK_MONOTONIC_COARSE = 6  # Linux; the clock of weft__coarse_ms

# the saved frame of weft__ctx_switch, offsets from ctx.sp
CTX_FRAME = [("r15", 8), ("r14", 16), ("r13", 24), ("r12", 32),
             ("rbx", 40), ("rbp", 48)]
CTX_RESUME = 56
CTX_SIZE = 64


# ---- reading the inferior ---------------------------------------------------

def _inf():
    inf = gdb.selected_inferior()
    if inf is None or inf.pid == 0:
        raise gdb.GdbError("weft: no process (run it, attach, or load a core)")
    return inf


def _u64(addr):
    return struct.unpack("<Q", bytes(_inf().read_memory(addr, 8)))[0]


def _runtime():
    try:
        rt = gdb.parse_and_eval("weft__rt_cur")
    except gdb.error as e:
        raise gdb.GdbError(
            "weft: cannot read weft__rt_cur (%s); is libweft loaded, and "
            "built with debug info (Debug or RelWithDebInfo)?" % e)
    if int(rt) == 0:
        raise gdb.GdbError("weft: no runtime is running (weft__rt_cur is NULL)")
    return rt.dereference()


def _task_layout():
    """Byte offsets and sizes of the struct weft_task fields we read."""
    try:
        t = gdb.lookup_type("struct weft_task")
    except gdb.error:
        raise gdb.GdbError("weft: no debug info for struct weft_task; "
                           "build libweft as Debug or RelWithDebInfo")
    off = {}
    for f in t.fields():
        off[f.name] = (f.bitpos // 8, f.type.strip_typedefs().sizeof)
    ctx = t["ctx"].type.strip_typedefs()
    for f in ctx.fields():
        off["ctx." + f.name] = (off["ctx"][0] + f.bitpos // 8,
                                f.type.strip_typedefs().sizeof)
    return off


_FMT = {1: "<B", 2: "<H", 4: "<I", 8: "<Q"}


class Fiber(object):
    pass


def _read_fiber(buf, base, addr, lay):
    f = Fiber()
    f.addr = addr
    for name in ("ctx.sp", "ctx.stack_lo", "park", "flags", "last_worker",
                 "fn", "id", "name", "wait", "wait_ms"):
        o, sz = lay[name]
        setattr(f, name.replace("ctx.", ""),
                struct.unpack_from(_FMT[sz], buf, base + o)[0])
    return f


def _fibers(rt):
    """Every live fiber of rt, sorted by id (weft__slab_walk + walk_one)."""
    lay = _task_layout()
    slab = rt["fibers"]
    isz = int(slab["isz"])
    side_sz = int(slab["side_sz"])
    inf = _inf()
    out = []
    chunk = int(slab["chunks"])
    seen = set()
    while chunk and chunk not in seen:
        seen.add(chunk)
        nxt, carved, cap = struct.unpack(
            "<QQQ", bytes(inf.read_memory(chunk, 24)))
        if carved:
            buf = bytes(inf.read_memory(chunk + SLAB_HDR, carved * isz))
            fo, fsz = lay["flags"]
            for i in range(carved):
                fl = struct.unpack_from(_FMT[fsz], buf, i * isz + fo)[0]
                if not fl & F_ALLOC:
                    continue
                f = _read_fiber(buf, i * isz, chunk + SLAB_HDR + i * isz, lay)
                # the spawn site, in the chunk's side area (weft__slab_side)
                side = chunk + SLAB_HDR + cap * isz + i * side_sz
                try:
                    f.site = _u64(side) if side_sz >= 8 else 0
                except gdb.MemoryError:
                    f.site = 0
                out.append(f)
        chunk = nxt
    out.sort(key=lambda f: f.id)
    return out


def _workers(rt):
    n = int(rt["nworkers"])
    ws = rt["workers"]
    return [ws[i] for i in range(n)]


def _worker_threads(rt, workers):
    """worker index -> gdb thread number. Each thread's own worker pointer
    (the TLS tls_worker of runtime/sched.c) where gdb can read TLS (a live
    process with libthread_db), else the pthread_t each worker but worker 0
    (the thread that called weft_run) was started with."""
    res = {}
    inf = _inf()
    base = int(rt["workers"])
    wsz = rt["workers"].dereference().type.sizeof
    orig = gdb.selected_thread()
    try:
        level = gdb.selected_frame().level()
    except gdb.error:
        level = None
    try:
        for t in inf.threads():
            try:
                t.switch()
                w = int(gdb.parse_and_eval("'sched.c'::tls_worker"))
            except gdb.error:
                continue
            if w and (w - base) % wsz == 0 and 0 <= (w - base) // wsz < len(workers):
                res[(w - base) // wsz] = t.num
    finally:
        if orig is not None and orig.is_valid():
            orig.switch()
            if level:
                try:
                    gdb.execute("frame %d" % level, to_string=True)
                except gdb.error:
                    pass
    if len(res) == len(workers):
        return res
    by_handle = {}
    for t in inf.threads():
        try:
            h = t.handle()
        except (gdb.error, AttributeError):
            continue
        if h:
            by_handle[int.from_bytes(bytes(h), "little")] = t.num
    for i, w in enumerate(workers):
        if i in res:
            continue
        try:
            num = by_handle.get(int(w["thread"]))
        except gdb.error:
            num = None
        if num is not None:
            res[i] = num
    return res


def _is_live_process():
    inf = _inf()
    conn = getattr(inf, "connection", None)
    if conn is not None:
        return conn.type == "native"
    return os.path.exists("/proc/%d" % inf.pid)


def _coarse_ms():
    try:
        return int(time.clock_gettime(CLOCK_MONOTONIC_COARSE) * 1000) & 0xffffffff
    except (AttributeError, OSError):
        return None


# ---- naming things ----------------------------------------------------------

def _sym(addr):
    """'sym+0xoff' (or 'sym'), else the address in hex; '?' for 0. The
    function comes from the debug info when there is some (`info symbol`
    would show weft__x as Ada's weft.x), else from the symbol table."""
    if not addr:
        return "?"
    try:
        b = gdb.block_for_pc(addr)
    except (gdb.error, RuntimeError):
        b = None
    # the outermost function block: inlined calls are blocks inside it
    fb = None
    while b is not None and not b.is_global and not b.is_static:
        if b.function is not None:
            fb = b
        b = b.superblock
    if fb is not None:
        off = addr - fb.start
        return fb.function.name + ("+0x%x" % off if off else "")
    try:
        s = gdb.execute("info symbol 0x%x" % addr, to_string=True).strip()
    except gdb.error:
        s = ""
    if not s or s.startswith("No symbol"):
        return "0x%x" % addr
    name = s.split(" in section ")[0]
    if " + " in name:
        n, off = name.split(" + ", 1)
        try:
            return "%s+0x%x" % (n, int(off))
        except ValueError:
            return name
    return name


def _where(ret):
    """' (file:line)' of the call a return address returns from, or ''."""
    if not ret:
        return ""
    try:
        sal = gdb.find_pc_line(ret - 1)
    except gdb.error:
        return ""
    if sal.symtab is None or not sal.line:
        return ""
    return " (%s:%d)" % (os.path.basename(sal.symtab.filename), sal.line)


def _name(ptr):
    if not ptr:
        return ""
    try:
        v = gdb.Value(ptr).cast(gdb.lookup_type("char").pointer())
        s = v.string("latin-1", "replace")[:63]
    except (gdb.error, gdb.MemoryError):
        return "?"
    return "".join("?" if ord(c) < 0x20 or c == '"' or ord(c) == 0x7f else c
                   for c in s)


def _describe_wait(w):
    kind, op, obj = w >> 56, (w >> 48) & 0xff, w & 0xffffffffffff
    if kind == W_SLEEP:
        return "sleep %d ms" % obj
    if kind == W_JOIN:
        return "join task %d" % obj
    if kind == W_WAIT_ANY:
        return "wait-any of %d tasks" % obj
    if kind in (W_CHAN_SEND, W_CHAN_RECV):
        return "chan %s 0x%x" % ("send" if kind == W_CHAN_SEND else "recv", obj)
    if kind == W_SELECT:
        return "select of %d cases" % obj
    if kind in OBJ_NAMES:
        return "%s 0x%x" % (OBJ_NAMES[kind], obj)
    if kind == W_BLOCKING:
        return "blocking pool %s" % _sym(obj)
    if kind == W_IO:
        fd = obj & 0xffffffff
        fd = fd - (1 << 32) if fd >= 1 << 31 else fd
        if op in IO_OPS:
            return "io %s fd %d" % (IO_OPS[op], fd)
        return "io op%d fd %d" % (op, fd)
    return "unknown"


def _running_on(f, running):
    for i, r in enumerate(running):
        if r == f.addr:
            return i
    return -1


# ---- weft fibers ------------------------------------------------------------

class WeftPrefix(gdb.Command):
    """weft: look at the fibers of a weft runtime (docs/gdb/README.md).

weft fibers          list every live fiber
weft bt <id> [ARGS]  backtrace of a fiber that is not on a worker now"""

    def __init__(self):
        super(WeftPrefix, self).__init__("weft", gdb.COMMAND_STACK,
                                         gdb.COMPLETE_NONE, True)

    def invoke(self, arg, from_tty):
        gdb.execute("help weft")


class WeftFibers(gdb.Command):
    """List every live fiber of the running weft runtime, as weft_dump does:
fiber <id> "<name>": <state>, worker <w>, fn <fn>, spawned at <site>
<state>: running on worker <n> (gdb thread <t>), runnable,
waiting [<ms> ms] on <what>, finished, not yet joined.
Needs libweft built with debug info (Debug or RelWithDebInfo)."""

    def __init__(self):
        super(WeftFibers, self).__init__("weft fibers", gdb.COMMAND_STACK)

    def invoke(self, arg, from_tty):
        rt = _runtime()
        workers = _workers(rt)
        running = [int(w["running"]) for w in workers]
        threads = _worker_threads(rt, workers)
        fibers = _fibers(rt)
        now = _coarse_ms() if _is_live_process() else None
        gdb.write("weft: %d fibers on %d workers\n" % (len(fibers), len(workers)))
        for f in fibers:
            st = f.park & 0xff
            on = _running_on(f, running)
            if f.flags & F_EXITED:
                what = "finished, not yet joined"
            elif on >= 0:
                what = "running on worker %d" % on
                if on in threads:
                    what += " (gdb thread %d)" % threads[on]
            elif st in (PS_PARKED, PS_PARKING):
                if now is not None:
                    what = "waiting %d ms on %s" % (
                        (now - f.wait_ms) & 0xffffffff, _describe_wait(f.wait))
                else:
                    what = "waiting on %s" % _describe_wait(f.wait)
            else:
                what = "runnable"
            worker = "-" if f.last_worker == 0xffff else str(f.last_worker)
            gdb.write('fiber %d "%s": %s, worker %s, fn %s, spawned at %s%s%s\n'
                      % (f.id, _name(f.name), what, worker, _sym(f.fn),
                         _sym(f.site), _where(f.site),
                         ", cancelled" if f.flags & F_CANCEL else ""))


# ---- weft bt ----------------------------------------------------------------

def _find(rt, fid):
    for f in _fibers(rt):
        if f.id == fid:
            return f
    raise gdb.GdbError("weft: no live fiber with id %d (see `weft fibers`)" % fid)


def _check_suspended(rt, f):
    workers = _workers(rt)
    on = _running_on(f, [int(w["running"]) for w in workers])
    if on >= 0:
        t = _worker_threads(rt, workers).get(on)
        raise gdb.GdbError(
            "weft: fiber %d is running on worker %d: its stack is that "
            "thread's; use `thread %s` and `bt`"
            % (f.id, on, t if t is not None else "<N>"))
    if f.flags & F_EXITED or not f.stack_lo:
        raise gdb.GdbError("weft: fiber %d has no stack (%s)" % (
            f.id, "finished" if f.flags & F_EXITED else "not started yet"))
    hi = f.stack_lo + int(rt["stacks"]["usable"])
    if not (f.stack_lo <= f.sp and f.sp + CTX_SIZE <= hi):
        raise gdb.GdbError("weft: fiber %d: saved sp 0x%x outside its stack "
                           "[0x%x, 0x%x)" % (f.id, f.sp, f.stack_lo, hi))
    if f.park & 0xff == PS_PARKING:
        gdb.write("weft: note: fiber %d is still PARKING; its saved context "
                  "may be stale\n" % f.id)
    return hi


def _fp_walk(f, hi, limit=64):
    """The resume address and the frame-pointer chain, each frame checked
    to lie within the stack and above the last (dump.c's backtrace_of)."""
    sp = f.sp
    fp = _u64(sp + 48)
    out = [_u64(sp + CTX_RESUME)]
    last = sp
    while len(out) < limit and last < fp and fp + 16 <= hi and not fp & 7:
        ret = _u64(fp + 8)
        if ret < 4096:
            break
        out.append(ret)
        last = fp
        fp = _u64(fp)
    return out


def _print_fp(f, hi):
    # all return addresses: frame 0's is the one the call to
    # weft__ctx_switch pushed, its resume address
    for i, pc in enumerate(_fp_walk(f, hi)):
        gdb.write("#%-2d 0x%016x in %s%s\n" % (i, pc, _sym(pc), _where(pc)))


class WeftBt(gdb.Command):
    """Backtrace of a suspended weft fiber: weft bt <id> [bt ARGS]
Loads the fiber's saved registers (from the frame weft__ctx_switch left at
its ctx.sp) into the selected thread, runs `bt ARGS`, and restores the
thread's registers. `weft bt -fp <id>` walks the frame-pointer chain
instead (also the fallback where registers cannot be written, e.g. a core).
A fiber running on a worker: use `thread N` and `bt` (weft fibers names N).
x86-64 only; needs libweft built with debug info (Debug or RelWithDebInfo)."""

    def __init__(self):
        super(WeftBt, self).__init__("weft bt", gdb.COMMAND_STACK)

    def invoke(self, arg, from_tty):
        argv = gdb.string_to_argv(arg)
        use_fp = False
        if argv and argv[0] == "-fp":
            use_fp = True
            argv = argv[1:]
        if not argv:
            raise gdb.GdbError("usage: weft bt [-fp] <fiber id> [bt args]")
        try:
            fid = int(argv[0], 0)
        except ValueError:
            raise gdb.GdbError("weft: bad fiber id %r" % argv[0])
        rt = _runtime()
        f = _find(rt, fid)
        hi = _check_suspended(rt, f)
        if gdb.lookup_type("void").pointer().sizeof != 8 or \
                "x86-64" not in gdb.newest_frame().architecture().name():
            raise gdb.GdbError("weft: x86-64 only")
        gdb.write('fiber %d "%s", saved sp 0x%x, stack [0x%x, 0x%x)\n'
                  % (f.id, _name(f.name), f.sp, f.stack_lo, hi))
        if use_fp:
            _print_fp(f, hi)
            return
        try:
            self._swap_bt(f, " ".join(argv[1:]))
        except _NoRegs as e:
            gdb.write("weft: cannot load registers (%s); frame-pointer "
                      "walk:\n" % e)
            _print_fp(f, hi)

    @staticmethod
    def _swap_bt(f, bt_args):
        thread = gdb.selected_thread()
        if thread is None or not thread.is_stopped():
            raise gdb.GdbError("weft: the selected thread must be stopped")
        try:
            level = gdb.selected_frame().level()
        except gdb.error:
            level = 0
        gdb.newest_frame().select()
        regs = ["pc", "sp"] + [r for r, _ in CTX_FRAME]
        saved = {r: int(gdb.parse_and_eval("$" + r).cast(
            gdb.lookup_type("unsigned long"))) for r in regs}
        new = {r: _u64(f.sp + o) for r, o in CTX_FRAME}
        new["pc"] = _u64(f.sp + CTX_RESUME)
        new["sp"] = f.sp + CTX_SIZE
        written = False
        try:
            try:
                for r in regs:
                    gdb.execute("set $%s = 0x%x" % (r, new[r]), to_string=True)
                    written = True
            except gdb.error as e:
                raise _NoRegs(str(e))
            gdb.execute("bt %s" % bt_args)
        finally:
            if written:
                gdb.newest_frame().select()
                for r in regs:
                    gdb.execute("set $%s = 0x%x" % (r, saved[r]), to_string=True)
            try:
                gdb.execute("frame %d" % level, to_string=True)
            except gdb.error:
                pass


class _NoRegs(Exception):
    pass


WeftPrefix()
WeftFibers()
WeftBt()
