"""Input normalisation, clear errors for bad files, and atomic writes."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from binmap_tf.files import atomic_path, write_png
from binmap_tf.images import (
    ImageError,
    as_rgb_uint8,
    check_size,
    downscale_to_limit,
    find_images,
    indices_by_shape,
    load_image,
)


def test_grey_rgba_float_and_uint16_become_rgb_uint8():
    grey = np.arange(12, dtype=np.uint8).reshape(3, 4)
    np.testing.assert_array_equal(as_rgb_uint8(grey)[..., 1], grey)
    rgba = np.dstack([np.zeros((3, 4, 3), np.uint8), np.full((3, 4), 9, np.uint8)])
    assert as_rgb_uint8(rgba).shape == (3, 4, 3)
    assert as_rgb_uint8(np.ones((2, 2, 3)))[0, 0, 0] == 255
    assert as_rgb_uint8(np.full((2, 2), 65535, np.uint16))[0, 0, 0] == 255


def test_bad_shapes_and_values_name_the_problem():
    with pytest.raises(ImageError, match=r"\(H, W, 3\)"):
        as_rgb_uint8(np.zeros((2, 3, 4, 5)))
    with pytest.raises(ImageError, match="NaN"):
        as_rgb_uint8(np.full((2, 2, 3), np.nan))


def test_files_grey_rgba_corrupt_missing(tmp_path):
    Image.fromarray(np.full((5, 6), 100, np.uint8)).save(tmp_path / "grey.png")
    Image.fromarray(np.full((5, 6, 4), 50, np.uint8), mode="RGBA").save(tmp_path / "rgba.png")
    assert load_image(tmp_path / "grey.png").shape == (5, 6, 3)
    assert load_image(tmp_path / "rgba.png")[0, 0].tolist() == [50, 50, 50]
    (tmp_path / "text.jpg").write_text("hello")
    with pytest.raises(ImageError, match="cannot read"):
        load_image(tmp_path / "text.jpg")
    with pytest.raises(FileNotFoundError, match="check the path"):
        load_image(tmp_path / "missing.png")
    assert [p.name for p in find_images([tmp_path])] == ["grey.png", "rgba.png", "text.jpg"]


def test_size_limits_and_downscaling():
    with pytest.raises(ImageError, match="smaller than the 32 pixels"):
        check_size(np.zeros((10, 100, 3), np.uint8), min_side=32)
    with pytest.raises(ImageError, match="downscale"):
        check_size(np.zeros((100, 100, 3), np.uint8), max_pixels=50 * 50)
    small, scale = downscale_to_limit(np.zeros((100, 200, 3), np.uint8), max_pixels=50 * 100)
    assert small.shape == (50, 100, 3) and scale == pytest.approx(0.5)


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.png"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("partial")
            raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == []
    write_png(target, np.zeros((4, 4), np.uint16))
    assert np.asarray(Image.open(target)).dtype.itemsize == 2


def test_indices_by_shape_groups_equal_shapes_in_first_seen_order():
    images = [np.zeros((4, 6, 3)), np.zeros((6, 4, 3)), np.zeros((4, 6, 3)), np.zeros((4, 6))]
    assert indices_by_shape(images) == {(4, 6, 3): [0, 2], (6, 4, 3): [1], (4, 6): [3]}
    assert list(indices_by_shape(images)) == [(4, 6, 3), (6, 4, 3), (4, 6)]
