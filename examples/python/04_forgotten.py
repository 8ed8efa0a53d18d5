# 04_forgotten.py — the asyncio program that examples/python/04_forgotten.c
# mirrors. Python has two ways to forget: calling a coroutine function
# without awaiting it (the coroutine never runs: "was never awaited"), and
# creating a task that nobody awaits (asyncio.run cancels it at the end,
# silently; only a task that failed says "exception was never retrieved").
import asyncio

async def work():
    await asyncio.sleep(0.01)

async def main():
    joined = asyncio.create_task(work(), name="joined")
    forgotten = asyncio.create_task(work(), name="forgotten")  # never awaited
    work()                       # RuntimeWarning: coroutine 'work' was never awaited
    await joined
    print("main returns without awaiting", forgotten.get_name())

asyncio.run(main())
