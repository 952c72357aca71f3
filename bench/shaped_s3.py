"""An S3 endpoint shaped like S3, for benchmarks and tests: a moto server behind a small
TCP proxy on loopback that holds each response's first byte until 30 ms after its request
and sends at most 20 MB/s on each connection.

    .venv/bin/python bench/shaped_s3.py moto --port 20001       # moto, ranged GETs in O(range)
    .venv/bin/python bench/shaped_s3.py proxy --port 20002 --upstream-port 20001 \\
        [--first-byte-ms 30] [--mb-per-s 20]

On AWS one GET stream runs at the order of 100 MB/s with a first byte after tens of ms;
on loopback moto answers in a millisecond at whatever rate the CPU allows, which hides
what concurrent ranged reads are for. The shape here is S3's, scaled down (20 MB/s a
stream rather than ~100) so that the streams a 2-core machine runs stay far below what
moto and the proxy can serve: the network shape is then the limit, not their CPU.

The proxy knows nothing of HTTP: a request is whatever the client sends after the last
response began, and a response's first byte leaves no earlier than 30 ms after it.
Tests run the proxy in a thread (``shaped_endpoint``); benchmarks run both as processes
(``start``), so that neither shares a GIL with the work measured.
"""

import argparse
import asyncio
import contextlib
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

FIRST_BYTE_S = 0.030
BYTES_PER_S = 20e6
CHUNK_BYTES = 256 * 1024  # forwarded at a time at most: 13 ms of a 20 MB/s stream
# A chunk that leaves late (the event loop was busy) is made up for by sending the next
# ones sooner, by up to this much: else every wake-up's jitter would lower the rate.
CATCH_UP_S = 0.010
HOST = "127.0.0.1"


class ShapedProxy:
    """Forwards each connection to ``upstream_port`` on loopback, shaping what comes back.
    ``responses`` counts the responses begun, ``bytes_sent`` every byte sent to clients
    (HTTP headers included)."""

    def __init__(self, upstream_port: int, first_byte_s: float = FIRST_BYTE_S, bytes_per_s: float = BYTES_PER_S):
        self.upstream_port = upstream_port
        self.first_byte_s = first_byte_s
        self.bytes_per_s = bytes_per_s
        self.responses = 0
        self.bytes_sent = 0
        self.cut_responses = 0  # a fault for tests: end the connection of this many responses
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()  # open connections, both sides

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    async def start(self, port: int = 0) -> None:
        self._server = await asyncio.start_server(self._connection, HOST, port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        """Stop listening and close every open connection (Python 3.11's wait_closed
        does not wait for them)."""
        if self._server:
            self._server.close()
            await self._server.wait_closed()
        for writer in list(self._writers):
            writer.close()

    async def _connection(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        upstream_reader, upstream_writer = await asyncio.open_connection(HOST, self.upstream_port, limit=CHUNK_BYTES)
        self._writers |= {client_writer, upstream_writer}
        asked_at: list[float] = []  # when the request now waiting for its response began
        pumps = [
            asyncio.create_task(self._requests(client_reader, upstream_writer, asked_at)),
            asyncio.create_task(self._responses(upstream_reader, client_writer, asked_at)),
        ]
        try:
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)  # either side closed
        finally:
            for pump in pumps:
                pump.cancel()
            for writer in (client_writer, upstream_writer):
                self._writers.discard(writer)
                writer.close()

    async def _requests(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, asked_at: list) -> None:
        with contextlib.suppress(ConnectionError):
            while data := await reader.read(CHUNK_BYTES):
                if not asked_at:
                    asked_at.append(asyncio.get_running_loop().time())
                writer.write(data)
                await writer.drain()

    async def _responses(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, asked_at: list) -> None:
        loop = asyncio.get_running_loop()
        send_at = 0.0  # the earliest the next chunk may leave
        with contextlib.suppress(ConnectionError):
            while data := await reader.read(CHUNK_BYTES):
                cut = False
                if asked_at:  # a response begins
                    self.responses += 1
                    send_at = max(send_at, asked_at.pop() + self.first_byte_s)
                    cut, self.cut_responses = self.cut_responses > 0, max(self.cut_responses - 1, 0)
                await asyncio.sleep(max(0.0, send_at - loop.time()))
                writer.write(data[: len(data) // 2] if cut else data)  # half of its first chunk, then gone
                self.bytes_sent += len(data) // 2 if cut else len(data)
                await writer.drain()
                if cut:
                    return
                send_at = max(send_at, loop.time() - CATCH_UP_S) + len(data) / self.bytes_per_s


@contextlib.contextmanager
def shaped_endpoint(
    upstream_url: str, first_byte_s: float = FIRST_BYTE_S, bytes_per_s: float = BYTES_PER_S
) -> Iterator[ShapedProxy]:
    """The proxy in front of ``upstream_url`` (http://127.0.0.1:PORT), on a free loopback
    port, served by an event loop in a thread of its own; yields it (``.url``)."""
    proxy = ShapedProxy(int(upstream_url.rsplit(":", 1)[1]), first_byte_s, bytes_per_s)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="shaped-s3", daemon=True)
    thread.start()
    try:
        asyncio.run_coroutine_threadsafe(proxy.start(), loop).result(10)
        yield proxy
    finally:
        asyncio.run_coroutine_threadsafe(proxy.stop(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


# --- as processes, for benchmarks ----------------------------------------------------------


def serve_moto(port: int) -> None:
    """moto's server, each object's bytes kept whole: moto reads an object's every byte
    for each GET (FakeKey.value) and then cuts the range out, so a ranged GET of a 1 GiB
    object costs a GiB of copying; here it costs its range, as on S3."""
    from moto.s3.models import FakeKey
    from moto.server import main as moto_main

    read_all = FakeKey.value

    def kept(key) -> bytes:
        if "_whole" not in key.__dict__:
            key.__dict__["_whole"] = read_all.fget(key)
        return key.__dict__["_whole"]

    def replace(key, value) -> None:
        key.__dict__.pop("_whole", None)
        read_all.fset(key, value)

    FakeKey.value = property(kept, replace)  # type: ignore[method-assign, assignment]
    moto_main(["-H", HOST, "-p", str(port)])


def serve_proxy(port: int, upstream_port: int, first_byte_s: float, bytes_per_s: float) -> None:
    async def run() -> None:
        proxy = ShapedProxy(upstream_port, first_byte_s, bytes_per_s)
        await proxy.start(port)
        await asyncio.Event().wait()  # until the process is stopped

    asyncio.run(run())


@contextlib.contextmanager
def start(*args: str) -> Iterator[str]:
    """``bench/shaped_s3.py *args`` as a child process; yields its URL once it answers."""
    port = int(args[args.index("--port") + 1])
    child = subprocess.Popen([sys.executable, __file__, *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_listening(port, child, what=" ".join(args))
        yield f"http://{HOST}:{port}"
    finally:
        child.terminate()
        child.wait(10)


def _wait_listening(port: int, child: subprocess.Popen, what: str, timeout_s: float = 20.0) -> None:
    import socket

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and child.poll() is None:
        with socket.socket() as probe:
            if probe.connect_ex((HOST, port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"bench/shaped_s3.py {what}: nothing listening (exit status {child.poll()})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    moto = commands.add_parser("moto", help="moto's S3 server, ranged GETs in O(range)")
    moto.add_argument("--port", type=int, required=True)
    proxy = commands.add_parser("proxy", help="the shaping proxy")
    proxy.add_argument("--port", type=int, required=True)
    proxy.add_argument("--upstream-port", type=int, required=True)
    proxy.add_argument("--first-byte-ms", type=float, default=FIRST_BYTE_S * 1000)
    proxy.add_argument("--mb-per-s", type=float, default=BYTES_PER_S / 1e6)
    args = parser.parse_args()
    if args.command == "moto":
        serve_moto(args.port)
    else:
        serve_proxy(args.port, args.upstream_port, args.first_byte_ms / 1000, args.mb_per_s * 1e6)


if __name__ == "__main__":
    main()
