"""docs/architecture.md, "How to add a job kind", followed step by step with a real kind
that exists only here: `checksum`, the SHA-256 of the bytes sent.

The guide's code is this file's code (tests/test_docs_match_the_code.py compares them).
The one step that edits a product file, adding the declaration to ``KINDS``, is done by
the fixture below, exactly (and undone after each test). Everything else derives from the
declaration: the job goes in through the real routes and the real `spacetime submit`,
through the real store, queue, dispatcher and cluster, and out through the routes again.
"""

import hashlib

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from backend.core.job import Job, Lane
from backend.core.kinds import KINDS, Body, JobKind
from backend.dispatch.runners import INTERACTIVE_RESOURCE, JobContext, Outcome, key_prefix
from backend.jobs import scripts
from backend.jobs.store import JobStore, Submission
from backend.run.cli import main
from compute.errors import InvalidInput
from tests.test_openapi import kind_routes
from tests.waiting import FINAL, wait_until


# Step 1: the work, as compute/ would hold it: a plain function, no Redis, no HTTP.
def sha256_hex(data: bytes) -> bytes:
    """The SHA-256 of ``data`` as 64 hex digits (ASCII bytes)."""
    if not data:
        raise InvalidInput("the body is empty: send the bytes to checksum")
    return hashlib.sha256(data).hexdigest().encode()


# Step 2: the declaration, as backend/core/kinds.py would hold it.
CHECKSUM = JobKind(
    name="checksum",
    lane=Lane.interactive,
    input=Body("application/octet-stream", max_bytes_setting="max_image_bytes"),
    runner="tests.test_add_a_kind:run_checksum",
    summary="Submit bytes whose SHA-256 to compute",
    result_media_type="text/plain",
    result_description="The SHA-256 of the bytes, as 64 hex digits",
)


# Step 3: the runner, as backend/dispatch/runners.py would hold it.
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
    """Step 2's registration: CHECKSUM in KINDS, as the product's tuple would list it.
    Asked for before the API and the dispatcher, which read KINDS as they start."""
    monkeypatch.setitem(KINDS, CHECKSUM.name, CHECKSUM)


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


def test_the_declaration_gives_the_kind_its_routes_and_its_lane(checksum_kind, api_url):
    served = httpx.get(f"{api_url}/openapi.json").json()
    documented = {(path, method) for path, item in served["paths"].items() for method in item}
    assert {("/checksum", "post"), ("/checksum/{token}/status", "get")} <= kind_routes() <= documented
    operation = served["paths"]["/checksum"]["post"]
    assert operation["operationId"] == "post_checksum" and operation["summary"] == CHECKSUM.summary
    assert "application/octet-stream" in operation["requestBody"]["content"]
    assert "text/plain" in served["paths"]["/checksum/{token}/result"]["get"]["responses"]["200"]["content"]
    # A record queued by hand names only its kind: the claim script routes it by this table.
    assert "['checksum'] = 'interactive'" in scripts.source("claim")


def test_a_new_kind_runs_to_finished_with_what_every_kind_gets(checksum_kind, settings, dispatcher, api_url):
    data = b"the bytes to checksum\n" * 100
    posted = httpx.post(f"{api_url}/checksum", content=data, headers={"X-Client-Id": "lab"})
    assert posted.status_code == 201, posted.text
    token = posted.json()["token"]

    status = httpx.get(f"{api_url}/checksum/{token}/status", params={"wait": 30}, timeout=60).json()
    assert status == {"status": "finished"}
    result = httpx.get(f"{api_url}/checksum/{token}/result")
    assert result.content == hashlib.sha256(data).hexdigest().encode()
    assert result.headers["content-type"].startswith("text/plain")
    # Another kind's routes do not know the token.
    assert httpx.get(f"{api_url}/randomize/{token}/status").status_code == 404

    # What the guide says a kind gets without writing anything more: the record, its timings,
    # its trace and performance report (found by the task keys' prefix), its metrics.
    record = wait_until(lambda: (r := httpx.get(f"{api_url}/tasks/{token}").json()).get("task_compute_s") and r)
    assert record["kind"] == "checksum" and record["client"] == "lab" and record["lane"] == "interactive"
    assert record["attempts"] == 1 and record["bytes"] == len(data)
    assert record["lead_s"] >= record["exec_s"] >= 0 and record["task_compute_s"] > 0
    report = httpx.get(f"{api_url}/tasks/{token}/report", timeout=30)
    assert report.status_code == 200 and f"checksum-{token}-0" in report.text
    labels = {"kind": "checksum", "client": "unregistered", "status": "finished"}
    wait_until(lambda: jobs_counted(api_url, labels) == 1, what="the job counted in /metrics")


def test_spacetime_submit_knows_the_new_kind(checksum_kind, settings, dispatcher, api_url, tmp_path, capsys):
    source = tmp_path / "bytes.bin"
    source.write_bytes(b"\x00\x01 checksum me" * 1000)
    out = tmp_path / "sum.txt"
    assert main(["submit", "checksum", str(source), "-o", str(out), "--api", api_url, "--timeout", "60"]) == 0
    assert out.read_bytes() == hashlib.sha256(source.read_bytes()).hexdigest().encode()
    assert str(out) in capsys.readouterr().out


def test_a_new_kinds_bad_input_ends_errored_with_its_message(checksum_kind, settings, dispatcher, api_url):
    token = httpx.post(f"{api_url}/checksum", content=b"").json()["token"]
    status = httpx.get(f"{api_url}/checksum/{token}/status", params={"wait": 30}, timeout=60).json()
    assert status == {"status": "errored", "error": "the body is empty: send the bytes to checksum"}
    assert httpx.get(f"{api_url}/checksum/{token}/result").status_code == 404


def test_a_body_over_the_kinds_limit_is_refused_at_the_door(checksum_kind, make_settings, start_api):
    api_url = start_api(make_settings(max_image_bytes=1000))
    refused = httpx.post(f"{api_url}/checksum", content=b"x" * 1001)
    assert refused.status_code == 413 and "limit of 1000 bytes" in refused.json()["error"]


def test_without_its_declaration_a_kind_ends_errored_and_says_so(settings, redis, dispatcher):
    """What a dispatcher of an older version does with the new kind: deploy dispatchers first."""
    store = JobStore(redis, settings.result_ttl_s)
    token = store.submit(Submission(CHECKSUM, bytes=3, input_bytes=b"abc")).token
    job = wait_until(lambda: ended(store, token), what="the checksum job to end")
    assert job.status == "errored" and "unknown job kind 'checksum'" in job.error
