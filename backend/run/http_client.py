"""The HTTP client of the API, ``SpaceTime``: what notebooks and ``spacetime submit`` and
``spacetime jobs`` use (one copy of the HTTP logic).

``spacetime submit`` follows its job on the job's event stream (``GET /tasks/{token}/events``):
its bar moves as blocks finish, and the end comes at once. ``SpaceTime.wait`` waits with
``GET /tasks/{token}?wait=`` instead (answered as soon as the job ends, or after WAIT_S).

A large even-sum file goes straight to S3 when the API offers it (POST /even-sum/uploads):
its parts are PUT in parallel on presigned URLs, then one complete call queues the job.
Otherwise, and for small files, the file is streamed as the body of POST /even-sum.
"""

import json
import math
import mimetypes
import os
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import cast

import httpx
from tqdm import tqdm

from backend.core.kinds import KINDS
from compute.defaults import MiB

# Each status request waits this long at most for the job to end (servers take 30 s by
# default); a long job's progress bar moves at each answer.
WAIT_S = 5.0
# A server that answers a wait early without the job having ended does not wait (one from
# before ?wait=, or one with every waiter taken): it is polled, with this pause.
POLL_S = 0.2
# A status request may take its wait and this much more before the client gives up on it.
REQUEST_MARGIN_S = 30.0
UPLOAD_CHUNK_BYTES = MiB
# Files from this size go straight to S3 when the API offers it. Below it, the streamed
# body is one request against the direct upload's three, and spares the API little.
DIRECT_UPLOAD_MIN_BYTES = 8 * MiB
# Parts in flight at once: enough to fill an uplink that one TCP stream to S3 does not.
PARALLEL_PARTS = 4
# A part is tried this many times (S3 answers 500/503 now and then; a connection drops).
PART_ATTEMPTS = 3
# The API's answers that mean "no direct uploads here": not offered (404: a local uploads
# store, or an API from before them), or not implemented (501).
NOT_OFFERED = (404, 501)
FINAL = ("finished", "errored")
# A submission whose connection fails is tried this many times in all, pausing this long
# times the attempt's number between tries: long enough for an API restart.
SUBMIT_ATTEMPTS = 5
RETRY_PAUSE_S = 0.5
# An event stream that drops is resumed this many times in a row before giving up; one
# silent for STREAM_READ_S (the server sends a keep-alive every 15 s) has dropped.
STREAM_ATTEMPTS = 5
STREAM_READ_S = 60.0


class ApiError(Exception):
    """The API refused a request: ``status`` is its HTTP status, the message its answer."""

    def __init__(self, response: httpx.Response):
        super().__init__(f"error {response.status_code}: {response.text}")
        self.status = response.status_code
        self.response = response


class SpaceTime:
    """A client of the SpaceTime API, for notebooks and scripts (``spacetime`` uses it too).

    ::

        st = SpaceTime("http://127.0.0.1:8000", key=os.environ.get("SPACETIME_API_KEY"))
        token = st.submit("even-sum", "numbers.txt")  # or an s3:// or file:// URL
        st.watch(token, on_progress=print)  # live from its event stream (or st.wait: polls)
        st.result(token)  # {"sum": ...} (a JSON result), or the bytes (an image)
        again = st.rerun(token)  # the same input, a new job
        st.cancel(again)  # it ends errored, "cancelled": true
        for job in st.jobs(status="errored"):  # newest first, page after page
            print(job["token"], job["error"])

    ``key`` (keys mode) goes as ``Authorization: Bearer``; without one, ``client_id`` names
    the client (open mode). An answer that is not a success raises ApiError.
    """

    def __init__(self, api_url: str, key: str | None = None, client_id: str = "anonymous", timeout_s: float = 60):
        headers = {"Authorization": f"Bearer {key}"} if key else {"X-Client-Id": client_id}
        self.http = httpx.Client(base_url=api_url, headers=headers, timeout=timeout_s)

    def __enter__(self) -> "SpaceTime":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.http.close()

    def submit(self, kind: str, source: str, idempotency_key: str | None = None, keep_input: bool = False) -> str:
        """Submit ``source`` (a file, or for even-sum an s3:// or file:// URL) as a ``kind``
        job; its token. A connection that fails is tried again, SUBMIT_ATTEMPTS times in
        all, under one Idempotency-Key (``idempotency_key``, else a new one): however many
        requests reach the API, one job is made. ``keep_input``: an uploaded file stays in
        the uploads store after the job."""
        key = idempotency_key or uuid.uuid4().hex
        return str(_checked(_retried(lambda: _submit(self.http, kind, source, key, keep_input))).json()["token"])

    def record(self, token: str, wait_s: float = 0) -> dict:
        """The job's whole record, after waiting up to ``wait_s`` for it to end."""
        params = {"wait": round(wait_s, 3)} if wait_s else None
        return dict(_checked(self.http.get(f"/tasks/{token}", params=params, timeout=wait_s + REQUEST_MARGIN_S)).json())

    def wait(self, token: str, timeout_s: float | None = None, on_progress=None) -> dict:
        """The job's record once it ends, or once ``timeout_s`` has passed (None: no limit).
        ``on_progress(done, total)`` is called with its block progress as it changes."""
        deadline = math.inf if timeout_s is None else time.monotonic() + timeout_s
        wait_s = WAIT_S
        while True:
            asked_s = max(0.0, min(wait_s, deadline - time.monotonic()))
            start = time.monotonic()
            try:
                record = self.record(token, asked_s)
            except ApiError as exc:
                if exc.status == 400 and wait_s:  # a server whose longest wait is shorter: poll it
                    wait_s = 0.0
                    continue
                raise
            if (progress := record.get("progress")) and on_progress:
                on_progress(progress["done"], progress["total"])
            if record["status"] in FINAL or time.monotonic() >= deadline:
                return record
            if not asked_s or time.monotonic() - start < asked_s / 2:  # it did not wait: do not hammer it
                time.sleep(POLL_S)

    def result(self, token: str, kind: str | None = None, raw: bool = False) -> dict | bytes:
        """The result of a finished job: a JSON result as a dict (its numbers exact), other
        results (and any with ``raw``) as the bytes the server sent."""
        kind = kind or self.record(token)["kind"]
        response = _checked(self.http.get(f"/{kind}/{token}/result"))
        return response.json() if KINDS[kind].result_model is not None and not raw else response.content

    def cancel(self, token: str) -> dict:
        """Cancel the job; its record, `errored` and `cancelled` (the same when cancelled before)."""
        return dict(_checked(self.http.delete(f"/tasks/{token}")).json())

    def rerun(self, token: str, idempotency_key: str | None = None) -> str:
        """Run the job's input again as a new job (while the input is kept); its token."""
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else None
        return str(_checked(self.http.post(f"/tasks/{token}/rerun", headers=headers)).json()["token"])

    def events(self, token: str, last_event_id: str | None = None, timeout_s: float | None = None) -> Iterator[dict]:
        """The job's server-sent events as they come, ``{"event", "id", "data"}`` (data: its
        status), up to and with the one terminal event (``finished`` or ``errored``), or
        until ``timeout_s`` has passed (None: no limit). A dropped stream is resumed from the
        last event (``Last-Event-ID``), STREAM_ATTEMPTS times in a row at most."""
        deadline = math.inf if timeout_s is None else time.monotonic() + timeout_s
        failures = 0
        while True:
            headers = {"Last-Event-ID": last_event_id} if last_event_id else {}
            read_s = min(STREAM_READ_S, deadline - time.monotonic())
            if read_s <= 0:
                return
            try:
                with self.http.stream(
                    "GET", f"/tasks/{token}/events", headers=headers, timeout=httpx.Timeout(STREAM_READ_S, read=read_s)
                ) as answer:
                    if answer.status_code == 204:  # the terminal event came before
                        return
                    if not answer.is_success:
                        answer.read()
                        raise ApiError(answer)
                    for event in _sse(answer.iter_lines()):
                        failures = 0
                        last_event_id = event.get("id", last_event_id)
                        yield event
                        if event.get("event") in FINAL or time.monotonic() >= deadline:
                            return
            except httpx.TransportError:
                if time.monotonic() >= deadline:  # a read that ran to the deadline
                    return
                failures += 1
                if failures >= STREAM_ATTEMPTS:
                    raise
                time.sleep(RETRY_PAUSE_S * failures)

    def watch(self, token: str, on_progress=None, timeout_s: float | None = None) -> dict:
        """The job's status once it ends, or the latest after ``timeout_s``, from its event
        stream; ``on_progress(done, total)`` as blocks finish. An API with no stream to
        spare (429) is waited on instead (``?wait=``): a client always learns the end."""
        deadline = math.inf if timeout_s is None else time.monotonic() + timeout_s
        status: dict = {}
        try:
            for event in self.events(token, timeout_s=timeout_s):
                status = event["data"]
                if (progress := status.get("progress")) and on_progress:
                    on_progress(progress["done"], progress["total"])
        except ApiError as exc:
            if exc.status != 429:
                raise
            left_s = None if timeout_s is None else max(0.0, deadline - time.monotonic())
            return self.wait(token, left_s, on_progress)
        return status or {"status": self.record(token)["status"]}

    def jobs(
        self, status: str | None = None, kind: str | None = None, since: float | None = None, page: int = 50
    ) -> Iterator[dict]:
        """Your jobs, newest first, that match; pages are fetched as the iteration goes."""
        params: dict = {k: v for k, v in (("status", status), ("kind", kind), ("since", since)) if v is not None}
        params["limit"] = page
        while True:
            answer = _checked(self.http.get("/tasks", params=params)).json()
            yield from answer["jobs"]
            if not answer.get("next_cursor"):
                return
            params["cursor"] = answer["next_cursor"]


def submit_and_wait(
    api: str,
    kind: str,
    source: str,
    output: str | None,
    client_id: str,
    api_key: str | None = None,
    timeout_s: float | None = None,
    keep_input: bool = False,
) -> int:
    """Submit ``source`` as a ``kind`` job, show progress, print or save the result.

    ``api_key`` (keys mode) goes as ``Authorization: Bearer``; ``client_id`` names the
    client in open mode. After ``timeout_s`` (None: no limit) of waiting for the job to
    end, give up (1) and say how to ask for it later. ``keep_input``: an uploaded file stays
    in the uploads store after the job (by default the service deletes it)."""
    with SpaceTime(api, api_key, client_id) as st:
        try:
            token = st.submit(kind, source, keep_input=keep_input)
        except ApiError as exc:
            print(exc, file=sys.stderr)
            return 1
        print(f"token {token}", file=sys.stderr)
        with tqdm(desc=kind, unit="block") as bar:
            status = st.watch(token, lambda done, total: show_progress(bar, done, total), timeout_s)
        if status["status"] not in FINAL:
            still = f"still {status['status']} after {timeout_s:g} s"
            print(f"{still}; ask for it later: GET /{kind}/{token}/status", file=sys.stderr)
            return 1
        if status["status"] == "errored":
            print(f"errored: {status.get('error')}", file=sys.stderr)
            return 1
        result = st.result(token, kind, raw=True)
    if KINDS[kind].result_model is None:  # raw bytes: to a file
        path = output or f"out{mimetypes.guess_extension(KINDS[kind].result_media_type) or '.bin'}"
        with open(path, "wb") as f:
            f.write(cast(bytes, result))
        print(path)
    else:  # JSON as the server wrote it: a sum of any size stays exact (no float, no int() limit)
        print(cast(bytes, result).decode())
    return 0


def _sse(lines: Iterator[str]) -> Iterator[dict]:
    """Server-sent events from the stream's lines: each one's fields, its data as JSON."""
    event: dict = {}
    for line in lines:
        if not line:
            if "event" in event:
                yield event
            event = {}
        elif not line.startswith(":"):  # a comment: the keep-alive
            field, _, value = line.partition(":")
            value = value.removeprefix(" ")
            event[field] = json.loads(value) if field == "data" else value


def show_progress(bar: tqdm, done: int, total: int) -> None:
    """Move a progress bar to ``done`` of ``total`` blocks."""
    bar.total = total
    bar.update(done - bar.n)


def _checked(response: httpx.Response) -> httpx.Response:
    if response.is_success:
        return response
    raise ApiError(response)


def _submit(http: httpx.Client, kind: str, source: str, key: str, keep_input: bool = False) -> httpx.Response:
    """POST the job: a file kind's URL as JSON, a large file straight to S3 where offered,
    anything else streamed as the body. ``key``: its Idempotency-Key, which a direct
    upload's start carries too (a retried start answers the same upload)."""
    declared = KINDS[kind]
    if declared.in_blocks and "://" in source:
        return http.post(f"/{kind}", json={"url": source}, headers={"Idempotency-Key": key})
    size = os.path.getsize(source)
    if declared.in_blocks and size >= DIRECT_UPLOAD_MIN_BYTES:
        started = http.post(
            f"/{kind}/uploads", json={"size": size, "keep_input": keep_input}, headers={"Idempotency-Key": key}
        )
        if started.status_code not in NOT_OFFERED:
            return _upload_direct(http, kind, started, source) if started.status_code == 201 else started
    content_type = declared.input.media_type
    with open(source, "rb") as f, tqdm(total=size, unit="B", unit_scale=True, desc="upload") as bar:

        def chunks():
            while chunk := f.read(UPLOAD_CHUNK_BYTES):
                bar.update(len(chunk))
                yield chunk

        headers = {"Content-Type": content_type, "Content-Length": str(size), "Idempotency-Key": key}
        params = {"keep_input": "true"} if keep_input else None
        return http.post(f"/{kind}", content=chunks(), headers=headers, params=params, timeout=None)


def _upload_direct(http: httpx.Client, kind: str, started: httpx.Response, source: str) -> httpx.Response:
    """PUT the parts of ``source`` on their presigned URLs, in parallel, then complete the upload."""
    upload = started.json()
    parts = upload["parts"]
    lock = threading.Lock()
    with (
        # A client of its own: S3 must not see the API's headers (the API key above all).
        httpx.Client(timeout=60) as s3,
        tqdm(total=sum(p["size"] for p in parts), unit="B", unit_scale=True, desc="upload (direct)") as bar,
        ThreadPoolExecutor(PARALLEL_PARTS) as pool,
    ):

        def progress(n: int) -> None:
            with lock:
                bar.update(n)

        def put(part: dict) -> dict:
            offset = (part["part_number"] - 1) * upload["part_size"]
            return {"part_number": part["part_number"], "etag": _put_part(s3, source, offset, part, progress)}

        etags = list(pool.map(put, parts))
    # Only the complete call is tried again when its answer is lost: a retried complete
    # answers the same token (the upload id is its idempotency key), and sending the parts
    # again, or starting over, would cost the whole upload.
    path = f"/{kind}/uploads/{upload['upload_id']}/complete"
    return _retried(lambda: http.post(path, json={"parts": etags}, timeout=None))


def _retried(send: Callable[[], httpx.Response]) -> httpx.Response:
    """``send()``, tried again when the connection fails, SUBMIT_ATTEMPTS times in all: for
    requests that are safe to repeat (under an Idempotency-Key, or idempotent by design)."""
    for attempt in range(1, SUBMIT_ATTEMPTS):
        try:
            return send()
        except httpx.TransportError:
            time.sleep(RETRY_PAUSE_S * attempt)
    return send()  # the last try: its error is the caller's


def _put_part(s3: httpx.Client, source: str, offset: int, part: dict, progress) -> str:
    """PUT one part, streamed from the file; its ETag. Tried PART_ATTEMPTS times."""
    for attempt in range(1, PART_ATTEMPTS + 1):
        sent = 0

        def chunks() -> Iterator[bytes]:
            nonlocal sent
            with open(source, "rb") as f:
                f.seek(offset)
                left = part["size"]
                while left and (chunk := f.read(min(UPLOAD_CHUNK_BYTES, left))):
                    left -= len(chunk)
                    sent += len(chunk)
                    progress(len(chunk))
                    yield chunk

        try:
            # The length is declared: S3 takes no chunked body on a presigned PUT.
            response = s3.put(part["url"], content=chunks(), headers={"Content-Length": str(part["size"])})
        except httpx.TransportError as exc:
            error = f"{type(exc).__name__}: {exc}"
        else:
            if response.status_code == 200:
                return response.headers["ETag"]
            error = f"S3 answered {response.status_code}: {response.text[:300]}"
            if response.status_code < 500:  # refused (an expired URL, a bad signature): trying again won't help
                break
        progress(-sent)  # the bar counts bytes that arrived
        if attempt < PART_ATTEMPTS:
            time.sleep(attempt)
    raise OSError(f"could not upload part {part['part_number']}: {error}")
