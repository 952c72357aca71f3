"""Identity and admission through a live API: keys mode, open mode, `spacetime clients`,
rate and backlog quotas (429 with Retry-After), and a limiter that fails closed."""

import hashlib
import os
import subprocess
import sys

import httpx
import pytest
from redis import ConnectionPool, RedisError

from backend.api.admission import RateLimiter
from backend.jobs import keys
from backend.jobs.clients import ClientRegistry, ClientSettings
from tests.servers import free_port
from tests.waiting import wait_status


@pytest.fixture
def keys_api(make_settings, start_api, redis) -> tuple[str, ClientRegistry]:
    """A live API in keys mode, and the registry to add its clients to."""
    settings = make_settings(auth="keys")
    return start_api(settings), ClientRegistry(redis, settings)


def bearer(key: str) -> dict:
    return {"Authorization": f"Bearer {key}"}


def test_keys_mode_requires_a_key(keys_api, cat_png):
    api, _ = keys_api
    for headers in ({}, {"X-Client-Id": "alice"}, bearer("st_not-a-key"), {"Authorization": "Basic abc"}):
        response = httpx.post(f"{api}/randomize", content=cat_png, headers=headers)
        assert response.status_code == 401, headers
        assert response.headers["www-authenticate"] == "Bearer"
        assert "API key" in response.json()["error"]
    assert httpx.get(f"{api}/randomize/{'0' * 32}/status").status_code == 401
    assert httpx.get(f"{api}/healthz").status_code == 200  # health and metrics stay open to operators


def test_the_key_names_the_client_and_x_client_id_changes_nothing(keys_api, dispatcher, cat_png):
    api, registry = keys_api
    key = registry.add("alice")
    headers = {**bearer(key), "X-Client-Id": "mallory"}
    token = httpx.post(f"{api}/randomize", content=cat_png, headers=headers).json()["token"]
    wait_status(api, "randomize", token, headers=bearer(key))
    assert httpx.get(f"{api}/tasks/{token}", headers=bearer(key)).json()["client"] == "alice"


def test_another_clients_token_is_404_on_every_route(keys_api, dispatcher, cat_png):
    api, registry = keys_api
    alice, bob = registry.add("alice"), registry.add("bob")
    image = httpx.post(f"{api}/randomize", content=cat_png, headers=bearer(alice)).json()["token"]
    numbers = httpx.post(f"{api}/even-sum", content=b"2 4", headers={**bearer(alice), "Content-Type": "text/plain"})
    sums = numbers.json()["token"]
    wait_status(api, "randomize", image, headers=bearer(alice))
    wait_status(api, "even-sum", sums, headers=bearer(alice))
    routes = [f"/randomize/{image}/status", f"/randomize/{image}/result", f"/tasks/{image}", f"/tasks/{image}/report"]
    routes += [f"/even-sum/{sums}/status", f"/even-sum/{sums}/result"]
    for route in routes:
        assert httpx.get(api + route, headers=bearer(alice), timeout=30).status_code == 200, route
        theirs = httpx.get(api + route, headers=bearer(bob))
        assert theirs.status_code == 404 and theirs.json() == {"message": "not found"}, route


@pytest.mark.slow
def test_clients_cli_prints_a_key_once_and_stores_only_its_hash(settings, redis, keys_api, cat_png):
    api, _ = keys_api
    env = {**os.environ, "REDIS_URL": settings.redis_url}

    def cli(*args: str) -> subprocess.CompletedProcess:
        command = [sys.executable, "-m", "backend.run.cli", "clients", *args]
        return subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)

    added = cli(
        "add", "lab", "--weight", "2", "--max-running-bulk", "3", "--rate", "5", "--max-backlog-bytes", "1000000"
    )
    assert added.returncode == 0, added.stderr
    key = added.stdout.strip()
    assert key.startswith("st_") and len(key) > 40
    digest = hashlib.sha256(key.encode()).hexdigest()
    stored = b"".join(
        v for name in redis.keys("*") if redis.type(name) == b"hash" for v in redis.hgetall(name).values()
    )
    holder, registration = redis.get(keys.api_key(digest)).decode().split(" ")  # the name and its registration
    assert (
        key.encode() not in stored
        and holder == "lab"
        and redis.hget(keys.client("lab"), "client_id").decode() == registration
    )

    listed = cli("list")
    assert "lab" in listed.stdout and "weight=2" in listed.stdout and "max_running_bulk=3" in listed.stdout
    assert key not in listed.stdout and digest[:12] in listed.stdout
    assert cli("add", "lab").returncode == 1  # taken: remove it first

    assert httpx.post(f"{api}/randomize", content=cat_png, headers=bearer(key)).status_code == 201
    assert cli("remove", "lab").returncode == 0
    assert httpx.post(f"{api}/randomize", content=cat_png, headers=bearer(key)).status_code == 401
    assert cli("remove", "lab").returncode == 1


@pytest.mark.slow
def test_clients_cli_registers_a_key_hash_made_elsewhere_and_prints_no_key(settings, redis, keys_api, cat_png):
    """The AWS runbook's registration: the key is made on the operator's machine, the command
    gets only its SHA-256, and nothing it prints (CloudWatch Logs, on AWS) holds a key."""
    api, _ = keys_api
    env = {**os.environ, "REDIS_URL": settings.redis_url}

    def add(*args: str) -> subprocess.CompletedProcess:
        command = [sys.executable, "-m", "backend.run.cli", "clients", "add", *args]
        return subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)

    key = "st_made-on-the-operators-machine"
    digest = hashlib.sha256(key.encode()).hexdigest()
    for bad in (digest.upper(), digest[:-1], digest + "0", "g" * 64, key, ""):
        refused = add("ops", "--key-sha256", bad)
        assert refused.returncode == 1 and "64 lowercase hex digits" in refused.stderr, bad
    assert not redis.exists(keys.client("ops"))

    added = add("ops", "--key-sha256", digest, "--weight", "2")
    assert added.returncode == 0, added.stderr
    assert added.stdout == "" and "st_" not in added.stderr and digest not in added.stderr
    assert redis.hget(keys.client("ops"), "key_sha256") == digest.encode()
    registration = redis.hget(keys.client("ops"), "client_id").decode()
    assert redis.get(keys.api_key(digest)) == f"ops {registration}".encode()
    assert redis.hget(keys.client("ops"), "weight") == b"2"
    token = httpx.post(f"{api}/randomize", content=cat_png, headers=bearer(key)).json()["token"]
    assert httpx.get(f"{api}/tasks/{token}", headers=bearer(key)).json()["client"] == "ops"


@pytest.mark.parametrize("name", ["a\nb", "a\x00", "x" * 10_000, " lead", "ünï", "a|b"])
def test_open_mode_refuses_client_names_that_could_break_logs_or_metrics(api_url, cat_png, name):
    headers = [(b"X-Client-Id", name.encode())]
    try:
        response = httpx.post(f"{api_url}/randomize", content=cat_png, headers=headers)
    except httpx.LocalProtocolError:  # httpx itself refuses to send NUL or newlines
        return
    assert response.status_code == 400 and "X-Client-Id" in response.json()["error"]


def test_over_its_rate_a_client_gets_429_with_retry_after(keys_api, cat_png):
    api, registry = keys_api
    key = registry.add("eager", rate=1)
    first = httpx.post(f"{api}/randomize", content=cat_png, headers=bearer(key))
    second = httpx.post(f"{api}/randomize", content=cat_png, headers=bearer(key))
    assert first.status_code == 201
    assert second.status_code == 429
    assert int(second.headers["retry-after"]) >= 1 and "rate" in second.json()["error"]
    other = registry.add("patient")
    assert httpx.post(f"{api}/randomize", content=cat_png, headers=bearer(other)).status_code == 201


def test_over_its_backlog_a_client_gets_429_and_a_job_larger_than_its_quota_413(keys_api, cat_png):
    api, registry = keys_api
    key = registry.add("hoarder", max_backlog_bytes=int(1.5 * len(cat_png)))
    assert httpx.post(f"{api}/randomize", content=cat_png, headers=bearer(key)).status_code == 201
    queued_too = httpx.post(f"{api}/randomize", content=cat_png, headers=bearer(key))  # no dispatcher: still queued
    assert queued_too.status_code == 429 and int(queued_too.headers["retry-after"]) >= 1
    assert "backlog quota" in queued_too.json()["error"]
    upload = httpx.post(
        f"{api}/even-sum", content=b"2 " * len(cat_png), headers={**bearer(key), "Content-Type": "text/plain"}
    )
    assert upload.status_code == 413 and "backlog quota" in upload.json()["error"]


def test_the_rate_limiter_fails_closed_when_redis_is_down():
    limiter = RateLimiter(ConnectionPool.from_url(f"redis://127.0.0.1:{free_port()}/0", socket_connect_timeout=1))
    client = ClientSettings("a", weight=1, max_running_bulk=1, rate=10, max_backlog_bytes=0)
    with pytest.raises(RedisError):
        limiter.admit(client)
