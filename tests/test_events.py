"""Watching a job live (GET /tasks/{token}/events) with a live API, Redis, dispatcher and
Dask: progress events as blocks finish, exactly one terminal event, a resume by
Last-Event-ID on another API process, a Redis restart mid-stream, and a bound on the
streams of a process."""

import json
import threading
import time
from contextlib import ExitStack

import httpx
import pytest
from redis import Redis

from backend.run.http_client import SpaceTime
from tests.servers import live_api, own_redis
from tests.test_cancel import MANY_BLOCKS, cancel, even_sum, progress
from tests.waiting import wait_until

# Half of test_cancel's file: it still runs for seconds, past what these tests do to it.
LONG_JOB = MANY_BLOCKS[: len(MANY_BLOCKS) // 2]


def read_events(api: str, token: str, last_event_id: str | None = None, stop_after: int | None = None) -> list[dict]:
    """The events of one stream, parsed; stops after ``stop_after`` events (the connection closed)."""
    headers = {"Last-Event-ID": last_event_id} if last_event_id else {}
    events: list[dict] = []
    event: dict = {}
    with httpx.stream("GET", f"{api}/tasks/{token}/events", headers=headers, timeout=60) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if not line:
                if "event" in event:
                    events.append(event)
                    if len(events) == stop_after:
                        break
                event = {}
            elif not line.startswith(":"):
                field, _, value = line.partition(": ")
                event[field] = json.loads(value) if field == "data" else value
    return events


def test_progress_then_exactly_one_terminal_event(api_url, dispatcher, redis):
    token = even_sum(api_url, MANY_BLOCKS[: 600 * 1024])  # seconds of blocks: several progress events
    events = read_events(api_url, token)
    names = [e["event"] for e in events]
    assert names[-1] == "finished" and names.count("finished") == 1 and set(names[:-1]) == {"progress"}
    done = [e["data"]["progress"]["done"] for e in events[:-1] if "progress" in e["data"]]
    assert done == sorted(done) and len(done) > 1
    assert events[-1]["data"] == {"status": "finished"} and events[-1]["id"] == "end"
    again = httpx.get(f"{api_url}/tasks/{token}/events", headers={"Last-Event-ID": "end"})
    assert again.status_code == 204  # an EventSource stops here
    assert read_events(api_url, token) == [events[-1]]  # a new stream of an ended job: its end


def test_a_stream_resumes_on_another_api_process(settings, dispatcher, redis):
    with ExitStack() as stack:
        first = stack.enter_context(live_api(settings))
        token = even_sum(first, LONG_JOB)
        wait_until(lambda: progress(redis, token) > 0.05, what="some blocks")
        before = read_events(first, token, stop_after=2)
        stack.close()  # the API goes away mid-stream
        second = stack.enter_context(live_api(settings))
        after = read_events(second, token, last_event_id=before[-1]["id"])
    assert [e["event"] for e in after].count("finished") == 1 and after[-1]["event"] == "finished"
    ids = [e["id"] for e in before + after[:-1]]
    assert len(set(ids)) == len(ids)  # nothing sent twice
    assert after[0]["data"]["progress"]["done"] > before[-1]["data"]["progress"]["done"]


def test_a_cancel_ends_the_stream_errored(api_url, redis):
    token = even_sum(api_url, b"2 4")  # no dispatcher: it stays queued
    with httpx.stream("GET", f"{api_url}/tasks/{token}/events", timeout=30) as response:
        lines = response.iter_lines()
        assert next(line for line in lines if line.startswith("event:")) == "event: progress"
        cancel(api_url, token)
        names = [line for line in lines if line.startswith("event:") or line.startswith("data:")]
    assert names[-2] == "event: errored"
    assert json.loads(names[-1].removeprefix("data: ")) == {"status": "errored", "error": "cancelled by the client"}


def test_streams_are_bounded_per_process(make_settings, start_api, redis):
    api = start_api(make_settings(max_event_streams=1))
    token = even_sum(api, b"2 4")
    with httpx.stream("GET", f"{api}/tasks/{token}/events", timeout=30) as first:
        lines = first.iter_lines()  # held: a dropped iterator closes the stream
        assert next(lines) == "retry: 1000"
        second = httpx.get(f"{api}/tasks/{token}/events")
        assert second.status_code == 429 and second.headers["retry-after"] == "5"
    assert httpx.get(f"{api}/tasks/{'0' * 32}/events").status_code == 404


def test_the_client_waits_instead_when_the_api_has_no_stream_to_spare(make_settings, start_api, dispatcher):
    api = start_api(make_settings(max_event_streams=0))
    token = even_sum(api, b"2 4 5")
    assert httpx.get(f"{api}/tasks/{token}/events").status_code == 429
    seen: list[tuple[int, int]] = []
    with SpaceTime(api) as st:
        ended = st.watch(token, lambda done, total: seen.append((done, total)), timeout_s=60)
        assert ended["status"] == "finished" and st.result(token)["sum"] == 6
    assert seen[-1] == (1, 1)


def test_a_client_at_its_bound_of_streams_takes_none_from_another(make_settings, start_api, redis):
    api = start_api(make_settings(max_event_streams_per_client=1))
    a, b = {"X-Client-Id": "a"}, {"X-Client-Id": "b"}
    token = even_sum(api, b"2 4")
    with httpx.stream("GET", f"{api}/tasks/{token}/events", headers=a, timeout=30) as first:
        lines = first.iter_lines()  # held: a dropped iterator closes the stream
        assert next(lines) == "retry: 1000"
        second = httpx.get(f"{api}/tasks/{token}/events", headers=a)
        assert second.status_code == 429 and "client 'a' holds 1 already" in second.json()["error"]
        with httpx.stream("GET", f"{api}/tasks/{token}/events", headers=b, timeout=30) as theirs:
            assert theirs.status_code == 200 and next(theirs.iter_lines()) == "retry: 1000"


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_a_stream_outlives_a_redis_restart_with_one_terminal_event(make_settings, start_dispatcher, tmp_path):
    with own_redis(tmp_path) as server:
        settings = make_settings(redis_url=server.url)
        start_dispatcher(settings)
        with live_api(settings) as api:
            token = even_sum(api, LONG_JOB)
            events: list[dict] = []
            reader = threading.Thread(target=lambda: events.extend(read_events(api, token)), daemon=True)
            reader.start()
            wait_until(lambda: len(events) or progress(Redis.from_url(server.url), token) > 0.1, what="progress")
            server.kill()
            time.sleep(2)
            server.start()  # same port, same AOF
            reader.join(90)
    assert not reader.is_alive(), "the stream did not end"
    names = [e["event"] for e in events]
    assert names[-1] == "finished" and names.count("finished") + names.count("errored") == 1
