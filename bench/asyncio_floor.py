"""The floor for a long-running asyncio server: an ``asyncio.Protocol`` that reads a line,
writes one and closes. No parsing, no limits, no logging. ``python3 asyncio_floor.py PORT``
(``--uvloop``: the same on uvloop's event loop)."""

import asyncio
import sys

ANSWER = b"Happy and well\r\n"


class Floor(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport = transport
        self.buffer = b""

    def data_received(self, data):
        self.buffer += data
        if b"\n" in self.buffer:
            self.transport.write(ANSWER)
            self.transport.close()


async def main(port):
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Floor, "127.0.0.1", port, backlog=1024)
    await server.serve_forever()


if "--uvloop" in sys.argv:
    import uvloop

    uvloop.install()
asyncio.run(main(int(sys.argv[1])))
