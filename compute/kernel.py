"""The even-sum kernel: ``scan`` on the fastest path this CPU runs, chosen at import.

Paths, fastest first: ``avx512vnni`` (AVX-512 with VBMI, VBMI2 and VNNI), ``avx512``, ``avx2``
(compute/_simd.c, a C extension) and ``portable``, the numba kernel
(compute/numba_kernel.py), for every other CPU (aarch64 included) and for a build without
a C compiler. The choice is made here at run time from the CPU and OS, never when the
wheel or image is built, so one build runs everywhere. Every path takes the same
arguments and fills the same state as the numba kernel: see ``compute.numba_kernel.scan``.

``SPACETIME_KERNEL=avx512vnni|avx512|avx2|portable|auto`` forces a path (tests,
benchmarks); a path this CPU lacks is an error at import, not an illegal instruction later.
"""

import os
from collections.abc import Callable
from types import ModuleType

from compute import numba_kernel
from compute.numba_kernel import (
    COUNT,
    ERROR_AT,
    EVEN_COUNT,
    LONG_CAPACITY,
    LONG_COUNT,
    LOW_BITS,
    NO_ERROR,
    STATE_SIZE,
    SUM_HIGH,
    SUM_LOW,
    next_space,
)

_simd: ModuleType | None
try:
    from compute import _simd
except ImportError:  # installed without a C compiler: the portable path only
    _simd = None

__all__ = [
    "COUNT",
    "ERROR_AT",
    "EVEN_COUNT",
    "LONG_CAPACITY",
    "LONG_COUNT",
    "LOW_BITS",
    "NO_ERROR",
    "PATH",
    "PATHS",
    "STATE_SIZE",
    "SUM_HIGH",
    "SUM_LOW",
    "available",
    "next_space",
    "scan",
    "scan_on",
]

PORTABLE = "portable"
PATHS = ("avx512vnni", "avx512", "avx2", PORTABLE)  # fastest first
SETTING = "SPACETIME_KERNEL"


def available() -> tuple[str, ...]:
    """The paths this CPU, OS and build run, fastest first (``portable`` always)."""
    simd = _simd.supported() if _simd is not None else ()
    return (*(path for path in PATHS if path in simd), PORTABLE)


def scan_on(path: str) -> Callable:
    """The scan of ``path``, one of ``available()``."""
    if path not in available():
        raise ValueError(f"no kernel path {path!r} here: this CPU and build run {', '.join(available())}")
    return numba_kernel.scan if path == PORTABLE else getattr(_simd, f"scan_{path}")


def choose(setting: str | None) -> str:
    """The path for a ``SPACETIME_KERNEL`` value: ``auto`` (or unset) is the fastest available."""
    wanted = (setting or "auto").strip().lower()
    if wanted == "auto":
        return available()[0]
    if wanted not in PATHS:
        raise ValueError(f"{SETTING}={setting!r}: expected auto or one of {', '.join(PATHS)}")
    if wanted not in available():
        raise RuntimeError(f"{SETTING}={wanted}: this CPU and build run only {', '.join(available())}")
    return wanted


PATH = choose(os.environ.get(SETTING))
scan = scan_on(PATH)
