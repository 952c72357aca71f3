"""Every job gets a timing record and a performance report that draws its task stream."""

import json
import logging
from pathlib import Path

import httpx

from backend.dispatch.runners import image_task_key
from backend.jobs.store import JobStore
from tests.waiting import wait_status, wait_until


def stored(settings, token: str, suffix: str) -> Path:
    return Path(settings.reports_url.removeprefix("file://")) / f"{token}.{suffix}"


def test_finished_job_has_consistent_timings_and_a_report(api_url, settings, redis, dispatcher, cat_png):
    lab = {"X-Client-Id": "lab"}
    token = httpx.post(f"{api_url}/randomize", content=cat_png, headers=lab).json()["token"]
    wait_status(api_url, "randomize", token, headers=lab)
    timing_file = wait_until(lambda: stored(settings, token, "json").exists() and stored(settings, token, "json"))
    record = httpx.get(f"{api_url}/tasks/{token}", headers=lab).json()
    assert record["lead_s"] >= record["exec_s"] >= 0
    assert record["lead_s"] >= record["queue_wait_s"] >= 0
    assert 0 < record["task_compute_s"] <= record["exec_s"]
    assert record["bytes"] == len(cat_png)

    timing = json.loads(timing_file.read_text())
    assert timing["token"] == token and timing["client"] == "lab" and timing["status"] == "finished"
    assert timing["lead_s"] == record["lead_s"] and timing["exec_s"] == record["exec_s"]
    assert timing["task_compute_s"] == record["task_compute_s"]
    assert record["report_url"] == f"/tasks/{token}/report" and "timing_url" not in record  # API URLs only

    report = httpx.get(f"{api_url}{record['report_url']}", headers=lab, timeout=30)
    assert report.status_code == 200 and report.headers["content-type"].startswith("text/html")
    # the job's own task, in the task stream's data; no host named
    job = JobStore(redis, settings.result_ttl_s).get(token)
    assert image_task_key(job) in report.text and job.dispatcher not in report.text
    assert "queue_wait_s" in report.text and "lead_s" in report.text  # the timing record
    assert "cdn.bokeh.org" not in report.text and "<script src=" not in report.text  # BokehJS inline
    assert stored(settings, token, "html").read_text() == report.text  # rendered once, then kept


def test_every_job_gets_a_report(api_url, dispatcher, cat_png):
    tokens = [httpx.post(f"{api_url}/randomize", content=cat_png).json()["token"] for _ in range(4)]
    for token in tokens:
        wait_status(api_url, "randomize", token)
    for token in tokens:
        wait_until(lambda t=token: "task_compute_s" in httpx.get(f"{api_url}/tasks/{t}").json(), what="the trace")
        report = httpx.get(f"{api_url}/tasks/{token}/report", timeout=30)
        assert report.status_code == 200 and f"randomize-{token}-" in report.text


def test_errored_job_has_a_timing_record(api_url, settings, dispatcher, cat_png):
    token = httpx.post(f"{api_url}/randomize", content=cat_png[:300]).json()["token"]
    wait_status(api_url, "randomize", token)
    record = httpx.get(f"{api_url}/tasks/{token}").json()
    assert record["status"] == "errored"
    assert record["lead_s"] >= record["exec_s"] >= 0
    timing_file = wait_until(lambda: stored(settings, token, "json").exists() and stored(settings, token, "json"))
    timing = json.loads(timing_file.read_text())
    assert timing["status"] == "errored" and "corrupt PNG" in timing["error"]


def test_timing_is_logged_as_one_json_line(api_url, dispatcher, cat_png, caplog):
    caplog.set_level(logging.INFO, logger="spacetime.timing")
    token = httpx.post(f"{api_url}/randomize", content=cat_png).json()["token"]
    wait_status(api_url, "randomize", token)
    lines = wait_until(lambda: [r.getMessage() for r in caplog.records if token in r.getMessage()])
    assert len(lines) == 1 and "\n" not in lines[0]
    logged = json.loads(lines[0])
    assert logged["token"] == token and logged["kind"] == "randomize" and logged["lead_s"] >= logged["exec_s"]
