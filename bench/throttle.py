#!/usr/bin/env python3
"""A TCP relay that moves at most RATE bytes a second in each direction, shared by every
connection (one slow link), for measuring workers without shared storage on this machine.

    bench/throttle.py LISTEN_PORT TARGET_PORT RATE_BYTES_PER_S
"""
import asyncio
import sys
import time


class Link:
    """One direction of the link: a send may start only when the bytes before it have gone."""

    def __init__(self, rate):
        self.rate = rate
        self.free_at = time.monotonic()
        self.lock = asyncio.Lock()

    async def take(self, n):
        async with self.lock:
            now = time.monotonic()
            start = max(now, self.free_at)
            self.free_at = start + n / self.rate
            wait = self.free_at - now
        await asyncio.sleep(wait)


async def pipe(reader, writer, link):
    try:
        while True:
            data = await reader.read(64 * 1024)
            if not data:
                break
            await link.take(len(data))
            writer.write(data)
            await writer.drain()
    except (ConnectionError, asyncio.CancelledError):
        pass
    finally:
        writer.close()


async def main(listen, target, rate):
    down, up = Link(rate), Link(rate)

    async def client(reader, writer):
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", target)
        except OSError:
            writer.close()
            return
        await asyncio.gather(
            pipe(reader, upstream_writer, up), pipe(upstream_reader, writer, down)
        )

    server = await asyncio.start_server(client, "127.0.0.1", listen)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])))
