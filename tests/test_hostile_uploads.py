"""Hostile request bodies: lying lengths, endless chunks, slow drips, empty bodies, a failing store.

Each body goes over a raw socket to the live uvicorn, because an HTTP client library
will not lie about a length or drip a byte at a time. What must hold: the server reads
no more than its limit, answers with a JSON 4xx (or 503/507 for its own store), closes
the connection instead of swallowing the rest, and keeps serving everyone else.
"""

import select
import socket
import struct
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import NamedTuple

import httpx
import pytest

from backend.api.bodies import URL_BODY_MAX_BYTES
from backend.jobs import keys
from compute.defaults import MiB
from tests.servers import api_process
from tests.waiting import wait_status

# (route, content type, the settings field that limits its body; None: the API's fixed 64 KiB for JSON)
ROUTES = [
    ("/even-sum", "text/plain", "max_upload_bytes"),
    ("/randomize", "image/png", "max_image_bytes"),
    ("/even-sum", "application/json", None),
]


def head(path: str, content_type: str, length: int | None) -> bytes:
    framing = f"Content-Length: {length}" if length is not None else "Transfer-Encoding: chunked"
    return f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {content_type}\r\n{framing}\r\n\r\n".encode()


def chunked(pieces: Iterable[bytes]) -> Iterable[bytes]:
    """HTTP/1.1 chunked framing of ``pieces``, with no final empty chunk: a body that never ends."""
    for piece in pieces:
        yield f"{len(piece):x}\r\n".encode() + piece + b"\r\n"


class Exchange(NamedTuple):
    answer: bytes  # everything the server sent
    closed: bool  # whether the server closed the connection
    sent: int  # body bytes the client got out before that


def exchange(api_url: str, request_head: bytes, pieces: Iterable[bytes], pause_s: float = 0.0) -> Exchange:
    """Send ``request_head`` then ``pieces`` on one connection, ``pause_s`` apart, until the
    server closes it or the pieces run out; then read until it closes (10 s at most)."""
    port = int(api_url.rsplit(":", 1)[1])
    answer, sent = bytearray(), 0
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request_head)
        for piece in pieces:
            if _read_ready(sock, answer):
                return Exchange(bytes(answer), True, sent)
            try:
                sock.sendall(piece)
            except OSError:  # the server closed while we were sending; its answer may be in
                _read_ready(sock, answer)  # our receive buffer still, so read that first
                return Exchange(bytes(answer), True, sent)
            sent += len(piece)
            time.sleep(pause_s)
        while True:
            try:
                data = sock.recv(65536)
            except TimeoutError:
                return Exchange(bytes(answer), False, sent)
            except OSError:
                return Exchange(bytes(answer), True, sent)
            if not data:
                return Exchange(bytes(answer), True, sent)
            answer += data


def _read_ready(sock: socket.socket, answer: bytearray) -> bool:
    """Read whatever the server has sent so far; True once it has closed the connection."""
    while select.select([sock], [], [], 0)[0]:
        try:
            data = sock.recv(65536)
        except OSError:
            return True
        if not data:
            return True
        answer += data
    return False


def status_lines(answer: bytes) -> list[str]:
    return [line.decode() for line in answer.split(b"\r\n") if line.startswith(b"HTTP/1.1 ")]


def shaped(content_type: str, pieces: Iterable[bytes], png: bytes) -> Iterable[bytes]:
    """``pieces`` as a body the route judges by its first bytes: for an image, the same
    lengths, with the PNG's bytes while they last (its signature and header above all)."""
    return pieces if content_type != "image/png" else _over(pieces, png)


def _over(pieces: Iterable[bytes], png: bytes) -> Iterator[bytes]:
    at = 0
    for piece in pieces:
        start = png[at : at + len(piece)]
        yield start + piece[len(start) :]
        at += len(piece)


def uploads_left(settings) -> list[Path]:
    uploads = Path(settings.uploads_url.removeprefix("file://"))
    return sorted(uploads.iterdir()) if uploads.exists() else []


def api_with_limit(make_settings, start_api, field: str | None) -> tuple[str, int]:
    """A live API whose body limit for the route is 1000 bytes where it is a setting; its
    URL and the limit in force."""
    if field is None:
        return start_api(make_settings()), URL_BODY_MAX_BYTES
    return start_api(make_settings(**{field: 1000})), 1000


# -- size -------------------------------------------------------------------------------------------


# A client that keeps sending after the server's answer may never read that answer: uvicorn
# closes at once (no lingering close), and closing with unread bytes makes the kernel reset
# the connection. So the status is checked where the client has sent no more than was read.
ENDLESS = 64 * MiB


@pytest.mark.parametrize("path, content_type, field", ROUTES)
def test_a_declared_length_over_the_limit_is_refused_unread(
    make_settings, start_api, settings, redis, path, content_type, field
):
    api_url, limit = api_with_limit(make_settings, start_api, field)
    answer, closed, _ = exchange(api_url, head(path, content_type, 10**12), [])
    assert status_lines(answer) == ["HTTP/1.1 413 Request Entity Too Large"] and closed
    assert f'"error":"body of 1000000000000 bytes is over the limit of {limit} bytes"'.encode() in answer
    assert not uploads_left(settings) and redis.llen(keys.TASKS) == 0


@pytest.mark.parametrize("path, content_type, field", ROUTES)
def test_a_chunked_body_with_no_length_stops_at_the_limit(
    make_settings, start_api, settings, redis, path, content_type, field, cat_png
):
    api_url, limit = api_with_limit(make_settings, start_api, field)
    # Just over the limit, and never a final chunk: the answer cannot wait for the end.
    pieces = shaped(content_type, [b"2" * (limit // 2 + 1)] * 2, cat_png)
    answer, closed, _ = exchange(api_url, head(path, content_type, None), chunked(pieces))
    assert status_lines(answer) == ["HTTP/1.1 413 Request Entity Too Large"] and closed
    assert f" is over the limit of {limit} bytes".encode() in answer
    # Endless: the server hangs up long before the client is done.
    endless = shaped(content_type, (b"2 " * 32768 for _ in range(1024)), cat_png)
    _, closed, sent = exchange(api_url, head(path, content_type, None), chunked(endless))
    assert closed and sent < ENDLESS
    assert not uploads_left(settings) and redis.llen(keys.TASKS) == 0


def test_a_lying_content_length_stores_only_what_it_declared(make_settings, start_api, settings, dispatcher):
    api_url = start_api(make_settings(max_upload_bytes=1000))
    pieces = (b"2 " * 32768 for _ in range(16))  # 1 MiB behind a header that says 500 bytes
    answer, closed, _ = exchange(api_url, head("/even-sum?keep_input=true", "text/plain", 500), pieces)
    # The rest is not HTTP, and the server hangs up on it. When that comes in the same read as
    # the 500 bytes, the hang-up cancels the upload (the app sees a disconnect); otherwise the
    # 500 bytes are a job. Either way nothing past the declared length is stored.
    assert closed and not any(line.startswith("HTTP/1.1 5") for line in status_lines(answer)), answer
    for upload in uploads_left(settings):
        assert upload.stat().st_size == 500
        assert wait_status(api_url, "even-sum", upload.stem)[-1] == {"status": "finished"}
        assert httpx.get(f"{api_url}/even-sum/{upload.stem}/result").json()["sum"] == 2 * 250
    assert len(uploads_left(settings)) <= 1


def test_an_endless_chunked_body_past_its_clients_quota_is_cut_with_429(make_settings, start_api, settings, redis):
    api_url = start_api(make_settings(default_max_backlog_bytes=1_000_000))
    endless = chunked(b"2 " * 32768 for _ in range(1024))
    # A short pause between pieces lets the answer arrive before the next send (see ENDLESS).
    answer, closed, sent = exchange(api_url, head("/even-sum", "text/plain", None), endless, pause_s=0.005)
    assert status_lines(answer) == ["HTTP/1.1 429 Too Many Requests"] and b"backlog quota" in answer
    assert closed and sent < ENDLESS
    assert not uploads_left(settings) and redis.llen(keys.TASKS) == 0 and redis.keys("uploads:*") == []


@pytest.mark.parametrize("content", [b"", iter([])], ids=["Content-Length 0", "chunked, no chunks"])
def test_an_empty_upload_is_400_and_creates_nothing(api_url, settings, redis, content):
    response = httpx.post(f"{api_url}/even-sum", content=content, headers={"Content-Type": "text/plain"})
    assert response.status_code == 400
    assert response.json()["error"].startswith("the body is empty")
    assert not uploads_left(settings) and redis.llen(keys.TASKS) == 0


# -- time -------------------------------------------------------------------------------------------

# (pieces, pause between them): a byte at a time; nothing at all; a fast start, then nothing.
SLOW_CLIENTS = {
    "drip": ([b"2"] * 400, 0.05),
    "stall": ([], 0.0),
    "burst then stall": ([b"2 " * 4000], 0.0),
}


@pytest.mark.parametrize("path, content_type, field", ROUTES[:2])
@pytest.mark.parametrize("client", SLOW_CLIENTS)
def test_a_slow_body_is_cut_with_408(
    make_settings, start_api, settings, redis, path, content_type, field, client, cat_png
):
    api_url = start_api(make_settings(body_grace_s=0.5, body_min_bytes_per_s=1000))  # the drip sends 20 bytes/s
    pieces, pause_s = SLOW_CLIENTS[client]
    pieces = shaped(content_type, pieces, cat_png)
    answer, closed, _ = exchange(api_url, head(path, content_type, 100_000), pieces, pause_s)
    assert status_lines(answer) == ["HTTP/1.1 408 Request Timeout"] and closed
    assert b'"error":"the body came too slowly' in answer
    assert not uploads_left(settings) and redis.llen(keys.TASKS) == 0


def test_an_image_is_judged_by_its_first_bytes_before_the_rest_is_read(api_url, cat_png):
    """The door reads an image's first bytes before it reserves room for it (its output's
    bound comes from its header): a body that does not start as a PNG, or whose IHDR
    declares more pixels than the workers decode (SPACETIME_MAX_IMAGE_PIXELS, 64 MP), is a
    400 then, with the rest of a declared 100 KB never sent."""
    header = bytearray(cat_png[:26])
    header[25] = 5  # a colour type PNG does not have
    huge = cat_png[:16] + struct.pack(">II", 10_000, 9_000) + cat_png[24:26]
    port = int(api_url.rsplit(":", 1)[1])
    for start, error in (
        (b"GIF89a" + bytes(100), b"not a PNG"),
        (bytes(header), b"colour type 5"),
        (huge, b"image too large: 10000x9000 pixels is over the limit of 64000000 pixels"),
    ):
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(head("/randomize", "image/png", 100_000) + start)
            answer = b""
            while not answer.endswith(b"}") and (more := sock.recv(65536)):  # the JSON error, whole
                answer += more
        assert status_lines(answer) == ["HTTP/1.1 400 Bad Request"] and error in answer


def test_health_answers_while_slow_clients_hold_uploads(api_url, settings):
    port = int(api_url.rsplit(":", 1)[1])
    slow = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(16)]
    try:
        for n, sock in enumerate(slow):  # as many clients: one client may stream only a few bodies at once
            request = head("/even-sum", "text/plain", 1000).replace(
                b"\r\n\r\n", f"\r\nX-Client-Id: c{n}\r\n\r\n".encode()
            )
            sock.sendall(request + b"2")
        health = httpx.get(f"{api_url}/healthz", timeout=10)
        assert health.status_code == 200 and health.json()["status"] == "ok"
        held = [sock for sock in slow if not select.select([sock], [], [], 0)[0]]
        assert len(held) == len(slow), "the slow uploads were answered before health was: nothing was held"
    finally:
        for sock in slow:
            sock.close()


# -- the uploads store failing ----------------------------------------------------------------------


def test_an_unwritable_uploads_store_is_503(make_settings, start_api, redis, tmp_path):
    (tmp_path / "blocker").write_text("a file where the uploads folder should be")
    api_url = start_api(make_settings(uploads_url=(tmp_path / "blocker" / "uploads").as_uri()))
    response = httpx.post(f"{api_url}/even-sum", content=b"2 4", headers={"Content-Type": "text/plain"})
    assert response.status_code == 503
    assert response.json() == {"error": "the uploads store cannot take uploads right now; try again later"}
    assert redis.llen(keys.TASKS) == 0


# The API process may write files of at most this size: a full disk, as write() sees it (EFBIG).
FILE_SIZE_LIMIT = 64 * 1024


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_a_full_uploads_store_is_507_and_leaves_nothing(settings, redis, dispatcher, tmp_path):
    limit = f"import resource; resource.setrlimit(resource.RLIMIT_FSIZE, ({FILE_SIZE_LIMIT}, {FILE_SIZE_LIMIT}))"
    with api_process(settings.redis_url, tmp_path, first=limit) as (_, url):
        response = httpx.post(f"{url}/even-sum", content=b"2 " * MiB, headers={"Content-Type": "text/plain"})
        assert response.status_code == 507
        assert response.json() == {"error": "the uploads store is full; try again later"}
        assert not list((tmp_path / "uploads").iterdir())
        assert redis.llen(keys.TASKS) == 0
        small = httpx.post(f"{url}/even-sum", content=b"2 4", headers={"Content-Type": "text/plain"})
        assert small.status_code == 201, "the API did not recover once there was room"
        assert wait_status(url, "even-sum", small.json()["token"])[-1] == {"status": "finished"}
