"""Dask worker preload: ``dask worker --preload compute.preload``.

Compiles the even-sum kernel as the worker starts (or loads it from numba's cache), so
that no job pays the compile, seconds long, on its first block.
"""

from compute.even_sum import warm_up


def dask_setup(worker) -> None:
    warm_up()
