"""The load test's smoke run: the locustfile, the runner's checks and the journal, in a
short run against a live API and a dispatcher. The long runs (50 users, a minute, with
and without faults) are `python -m bench.load.run`; their figures are in docs/reliability.md.
"""

import io
import json
from collections import Counter

import pytest
from PIL import Image

from backend.jobs import keys
from bench.load.jobs import EVEN_SUM, EXACT, RANDOMIZE, Journal, image_problem, make_inputs, sum_problem
from bench.load.run import Figures, check_jobs, run_load
from compute.redis_values import write_value

MB = 10**6


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_locust_users_end_every_job_exactly(make_settings, start_api, start_dispatcher, redis_url, tmp_path):
    # 1 MB uploads in 256 KiB blocks: a few block tasks each, not the thousand of the suite's 1 KiB blocks.
    settings = make_settings(even_sum_block_bytes=256 * 1024)
    api = start_api(settings)
    start_dispatcher(settings)
    inputs = make_inputs([MB, 2 * MB], tmp_path / "inputs")

    figures = run_load(api, redis_url, tmp_path, inputs, users=5, duration_s=10, job_timeout_s=30)

    figures.print()  # shown when the test fails
    assert figures.problems() == []
    # Each of the 5 users starts at its own place in the cycle: both kinds ran, and each was checked.
    assert figures.accepted[RANDOMIZE] >= 3 and figures.accepted[EVEN_SUM] >= 1
    assert figures.final == sum(figures.accepted.values())
    routes = {f"{r['method']} {r['name']}": r for r in figures.routes}
    assert {"POST /randomize", "POST /even-sum", "GET /even-sum/[token]/result"} <= routes.keys()
    assert routes["GET /randomize/[token]/status"]["requests"] >= figures.accepted[RANDOMIZE]


def test_result_checks_tell_wrong_results(cat_png, tmp_path):
    [upload] = make_inputs([1000], tmp_path)
    answer = upload.answer
    assert image_problem(cat_png) is None
    assert "not a valid PNG" in image_problem(cat_png[: len(cat_png) // 2])
    half = io.BytesIO()
    Image.open(io.BytesIO(cat_png)).reduce(2).save(half, format="PNG")
    assert "expected" in image_problem(half.getvalue())
    assert sum_problem(json.dumps(answer).encode(), answer) is None
    assert "wrong sum" in sum_problem(json.dumps({**answer, "sum": answer["sum"] + 2}).encode(), answer)
    assert "not JSON" in sum_problem(b"<html>", answer)


def test_runner_counts_lost_wrong_and_retried_jobs(redis, redis_url, tmp_path, cat_png):
    """Tokens in the journal against records in Redis: one exact, one retried, one that no
    user saw end (checked from its stored output), one never final (lost)."""
    [upload] = make_inputs([1000], tmp_path)
    journal = Journal(tmp_path / "journal.jsonl")
    records = {
        "exact": ({"status": "finished", "attempts": 1}, None),
        "retried": ({"status": "finished", "attempts": 2}, None),
        "unseen": ({"status": "finished", "attempts": 1}, json.dumps({**upload.answer, "sum": 1}).encode()),
        "lost": ({"status": "received", "attempts": 1}, None),
    }
    for token, (record, output) in records.items():
        redis.set(keys.result(token), json.dumps({"token": token, **record}))
        if output is not None:
            write_value(redis, keys.output(token), output, 60)
        journal.accepted(token, EVEN_SUM, 0)
        if token in ("exact", "retried"):
            journal.ended(token, EXACT)
    journal.close()
    figures = Figures([], 0, Counter(), [])

    check_jobs(figures, Journal.read(tmp_path / "journal.jsonl"), [upload], redis_url, drain_s=0)

    assert figures.accepted == {EVEN_SUM: 4}
    assert (figures.final, figures.lost, figures.claimed_twice, figures.checked_by_runner) == (3, ["lost"], 1, 1)
    assert list(figures.wrong) == ["unseen"] and "wrong sum" in figures.wrong["unseen"]
    assert len(figures.problems()) == 2
