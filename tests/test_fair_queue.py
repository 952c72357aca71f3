"""The fair pick, claim by claim, on a real Redis: deficit round robin between clients,
weights, costs in blocks, caps on running jobs, and counters that return to zero."""

from collections import Counter

import pytest

from backend.core.job import Lane
from backend.core.kinds import EVEN_SUM, RANDOMIZE
from backend.jobs import keys
from backend.jobs.clients import ClientRegistry
from backend.jobs.queue import JobQueue, QueuePolicy
from backend.jobs.store import JobStore, Submission


@pytest.fixture
def store(redis, settings) -> JobStore:
    return JobStore(redis, settings.result_ttl_s)


@pytest.fixture
def queue(redis, settings) -> JobQueue:
    return JobQueue(redis, "d1", settings.lease_s, QueuePolicy.of(settings))


def images(store: JobStore, client: str, n: int) -> list[str]:
    job = Submission(RANDOMIZE, client, input_bytes=b"png", bytes=3)
    return [store.submit(job).token for _ in range(n)]


def bulk(store: JobStore, client: str, n: int, blocks: int) -> list[str]:
    job = Submission(EVEN_SUM, client, cost=blocks, bytes=blocks * 1024, input_url="file:///x")
    return [store.submit(job).token for _ in range(n)]


def claim_all(queue: JobQueue, lane: Lane, store: JobStore, finish: bool = True) -> list[str]:
    """Clients in the order their jobs are claimed (finishing each at once, unless not)."""
    order = []
    while claim := queue.claim(lane):
        order.append(claim.job.client)
        if finish:
            store.finish(claim.job, b"done")
    return order


def test_a_client_with_one_job_is_served_second_after_a_client_with_ten(store, queue):
    images(store, "a", 10)
    images(store, "b", 1)
    assert claim_all(queue, Lane.interactive, store) == ["a", "b"] + ["a"] * 9


def test_weights_share_the_claims(store, queue, redis, settings):
    ClientRegistry(redis, settings).add("heavy", weight=3)
    images(store, "heavy", 30)
    images(store, "light", 30)
    first = claim_all(queue, Lane.interactive, store)[:20]
    assert Counter(first) == {"heavy": 15, "light": 5}


def test_bulk_jobs_cost_their_blocks(store, redis, settings):
    """Deficit round robin counts blocks: a client of 16-block jobs and one of 2-block jobs
    are served the same number of blocks, not of jobs."""
    queue = JobQueue(
        redis, "d1", settings.lease_s, QueuePolicy.of(settings.model_copy(update={"default_max_running_bulk": 100}))
    )
    bulk(store, "big", 10, blocks=16)
    bulk(store, "small", 80, blocks=2)
    served = Counter()
    for client in claim_all(queue, Lane.bulk, store)[:45]:
        served[client] += 16 if client == "big" else 2
    assert abs(served["big"] - served["small"]) <= 16, served


def test_a_client_at_its_cap_of_running_bulk_jobs_is_skipped(store, queue, redis, settings):
    ClientRegistry(redis, settings).add("capped", max_running_bulk=1)
    first, second = bulk(store, "capped", 2, blocks=1)
    other = bulk(store, "other", 1, blocks=1)[0]
    held = [queue.claim(Lane.bulk), queue.claim(Lane.bulk)]
    assert [c.job.token for c in held] == [first, other]
    assert queue.claim(Lane.bulk) is None  # "capped" has one running: its second waits
    store.finish(held[0].job, b"done")
    assert queue.claim(Lane.bulk).job.token == second


def test_a_client_at_its_cap_of_running_images_is_skipped(store, queue):
    """Issue 17, bench/hostile.py scenario 1: a client flooding large images held every
    interactive worker, and another client's image waited seconds behind them. At its cap
    (default 1) its next image waits and the other client's is claimed."""
    first, second = images(store, "flood", 2)
    other = images(store, "other", 1)[0]
    held = [queue.claim(Lane.interactive), queue.claim(Lane.interactive)]
    assert [c.job.token for c in held] == [first, other]
    assert queue.claim(Lane.interactive) is None  # "flood" has one running: its second waits
    store.finish(held[0].job, b"done")
    assert queue.claim(Lane.interactive).job.token == second


def test_a_clients_own_cap_of_running_images_overrides_the_default(store, queue, redis):
    """A registered client's `max_running_interactive` field wins; 0 is no cap."""
    redis.hset(keys.client("wide"), "max_running_interactive", 0)
    tokens = images(store, "wide", 3)
    assert [queue.claim(Lane.interactive).job.token for _ in tokens] == tokens


def test_counters_return_to_zero(store, queue, redis):
    bulk(store, "a", 3, blocks=4)
    images(store, "a", 2)
    assert redis.hget(keys.BACKLOG_BYTES, "a") == str(3 * 4 * 1024 + 2 * 3).encode()
    claim_all(queue, Lane.bulk, store)
    claim_all(queue, Lane.interactive, store)
    for lane in Lane:
        for name in (keys.running(lane), keys.backlog_blocks(lane), keys.ring(lane), keys.queue(lane, "a")):
            assert not redis.exists(name), name
    assert not redis.exists(keys.BACKLOG_BYTES)


def test_a_token_pushed_on_tasks_by_an_old_producer_is_routed_and_claimed(store, queue, redis):
    """The original contract: a record and an LPUSH on `tasks`, nothing else."""
    redis.set(keys.result("c" * 32), '{"token": "' + "c" * 32 + '", "kind": "randomize", "status": "requested"}', ex=60)
    redis.lpush(keys.TASKS, "c" * 32)
    claim = queue.claim(Lane.interactive)
    assert claim.job.token == "c" * 32 and claim.job.client == "anonymous" and claim.job.lane == Lane.interactive


def test_idle_rounds_are_skipped_in_one_claim(store, redis, settings):
    """Two huge jobs: thousands of rounds pass before either has the deficit to run. The
    claim adds those rounds at once (a loop through them would give up), and the smaller
    job still goes first."""
    queue = JobQueue(redis, "d1", settings.lease_s, QueuePolicy.of(settings))
    huge = bulk(store, "huge", 1, blocks=10_000)[0]
    large = bulk(store, "large", 1, blocks=5_000)[0]
    assert queue.claim(Lane.bulk).job.token == large
    assert queue.claim(Lane.bulk).job.token == huge
