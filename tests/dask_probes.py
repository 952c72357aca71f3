"""Watching the Dask scheduler from a test: which tasks of a job it holds."""

from collections.abc import Iterator
from contextlib import contextmanager

import cloudpickle
from distributed import Scheduler
from distributed.diagnostics.plugin import SchedulerPlugin


class SchedulerTasks(SchedulerPlugin):
    """What a scheduler in this process held for the tasks whose keys start with ``prefix``:
    each task's spec as the client sent it (function and arguments, serialized) and the
    size of its result as its worker reported it."""

    def __init__(self, scheduler: Scheduler, prefix: str):
        self.name = f"tasks-{prefix}"
        self.scheduler = scheduler
        self.prefix = prefix
        self.specs: dict[str, bytes] = {}
        self.result_bytes: dict[str, int] = {}

    def transition(self, key, start, finish, *args, **kwargs) -> None:
        task = self.scheduler.tasks.get(key)
        if task is None or not str(key).startswith(self.prefix):
            return
        if finish == "processing":
            self.specs[str(key)] = cloudpickle.dumps(task.run_spec)
        elif finish == "memory":
            self.result_bytes[str(key)] = task.nbytes


@contextmanager
def scheduler_tasks(scheduler: Scheduler, prefix: str) -> Iterator[SchedulerTasks]:
    """Record what ``scheduler`` holds for the tasks of ``prefix`` while the block runs."""
    plugin = SchedulerTasks(scheduler, prefix)
    scheduler.add_plugin(plugin)
    try:
        yield plugin
    finally:
        scheduler.remove_plugin(plugin.name)
