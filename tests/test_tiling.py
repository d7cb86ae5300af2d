"""Tiled binary maps: the plan (pure numpy) and tiled against untiled maps of real images."""

from __future__ import annotations

import math

import numpy as np
import pytest

from binmap_tf.binary_map.backbones.vgg16_hed import _block_geometry
from binmap_tf.binary_map.model import BinaryMapper
from binmap_tf.binary_map.tiling import alignment, margin_for, plan_axis, plan_tiles
from binmap_tf.common.images import load_image

CONV5 = _block_geometry(5)  # stride 16, receptive field 196


def test_alignment_and_margin_follow_the_geometry():
    assert (CONV5.stride, CONV5.receptive_field) == (16, 196)
    assert alignment(16, 1.0) == 16
    assert alignment(32, 3.4) == 160  # 160 * 3.4 = 544 = 17 strides of 32
    assert margin_for(CONV5, 1.0, 16) == 112  # half of 196, rounded up to the stride


@pytest.mark.parametrize("length", [241, 500, 1000, 4000, 8660])
def test_axis_cores_partition_the_image_and_tiles_stay_in_budget(length):
    tiles = plan_axis(length, 1024, 16, 112)
    assert all(tile.stop - tile.start <= 1024 for tile in tiles)
    assert all(tile.start % 16 == 0 for tile in tiles)
    cores = [tile.pixels()[0] for tile in tiles]
    assert cores[0].start == 0 and cores[-1].stop == length
    assert all(a.stop == b.start for a, b in zip(cores, cores[1:]))
    for tile in tiles:  # every core pixel has a full margin of context inside its tile, or the image's end
        core = tile.pixels()[0]
        assert core.start - tile.start >= 112 or tile.start == 0
        assert tile.stop - core.stop >= 112 or tile.stop == length


def test_plan_fits_the_budget_and_keeps_room_for_a_core():
    plan = plan_tiles((3000, 4000), 1024 * 1024, CONV5)
    assert max((r.stop - r.start) * (c.stop - c.start) for r in plan.rows for c in plan.cols) <= 1024 * 1024
    assert plan_tiles((300, 400), 1024 * 1024, CONV5).n_tiles == 1
    smallest = plan_tiles((3000, 4000), 200 * 200, CONV5)  # below one core between two margins
    assert max(r.stop - r.start for r in smallest.rows) == 240 == max(c.stop - c.start for c in smallest.cols)
    with pytest.raises(ValueError, match="max_tile_pixels"):
        plan_axis(3000, 200, 16, 112)
    assert math.isinf(plan.rows[0].core_start) and math.isinf(plan.rows[-1].core_stop)


@pytest.fixture(scope="module")
def hed_mapper():
    return BinaryMapper(edges=True)


@pytest.fixture(scope="module")
def bsds_image(bsds_image_path):
    return load_image(bsds_image_path)


@pytest.mark.parametrize("transpose", [False, True])
def test_tiled_map_equals_the_untiled_map(hed_mapper, bsds_image, transpose):
    # Sides that are multiples of 16 make HED's upsampled side outputs line up too: all exact.
    image = bsds_image[:320, :480]
    image = np.ascontiguousarray(image.transpose(1, 0, 2)) if transpose else image
    whole = hed_mapper(image)
    plan = hed_mapper.tile_plan(image.shape[:2], 352 * 352)
    assert plan.n_tiles == 3
    tiled = hed_mapper.map_tiled(image, plan)
    assert tiled.grid_shape == whole.grid_shape
    assert np.mean(tiled.bits == whole.bits) >= 0.99
    np.testing.assert_allclose(tiled.logits, whole.logits, atol=1e-3)
    np.testing.assert_allclose(tiled.edges, whole.edges, atol=1e-3)


@pytest.mark.slow
def test_tiles_cut_along_both_axes_give_the_untiled_map(hed_mapper, bsds_image):
    """4x6 tiles meeting at corners (about 2 MP of forward passes, so slow on a loaded machine)."""
    image = bsds_image[:320, :480]
    plan = hed_mapper.tile_plan(image.shape[:2], 304 * 304)
    assert (len(plan.rows), len(plan.cols)) == (4, 6)
    whole, tiled = hed_mapper(image), hed_mapper.map_tiled(image, plan)
    np.testing.assert_array_equal(tiled.bits, whole.bits)
    np.testing.assert_allclose(tiled.logits, whole.logits, atol=1e-3)
    np.testing.assert_allclose(tiled.edges, whole.edges, atol=1e-3)


def test_mapper_tiles_images_over_its_budget(bsds_image):
    # 321x481: sides that are not multiples of 16 change only HED's upsampling ratio at the far sides.
    mapper = BinaryMapper(edges=True, max_tile_pixels=352 * 352)
    whole = BinaryMapper(edges=True, max_tile_pixels=None)(bsds_image)
    tiled = mapper(bsds_image)
    assert tiled.grid_shape == whole.grid_shape and tiled.edges.shape == bsds_image.shape[:2]
    assert np.mean(tiled.bits == whole.bits) >= 0.99
    assert np.mean(np.abs(tiled.edges - whole.edges)) < 0.05
    with pytest.raises(ValueError, match="max_tile_pixels"):
        BinaryMapper(max_tile_pixels=0)


# --- host stages: row bands give the whole-image results; large images are bounded ---

@pytest.fixture
def small_bands(monkeypatch):
    """Bands of ~2000 pixels, so a BSDS image is visited in many bands."""
    import binmap_tf.common.bands

    monkeypatch.setattr(binmap_tf.common.bands, "BAND_PIXELS", 2000)


@pytest.fixture(scope="module")
def bsds_superpixels(bsds_image):
    from binmap_tf.segmentation.superpixels import egs

    return egs(bsds_image)


def test_banded_host_stages_equal_whole_image_results(bsds_image, bsds_superpixels, small_bands):
    from skimage.color import rgb2lab
    from skimage.segmentation import mark_boundaries

    from binmap_tf.binary_map.maps import BinaryMap
    from binmap_tf.common.bands import row_bands
    from binmap_tf.segmentation.hierarchy import _region_sums
    from binmap_tf.segmentation.merge import adjacency, bit_votes, boundary_pixel_pairs
    from binmap_tf.segmentation.outputs import boundary_overlay

    assert len(row_bands(*bsds_superpixels.shape)) > 50
    labels = bsds_superpixels
    rng = np.random.default_rng(0)
    binary_map = BinaryMap(bits=rng.integers(0, 2, (21, 31, 8), dtype=np.uint8), logits=np.zeros((21, 31, 8)),
                           geometry=CONV5, scale=1.0, image_shape=labels.shape)
    cells = binary_map.cell_index()
    votes, sizes = bit_votes(labels, binary_map.bits, cells)
    pixel_bits = binary_map.bits.reshape(-1, 8)[cells]
    expected = np.stack([np.bincount(labels.ravel(), pixel_bits[..., j].ravel()) for j in range(8)], axis=1)
    np.testing.assert_array_equal(votes, expected)
    np.testing.assert_array_equal(binary_map.pixel_bits(), pixel_bits)
    first, second = boundary_pixel_pairs(labels)
    flat = labels.ravel()
    pairs = {(int(a), int(b)) for a, b in zip(first, second)}
    assert len(pairs) == len(first) and np.all(flat[first] != flat[second])
    height, width = labels.shape
    index = np.arange(labels.size).reshape(labels.shape)
    whole = set()
    for a, b in [(index[:, :-1], index[:, 1:]), (index[:-1], index[1:]), (index[:-1, :-1], index[1:, 1:]),
                 (index[:-1, 1:], index[1:, :-1])]:
        differ = flat[a.ravel()] != flat[b.ravel()]
        whole |= set(zip(a.ravel()[differ].tolist(), b.ravel()[differ].tolist()))
    assert pairs == whole
    assert len(adjacency(labels)) == len({(min(flat[a], flat[b]), max(flat[a], flat[b])) for a, b in whole})
    n = int(labels.max()) + 1
    lab = rgb2lab(bsds_image).reshape(-1, 3)
    colour = np.stack([np.bincount(flat, lab[:, c], minlength=n) for c in range(3)], axis=1)
    np.testing.assert_allclose(_region_sums(bsds_image, labels, binary_map, n).colour, colour, rtol=1e-9)
    marked = np.clip(np.round(mark_boundaries(bsds_image, labels) * 255), 0, 255).astype(np.uint8)
    np.testing.assert_array_equal(boundary_overlay(bsds_image, labels), marked)


def test_large_images_get_superpixels_at_a_bounded_size_with_a_notice(bsds_image):
    from binmap_tf.segmentation.superpixels import compute_superpixels, working_shape

    assert working_shape((321, 481), 100 * 150) == (100, 149)
    with pytest.warns(UserWarning, match=r"481x321 image are computed at 149x100"):
        labels = compute_superpixels(bsds_image, "egs", max_pixels=100 * 150)
    assert labels.shape == (321, 481) and labels.dtype == np.int32
    assert np.bincount(labels.ravel()).all()  # labels 0 .. n-1, none lost by the upsampling


def test_over_the_hard_limit_segment_refuses_before_any_work():
    from binmap_tf.common.images import MAX_PIXELS, ImageError
    from binmap_tf.segmentation.pipeline import segment

    side = int(np.sqrt(MAX_PIXELS)) + 1
    huge = np.broadcast_to(np.zeros(3, np.uint8), (side, side, 3))  # no memory behind it
    calls = []
    with pytest.raises(ImageError, match=f"more than the limit of {MAX_PIXELS}"):
        segment(huge, lambda image: calls.append(image))
    with pytest.raises(ImageError, match="more than the limit"):
        segment(huge, merge="none")
    assert calls == []


@pytest.mark.slow
def test_a_12_megapixel_photo_segments_in_under_3_gb(tmp_path):
    """The photo of issue 14 (4000x3000, used to abort with bad_alloc at 4.0 GB): the segment CLI in
    a fresh process; the 50 MP figures are in benchmarks/results/large_images.json."""
    from benchmarks.tiling import large

    (row,) = large([(4000, 3000)], ["hierarchy"], tmp_path)  # the default: the learned hierarchy
    assert row["rc"] == 0 and row["n_segments"] > 0
    assert row["peak_rss_mib"] <= 3 * 1024
    assert row["working_shape"] is not None  # 12 MP is segmented at the working resolution
