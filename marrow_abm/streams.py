"""Named, independent random streams from one root seed.

Every stochastic process (geometry, placement, later division, death, movement ...) draws from its
own generator, keyed by name. Adding a stream, or a module drawing more numbers, never shifts the
draws of another stream, so replicate *i* of two scenarios differs only where the scenarios differ
(common random numbers; idea from Starsim). Nothing depends on the worker count or the order in
which streams are first used.
"""

from __future__ import annotations

import zlib

import numpy as np


class Streams:
    """Independent ``numpy.random.Generator`` objects keyed by name.

    Args:
        seed: root seed (non-negative int) of the run.
        replicate: replicate index; replicate streams are independent of each other.
    """

    def __init__(self, seed: int, replicate: int = 0):
        if int(seed) < 0 or int(replicate) < 0:
            raise ValueError("seed and replicate must be non-negative integers")
        self.seed = int(seed)
        self.replicate = int(replicate)
        self._cache: dict[str, np.random.Generator] = {}

    def __getitem__(self, name: str) -> np.random.Generator:
        gen = self._cache.get(name)
        if gen is None:
            # crc32 of the name is stable across processes and Python versions (hash() is not).
            key = zlib.crc32(name.encode("utf-8"))
            seq = np.random.SeedSequence(entropy=self.seed, spawn_key=(self.replicate, key))
            gen = self._cache[name] = np.random.default_rng(seq)
        return gen

    def names(self) -> tuple[str, ...]:
        """Names of the streams used so far (recorded in the manifest)."""
        return tuple(sorted(self._cache))
