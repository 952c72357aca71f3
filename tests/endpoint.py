"""A moving endpoint: a TCP proxy on loopback that forwards to one Redis and can be pointed
at another, as ElastiCache's primary endpoint (a DNS name) moves to the promoted replica in
a failover. Connections already made stay with the node they reached, as they would; a
node that dies closes them. ``hold()`` stops forwarding (bytes in flight are kept, then
dropped at ``close()``): a replication link through it lags without bound, as an
asynchronous replica may."""

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress

from tests.servers import free_port

CHUNK = 64 * 1024


class MovingEndpoint:
    def __init__(self, target_port: int):
        self.target_port = target_port
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._listener = socket.create_server(("127.0.0.1", self.port))
        self._sockets: set[socket.socket] = set()  # every open socket, both sides, to close at the end
        self._lock = threading.Lock()
        self._closed = False
        self._flowing = threading.Event()
        self._flowing.set()
        threading.Thread(target=self._accept, name="endpoint", daemon=True).start()

    def move_to(self, port: int) -> None:
        """New connections go to ``port`` from now on."""
        self.target_port = port

    def hold(self) -> None:
        """Stop forwarding, both ways, on every connection."""
        self._flowing.clear()

    def close(self) -> None:
        self._closed = True
        self._flowing.set()  # held pumps wake, see the endpoint closed, and drop what they hold
        self._listener.close()
        with self._lock:
            for sock in self._sockets:
                _hang_up(sock)

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:  # closed
                return
            try:
                server = socket.create_connection(("127.0.0.1", self.target_port), timeout=1)
            except OSError:  # the node is down: the client sees the connection closed
                client.close()
                continue
            server.settimeout(None)
            with self._lock:
                self._sockets |= {client, server}
            for source, sink in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        """Copy one direction until either side ends, then hang up both."""
        try:
            while data := source.recv(CHUNK):
                self._flowing.wait()
                if self._closed:
                    break
                sink.sendall(data)
        except OSError:
            pass
        for sock in (source, sink):
            _hang_up(sock)
        with self._lock:
            self._sockets -= {source, sink}


def _hang_up(sock: socket.socket) -> None:
    with suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    sock.close()


@contextmanager
def moving_endpoint(target_port: int) -> Iterator[MovingEndpoint]:
    endpoint = MovingEndpoint(target_port)
    try:
        yield endpoint
    finally:
        endpoint.close()
