"""Shared fixtures: small, fast variants of the bundled scenarios."""

import pytest

# A small femur section (radius 200 µm instead of 560 µm): the same rules on ~1/8 of the voxels,
# so engine and CLI tests stay fast.
SMALL = ["geometry.marrow_radius_um=200", "geometry.cortex_thickness_um=60", "run.days=0.5"]


@pytest.fixture
def small_overrides():
    return list(SMALL)
