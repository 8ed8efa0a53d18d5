# 09_signal.py — the asyncio program that examples/python/09_signal.c mirrors.
import asyncio, os, signal, time

ticks = 0

async def ticker():
    global ticks
    while True:                       # until cancelled
        await asyncio.sleep(0.010)
        ticks += 1

async def sender():
    await asyncio.sleep(0.200)
    os.kill(os.getpid(), signal.SIGTERM)   # as `kill <pid>` from a shell would

async def main():
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    got = []
    loop.add_signal_handler(signal.SIGTERM, lambda: (got.append("SIGTERM"), stop.set()))
    t = asyncio.create_task(ticker())
    s = asyncio.create_task(sender())
    t0 = time.monotonic()
    await asyncio.wait_for(stop.wait(), 5)
    ms = int((time.monotonic() - t0) * 1000)
    t.cancel()
    await asyncio.gather(t, s, return_exceptions=True)
    print(f"caught {got[0]} after {ms} ms")
    print(f"the ticker ticked {ticks} times meanwhile")

asyncio.run(main())
print("after asyncio.run: SIGTERM's action is",
      "the default again" if signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
      else "NOT the default")
