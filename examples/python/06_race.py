# 06_race.py — the asyncio program that examples/python/06_race.c mirrors:
# no lock, and still exact (one thread; no await inside `counter += 1`).
import asyncio

N = 500_000
counter = 0

async def adder():
    global counter
    for i in range(N):
        counter += 1
        if i % 65536 == 0:
            await asyncio.sleep(0)

async def main():
    print(f"two coroutines add 1 to a shared counter {N} times each, on one thread:")
    await asyncio.gather(adder(), adder())
    print(f"  no lock:      {counter:9d} of {2 * N} (exact)")

asyncio.run(main())
