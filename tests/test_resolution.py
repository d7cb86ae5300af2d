"""The working resolution: large images segmented at working size, labels back at full size."""

from __future__ import annotations

import numpy as np
import pytest

from binmap_tf.segmentation.resolution import (
    DEFAULT_WORKING_PIXELS,
    boundary_band,
    refine_labels,
    resize_image,
    upsample_labels,
    working_shape,
)


def test_working_shape_keeps_the_aspect_at_about_the_working_pixels():
    assert working_shape((321, 481)) == (321, 481)  # BSDS500: segmented as it is
    assert working_shape((642, 962)) == (321, 481) == working_shape((2568, 3848))  # its upscaled copies
    assert working_shape((213, 320)) == (321, 482)  # MSRC-v2: brought up
    height, width = working_shape((3000, 4000))
    assert abs(height * width - DEFAULT_WORKING_PIXELS) < 0.01 * DEFAULT_WORKING_PIXELS
    assert abs(width / height - 4 / 3) < 0.01
    assert working_shape((3000, 4000), None) == (3000, 4000)
    with pytest.raises(ValueError, match="at least"):
        working_shape((3000, 4000), 100)


def test_downsampling_keeps_every_label():
    """Labels of an image brought up to the working size go back by the pixel centres, and a segment
    thinner than a pixel of the image takes the pixel that holds most of it."""
    labels = np.zeros((30, 45), np.int32)
    labels[:, 30:] = 1
    labels[10, 10] = 2  # one working pixel: no centre of the 20x30 image falls on it
    labels[:, 44] = 3  # one column at the border
    small = refine_labels(labels, np.zeros((20, 30, 3), np.uint8))
    assert small.shape == (20, 30) and set(np.unique(small)) == {0, 1, 2, 3}
    assert (small == 2).sum() == 1 and (small == 3).sum() <= 20
    assert (small[:, :20] == 0).sum() >= 20 * 20 - 1 and (small[:, 20:29] == 1).all()


def test_upsampling_keeps_every_label_and_is_exact_at_the_same_size():
    labels = np.random.default_rng(0).integers(0, 50, (13, 17)).astype(np.int32)
    assert np.array_equal(upsample_labels(labels, labels.shape), labels)
    assert np.array_equal(refine_labels(labels, np.zeros((13, 17, 3), np.uint8)), labels)
    for shape in [(26, 34), (40, 60), (131, 97)]:
        assert set(np.unique(upsample_labels(labels, shape))) == set(np.unique(labels))
        image = np.random.default_rng(1).integers(0, 256, (*shape, 3), dtype=np.uint8)
        assert set(np.unique(refine_labels(labels, image))) == set(np.unique(labels))


def test_refinement_moves_a_boundary_onto_the_full_resolution_edge():
    """Two colours meet at column 203 of a 240x400 image; the working-size labels, from the image
    shrunk 8x, can only put the boundary at a multiple of 8. The refined labels put it at 203 exactly."""
    image = np.zeros((240, 400, 3), np.uint8)
    image[:, :203] = (200, 40, 40)
    image[:, 203:] = (40, 40, 200)
    small = np.zeros((30, 50), np.int32)
    small[:, 25:] = 1  # boundary at working column 25 = full column 200
    nearest = refine_labels(small, image, refine=False)
    refined = refine_labels(small, image)
    assert (nearest[:, 200:203] == 1).all()  # nearest neighbour is 3 columns off
    assert (refined[:, :203] == 0).all() and (refined[:, 203:] == 1).all()


def test_a_segment_thinner_than_the_band_survives_refinement():
    image = np.full((200, 200, 3), 128, np.uint8)  # no edges to follow anywhere
    small = np.zeros((20, 20), np.int32)
    small[10, 10] = 1  # one working pixel, all of it inside the band
    refined = refine_labels(small, image, band=2)
    assert (refined == 1).any() and set(np.unique(refined)) == {0, 1}


def test_refinement_in_row_bands_stays_close_to_one_pass(monkeypatch):
    """The full-resolution work runs in row bands with margins (bounded memory). A watershed basin can
    reach past a margin along a long boundary, so bands may differ from one pass, but only inside the
    uncertain band and on few pixels (and every entry point cuts the same bands, so they agree)."""
    import binmap_tf.segmentation.resolution as resolution

    rng = np.random.default_rng(2)
    small = (np.arange(40)[:, None] // 7 + np.arange(60)[None, :] // 9).astype(np.int32)
    image = rng.integers(0, 256, (400, 600, 3), dtype=np.uint8)  # noise: the worst case for long basins
    monkeypatch.setattr(resolution, "row_bands", lambda height, width: [(0, height)])
    whole = refine_labels(small, image)
    monkeypatch.setattr(resolution, "row_bands", lambda height, width: [(start, min(height, start + 37))
                                                                        for start in range(0, height, 37)])
    banded = refine_labels(small, image)
    differ = banded != whole
    assert differ.mean() < 0.01
    assert not (differ & ~upsample_labels(boundary_band(small), image.shape[:2])).any()


def test_band_marks_both_sides_of_every_boundary():
    labels = np.zeros((5, 6), np.int32)
    labels[:, 3:] = 1
    assert boundary_band(labels, 0)[:, 2:4].all() and not boundary_band(labels, 0)[:, [0, 1, 4, 5]].any()
    assert boundary_band(labels, 1)[:, 1:5].all()


def test_resize_keeps_an_image_of_the_right_size_as_it_is():
    image = np.zeros((10, 12, 3), np.uint8)
    assert resize_image(image, (10, 12)) is image
    assert resize_image(image, (5, 6)).shape == (5, 6, 3)


def test_refinement_on_a_smaller_guide_lands_within_a_guide_pixel():
    """Above REFINE_MAX_PIXELS the gradient is taken on the photo resized to that size: the boundary
    is then placed to within one pixel of that guide (here 2 full-resolution pixels)."""
    image = np.zeros((240, 400, 3), np.uint8)
    image[:, :203] = (200, 40, 40)
    image[:, 203:] = (40, 40, 200)
    small = np.zeros((30, 50), np.int32)
    small[:, 25:] = 1
    refined = refine_labels(small, image, max_pixels=120 * 200)
    columns = np.flatnonzero((refined == 1).all(axis=0))
    assert abs(int(columns[0]) - 203) <= 2 and (refined[:, :columns[0]] == 0).all()
