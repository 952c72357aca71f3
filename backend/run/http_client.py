"""A small HTTP client of the API, behind ``spacetime submit``: upload, wait, print.

It waits with ``GET .../status?wait=``: each request is answered as soon as the job ends
(or after WAIT_S, when the bar's progress is refreshed), instead of a poll every 0.2 s.

A large even-sum file goes straight to S3 when the API offers it (POST /even-sum/uploads):
its parts are PUT in parallel on presigned URLs, then one complete call queues the job.
Otherwise, and for small files, the file is streamed as the body of POST /even-sum.
"""

import math
import mimetypes
import os
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

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
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {"X-Client-Id": client_id}
    with httpx.Client(base_url=api, headers=headers, timeout=60) as http:
        response = _submit(http, kind, source, keep_input)
        if response.status_code != 201:
            print(f"error {response.status_code}: {response.text}", file=sys.stderr)
            return 1
        token = response.json()["token"]
        print(f"token {token}", file=sys.stderr)
        status = _wait(http, kind, token, timeout_s)
        if status["status"] not in FINAL:
            still = f"still {status['status']} after {timeout_s:g} s"
            print(f"{still}; ask for it later: GET /{kind}/{token}/status", file=sys.stderr)
            return 1
        if status["status"] == "errored":
            print(f"errored: {status.get('error')}", file=sys.stderr)
            return 1
        result = http.get(f"/{kind}/{token}/result")
        result.raise_for_status()
    if KINDS[kind].result_model is None:  # raw bytes: to a file
        path = output or f"out{mimetypes.guess_extension(KINDS[kind].result_media_type) or '.bin'}"
        with open(path, "wb") as f:
            f.write(result.content)
        print(path)
    else:  # JSON as the server wrote it: a sum of any size stays exact (no float, no int() limit)
        print(result.text)
    return 0


def _submit(http: httpx.Client, kind: str, source: str, keep_input: bool) -> httpx.Response:
    """POST the job: a file kind's URL as JSON, a large file straight to S3 where offered,
    anything else streamed as the body."""
    declared = KINDS[kind]
    if declared.in_blocks and "://" in source:
        return http.post(f"/{kind}", json={"url": source})
    size = os.path.getsize(source)
    if declared.in_blocks and size >= DIRECT_UPLOAD_MIN_BYTES:
        started = http.post(f"/{kind}/uploads", json={"size": size, "keep_input": keep_input})
        if started.status_code not in NOT_OFFERED:
            return _upload_direct(http, kind, started, source) if started.status_code == 201 else started
    content_type = declared.input.media_type
    with open(source, "rb") as f, tqdm(total=size, unit="B", unit_scale=True, desc="upload") as bar:

        def chunks():
            while chunk := f.read(UPLOAD_CHUNK_BYTES):
                bar.update(len(chunk))
                yield chunk

        headers = {"Content-Type": content_type, "Content-Length": str(size)}
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
    return http.post(f"/{kind}/uploads/{upload['upload_id']}/complete", json={"parts": etags}, timeout=None)


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


def _wait(http: httpx.Client, kind: str, token: str, timeout_s: float | None) -> dict:
    """The job's status once it ends, or when ``timeout_s`` has passed; a bar follows the
    job's block progress."""
    deadline = math.inf if timeout_s is None else time.monotonic() + timeout_s
    wait_s = WAIT_S
    with tqdm(desc=kind, unit="block") as bar:
        while True:
            asked_s = max(0.0, min(wait_s, deadline - time.monotonic()))
            start = time.monotonic()
            response = http.get(
                f"/{kind}/{token}/status", params={"wait": round(asked_s, 3)}, timeout=asked_s + REQUEST_MARGIN_S
            )
            if response.status_code == 400 and wait_s:  # a server whose longest wait is shorter: poll it
                wait_s = 0.0
                continue
            response.raise_for_status()
            status = response.json()
            if progress := status.get("progress"):
                bar.total = progress["total"]
                bar.update(progress["done"] - bar.n)
            if status["status"] in FINAL or time.monotonic() >= deadline:
                return status
            if not asked_s or time.monotonic() - start < asked_s / 2:  # it did not wait: do not hammer it
                time.sleep(POLL_S)
