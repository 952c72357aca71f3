"""The C extension of the even-sum kernel (compute/_simd.c); everything else is in pyproject.toml.

Optional: where it cannot be built (no C compiler) the install goes on and the numba
kernel runs. No -march: the SIMD paths are chosen at run time (see the C file)."""

from setuptools import Extension, setup

setup(ext_modules=[Extension("compute._simd", ["compute/_simd.c"], extra_compile_args=["-O3"], optional=True)])
