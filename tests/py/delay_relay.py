"""A TCP relay that adds a fixed one-way delay to every byte, both ways,
and counts the bytes it carries (for benchmarks between node processes:
the kernel here has no netem).
Usage: delay_relay.py LISTEN_PORT TARGET_HOST:TARGET_PORT DELAY_MS COUNTS_FILE
COUNTS_FILE is rewritten every 200 ms with "UPSTREAM_BYTES DOWNSTREAM_BYTES"
(upstream: towards the target)."""
import asyncio
import sys
import time

listen, target, delay, counts_file = int(sys.argv[1]), sys.argv[2], float(sys.argv[3]) / 1000.0, sys.argv[4]
thost, tport = target.rsplit(":", 1)
counts = [0, 0]


async def pump(reader, writer, k):
    queue = asyncio.Queue()

    async def write():
        while True:
            due, data = await queue.get()
            if data is None:
                break
            wait = due - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            writer.write(data)
            await writer.drain()
        writer.close()

    w = asyncio.create_task(write())
    try:
        while True:
            data = await reader.read(65536)
            if not data:
                break
            counts[k] += len(data)
            await queue.put((time.monotonic() + delay, data))
    except OSError:
        pass
    await queue.put((0, None))
    try:
        await w
    except OSError:
        pass


async def serve(reader, writer):
    try:
        treader, twriter = await asyncio.open_connection(thost, int(tport))
    except OSError:
        writer.close()
        return
    await asyncio.gather(pump(reader, twriter, 0), pump(treader, writer, 1))


async def report():
    while True:
        with open(counts_file + ".tmp", "w") as f:
            f.write("%d %d\n" % (counts[0], counts[1]))
        import os
        os.replace(counts_file + ".tmp", counts_file)
        await asyncio.sleep(0.2)


async def main():
    server = await asyncio.start_server(serve, "127.0.0.1", listen)
    asyncio.create_task(report())
    async with server:
        await server.serve_forever()


asyncio.run(main())
