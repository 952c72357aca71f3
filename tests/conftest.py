"""Real parts for every test: a redis-server, a Dask cluster, dispatchers, a live uvicorn.

The redis-server and the Dask cluster live for the session (starting them per test
would dominate the suite's time); Redis is flushed before each test, so tests never
see each other's jobs. Settings, APIs and dispatchers come from factories, in the way of
arq's tests: a test that needs other settings asks ``make_settings(**overrides)`` and
starts its own API or dispatcher with them (``start_api``, ``start_dispatcher``), never
changing the settings of one that is running.
"""

from collections.abc import Callable, Iterator
from contextlib import ExitStack

import pytest
from distributed import Client, LocalCluster
from redis import Redis

from backend.core.settings import Settings
from backend.dispatch.dispatcher import Dispatcher
from backend.run.up import redis_server
from tests.paths import FIXTURES
from tests.servers import free_port, live_api


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory):
    url = f"redis://127.0.0.1:{free_port()}/0"
    with redis_server(url, tmp_path_factory.mktemp("redis")):
        yield url


@pytest.fixture
def redis(redis_url):
    client = Redis.from_url(redis_url)
    client.flushall()
    yield client
    client.close()


@pytest.fixture(scope="session")
def cluster():
    # In-process workers start in a second; tcp so dispatcher subprocesses can connect.
    with LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=False,
        protocol="tcp://",
        host="127.0.0.1",
        dashboard_address=":0",
    ) as cluster:
        yield cluster


@pytest.fixture(scope="session")
def process_client():
    """ONE worker process with a 1 GiB memory limit, as in production, for the fuzz tests.

    A decoder that crashes or blows its memory shows as a new worker pid, not a dead test
    process. And the worker formats its tracebacks in its own process: CPython 3.11's
    traceback module calls ast.parse, which is not thread-safe there (gh-106905), and
    Hypothesis calls it too while it draws.
    """
    with (
        LocalCluster(
            n_workers=1,
            threads_per_worker=2,
            processes=True,
            memory_limit="1GiB",
            protocol="tcp://",
            host="127.0.0.1",
            dashboard_address=":0",
        ) as cluster,
        Client(cluster) as client,
    ):
        yield client


@pytest.fixture(scope="session")
def dask_client(cluster):
    with Client(cluster) as client:
        yield client


@pytest.fixture
def make_settings(redis, redis_url, cluster, tmp_path) -> Callable[..., Settings]:
    """Settings for this test's Redis, cluster and folders, with ``overrides``."""

    def make(**overrides) -> Settings:
        defaults = dict(
            redis_url=redis_url,
            dask_scheduler_address=cluster.scheduler_address,
            data_dir=tmp_path,
            lease_s=1.0,
            shutdown_grace_s=10.0,
            interactive_concurrency=2,
            bulk_concurrency=2,
            even_sum_block_bytes=1024,
            # A retry within a moment of a 429 is held for the moment (backend/api/cooldowns.py):
            # shorter here, so that tests that refuse in a loop do not wait a second a refusal.
            refusal_cooldown_s=0.2,
        )
        return Settings(**{**defaults, **overrides})

    return make


@pytest.fixture
def settings(make_settings) -> Settings:
    return make_settings()


@pytest.fixture
def start_api() -> Iterator[Callable[[Settings], str]]:
    """Start a live API with these settings; returns its base URL (stopped after the test)."""
    with ExitStack() as stack:
        yield lambda settings: stack.enter_context(live_api(settings))


@pytest.fixture
def start_dispatcher(dask_client) -> Iterator[Callable[[Settings], Dispatcher]]:
    """Start a dispatcher with these settings on the session's cluster (stopped after the test)."""
    with ExitStack() as stack:

        def start(settings: Settings) -> Dispatcher:
            dispatcher = Dispatcher(settings, dask_client)
            dispatcher.start()
            stack.callback(dispatcher.stop)
            return dispatcher

        yield start


@pytest.fixture
def api_url(settings, start_api) -> str:
    return start_api(settings)


@pytest.fixture
def dispatcher(settings, start_dispatcher) -> Dispatcher:
    return start_dispatcher(settings)


@pytest.fixture
def cat_png() -> bytes:
    return (FIXTURES / "cat.png").read_bytes()
