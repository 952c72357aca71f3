"""A proxy that loses answers: the request reaches the API and is served, then the
connection drops before the client reads the answer, as a network may do."""

import contextlib
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import SimpleNamespace
from urllib.parse import urlsplit

from tests.servers import free_port


@contextmanager
def dropping_proxy(api: str, drops: int, marker: bytes = b"") -> Iterator[SimpleNamespace]:
    """A TCP proxy to the API that hangs up once the API starts answering (the request was
    served, the answer is lost) on the first ``drops`` requests that hold ``marker`` (any
    request by default); it passes the rest on. Yields its ``url`` and how many answers it
    has ``dropped``."""
    upstream = urlsplit(api)
    server = socket.create_server(("127.0.0.1", free_port()))
    proxy = SimpleNamespace(url=f"http://127.0.0.1:{server.getsockname()[1]}", dropped=0)
    lock = threading.Lock()

    def forward(client: socket.socket, api_side: socket.socket, armed: threading.Event) -> None:
        with contextlib.suppress(OSError):
            while data := client.recv(65536):
                with lock:
                    if marker in data and proxy.dropped < drops:
                        proxy.dropped += 1
                        armed.set()
                api_side.sendall(data)
        with contextlib.suppress(OSError):
            api_side.shutdown(socket.SHUT_WR)

    def serve(client: socket.socket) -> None:
        armed = threading.Event()
        with client, socket.create_connection((upstream.hostname, upstream.port)) as api_side:
            threading.Thread(target=forward, args=(client, api_side, armed), daemon=True).start()
            with contextlib.suppress(OSError):
                while data := api_side.recv(65536):
                    if armed.is_set():  # the answer begins: the request was served
                        client.shutdown(socket.SHUT_RDWR)  # wakes the forward thread too
                        return
                    client.sendall(data)
            with contextlib.suppress(OSError):
                client.shutdown(socket.SHUT_WR)

    def accept() -> None:
        with contextlib.suppress(OSError):
            while True:
                threading.Thread(target=serve, args=(server.accept()[0],), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    try:
        yield proxy
    finally:
        server.close()
