"""Real parts for every test: a redis-server, a Dask cluster, dispatchers, a live uvicorn.

The redis-server and the Dask cluster live for the session (starting them per test
would dominate the suite's time); Redis is flushed before each test, so tests never
see each other's jobs.
"""

import threading
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
import uvicorn
from distributed import Client, LocalCluster
from redis import Redis

from backend.api import create_app
from backend.dispatcher import Dispatcher
from backend.embedded import redis_server
from backend.settings import Settings
from tests.helpers import free_port

FIXTURES = Path(__file__).parent / "fixtures"


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
def settings(redis, redis_url, cluster, tmp_path) -> Settings:
    return Settings(
        redis_url=redis_url,
        dask_scheduler_address=cluster.scheduler_address,
        data_dir=tmp_path,
        lease_s=1.0,
        shutdown_grace_s=10.0,
        dispatcher_concurrency=2,
        image_report_every=1,
        even_sum_block_bytes=1024,
    )


@pytest.fixture
def dispatcher(settings, dask_client):
    dispatcher = Dispatcher(settings, dask_client)
    dispatcher.start()
    yield dispatcher
    dispatcher.stop()


@contextmanager
def live_api(settings: Settings):
    """A live uvicorn serving the API on a free loopback port; yields its base URL."""
    config = uvicorn.Config(create_app(settings), host="127.0.0.1", port=free_port(), log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{config.port}"
    finally:
        server.should_exit = True
        thread.join(10)


@contextmanager
def live_system(settings: Settings, client: Client):
    """A dispatcher on ``client``'s cluster behind a live API; yields the API's base URL."""
    dispatcher = Dispatcher(settings, client)
    dispatcher.start()
    try:
        with live_api(settings) as url:
            yield url
    finally:
        dispatcher.stop()


@pytest.fixture
def api_url(settings):
    with live_api(settings) as url:
        yield url


@pytest.fixture
def cat_png() -> bytes:
    return (FIXTURES / "cat.png").read_bytes()
