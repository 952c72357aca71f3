"""The load test's locust users. bench/load/run.py starts the system and runs this file:

    python -m locust -f bench/load/locustfile.py --headless --host API \\
        --inputs inputs.json --journal journal.jsonl --summary summary.json ...

Each user is a client of its own (``X-Client-Id: load-<n>``, open mode), so a 429 is a
quota answer to that user alone; 429s are counted apart, not as errors. A user runs one
job at a time, in a fixed cycle (two image jobs of cat.png, then one even-sum upload of a
1-10 MB file whose exact answer is known): it submits, polls the status until the job
ends, fetches the result and checks it (bench/load/jobs.py). Every accepted token goes
into the journal when it is accepted and again when its user saw it end, so that the
runner can check every one of them afterwards, including those no user saw end.

When locust quits, the summary file gets locust's figures per route (requests,
failures, p50, p95) and the counts of 5xx answers, connection errors and 429s.
"""

import itertools
import json
import random
import time
from collections import Counter
from pathlib import Path

import gevent
from locust import FastHttpUser, between, events, task
from locust.env import Environment

from bench.load.jobs import CAT, EVEN_SUM, EXACT, RANDOMIZE, Journal, SumInput, read_inputs, result_problem

FINAL = ("finished", "errored")
# Each of the 50 users polls its job twice a second: enough load on the status route
# without the polls taking the cores that run the jobs.
POLL_S = 0.5
# The kinds a user submits, in turn; each user starts at its own place in the cycle.
CYCLE = (RANDOMIZE, EVEN_SUM, RANDOMIZE)

_user_numbers = itertools.count()
# {"5xx" | "connection errors" | "429": answers seen}, from every request of the run.
counts: Counter[str] = Counter()
# "inputs": [SumInput], "bodies": [bytes], "cat": bytes, "journal": Journal, "job_timeout_s": float
state: dict = {}


@events.init_command_line_parser.add_listener
def _arguments(parser) -> None:
    parser.add_argument("--inputs", default="", help="JSON list of even-sum inputs and answers (bench/load/jobs.py)")
    parser.add_argument("--journal", default="journal.jsonl", help="where accepted tokens are written")
    parser.add_argument("--summary", default="summary.json", help="where the figures go when locust quits")
    # A job not final by then is written down as such; the runner still waits for it.
    parser.add_argument("--job-timeout", type=float, default=150.0, help="seconds a user waits for its job")


@events.init.add_listener
def _load_inputs(environment: Environment, **_) -> None:
    options = environment.parsed_options
    inputs: list[SumInput] = read_inputs(options.inputs)
    state.update(
        inputs=inputs,
        bodies=[Path(i.path).read_bytes() for i in inputs],
        cat=CAT.read_bytes(),
        journal=Journal(options.journal),
        job_timeout_s=options.job_timeout,
    )


@events.request.add_listener
def _classify(response=None, **_) -> None:
    status = getattr(response, "status_code", 0) or 0
    if status >= 500:
        counts["5xx"] += 1
    elif status == 429:
        counts["429"] += 1
    elif status == 0:  # no answer at all: refused, reset or timed out
        counts["connection errors"] += 1


@events.quitting.add_listener
def _write_summary(environment: Environment, **_) -> None:
    stats = environment.stats
    routes = [
        {
            "method": entry.method,
            "name": entry.name,
            "requests": entry.num_requests,
            "failures": entry.num_failures,
            "p50_ms": entry.get_response_time_percentile(0.5),
            "p95_ms": entry.get_response_time_percentile(0.95),
        }
        for entry in sorted(stats.entries.values(), key=lambda e: (e.name, e.method or ""))
    ]
    errors = [
        {"method": e.method, "name": e.name, "error": str(e.error), "occurrences": e.occurrences}
        for e in stats.errors.values()
    ]
    summary = {"routes": routes, "requests": stats.total.num_requests, "errors": errors, "counts": dict(counts)}
    Path(environment.parsed_options.summary).write_text(json.dumps(summary, indent=1))
    state["journal"].close()


class JobUser(FastHttpUser):
    wait_time = between(0.2, 1.0)

    def on_start(self) -> None:
        number = next(_user_numbers)
        self.headers = {"X-Client-Id": f"load-{number}"}
        self.kinds = itertools.islice(itertools.cycle(CYCLE), number % len(CYCLE), None)
        self.rng = random.Random(number)  # which file each upload sends: the same in every run

    @task
    def job(self) -> None:
        kind = next(self.kinds)
        if kind == RANDOMIZE:
            index, body, content_type = None, state["cat"], "image/png"
        else:
            index = self.rng.randrange(len(state["inputs"]))
            body, content_type = state["bodies"][index], "application/octet-stream"
        token = self._submit(kind, body, content_type)
        if token is None:
            return
        state["journal"].accepted(token, kind, index)
        state["journal"].ended(token, self._outcome(kind, token, index))

    def _submit(self, kind: str, body: bytes, content_type: str) -> str | None:
        """The token, or None when the API refused the job (a 429, or a failure locust records)."""
        headers = {**self.headers, "Content-Type": content_type}
        with self.client.post(f"/{kind}", data=body, headers=headers, catch_response=True) as response:
            if response.status_code == 429:
                response.success()  # the client's quota said no: counted apart, not an error
                return None
            if response.status_code != 201:
                response.failure(f"HTTP {response.status_code}: {response.text}")
                return None
            return response.json()["token"]

    def _outcome(self, kind: str, token: str, index: int | None) -> str:
        """EXACT, or what was wrong with the job's end."""
        status = self._wait(kind, token)
        if status is None:
            return f"timeout: not final after {state['job_timeout_s']:.0f} s"
        if status["status"] != "finished":
            return f"errored: {status.get('error')}"
        answer = None if index is None else state["inputs"][index].answer
        with self.client.get(
            f"/{kind}/{token}/result", headers=self.headers, name=f"/{kind}/[token]/result", catch_response=True
        ) as response:
            if response.status_code != 200:
                return f"result: HTTP {response.status_code}"  # locust records it as a failure
            problem = result_problem(kind, response.content, answer)
            if problem:
                response.failure(problem)
        return problem or EXACT

    def _wait(self, kind: str, token: str) -> dict | None:
        """The job's final status body, or None if it did not end within the job timeout."""
        deadline = time.monotonic() + state["job_timeout_s"]
        while time.monotonic() < deadline:
            response = self.client.get(f"/{kind}/{token}/status", headers=self.headers, name=f"/{kind}/[token]/status")
            if response.status_code == 200 and (body := response.json())["status"] in FINAL:
                return body
            gevent.sleep(POLL_S)
        return None
