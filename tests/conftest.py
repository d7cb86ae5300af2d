"""Shared fixtures: quiet TensorFlow, a real BSDS image, small random hashing parameters."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from binmap_tf.binary_map.hashing import ITQParams  # noqa: E402
from binmap_tf.common.paths import data_root  # noqa: E402

BSDS_TEST_IMAGE = "bsds500/images/test/100007.jpg"


def pytest_report_header(config) -> str:
    """Say at the top of every run where the shared benchmark data is, or that it is missing."""
    root = data_root()
    found = [name for name in ("bsds500", "msrc_v2") if (root / name).is_dir()]
    if len(found) == 2:
        return f"shared data: {root} (bsds500, msrc_v2)"
    return (f"shared data: MISSING under {root} (found: {found or 'nothing'}): tests that read BSDS500 or MSRC "
            "images will fail naming the path; set BINMAP_TF_DATA to the data root (see README)")


@pytest.fixture(scope="session")
def bsds_image_path():
    """Path of one real BSDS500 test image (321x481) from the shared data."""
    path = data_root() / BSDS_TEST_IMAGE
    if not path.exists():
        pytest.fail(f"shared data missing: {path}; set BINMAP_TF_DATA to the data root")
    return path


def random_itq(dim: int, bits: int, seed: int = 0) -> ITQParams:
    """ITQ-shaped parameters with a random orthonormal projection (for tests with random weights)."""
    rng = np.random.default_rng(seed)
    pcs, _ = np.linalg.qr(rng.standard_normal((dim, bits)))
    rotation, _ = np.linalg.qr(rng.standard_normal((bits, bits)))
    return ITQParams(mean=rng.standard_normal(dim).astype(np.float32), pcs=pcs, rotation=rotation)
