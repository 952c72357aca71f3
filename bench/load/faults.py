"""The faults of the second load run, done to the processes of a `spacetime up`:

- a random Dask worker process is SIGKILLed every ``worker_every_s`` (its nanny, in
  `up`'s process, starts a new one);
- one dispatcher process is SIGKILLed once (`up`'s supervisor starts a new one, and the
  jobs it held come back to their queues when its lease lapses).

`up`'s children are told apart by their command lines: the workers are the nannies'
multiprocessing children, the dispatchers run ``backend.run.cli dispatcher``.
"""

import contextlib
import os
import random
import signal
import threading
import time

import psutil


def worker_pids(up_pid: int) -> list[int]:
    return [pid for pid, argv in _children(up_pid) if "spawn_main" in " ".join(argv)]


def dispatcher_pids(up_pid: int) -> list[int]:
    return [pid for pid, argv in _children(up_pid) if argv[-2:] == ["backend.run.cli", "dispatcher"]]


def _children(up_pid: int) -> list[tuple[int, list[str]]]:
    """(pid, command line) of each child of `up`."""
    found = []
    for child in psutil.Process(up_pid).children():
        with contextlib.suppress(psutil.NoSuchProcess):  # it ended while we looked: not a target
            found.append((child.pid, child.cmdline()))
    return found


class Faults:
    """Kills on a schedule from ``start()`` until ``until_s`` later; ``log`` says what was killed when."""

    def __init__(
        self,
        up_pid: int,
        until_s: float,
        worker_every_s: float = 20.0,
        first_worker_s: float = 10.0,
        dispatcher_at_s: float | None = None,
        seed: int = 20260101,
    ):
        self.up_pid = up_pid
        self.rng = random.Random(seed)
        # [(seconds from the start, what to kill)], in time order
        workers = [(t, "worker") for t in _range(first_worker_s, until_s, worker_every_s)]
        # The dispatcher two thirds in (40 s of 60): between two worker kills, with load on both sides.
        dispatcher = (until_s * 2 / 3 if dispatcher_at_s is None else dispatcher_at_s, "dispatcher")
        self.schedule = sorted([*workers, dispatcher])
        self.log: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="faults", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        start = time.monotonic()
        for at_s, what in self.schedule:
            if self._stop.wait(max(0.0, start + at_s - time.monotonic())):
                return
            pids = worker_pids(self.up_pid) if what == "worker" else dispatcher_pids(self.up_pid)
            if not pids:  # every one is down and restarting: nothing to kill this time
                self.log.append(f"{time.monotonic() - start:5.1f} s: no {what} process to kill")
                continue
            pid = self.rng.choice(pids)
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                continue
            self.log.append(f"{time.monotonic() - start:5.1f} s: SIGKILL {what} pid {pid} (of {len(pids)})")


def _range(first: float, until: float, step: float) -> list[float]:
    times = []
    while first < until:
        times.append(first)
        first += step
    return times
