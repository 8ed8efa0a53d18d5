# 07_fork_join.py — the asyncio program that examples/python/07_fork_join.c
# mirrors: fib with a task per call. One thread, so one core; and a task
# costs microseconds, so n is smaller (fib(25) instead of fib(32)).
import asyncio, sys, time

calls = 0

async def fib(n):
    global calls
    calls += 1
    if n < 2:
        return n
    t = asyncio.create_task(fib(n - 1))
    b = await fib(n - 2)
    return await t + b

async def main(n):
    t0, c0 = time.monotonic(), time.process_time()
    r = await fib(n)
    wall, cpu = time.monotonic() - t0, time.process_time() - c0
    print(f"  1 thread: fib({n}) = {r} in {wall:.3f} s, CPU busy {cpu / wall:.2f} cores "
          f"({calls} calls, {wall / calls * 1e9:.0f} ns each)")

asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 25))
