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
Tests run the proxy in threads of their own process (``shaped_endpoint``); benchmarks run
moto and the proxy as processes (``start``), so that neither shares a GIL or a CPU account
with the work measured.
"""

import argparse
import contextlib
import fcntl
import os
import socket
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
    (HTTP headers included).

    Each connection gets two threads of blocking sockets, and the response bytes go
    upstream socket -> pipe -> client socket with ``os.splice``: they never enter Python.
    An asyncio proxy copied each byte four times in user space and cost ~1.5 CPU-s a GB,
    as much as the reading workers: on 2 cores that made the proxy a limit of the runs
    it was there to shape (Linux only, like the rest of these benchmarks)."""

    def __init__(self, upstream_port: int, first_byte_s: float = FIRST_BYTE_S, bytes_per_s: float = BYTES_PER_S):
        self.upstream_port = upstream_port
        self.first_byte_s = first_byte_s
        self.bytes_per_s = bytes_per_s
        self.responses = 0
        self.bytes_sent = 0
        self.cut_responses = 0  # a fault for tests: end the connection of this many responses
        self.port = 0
        self._listener: socket.socket | None = None
        self._sockets: set[socket.socket] = set()  # open connections, both sides
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def start(self, port: int = 0) -> None:
        self._listener = socket.create_server((HOST, port))
        self.port = self._listener.getsockname()[1]
        threading.Thread(target=self._accept, args=(self._listener,), name="shaped-s3", daemon=True).start()

    def stop(self) -> None:
        """Stop listening and end every open connection (their threads then return)."""
        if self._listener:
            with contextlib.suppress(OSError):
                self._listener.shutdown(socket.SHUT_RDWR)
            self._listener.close()
        with self._lock:
            for sock in self._sockets:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def _accept(self, listener: socket.socket) -> None:
        with contextlib.suppress(OSError):  # the listener was closed
            while True:
                client, _ = listener.accept()
                threading.Thread(target=self._connection, args=(client,), daemon=True).start()

    def _connection(self, client: socket.socket) -> None:
        try:
            upstream = socket.create_connection((HOST, self.upstream_port))
        except OSError:
            client.close()
            return
        with self._lock:
            self._sockets |= {client, upstream}
        asked_at: list[float] = []  # when the request now waiting for its response began
        requests = threading.Thread(target=self._requests, args=(client, upstream, asked_at), daemon=True)
        requests.start()
        try:
            self._responses(upstream, client, asked_at)
        finally:
            for sock in (client, upstream):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
            requests.join()
            with self._lock:
                self._sockets -= {client, upstream}
            client.close()
            upstream.close()

    def _requests(self, client: socket.socket, upstream: socket.socket, asked_at: list) -> None:
        with contextlib.suppress(OSError):
            while data := client.recv(CHUNK_BYTES):
                if not asked_at:
                    asked_at.append(time.monotonic())
                upstream.sendall(data)
        with contextlib.suppress(OSError):
            upstream.shutdown(socket.SHUT_RDWR)

    def _responses(self, upstream: socket.socket, client: socket.socket, asked_at: list) -> None:
        pipe_out, pipe_in = os.pipe()
        fcntl.fcntl(pipe_in, fcntl.F_SETPIPE_SZ, CHUNK_BYTES)  # a chunk fits in the pipe whole
        send_at = 0.0  # the earliest the next chunk may leave
        try:
            while n := os.splice(upstream.fileno(), pipe_in, CHUNK_BYTES):
                cut = False
                if asked_at:  # a response begins
                    with self._lock:
                        self.responses += 1
                        cut, self.cut_responses = self.cut_responses > 0, max(self.cut_responses - 1, 0)
                    send_at = max(send_at, asked_at.pop() + self.first_byte_s)
                time.sleep(max(0.0, send_at - time.monotonic()))
                sent = _splice_all(pipe_out, client.fileno(), n // 2 if cut else n)  # half of it, then gone
                with self._lock:
                    self.bytes_sent += sent
                if cut:
                    return
                send_at = max(send_at, time.monotonic() - CATCH_UP_S) + n / self.bytes_per_s
        except OSError:  # either side closed
            return
        finally:
            os.close(pipe_out)
            os.close(pipe_in)


def _splice_all(pipe_out: int, to: int, n: int) -> int:
    """Move ``n`` bytes from the pipe to the socket ``to``; how many moved."""
    moved = 0
    while moved < n:
        moved += os.splice(pipe_out, to, n - moved)
    return moved


@contextlib.contextmanager
def shaped_endpoint(
    upstream_url: str, first_byte_s: float = FIRST_BYTE_S, bytes_per_s: float = BYTES_PER_S
) -> Iterator[ShapedProxy]:
    """The proxy in front of ``upstream_url`` (http://127.0.0.1:PORT), on a free loopback
    port, its threads in this process; yields it (``.url``)."""
    proxy = ShapedProxy(int(upstream_url.rsplit(":", 1)[1]), first_byte_s, bytes_per_s)
    proxy.start()
    try:
        yield proxy
    finally:
        proxy.stop()


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
    ShapedProxy(upstream_port, first_byte_s, bytes_per_s).start(port)
    threading.Event().wait()  # until the process is stopped


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
