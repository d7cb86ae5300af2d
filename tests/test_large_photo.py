"""A 12 MP photo gives the same full-resolution labels through every entry point: the Python API, the
segment command, the demo and the batch pipeline all run the one resize-and-refine step."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from binmap_tf.common.images import load_image
from binmap_tf.segmentation.pipeline import segment


@pytest.fixture(scope="module")
def photo_path(bsds_image_path, tmp_path_factory):
    """A 4000x3000 JPEG made from a BSDS500 test image (Lanczos), as a phone would save it."""
    path = tmp_path_factory.mktemp("photo") / "photo.jpg"
    Image.open(bsds_image_path).convert("RGB").resize((4000, 3000), Image.Resampling.LANCZOS).save(path, quality=92)
    return path


@pytest.fixture(scope="module")
def reference(photo_path):
    image = load_image(photo_path)
    return image, segment(image)


def test_api_labels_are_full_size_with_the_native_character(reference, bsds_image_path):
    image, result = reference
    assert result.labels.shape == image.shape[:2] and result.labels.dtype == np.int32
    assert result.options["working_shape"] == [340, 454]
    assert np.array_equal(np.unique(result.labels), np.arange(result.n_segments))
    native = segment(load_image(bsds_image_path))
    assert abs(result.n_segments - native.n_segments) <= max(2, 0.25 * native.n_segments)
    assert result.cut(n_segments=3).shape == image.shape[:2]


def test_segment_command_gives_the_api_labels(reference, photo_path, tmp_path):
    from binmap_tf.cli.segment import main

    assert main([str(photo_path), "--out", str(tmp_path)]) == 0
    np.testing.assert_array_equal(np.load(tmp_path / "photo_labels.npy"), reference[1].labels)


def test_demo_gives_the_api_labels(reference):
    from demo.pipeline import LocalMappers, Settings, segment_upload

    run = segment_upload(reference[0], Settings(), LocalMappers())
    np.testing.assert_array_equal(run.result.labels, reference[1].labels)


@pytest.mark.slow
@pytest.mark.ray
def test_batch_gives_the_api_labels(reference, photo_path, tmp_path):
    from binmap_tf.batch.collection import Workers, segment_collection

    summary = segment_collection([str(photo_path)], tmp_path, workers=Workers(cnn=1, host=1))
    assert summary["written"] == 1
    np.testing.assert_array_equal(np.load(tmp_path / "photo_labels.npy"), reference[1].labels)
