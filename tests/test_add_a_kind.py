"""docs/architecture.md, "How to add a job kind", followed step by step with a tiny kind
that exists only here: `checksum`, the SHA-256 of the bytes sent.

Steps 1, 3, 4 and 5 are done here exactly as the guide says (the guide's code is this
file's code: tests/test_docs_match_the_code.py compares them). The two steps that edit
product files are done the way a test can without changing the product: step 2's `Kind`
member is the plain string the member stands for (records and RUNNERS hold strings), and
step 6's door, a Submitter method, is the `JobStore.submit` call that method makes. Then
the job goes through the real store, queue, dispatcher and cluster, and the API's generic
routes see it as they see every kind.
"""

import hashlib

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from backend.core.job import Job, Lane
from backend.dispatch.runners import INTERACTIVE_RESOURCE, RUNNERS, JobContext, Outcome, key_prefix
from backend.jobs.store import JobStore, Submission
from compute.errors import InvalidInput
from tests.helpers import FINAL, wait_until

# Step 2: the kind's name. In the product: `checksum = "checksum"` in backend/core/job.py's Kind.
CHECKSUM = "checksum"


# Step 1: the work, as compute/ would hold it: a plain function, no Redis, no HTTP.
def sha256_hex(data: bytes) -> bytes:
    """The SHA-256 of ``data`` as 64 hex digits (ASCII bytes)."""
    if not data:
        raise InvalidInput("the body is empty: send the bytes to checksum")
    return hashlib.sha256(data).hexdigest().encode()


# Step 4: the runner, as backend/dispatch/runners.py would hold it.
def run_checksum(ctx: JobContext, job: Job) -> Outcome:
    """One Dask task: the input is small and came through Redis."""
    data = ctx.store.input(job.token)
    if data is None:
        raise InvalidInput("the input has expired; submit it again")
    future = ctx.cluster.client.submit(
        sha256_hex,
        data,
        key=f"{key_prefix(job)}-0",
        resources=ctx.cluster.resources(INTERACTIVE_RESOURCE),
    )
    return Outcome(ctx.cluster.result(future), {"bytes": len(data)})


@pytest.fixture
def checksum_kind(monkeypatch):
    """Step 5: the registration, `Kind.checksum: run_checksum` in RUNNERS; undone after the test."""
    monkeypatch.setitem(RUNNERS, CHECKSUM, run_checksum)


def submit_checksum(store: JobStore, data: bytes, client: str = "anonymous") -> str:
    """Step 6, as the Submitter method would store the job (after admitting its client)."""
    job = Submission(CHECKSUM, Lane.interactive, client, size=len(data), input_bytes=data)
    return store.submit(job).token


def ended(store: JobStore, token: str) -> Job | None:
    job = store.get(token)
    return job if job.status in FINAL else None


def jobs_counted(api_url: str, labels: dict[str, str]) -> float:
    """``spacetime_jobs_total`` of these labels in GET /metrics (0 before the first)."""
    for family in text_string_to_metric_families(httpx.get(f"{api_url}/metrics").text):
        for sample in family.samples:
            if sample.name == "spacetime_jobs_total" and sample.labels == labels:
                return sample.value
    return 0.0


def test_the_work_alone():
    assert sha256_hex(b"abc") == b"ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    with pytest.raises(InvalidInput, match="empty"):
        sha256_hex(b"")


def test_a_new_kind_runs_to_finished_with_what_every_kind_gets(checksum_kind, settings, redis, dispatcher, api_url):
    store = JobStore(redis, settings.result_ttl_s)
    data = b"the bytes to checksum\n" * 100
    token = submit_checksum(store, data, client="lab")

    job = wait_until(lambda: ended(store, token), what="the checksum job to end")
    assert job.status == "finished", job.error
    assert store.output(token) == hashlib.sha256(data).hexdigest().encode()
    assert job.kind == CHECKSUM and job.client == "lab" and job.attempts == 1 and job.bytes == len(data)

    # What the guide says a kind gets without writing anything more: the record, its timings,
    # its trace and performance report (found by the task keys' prefix), its metrics.
    record = wait_until(lambda: (r := httpx.get(f"{api_url}/tasks/{token}").json()).get("task_compute_s") and r)
    assert record["kind"] == CHECKSUM and record["status"] == "finished"
    assert record["lead_s"] >= record["exec_s"] >= 0 and record["task_compute_s"] > 0
    report = httpx.get(f"{api_url}/tasks/{token}/report", timeout=30)
    assert report.status_code == 200 and f"{CHECKSUM}-{token}-0" in report.text
    labels = {"kind": CHECKSUM, "client": "unregistered", "status": "finished"}
    wait_until(lambda: jobs_counted(api_url, labels) == 1, what="the job counted in /metrics")


def test_a_new_kinds_bad_input_ends_errored_with_its_message(checksum_kind, settings, redis, dispatcher):
    store = JobStore(redis, settings.result_ttl_s)
    token = submit_checksum(store, b"")
    job = wait_until(lambda: ended(store, token), what="the checksum job to end")
    assert job.status == "errored"
    assert job.error == "the body is empty: send the bytes to checksum"
    assert store.output(token) is None


def test_without_its_runner_a_kind_ends_errored_and_says_so(settings, redis, dispatcher):
    """What a dispatcher of an older version does with the new kind: deploy dispatchers first."""
    store = JobStore(redis, settings.result_ttl_s)
    token = submit_checksum(store, b"abc")
    job = wait_until(lambda: ended(store, token), what="the checksum job to end")
    assert job.status == "errored" and f"unknown task kind {CHECKSUM!r}" in job.error
