"""Tiled binary maps: the plan (pure numpy) and tiled against untiled maps of real images."""

from __future__ import annotations

import math

import numpy as np
import pytest

from binmap_tf.backbones.vgg16_hed import _block_geometry
from binmap_tf.images import load_image
from binmap_tf.model import BinaryMapper
from binmap_tf.tiling import alignment, margin_for, plan_axis, plan_tiles

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


def test_plan_fits_the_budget_and_refuses_a_budget_without_room_for_a_core():
    plan = plan_tiles((3000, 4000), 1024 * 1024, CONV5)
    assert max((r.stop - r.start) * (c.stop - c.start) for r in plan.rows for c in plan.cols) <= 1024 * 1024
    assert plan_tiles((300, 400), 1024 * 1024, CONV5).n_tiles == 1
    with pytest.raises(ValueError, match="max_tile_pixels"):
        plan_tiles((3000, 4000), 200 * 200, CONV5)
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
