"""Listing a client's jobs (GET /tasks) with a live API and Redis: scoped to the caller,
newest first, filtered, pages that hold still while jobs are submitted, queue positions,
and summaries that outlive the records."""

import httpx
import pytest

from backend.core.job import Lane
from backend.jobs import keys, scripts
from backend.jobs.clients import ClientRegistry
from backend.jobs.queue import JobQueue, QueuePolicy
from tests.test_clients import bearer
from tests.waiting import wait_status, wait_until


@pytest.fixture
def keys_api(make_settings, start_api, redis):
    settings = make_settings(auth="keys")
    return start_api(settings), ClientRegistry(redis, settings), settings


def submit(api: str, headers: dict, data: bytes = b"2 4") -> str:
    response = httpx.post(f"{api}/even-sum", content=data, headers={**headers, "Content-Type": "text/plain"})
    assert response.status_code == 201, response.text
    return response.json()["token"]


def listed(api: str, headers: dict, **params) -> dict:
    response = httpx.get(f"{api}/tasks", params=params, headers=headers)
    assert response.status_code == 200, response.text
    return response.json()


def test_three_clients_page_through_their_own_jobs_while_more_come(keys_api, redis):
    api, registry, _ = keys_api
    alice, bob, carol = (bearer(registry.add(name)) for name in ("alice", "bob", "carol"))
    mine = [submit(api, alice) for _ in range(7)]
    theirs = {"bob": [submit(api, bob) for _ in range(3)], "carol": [submit(api, carol)]}

    seen: list[str] = []
    cursor = None
    while True:
        page = listed(api, alice, limit=2, **({"cursor": cursor} if cursor else {}))
        seen += [job["token"] for job in page["jobs"]]
        submit(api, alice)  # newer than every cursor: never on a later page
        cursor = page.get("next_cursor")
        if cursor is None:
            break
    assert seen == mine[::-1]
    assert [job["token"] for job in listed(api, bob, limit=100)["jobs"]] == theirs["bob"][::-1]
    assert [job["token"] for job in listed(api, carol)["jobs"]] == theirs["carol"]
    assert len(listed(api, alice, limit=100)["jobs"]) == 7 + len(seen) // 2 + 1

    first = listed(api, alice, limit=100)["jobs"][-1]
    assert first["token"] == mine[0] and first["status"] == "requested" and first["kind"] == "even-sum"
    assert first["links"] == {
        "record": f"/tasks/{mine[0]}",
        "result": f"/even-sum/{mine[0]}/result",
        "report": f"/tasks/{mine[0]}/report",
    }
    assert httpx.get(api + first["links"]["record"], headers=alice).status_code == 200


def test_queue_positions_filters_and_summaries_past_the_record(keys_api, redis):
    api, registry, settings = keys_api
    alice, bob = bearer(registry.add("alice")), bearer(registry.add("bob"))
    bobs = submit(api, bob)
    tokens = [submit(api, alice) for _ in range(4)]
    queue = JobQueue(redis, "test-dispatcher", 60, QueuePolicy.of(settings))
    claimed = queue.claim(Lane.bulk)  # routes every job; bob's or alice's first one runs
    assert claimed is not None and claimed.job.token == bobs
    positions = {job["token"]: job["queue_position"] for job in listed(api, alice)["jobs"]}
    assert positions == {token: i for i, token in enumerate(tokens)}

    assert httpx.delete(f"{api}/tasks/{tokens[1]}", headers=alice).status_code == 200
    errored = listed(api, alice, status="errored")["jobs"]
    assert [job["token"] for job in errored] == [tokens[1]] and errored[0]["cancelled"] is True
    assert listed(api, alice, kind="randomize")["jobs"] == []
    assert "queue_position" not in errored[0]
    assert [job["queue_position"] for job in listed(api, alice, status="requested")["jobs"]] == [2, 1, 0]

    since = httpx.get(f"{api}/tasks/{tokens[2]}", headers=alice).json()["requested_at"]
    assert [job["token"] for job in listed(api, alice, since=since)["jobs"]] == tokens[:1:-1]

    redis.delete(keys.result(tokens[1]))  # as when the result TTL passes
    gone = listed(api, alice, status="errored")["jobs"]
    assert [(job["token"], job["error"]) for job in gone] == [(tokens[1], "cancelled by the client")]
    assert redis.ttl(keys.summary(tokens[1])) > settings.result_ttl_s
    assert redis.ttl(keys.jobs("alice")) > settings.result_ttl_s


def test_a_client_keeps_its_newest_jobs_listed_up_to_the_cap_and_another_its_own(
    make_settings, start_api, redis, monkeypatch
):
    """Past keys.HISTORY_MAX (3 here) a client's oldest jobs leave its list, and their
    summaries go with them: what one client keeps listed is bounded, and nobody else's."""
    monkeypatch.setitem(scripts.CONSTANTS, "HISTORY_MAX", 3)
    api = start_api(make_settings())
    a, b = {"X-Client-Id": "a"}, {"X-Client-Id": "b"}
    theirs = [submit(api, b) for _ in range(2)]
    mine = [submit(api, a) for _ in range(5)]
    assert [job["token"] for job in listed(api, a)["jobs"]] == mine[:1:-1]
    assert [job["token"] for job in listed(api, b)["jobs"]] == theirs[::-1]
    assert redis.zcard(keys.jobs("a")) == 3
    assert [bool(redis.exists(keys.summary(token))) for token in mine] == [False, False, True, True, True]
    assert httpx.get(f"{api}/tasks/{mine[0]}", headers=a).json()["status"] == "requested"  # still queued


def test_a_finished_job_and_its_report_outlive_its_record(api_url, dispatcher, redis):
    token = submit(api_url, {"X-Client-Id": "dora"})
    wait_status(api_url, "even-sum", token)
    (job,) = listed(api_url, {"X-Client-Id": "dora"})["jobs"]
    assert job["status"] == "finished" and job["lead_s"] >= job["exec_s"] >= 0
    assert httpx.get(api_url + job["links"]["result"]).json()["sum"] == 6
    assert listed(api_url, {"X-Client-Id": "someone-else"})["jobs"] == []
    wait_until(lambda: httpx.get(api_url + job["links"]["report"]).status_code == 200, what="the report")

    redis.delete(keys.result(token))  # the result TTL passes: last week's job and its report
    (past,) = listed(api_url, {"X-Client-Id": "dora"})["jobs"]
    assert past["status"] == "finished" and past["lead_s"] == job["lead_s"] and "progress" not in past
    assert httpx.get(api_url + job["links"]["report"]).text.startswith("<")
    assert httpx.get(api_url + job["links"]["record"]).status_code == 404


@pytest.mark.parametrize("params", [{"limit": 0}, {"limit": 101}, {"cursor": "nope"}, {"status": "done"}])
def test_bad_queries_are_400(api_url, params):
    response = httpx.get(f"{api_url}/tasks", params=params)
    assert response.status_code == 400 and "error" in response.json()
