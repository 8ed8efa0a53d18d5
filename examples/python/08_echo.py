# 08_echo.py — the asyncio program that examples/python/08_echo.c mirrors:
# an echo server and 50 clients, each keeping one 64-byte message in
# flight, in one process — on one thread.
import asyncio, sys, time

MSG = 64

async def serve(reader, writer):
    while data := await reader.read(4096):
        writer.write(data)
        await writer.drain()
    writer.close()

async def client(port, deadline, counts):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    n = 0
    while time.monotonic() < deadline:
        out = bytes([n & 0xff]) * MSG
        writer.write(out)
        await writer.drain()
        if await reader.readexactly(MSG) != out:
            raise RuntimeError("echo mismatch")
        n += 1
    counts.append(n)
    writer.close()
    await writer.wait_closed()

async def main(secs, conns):
    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    counts = []
    t0, c0 = time.monotonic(), time.process_time()
    await asyncio.gather(*(client(port, t0 + secs, counts) for _ in range(conns)))
    wall, cpu = time.monotonic() - t0, time.process_time() - c0
    server.close()
    print(f"echo: {conns} connections, {MSG}-byte messages, {secs:.1f} s, "
          "server and clients in this process")
    print(f"  1 thread: {sum(counts) / secs:.0f} round trips/s, CPU busy {cpu / wall:.2f} cores")

asyncio.run(main(float(sys.argv[1]) if len(sys.argv) > 1 else 2, 50))
