"""Shared set-up for the benchmarks: numba's thread count.

Run them with ``make bench`` (``pytest benchmarks/ --benchmark-only
--benchmark-group-by=group``). In ``test_bench_diffusion.py`` every group holds one kernel at
one size and dtype, numba beside its numpy twin, so the speed-up reads off one table; kernels
are called once before timing, so JIT compilation is never measured. numba runs on
``MARROW_BENCH_THREADS`` threads (default 1: numba's workers spin, and on a shared 2-core
machine two threads can be far slower than one; see docs/performance.md).
"""

from __future__ import annotations

import os

import numba
import pytest


@pytest.fixture(scope="session", autouse=True)
def numba_threads():
    """Pin numba's thread count for the whole benchmark session."""
    threads = int(os.environ.get("MARROW_BENCH_THREADS", "1"))
    threads = max(1, min(threads, numba.config.NUMBA_NUM_THREADS))
    previous = numba.get_num_threads()
    numba.set_num_threads(threads)
    yield threads
    numba.set_num_threads(previous)
