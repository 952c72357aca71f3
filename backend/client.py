"""A small HTTP client of the API, behind ``spacetime submit``: upload, wait, print."""

import json
import os
import sys
import time

import httpx
from tqdm import tqdm

POLL_S = 0.2
UPLOAD_CHUNK_BYTES = 1024 * 1024


def submit_and_wait(
    api: str, kind: str, source: str, output: str | None, client_id: str, api_key: str | None = None
) -> int:
    """Submit ``source`` as a ``kind`` job, show progress, print or save the result.

    ``api_key`` (keys mode) goes as ``Authorization: Bearer``; ``client_id`` names the
    client in open mode."""
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {"X-Client-Id": client_id}
    with httpx.Client(base_url=api, headers=headers, timeout=60) as http:
        response = _submit(http, kind, source)
        if response.status_code != 201:
            print(f"error {response.status_code}: {response.text}", file=sys.stderr)
            return 1
        token = response.json()["token"]
        print(f"token {token}", file=sys.stderr)
        status = _wait(http, kind, token)
        if status["status"] == "errored":
            print(f"errored: {status.get('error')}", file=sys.stderr)
            return 1
        result = http.get(f"/{kind}/{token}/result")
        result.raise_for_status()
    if kind == "randomize":
        path = output or "out.png"
        with open(path, "wb") as f:
            f.write(result.content)
        print(path)
    else:
        print(json.dumps(result.json()))
    return 0


def _submit(http: httpx.Client, kind: str, source: str) -> httpx.Response:
    if kind == "even-sum" and "://" in source:
        return http.post("/even-sum", json={"url": source})
    content_type = "image/png" if kind == "randomize" else "text/plain"
    size = os.path.getsize(source)
    with open(source, "rb") as f, tqdm(total=size, unit="B", unit_scale=True, desc="upload") as bar:

        def chunks():
            while chunk := f.read(UPLOAD_CHUNK_BYTES):
                bar.update(len(chunk))
                yield chunk

        headers = {"Content-Type": content_type, "Content-Length": str(size)}
        return http.post(f"/{kind}", content=chunks(), headers=headers, timeout=None)


def _wait(http: httpx.Client, kind: str, token: str) -> dict:
    """Poll the status until the job ends; a bar follows the job's block progress."""
    with tqdm(desc=kind, unit="block") as bar:
        while True:
            status = http.get(f"/{kind}/{token}/status").json()
            if progress := status.get("progress"):
                bar.total = progress["total"]
                bar.update(progress["done"] - bar.n)
            if status["status"] in ("finished", "errored"):
                return status
            time.sleep(POLL_S)
