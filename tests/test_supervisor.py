"""The supervisor and the lifeline on small real processes; `up` as a whole is in test_embedded."""

import signal
import subprocess
import sys

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from backend.run.supervisor import FIRST_BACKOFF_S, GaveUp, Supervisor
from backend.telemetry.metrics import RedisMetrics


@pytest.fixture
def supervisor(settings, redis_url):
    supervisor = Supervisor(settings.model_copy(update={"restart_max_crashes": 3}), redis_url)
    yield supervisor
    supervisor.stop(*{child.name for child in supervisor.children})
    supervisor.close()


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_a_crashing_child_is_restarted_and_counted_then_given_up_on(supervisor, redis, caplog):
    supervisor.start("dispatcher", [sys.executable, "-c", "raise SystemExit(7)"])
    with pytest.raises(GaveUp, match=r"dispatcher crashed 3 times within 60 s \(last: exited with code 7\)"):
        supervisor.watch(timeout_s=30)
    # One line per crash, the backoff doubling; one line per restart.
    delays = [r.getMessage().rsplit(" in ", 1)[1] for r in caplog.records if "restarting it in" in r.getMessage()]
    assert delays == [f"{FIRST_BACKOFF_S:.1f} s", f"{FIRST_BACKOFF_S * 2:.1f} s"]
    assert sum("restarted dispatcher as pid" in r.getMessage() for r in caplog.records) == 2
    registry = CollectorRegistry(auto_describe=False)
    registry.register(RedisMetrics(redis))
    assert 'spacetime_child_restarts_total{child="dispatcher"} 2.0' in generate_latest(registry).decode()


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_a_child_that_runs_is_left_alone_and_stopped_on_request(supervisor):
    child = supervisor.start("api", [sys.executable, "-c", "import time; time.sleep(60)"])
    with pytest.raises(TimeoutError):
        supervisor.watch(timeout_s=1)
    assert child.process.poll() is None and not child.crashes
    supervisor.stop("api")
    assert child.process.returncode == -signal.SIGTERM


@pytest.mark.timeout(30)
def test_lifeline_ends_a_child_whose_parent_is_already_gone():
    """The parent died between fork and prctl: the child ends as the parent-death signal would end it."""
    not_the_parent = "1"
    done = subprocess.run(
        [sys.executable, "-m", "backend.run.lifeline", not_the_parent, sys.executable, "-c", "print('ran')"],
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert done.returncode == -signal.SIGTERM and "ran" not in done.stdout
