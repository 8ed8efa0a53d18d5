# 05_blocking.py — the asyncio program that examples/python/05_blocking.c
# mirrors. asyncio's debug mode plays the watchdog's part: it logs any step
# of the loop that runs longer than loop.slow_callback_duration.
import asyncio, time

t0 = time.monotonic()
ticks = []

def now():
    return time.monotonic() - t0

async def ticker():
    while now() < 0.6:
        next_tick = (now() // 0.05 + 1) * 0.05  # no burst after a stall
        await asyncio.sleep(next_tick - now())
        ticks.append(now())
        print(f"  tick {len(ticks):2d} at {ticks[-1]:.3f} s")

async def blocker():
    global block_from, block_to
    block_from = now()
    print(f"  blocker calls time.sleep(0.3) at {block_from:.3f} s")
    time.sleep(0.3)                       # blocks the loop: nothing else runs
    block_to = now()
    print(f"  blocker returns at {block_to:.3f} s")

async def main():
    loop = asyncio.get_running_loop()
    loop.slow_callback_duration = 0.1     # the watchdog (debug mode)
    tt = asyncio.create_task(ticker(), name="ticker")
    await asyncio.sleep(0.1)
    tb = asyncio.create_task(blocker(), name="blocker")
    await asyncio.gather(tt, tb)
    during = sum(block_from < t < block_to for t in ticks)
    print(f"  ticks while the blocker blocked the loop: {during}")

asyncio.run(main(), debug=True)
