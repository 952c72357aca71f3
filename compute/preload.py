"""Dask worker preload: ``dask worker --preload compute.preload``.

Compiles the even-sum kernel as the worker starts (or loads it from numba's cache), so
that no job pays the compile, seconds long, on its first block.

A worker of the bulk pool (it offers the ``bulk`` resource) also lowers its CPU priority:
on a machine whose cores are busy with blocks, the interactive worker, the scheduler,
the dispatchers and the API still get a core the moment they need one, so an image job
waits for no block. Alone, bulk workers use every idle cycle all the same.
"""

import os

from compute.defaults import BULK_RESOURCE
from compute.even_sum import warm_up

# A nice value of 10 gives a process about a tenth of a core's share against one at 0.
BULK_NICE = 10


def dask_setup(worker) -> None:
    if BULK_RESOURCE in worker.state.total_resources:
        os.nice(BULK_NICE)
    warm_up()
