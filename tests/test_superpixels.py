"""EGS and SLIC superpixels: label conventions, input types, option checks."""

from __future__ import annotations

import numpy as np
import pytest

from binmap_tf.common.images import load_image
from binmap_tf.segmentation.superpixels import EGS_MIN_SIZE, compute_superpixels, egs, slic, superpixel_params


@pytest.fixture(scope="module")
def crop(bsds_image_path):
    """A 96x144 corner of a real BSDS500 image (small, so each test stays fast)."""
    return load_image(bsds_image_path)[:96, :144]


def assert_contiguous_labels(labels: np.ndarray, shape: tuple[int, int]) -> int:
    """Labels are int32 of ``shape`` and use every value in ``0 .. n-1``; return n."""
    assert labels.dtype == np.int32 and labels.shape == shape
    assert labels.min() == 0
    assert np.bincount(labels.ravel()).all()
    return int(labels.max()) + 1


@pytest.mark.parametrize("method", ["egs", "slic"])
def test_labels_are_contiguous_from_zero(crop, method):
    n = assert_contiguous_labels(compute_superpixels(crop, method), crop.shape[:2])
    assert 1 < n < crop.shape[0] * crop.shape[1] // EGS_MIN_SIZE


def test_egs_separates_two_flat_regions():
    image = np.zeros((20, 30, 3), np.uint8)
    image[:, 15:] = 255
    labels = egs(image, sigma=0)  # no smoothing: a blurred step would leave one-column specks
    assert assert_contiguous_labels(labels, (20, 30)) == 2
    assert len(np.unique(labels[:, :15])) == 1 and labels[0, 0] != labels[0, -1]


def test_larger_k_gives_fewer_egs_superpixels(crop):
    assert egs(crop, scale=1000).max() < egs(crop, scale=100).max()


def test_slic_start_label_and_segment_count(crop):
    labels = slic(crop, n_segments=20, start_label=1)
    assert labels.min() == 1
    assert 5 <= labels.max() <= 30


@pytest.mark.parametrize("method", ["egs", "slic"])
def test_grey_rgba_and_float_inputs(crop, method):
    rgb = compute_superpixels(crop, method)
    rgba = np.concatenate([crop, np.full(crop.shape[:2] + (1,), 7, np.uint8)], axis=-1)
    np.testing.assert_array_equal(compute_superpixels(rgba, method), rgb)  # alpha is ignored
    np.testing.assert_array_equal(compute_superpixels(crop / 255.0, method), rgb)
    grey = crop.mean(axis=-1).astype(np.uint8)
    assert_contiguous_labels(compute_superpixels(grey, method), grey.shape)
    np.testing.assert_array_equal(compute_superpixels(grey[..., None], method), compute_superpixels(grey, method))


def test_options_are_checked():
    assert superpixel_params("egs") == {"scale": 100.0, "sigma": 1.0, "min_size": EGS_MIN_SIZE}
    assert superpixel_params("slic", n_segments=50)["n_segments"] == 50
    with pytest.raises(ValueError, match="n_segments"):
        superpixel_params("egs", n_segments=50)
    with pytest.raises(ValueError, match="start_label"):
        compute_superpixels(np.zeros((8, 8)), "slic", start_label=1)
    with pytest.raises(ValueError, match="choose one of"):
        compute_superpixels(np.zeros((8, 8)), "quickshift")
    with pytest.raises(ValueError, match="need an edge map"):
        compute_superpixels(np.zeros((8, 8)), "watershed")
    with pytest.raises(ValueError, match="scale > 0"):
        egs(np.zeros((8, 8)), scale=0)
    with pytest.raises(ValueError, match="expected an image"):
        egs(np.zeros((2, 8, 8, 3)))


def test_watershed_basins_meet_on_the_edge_ridge():
    # A vertical ridge of edge strength 1 at column 5 between two flat basins, each with noise below h.
    edges = np.full((6, 11), 0.1)
    edges[:, 5] = 1.0
    edges[2, 2] = 0.12
    labels = compute_superpixels(np.zeros((6, 11, 3), np.uint8), "watershed", edges=edges, h=0.05)
    assert_contiguous_labels(labels, (6, 11))
    assert len(np.unique(labels[:, :5])) == 1 and len(np.unique(labels[:, 6:])) == 1
    assert labels[0, 0] != labels[0, 10]


def test_watershed_of_a_large_image_runs_on_the_shrunk_edge_map():
    """Over the pixel budget the edge map is area-averaged with the image (the watershed needs ~120 bytes
    a pixel); the two basins are still split on the ridge, at full size."""
    edges = np.full((40, 60), 0.1)
    edges[:, 28:32] = 1.0
    with pytest.warns(UserWarning, match="computed at 30x20"):
        labels = compute_superpixels(np.zeros((40, 60, 3), np.uint8), "watershed", max_pixels=600, edges=edges)
    assert_contiguous_labels(labels, (40, 60))
    assert len(np.unique(labels[:, :28])) == 1 and len(np.unique(labels[:, 32:])) == 1
    assert labels[0, 0] != labels[0, 59]
