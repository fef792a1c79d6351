"""Numba kernels, each beside its plain-numpy ``_ref`` twin (the oracle for tests and benchmarks)."""
