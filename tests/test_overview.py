"""What the web console reads, through a live API on real Redis, Dask and dispatchers:
a client's account (GET /me), the operator's overview (GET /overview, operators only in
keys mode), block-seconds and shares, failures, lead times and their bounds, and
`spacetime clients add --admin`."""

import os
import subprocess
import sys

import httpx
import pytest

from backend.core.job import Lane
from backend.jobs import keys, scripts
from backend.jobs.clients import ClientRegistry
from backend.jobs.overview import nearest_rank
from backend.jobs.queue import JobQueue, QueuePolicy
from tests.held_bytes import held_for
from tests.test_clients import bearer
from tests.waiting import wait_status, wait_until

# Enough numbers for a few 1 KiB blocks (make_settings' even_sum_block_bytes).
NUMBERS = b" ".join(str(n).encode() for n in range(1200))


def submit(api: str, headers: dict, data: bytes = NUMBERS) -> str:
    response = httpx.post(f"{api}/even-sum", content=data, headers={**headers, "Content-Type": "text/plain"})
    assert response.status_code == 201, response.text
    return response.json()["token"]


def overview(api: str, headers: dict) -> dict:
    response = httpx.get(f"{api}/overview", headers=headers, timeout=30)
    assert response.status_code == 200, response.text
    return response.json()


def lane(view: dict, name: str) -> dict[str, dict]:
    """A lane's rows by client."""
    return {row["client"]: row for entry in view["lanes"] if entry["lane"] == name for row in entry["clients"]}


def test_operators_see_every_client_and_a_client_sees_its_own_account(make_settings, start_api, redis, cat_png):
    settings = make_settings(auth="keys")
    api = start_api(settings)
    registry = ClientRegistry(redis, settings)
    alice = bearer(registry.add("alice", max_backlog_bytes=10**6, max_running_bulk=3))
    bob, root = bearer(registry.add("bob")), bearer(registry.add("root", admin=True))
    submit(api, alice, b"2 4")
    submit(api, alice, b"6 8 10")
    submit(api, bob, b"1")
    assert httpx.post(f"{api}/randomize", content=cat_png, headers=alice).status_code == 201
    JobQueue(redis, "test-dispatcher", 60, QueuePolicy.of(settings)).claim(Lane.bulk)  # routes them all, runs one

    forbidden = httpx.get(f"{api}/overview", headers=bob)
    assert forbidden.status_code == 403 and "operator" in forbidden.json()["error"]
    view = overview(api, root)
    bulk, interactive = lane(view, "bulk"), lane(view, "interactive")
    assert set(bulk) == {"alice", "bob"} and set(interactive) == {"alice"}
    assert bulk["alice"]["queued"] + bulk["alice"]["running"] + bulk["bob"]["queued"] + bulk["bob"]["running"] == 3
    assert bulk["alice"]["running"] + bulk["bob"]["running"] == 1 and interactive["alice"]["queued"] == 1
    assert bulk["alice"]["weight"] == 1 and bulk["alice"]["share"] == 0.0
    assert view["window_s"] == keys.OVERVIEW_WINDOW_S and view["dashboard_url"] == settings.dashboard_url

    account = httpx.get(f"{api}/me", headers=alice).json()
    assert (account["client"], account["admin"], account["mode"]) == ("alice", False, "keys")
    quotas = {quota["name"]: quota for quota in account["quotas"]}
    assert quotas["backlog_bytes"]["used"] == int(redis.hget(keys.BACKLOG_BYTES, "alice")) == 3 + 6 + len(cat_png)
    assert quotas["backlog_bytes"]["limit"] == 10**6 and quotas["running_bulk"]["limit"] == 3
    assert quotas["held_bytes"]["used"] == int(redis.hget(keys.HELD_BYTES, "alice")) == held_for(redis, cat_png)
    assert quotas["held_bytes"]["limit"] == settings.default_max_held_bytes
    assert quotas["running_interactive"] == {
        "name": "running_interactive",
        "label": "running interactive jobs",
        "used": 0,
        "limit": 1,
        "unit": "jobs",
    }
    assert 1 <= quotas["rate"]["used"] <= 4 and quotas["rate"]["limit"] == 50
    assert quotas["uploads"]["used"] == 0 and quotas["uploads"]["limit"] == settings.default_max_uploads
    assert httpx.get(f"{api}/me", headers=root).json()["admin"] is True


def test_open_mode_every_caller_is_an_operator(api_url):
    assert httpx.get(f"{api_url}/overview", headers={"X-Client-Id": "anyone"}).status_code == 200
    account = httpx.get(f"{api_url}/me", headers={"X-Client-Id": "anyone"}).json()
    assert (account["client"], account["admin"], account["mode"]) == ("anyone", True, "open")
    assert {quota["name"]: quota["limit"] for quota in account["quotas"]}["rate"] == 50


def test_shares_failures_and_lead_times_of_real_jobs(api_url, dispatcher, redis, cat_png):
    alice, bob, carol = ({"X-Client-Id": name} for name in ("alice", "bob", "carol"))
    jobs = [submit(api_url, who) for who in (alice, bob, alice, bob, alice)]
    bad = submit(api_url, carol, b"2 x 4")
    image = httpx.post(f"{api_url}/randomize", content=cat_png, headers=bob).json()["token"]
    for token in [*jobs, bad]:
        assert wait_status(api_url, "even-sum", token, timeout_s=60)[-1]["status"] in ("finished", "errored")
    error = wait_status(api_url, "even-sum", bad)[-1]
    assert error["status"] == "errored"
    wait_status(api_url, "randomize", image)

    def both_counted():
        view = overview(api_url, alice)
        rows = lane(view, "bulk")
        counted = all(rows.get(name, {}).get("block_seconds", 0) > 0 for name in ("alice", "bob"))
        return view if counted and "bob" in lane(view, "interactive") else None

    view = wait_until(both_counted, what="both clients' block-seconds")
    bulk = lane(view, "bulk")
    assert sum(row["share"] for row in bulk.values()) == pytest.approx(1.0, abs=1e-4)
    assert bulk["alice"]["share"] > 0 and bulk["bob"]["share"] > 0
    assert lane(view, "interactive")["bob"]["share"] == pytest.approx(1.0)
    assert view["failures"][0] | {"ended_at": 0} == {
        "token": bad,
        "client": "carol",
        "kind": "even-sum",
        "error": error["error"],
        "ended_at": 0,
    }
    assert "byte" in error["error"] and view["failures"][0]["ended_at"] > 0
    leads = {row["client"]: row for row in view["lead_times"]}
    assert leads["alice"]["jobs"] == 3 and leads["bob"]["jobs"] == 3 and "carol" not in leads
    assert 0 < leads["alice"]["p50_s"] <= leads["alice"]["p90_s"] <= leads["alice"]["p99_s"]
    (beating,) = view["dispatchers"]
    assert beating["id"] == dispatcher.id and beating["alive"] and beating["jobs_held"] == 0
    assert 0 <= beating["heartbeat_age_s"] < 5
    for name in (keys.FAILURES, keys.lead_times("alice"), keys.LEAD_TIME_CLIENTS):
        assert redis.ttl(name) > 0, name
    assert [name for name in redis.keys("block-seconds:*") if redis.ttl(name) <= 0] == []


def test_failures_and_lead_times_stay_within_their_caps(make_settings, start_api, start_dispatcher, redis, monkeypatch):
    monkeypatch.setitem(scripts.CONSTANTS, "LEAD_TIMES_MAX", 3)  # scripts registered from here on take it
    monkeypatch.setitem(scripts.CONSTANTS, "FAILURES_MAX", 2)
    settings = make_settings()
    api = start_api(settings)
    start_dispatcher(settings)
    alice = {"X-Client-Id": "alice"}
    tokens = [submit(api, alice, b"2 4") for _ in range(5)] + [submit(api, alice, b"x") for _ in range(3)]
    for token in tokens:
        wait_status(api, "even-sum", token)
    assert redis.zcard(keys.lead_times("alice")) == 3 and redis.llen(keys.FAILURES) == 2
    view = overview(api, alice)
    assert [row["jobs"] for row in view["lead_times"]] == [3]
    failed = [failure["token"] for failure in view["failures"]]
    assert len(failed) == 2 and set(failed) <= set(tokens[5:])


def test_nearest_rank_is_always_one_of_the_values():
    values = [float(n) for n in range(1, 101)]
    assert [nearest_rank(values, p) for p in (50, 90, 99, 100)] == [50.0, 90.0, 99.0, 100.0]
    assert [nearest_rank([0.3], p) for p in (50, 99)] == [0.3, 0.3]
    assert nearest_rank([1.0, 2.0, 3.0], 50) == 2.0


@pytest.mark.slow
def test_clients_add_admin_makes_an_operator(settings, redis, make_settings, start_api):
    api = start_api(make_settings(auth="keys"))
    env = {**os.environ, "REDIS_URL": settings.redis_url}

    def cli(*args: str) -> subprocess.CompletedProcess:
        command = [sys.executable, "-m", "backend.run.cli", "clients", *args]
        return subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)

    root, plain = cli("add", "root", "--admin"), cli("add", "plain")
    assert root.returncode == 0 and plain.returncode == 0, root.stderr + plain.stderr
    assert redis.hget(keys.client("root"), "admin") == b"1" and redis.hget(keys.client("plain"), "admin") == b"0"
    listed = cli("list").stdout.splitlines()
    assert any(line.startswith("root ") and "admin=True" in line for line in listed)
    assert any(line.startswith("plain ") and "admin=False" in line for line in listed)
    assert httpx.get(f"{api}/overview", headers=bearer(root.stdout.strip())).status_code == 200
    assert httpx.get(f"{api}/overview", headers=bearer(plain.stdout.strip())).status_code == 403
    assert httpx.get(f"{api}/me", headers=bearer(root.stdout.strip())).json()["admin"] is True
