"""A Redis primary failover, as ElastiCache's Multi-AZ failover does it: a primary and a
replica (`redis-server --replicaof`), the primary SIGKILLed, the replica promoted
(`REPLICAOF NO ONE`), the old primary back as a replica of the new one. The API and a
dispatcher reach Redis through an endpoint that moves (a TCP proxy, as the primary
endpoint's DNS name does), and it moves before the promotion, so for a moment every write
answers READONLY. With `SPACETIME_REDIS_MIN_REPLICAS=1` (WAIT 1 after each submission),
every job acknowledged with a 201 survives and finishes; every other submission is a 503.
Then the two pieces apart: connections to a demoted primary are dropped, not kept; and what
WAIT buys when the replica lags (a job it has not got is refused, not acknowledged)."""

import io
import logging
import threading
import time
from dataclasses import replace

import httpx
import numpy as np
import pytest
from PIL import Image
from redis import ReadOnlyError, Redis

from backend.core.exceptions import JobNotFound, NotReplicated
from backend.core.job import FINAL
from backend.core.kinds import RANDOMIZE
from backend.jobs import keys
from backend.jobs.connection import connect
from backend.jobs.store import JobStore, Submission
from compute.stored import redis_at
from tests.endpoint import moving_endpoint
from tests.servers import live_api, own_redis
from tests.waiting import wait_until

DISPATCHER_LOG = "backend.dispatch.dispatcher"
JOBS_BEFORE = JOBS_AFTER = 20
# Each step of the failover lasts this long: the primary dead and the endpoint unchanged;
# the endpoint on the replica, not promoted yet (READONLY); the promoted replica alone,
# with no replica of its own to confirm submissions (on AWS, until ElastiCache has
# replaced the failed node: minutes).
STEP_S = 1.5


def small_png() -> bytes:
    pixels = np.random.default_rng(7).integers(0, 255, (120, 120, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()


def replicating(primary_port: int, replica_port: int) -> bool:
    """The replica is in sync with the primary, which counts it."""
    link = Redis(port=replica_port).info("replication")["master_link_status"]
    return link == "up" and Redis(port=primary_port).info("replication")["connected_slaves"] == 1


class Submitter(threading.Thread):
    """Submits an image job every 50 ms until stopped; keeps every answer's status and token,
    and what /livez and /readyz answered meanwhile."""

    def __init__(self, http: httpx.Client, png: bytes):
        super().__init__(daemon=True)
        self.http, self.png = http, png
        self.answers: list[tuple[int, str]] = []  # (status, the token of a 201 or the error)
        self.health: list[tuple[int, int]] = []  # (livez, readyz)
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(0.05):
            response = self.http.post("/randomize", content=self.png)
            body = response.json()
            self.answers.append((response.status_code, body.get("token") or body.get("error")))
            self.health.append((self.http.get("/livez").status_code, self.http.get("/readyz").status_code))


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_a_primary_failover_loses_no_acknowledged_job(make_settings, start_dispatcher, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger=DISPATCHER_LOG)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    png = small_png()
    with (
        own_redis(tmp_path / "a") as primary,
        own_redis(tmp_path / "b", replica_of=primary.port) as replica,
        moving_endpoint(primary.port) as endpoint,
    ):
        wait_until(lambda: replicating(primary.port, replica.port), what="the replica to sync")
        settings = make_settings(redis_url=endpoint.url, default_rate=0, redis_min_replicas=1)
        start_dispatcher(settings)
        with live_api(settings) as api, httpx.Client(base_url=api, timeout=10) as http:
            before = [http.post("/randomize", content=png) for _ in range(JOBS_BEFORE)]
            assert [r.status_code for r in before] == [201] * JOBS_BEFORE

            during = Submitter(http, png)
            during.start()
            time.sleep(0.5)
            started = time.monotonic()
            primary.kill()
            time.sleep(STEP_S)
            endpoint.move_to(replica.port)  # not promoted yet: writes answer READONLY
            time.sleep(STEP_S)
            Redis(port=replica.port).replicaof("NO", "ONE")
            time.sleep(STEP_S)
            primary.replica_of = replica.port  # the old primary comes back as a replica
            primary.start()
            wait_until(lambda: replicating(replica.port, primary.port), what="the old primary to rejoin")
            wait_until(lambda: during.answers and during.answers[-1][0] == 201, what="201s again")
            failover_s = time.monotonic() - started
            during.stop.set()
            during.join(30)

            after = [http.post("/randomize", content=png) for _ in range(JOBS_AFTER)]
            assert [r.status_code for r in after] == [201] * JOBS_AFTER

            acknowledged = [r.json()["token"] for r in before + after]
            acknowledged += [token for status, token in during.answers if status == 201]
            store = JobStore(connect(endpoint.url), settings.result_ttl_s)

            def unfinished() -> list[str]:
                gone = [t for t in acknowledged if not store.redis.exists(keys.result(t))]
                return gone + [t for t in acknowledged if t not in gone and store.get(t).status not in FINAL]

            deadline = time.monotonic() + 60
            while unfinished() and time.monotonic() < deadline:
                time.sleep(0.2)
            lost = unfinished()
            jobs = [store.get(t) for t in acknowledged if t not in lost]
            logged = [r.getMessage() for r in caplog.records if r.name == DISPATCHER_LOG]
            readonly = Redis(port=replica.port).info("errorstats").get("errorstat_READONLY", {}).get("count", 0)

    statuses = [status for status, _ in during.answers]
    refused = statuses.count(503)
    unconfirmed = sum("replica" in error for status, error in during.answers if status == 503)
    finished = sum(j.status == "finished" for j in jobs)
    print(
        f"\nfailover {failover_s:.1f} s: {JOBS_BEFORE} jobs before, {len(statuses)} submissions during "
        f"({statuses.count(201)} 201, {refused} 503 of which {unconfirmed} not confirmed by a replica; "
        f"{readonly} writes refused READONLY), {JOBS_AFTER} after; "
        f"{len(acknowledged)} acknowledged, {finished} finished, {len(lost)} lost, "
        f"{sum(j.attempts > 1 for j in jobs)} run twice"
    )
    assert set(statuses) <= {201, 503} and refused > 0  # never a 500
    assert readonly > 0  # the READONLY window was crossed
    assert not lost
    assert [j.status for j in jobs] == ["finished"] * len(acknowledged)
    assert {livez for livez, _ in during.health} == {200} and 503 in {readyz for _, readyz in during.health}
    assert len([m for m in logged if m.startswith("Redis is unreachable")]) == 1
    assert len([m for m in logged if m.startswith("Redis is back")]) == 1
    assert not [r for r in caplog.records if r.name == DISPATCHER_LOG and r.exc_info], "a traceback was logged"


@pytest.mark.parametrize("client", [connect, lambda url: redis_at(url, None)], ids=["backend", "worker"])
def test_a_connection_to_a_demoted_primary_is_dropped_not_kept(client, tmp_path):
    """A failover that does not kill the primary (ElastiCache's test failover, a demotion):
    pooled connections to it stay open, and it answers READONLY to writes. The backend's
    clients (and the workers') drop such a connection and reach the new primary through
    the endpoint at once; a plain redis-py client would keep failing."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    with (
        own_redis(tmp_path / "a") as old,
        own_redis(tmp_path / "b", replica_of=old.port) as new,
        moving_endpoint(old.port) as endpoint,
    ):
        wait_until(lambda: replicating(old.port, new.port), what="the replica to sync")
        redis, plain = client(endpoint.url), Redis.from_url(endpoint.url)
        assert redis.set("before", 1) and plain.set("before", 1)  # each pools a connection to the old primary
        endpoint.move_to(new.port)
        Redis(port=new.port).replicaof("NO", "ONE")
        Redis(port=old.port).replicaof("127.0.0.1", str(new.port))
        with pytest.raises(ReadOnlyError):
            plain.set("after", 1)
        assert redis.set("after", 1)
        assert Redis(port=new.port).get("after") == b"1"


def test_a_job_is_acknowledged_only_once_a_replica_has_it(tmp_path):
    """What WAIT buys. The replica's link to the primary is held (it lags without bound, as
    asynchronous replication allows), then the primary dies and the replica is promoted: a
    job stored without WAIT was acknowledged and is gone; with WAIT (min_replicas 1) the
    same submission is refused (NotReplicated: the API's 503) instead; a job WAIT confirmed
    before the hold survives."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    image = Submission(RANDOMIZE, input_bytes=b"png", bytes=3)
    with (
        own_redis(tmp_path / "a") as primary,
        moving_endpoint(primary.port) as link,
        own_redis(tmp_path / "b", replica_of=link.port) as replica,
    ):
        wait_until(lambda: replicating(primary.port, replica.port), what="the replica to sync")
        waiting = JobStore(connect(primary.url), 3600, min_replicas=1)
        confirmed = waiting.submit(image).token
        link.hold()
        with pytest.raises(NotReplicated):
            waiting.submit(replace(image, token="unconfirmed"))
        acknowledged = JobStore(connect(primary.url), 3600).submit(image).token  # no WAIT: a 201
        primary.kill()
        link.close()
        Redis(port=replica.port).replicaof("NO", "ONE")
        promoted = JobStore(Redis(port=replica.port), 3600)
        assert promoted.get(confirmed).status == "requested"
        for lost in (acknowledged, "unconfirmed"):
            with pytest.raises(JobNotFound):
                promoted.get(lost)
