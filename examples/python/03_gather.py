# 03_gather.py — the asyncio program that examples/python/03_gather.c mirrors.
import asyncio

wait_ms = [50, 10, 40, 20, 30]
done_order = []

async def fetch(i):
    await asyncio.sleep(wait_ms[i] / 1000)
    done_order.append(i)
    return i * 100 + wait_ms[i]          # "result of item i"

async def main():
    res = await asyncio.gather(*(fetch(i) for i in range(5)))
    print("finished in order:", " ".join(f"item{i}({wait_ms[i]} ms)" for i in done_order))
    print("gather -> success, results:", " ".join(map(str, res)))

asyncio.run(main())
