"""Dask worker preload: ``dask worker --preload compute.preload``.

Compiles the even-sum kernel as the worker starts (or loads it from numba's cache), so
that no job pays the compile, seconds long, on its first block.

A worker of the bulk pool (it offers the ``bulk`` resource) also lowers its CPU priority
(``lower_priority``): on a machine whose cores are busy with blocks, the interactive
worker, the scheduler, the dispatchers and the API still get a core the moment they need
one, so an image job waits for no block. Alone, bulk workers use every idle cycle all the
same.
"""

import os

from compute.defaults import BULK_RESOURCE
from compute.even_sum import warm_up

# A nice value of 10 gives a process about a tenth of a core's share against one at 0.
BULK_NICE = 10


def lower_priority() -> None:
    """Set this process's nice value to BULK_NICE, on every thread it has.

    Linux keeps a nice value per thread, and ``os.nice`` changes the caller's alone: the
    threads a worker started before its preload ran (2 of a bulk worker's 4-5) stayed at 0.
    Threads started later inherit their creator's value."""
    try:
        threads = [int(thread) for thread in os.listdir("/proc/self/task")]
    except OSError:  # not Linux: there a nice value is the process's
        os.nice(BULK_NICE)
        return
    for thread in threads:
        os.setpriority(os.PRIO_PROCESS, thread, BULK_NICE)


def dask_setup(worker) -> None:
    if BULK_RESOURCE in worker.state.total_resources:
        lower_priority()
    warm_up()
