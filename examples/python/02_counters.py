# 02_counters.py — the asyncio program that examples/python/02_counters.c
# mirrors (with smaller counts: Python counts about 100 times slower).
import asyncio, threading, time

trace = []

async def count(name, n, t0):
    for i in range(1, n + 1):
        if i % 1000 == 0:
            trace.append(name)
            await asyncio.sleep(0)          # weft_yield()
    took = time.monotonic() - t0
    print(f"  {name} counted to {n} in {took:.3f} s on thread {threading.get_ident()}")

async def main():
    t0 = time.monotonic()
    await asyncio.gather(count("A", 500_000, t0), count("B", 300_000, t0))
    switches = sum(a != b for a, b in zip(trace, trace[1:]))
    print(f"  turns: {' '.join(trace[:12])} ... ({len(trace)} yields, "
          f"{switches} switches between A and B)")

asyncio.run(main())
