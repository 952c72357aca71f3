"""How bulk jobs share the workers: window sizes and start-time fair queueing tags, on a
real Redis (backend/jobs/fairshare.py, backend/jobs/lua/tag.lua)."""

import pytest

from backend.core.job import Job, JobStatus, Lane
from backend.jobs import keys
from backend.jobs.clients import ClientRegistry
from backend.jobs.fairshare import IN_FLIGHT_PER_THREAD, MIN_WINDOW, FairShare


@pytest.fixture
def share(redis, settings) -> FairShare:
    return FairShare(redis, threads=lambda: 4, default_weight=settings.default_weight)


def running(redis, **jobs: int) -> None:
    redis.delete(keys.running(Lane.bulk))
    if jobs:
        redis.hset(keys.running(Lane.bulk), mapping=jobs)


def test_a_job_alone_keeps_every_thread_fed(share, redis):
    running(redis, a=1)
    assert share.window("a") == IN_FLIGHT_PER_THREAD * 4


def test_windows_follow_weights_and_split_over_a_clients_jobs(redis, settings):
    ClientRegistry(redis, settings).add("heavy", weight=3)
    running(redis, heavy=1, light=1)
    share = FairShare(redis, threads=lambda: 4, default_weight=1)  # a new one: no cached reading
    assert share.window("heavy") == 3 * share.window("light")
    running(redis, heavy=2, light=1)
    share = FairShare(redis, threads=lambda: 4, default_weight=1)
    assert 2 * share.window("heavy") == 3 * share.window("light")  # heavy's share over its two jobs


def test_a_window_never_drops_below_one_block_waiting(share, redis):
    running(redis, **{f"c{i}": 1 for i in range(100)})
    assert share.window("c0") == MIN_WINDOW


def test_start_tags_interleave_clients_by_weight(share, redis, settings):
    ClientRegistry(redis, settings).add("double", weight=2)
    running(redis, single=1, double=1)
    single = [share.start_tag("single") for _ in range(3)]
    double = [share.start_tag("double") for _ in range(6)]
    assert single == [0.0, 1.0, 2.0]
    assert double == [0.0, 0.5, 1.0, 1.5, 2.0, 2.5]  # twice the turns in the same span


def test_a_late_client_starts_at_the_virtual_time(share, redis):
    busy = [share.start_tag("busy") for _ in range(10)]  # busy has 10 blocks queued: tags 0..9
    share.advance(busy[4])  # blocks up to tag 4 have finished
    assert share.start_tag("late") == 4.0  # ahead of busy's 5..9, with no credit for idle time
    assert share.start_tag("busy") == 10.0


def test_pacing_hands_dask_minus_the_tag_and_moves_virtual_time(share, redis):
    job = Job(token="t", kind="even-sum", status=JobStatus.received, client="a", lane=Lane.bulk)
    pacing = share.pacing(job)
    priorities = [pacing.priority() for _ in range(3)]
    assert priorities == [0.0, -1.0, -2.0]  # Dask runs higher priorities first: earlier tags
    pacing.done(priorities[:2])
    assert float(redis.get(keys.VTIME.format(lane=Lane.bulk))) == 1.0
    assert redis.ttl(keys.VTIME.format(lane=Lane.bulk)) > 0 and redis.ttl(keys.VFINISH.format(lane=Lane.bulk)) > 0
