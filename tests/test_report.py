"""Per-job reports (compute/report.py): the capture keeps the job's own tasks only, works
when a worker that ran them is gone, and the page renders from the JSON it stored."""

import json
import os
import site
import time

import pytest
from distributed import Client, LocalCluster

import compute.report
from compute.image import randomize_image
from compute.report import capture_trace, render_report, shown_path, task_compute_s
from tests.paths import FIXTURES


@pytest.fixture
def two_workers():
    with (
        LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=":0") as cluster,
        Client(cluster) as client,
    ):
        client.get_task_stream(start=0, stop=0)  # what dispatchers do: the scheduler records from now on
        yield cluster, client


def test_the_trace_holds_the_jobs_tasks_and_their_workers_profile(two_workers):
    _, client = two_workers
    png = (FIXTURES / "cat.png").read_bytes()
    started = time.time()
    client.submit(randomize_image, png, key="randomize-mine-0").result()
    client.submit(randomize_image, png, key="randomize-other-0").result()
    trace = json.loads(json.dumps(capture_trace(client, "randomize-mine", started, time.time())))  # plain JSON
    assert [task["key"] for task in trace["tasks"]] == ["randomize-mine-0"]
    assert 0 < task_compute_s(trace) < time.time() - started
    assert trace["profile"]["count"] >= 0 and "children" in trace["profile"]
    page = render_report(trace, {"token": "mine", "lead_s": 0.1, "requested_at": 1796227200.25}, "randomize job mine")
    assert "randomize-mine-0" in page and "randomize-other-0" not in page
    # The timing record as a person reads it, not as epoch seconds.
    assert "2026-12-02 16:00:00.250 UTC" in page and "100.0 ms" in page
    assert "<script src=" not in page  # BokehJS inline
    # Nothing of the servers: workers by rank, not by address; code by its package's path.
    assert trace["tasks"][0]["worker"] not in page and "worker 1" in page
    assert all(root not in page for root in site.getsitepackages())


def test_a_profiled_frames_file_is_shown_by_its_path_in_its_package():
    installed = os.path.join(site.getsitepackages()[0], "numba", "core", "dispatcher.py")
    assert shown_path(installed) == "numba/core/dispatcher.py"
    assert shown_path(compute.report.__file__) == "compute/report.py"
    assert shown_path("/somewhere/else/module.py") == "module.py"


def test_a_job_shorter_than_the_profile_floor_has_no_profile_and_the_report_says_so(two_workers):
    _, client = two_workers
    png = (FIXTURES / "cat.png").read_bytes()
    started = time.time()
    client.submit(randomize_image, png, key="randomize-short-0").result()
    trace = capture_trace(client, "randomize-short", started, time.time(), profile_min_s=60)
    assert [task["key"] for task in trace["tasks"]] == ["randomize-short-0"]  # the task stream is whole
    assert trace["profile"] is None and trace["profile_min_s"] == 60
    page = render_report(json.loads(json.dumps(trace)), {"token": "short"}, "randomize job short")
    assert "Worker profile: not taken" in page and "profiles from 60000 ms" in page
    assert capture_trace(client, "randomize-short", started, time.time(), profile_min_s=0)["profile"] is not None


def test_a_worker_gone_after_the_job_leaves_its_profile_out_not_the_report(two_workers):
    cluster, client = two_workers
    address = next(iter(client.scheduler_info()["workers"]))
    started = time.time()
    client.submit(sum, [1, 2], key="even-sum-gone-0", workers=[address]).result()
    worker = next(w for w in cluster.workers.values() if w.address == address)
    client.sync(worker.close)  # the worker died: its address refuses connections
    trace = capture_trace(client, "even-sum-gone", started, time.time())  # no error, no 30 s wait
    assert [task["worker"] for task in trace["tasks"]] == [address]  # the task stream still has it
    assert trace["profile"]["count"] == 0  # no profile from a worker that is gone
