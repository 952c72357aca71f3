"""`spacetime up`'s supervisor: it keeps every child process running, or stops them all.

Each child (redis-server, each dispatcher, the API) is watched from `up`'s main thread.
A child that exits without being asked to has crashed: the supervisor logs one line,
restarts it after a backoff that doubles with each recent crash (FIRST_BACKOFF_S up to
MAX_BACKOFF_S), logs one line again, and counts the restart in /metrics
(``spacetime_child_restarts_total{child=...}``). When one child crashes
``restart_max_crashes`` times within ``restart_window_s``, another restart will not help
(a taken port, a bad setting): ``watch`` raises GaveUp and `up` stops everything.

The Dask workers are not children of the supervisor: LocalCluster gives each worker a
nanny (in `up`'s process) that restarts it when it dies.

Children never outlive `up`. Each starts through ``backend.run.lifeline`` (a parent-death
signal, set without ``preexec_fn``), so even a SIGKILLed `up` takes them down. Each gets
a process group of its own, so a Ctrl-C in the terminal reaches `up` alone and `up` stops
the children in its own order: the API and the dispatchers first, redis-server last,
because dispatchers still need Redis to hand back their jobs.
"""

import logging
import math
import os
import signal
import subprocess
import sys
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field

from redis import Redis, RedisError
from redis.backoff import NoBackoff
from redis.retry import Retry

from backend.core.settings import Settings
from backend.telemetry.metrics import count_restarts

log = logging.getLogger(__name__)

# The first restart comes quickly (a one-off crash costs half a second), then each
# further crash within the window doubles the wait, so a crash loop does not spin.
FIRST_BACKOFF_S = 0.5
MAX_BACKOFF_S = 30.0
# How often the children are checked: a crash is noticed within this.
POLL_S = 0.2
# Stopping takes at most the dispatchers' shutdown grace plus this: their hand-back of
# unfinished jobs, the cluster's close and redis-server's last AOF write.
STOP_MARGIN_S = 10.0


class GaveUp(Exception):
    """A child crashed too often: restarting it again would not help."""


@dataclass
class Child:
    """One supervised process: how to start it, the one running now, its recent crashes."""

    name: str  # what it is, the label of its restart counter: "redis-server", "dispatcher", "api"
    argv: list[str]
    env: dict[str, str] | None
    process: subprocess.Popen
    crashes: deque[float] = field(default_factory=deque)  # monotonic times of crashes in the window
    restart_at: float | None = None  # set while a crashed child waits out its backoff


class Supervisor:
    def __init__(self, settings: Settings, redis_url: str):
        self.settings = settings
        # Restarts are counted in Redis, which may be the child that just crashed: fail
        # fast (no retries, short timeouts) and count on a later round.
        self.redis = Redis.from_url(redis_url, socket_timeout=1, socket_connect_timeout=1, retry=Retry(NoBackoff(), 0))
        self.children: list[Child] = []
        self._uncounted: Counter[str] = Counter()  # {child name: restarts not yet in Redis}
        self._stop_deadline: float | None = None

    def start(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> Child:
        child = Child(name, argv, env, launch(argv, env))
        self.children.append(child)
        log.info("started %s as pid %d", name, child.process.pid)
        return child

    def watch(self, until: Callable[[], bool] = lambda: False, timeout_s: float = math.inf) -> None:
        """Keep the children running until ``until()`` is true.

        TimeoutError after ``timeout_s``; GaveUp when a child crash-loops. Without
        ``until`` it returns only by an exception: GaveUp, or `up`'s Stop on a signal.
        """
        deadline = time.monotonic() + timeout_s
        while not until():
            self.poll()
            if time.monotonic() > deadline:
                raise TimeoutError(f"not ready after {timeout_s:.0f} s")
            time.sleep(POLL_S)

    def poll(self) -> None:
        """One round: notice crashes, restart children whose backoff is over, count restarts."""
        now = time.monotonic()
        for child in self.children:
            if child.restart_at is None:
                if child.process.poll() is not None:
                    self._crashed(child, now)
            elif now >= child.restart_at:
                self._restart(child)
        self._count_restarts()

    def _crashed(self, child: Child, now: float) -> None:
        window = self.settings.restart_window_s
        child.crashes.append(now)
        while child.crashes[0] < now - window:
            child.crashes.popleft()
        crashes = len(child.crashes)
        how = exit_description(child.process.returncode)
        if crashes >= self.settings.restart_max_crashes:
            raise GaveUp(f"{child.name} crashed {crashes} times within {window:.0f} s (last: {how}); giving up")
        delay = min(FIRST_BACKOFF_S * 2 ** (crashes - 1), MAX_BACKOFF_S)
        log.error("%s (pid %d) %s; restarting it in %.1f s", child.name, child.process.pid, how, delay)
        child.restart_at = now + delay

    def _restart(self, child: Child) -> None:
        child.process = launch(child.argv, child.env)
        child.restart_at = None
        self._uncounted[child.name] += 1
        log.warning("restarted %s as pid %d", child.name, child.process.pid)

    def _count_restarts(self) -> None:
        if not self._uncounted:
            return
        try:
            count_restarts(self.redis, self._uncounted)
        except RedisError:
            return  # Redis is down or still loading its AOF: the next round tries again
        self._uncounted.clear()

    def stop(self, *names: str) -> None:
        """Stop the children of these names: SIGTERM, then SIGKILL at the stop deadline.

        The deadline is fixed by the first call (``shutdown_grace_s`` + STOP_MARGIN_S), so
        the whole of `up`'s shutdown, every call included, fits in it.
        """
        chosen = [c for c in self.children if c.name in names]
        for child in chosen:
            child.restart_at = None  # nobody restarts a child we are stopping
            if child.process.poll() is None:
                child.process.send_signal(signal.SIGTERM)
        for child in chosen:
            try:
                child.process.wait(self.seconds_left())
            except subprocess.TimeoutExpired:
                log.warning("%s (pid %d) did not stop in time; killing it", child.name, child.process.pid)
                child.process.kill()
                child.process.wait()

    def seconds_left(self) -> float:
        """Until the stop deadline, which the first call fixes."""
        if self._stop_deadline is None:
            self._stop_deadline = time.monotonic() + self.settings.shutdown_grace_s + STOP_MARGIN_S
        return max(0.0, self._stop_deadline - time.monotonic())

    def close(self) -> None:
        self.redis.close()


def launch(argv: list[str], env: dict[str, str] | None = None) -> subprocess.Popen:
    """Start ``argv`` as a child that dies with this process (see backend.run.lifeline).

    Its own process group keeps terminal signals away from it; stdin is closed, since a
    process outside the terminal's foreground group that read it would be stopped.
    """
    return subprocess.Popen(
        [sys.executable, "-m", "backend.run.lifeline", str(os.getpid()), *argv],
        env=env,
        stdin=subprocess.DEVNULL,
        process_group=0,
    )


def exit_description(returncode: int) -> str:
    """How a child ended, for the log: "exited with code 1", "was killed by SIGKILL"."""
    if returncode >= 0:
        return f"exited with code {returncode}"
    try:
        return f"was killed by {signal.Signals(-returncode).name}"
    except ValueError:  # a real-time signal has no name
        return f"was killed by signal {-returncode}"
