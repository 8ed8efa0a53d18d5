# 01_fetch.py — the asyncio program that examples/python/01_fetch.c mirrors.
import asyncio, time

async def fetch(name):
    await asyncio.sleep(2 if name == "a" else 1)  # "a" takes 2 s, "b" 1 s
    return name

async def main():
    # sequential: await one, then the other
    t0 = time.monotonic()
    ra = await fetch("a")
    rb = await fetch("b")
    print(f"sequential: got {ra} and {rb} in {time.monotonic() - t0:.2f} s")

    # concurrent: start both, then wait for both
    t0 = time.monotonic()
    ta = asyncio.create_task(fetch("a"))
    tb = asyncio.create_task(fetch("b"))
    ra = await ta
    rb = await tb
    print(f"concurrent: got {ra} and {rb} in {time.monotonic() - t0:.2f} s")

asyncio.run(main())
