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
    assert result.ucm().shape == (2 * crop.shape[0] + 1, 2 * crop.shape[1] + 1)
    assert len(calls) == 1


def test_flat_merge_result_names_the_mode_that_has_a_tree(crop):
    result = binmap_tf.segment(crop, merge="none", superpixels="egs")
    with pytest.raises(ValueError, match="merge='hierarchy'"):
        result.cut(n_segments=3)
