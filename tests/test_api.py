"""The Python API a user guesses: ``from binmap_tf import segment``, a result that cuts again, docs that run."""

from __future__ import annotations

import doctest
import subprocess
import sys

import numpy as np
import pytest

import binmap_tf
from binmap_tf.common.images import load_image
from binmap_tf.segmentation import pipeline


@pytest.fixture(scope="module")
def crop(bsds_image_path):
    return load_image(bsds_image_path)[:160, :240]


def test_every_public_name_resolves():
    for name in binmap_tf.__all__:
        assert getattr(binmap_tf, name) is not None, name
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        binmap_tf.nope  # noqa: B018


def test_importing_the_package_does_not_load_tensorflow():
    code = "import sys, binmap_tf; assert 'tensorflow' not in sys.modules, 'tensorflow loaded at import'"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_segment_docstring_examples_run():
    """The numpydoc Examples of :func:`segment` are executed, not only shown."""
    failures, attempted = doctest.testmod(pipeline, optionflags=doctest.NORMALIZE_WHITESPACE, verbose=False)
    assert attempted >= 8 and failures == 0


def test_result_cuts_other_levels_without_running_any_stage_again(crop):
    calls = []

    def mapper(image):
        calls.append(image.shape)
        return pipeline.default_mapper(edges=True)(image)

    result = binmap_tf.segment(crop, mapper)
    for count in (2, 5, result.n_superpixels):
        labels = result.cut(n_segments=count)
        assert labels.shape == crop.shape[:2] and len(np.unique(labels)) == count
    assert np.array_equal(result.cut(threshold=result.options["cut"]["threshold"]), result.labels)
    height, width = result.options["working_shape"]  # the crop is brought up to the working size
    assert result.ucm().shape == (2 * height + 1, 2 * width + 1)
    assert len(calls) == 1 and calls[0][:2] == (height, width)


def test_tiny_images_are_refused_before_the_cnn_and_small_ones_brought_up():
    from binmap_tf.common.images import ImageError

    with pytest.raises(ImageError, match="smaller than the 16 pixels"):
        binmap_tf.segment(np.zeros((8, 8, 3), np.uint8), lambda image: pytest.fail("the CNN ran"))
    result = binmap_tf.segment(np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8))
    assert result.options["working_shape"] == [393, 393] and result.labels.shape == (16, 16)
    assert np.array_equal(np.unique(result.labels), np.arange(result.n_segments))


def test_flat_merge_result_names_the_mode_that_has_a_tree(crop):
    result = binmap_tf.segment(crop, merge="none", superpixels="egs")
    with pytest.raises(ValueError, match="merge='hierarchy'"):
        result.cut(n_segments=3)
