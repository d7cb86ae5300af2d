"""The FCN AlexNet backbone: registration, geometry against the layer arithmetic (and against
the cells a pixel actually reaches), the dilated stride-16 variant, the classifier head, LRN
constants and the missing-weights error. Random seeded weights, CPU, small inputs."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from binmap_tf.binary_map.backbones import build_backbone, get_backbone
from binmap_tf.binary_map.backbones.alexnet import build_alexnet
from binmap_tf.binary_map.backbones.alexnet.network import (
    LocalResponseNorm,
    grid_length,
    grid_shape,
    min_input_side,
    spatial_layers,
)
from binmap_tf.binary_map.backbones.base import GridGeometry, scaled_size


@pytest.fixture(scope="module")
def caffe_net():
    """Caffe layout at native resolution with the classifier head (seeded random weights)."""
    return build_alexnet(scale=1.0, layout="caffe", weights=None, classifier=True)


def random_images(batch: int, height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (batch, height, width, 3), dtype=np.uint8)


def test_registered_with_the_paper_scale():
    spec = get_backbone("alexnet")
    assert spec.default_scale == 3.4
    backbone = build_backbone("alexnet", weights=None)
    assert (backbone.scale, backbone.feature_dim, backbone.min_side) == (3.4, 4096, 227)
    assert backbone.options["layout"] == "caffe"
    with pytest.raises(ValueError, match="unknown AlexNet layout"):
        build_alexnet(layout="vgg", weights=None)


@pytest.mark.parametrize("layout, min_side, offset", [("caffe", 227, 113), ("torchvision", 223, 111)])
def test_geometry_follows_the_layer_arithmetic(layout, min_side, offset):
    backbone = build_alexnet(scale=1.0, layout=layout, weights=None)
    geometry = backbone.geometry
    # conv1 11/4 (+pad), pool 3/2, conv2 5 pad 2, pool 3/2, conv3-5 3 pad 1, pool 3/2, fc6 6x6, fc7 1x1.
    assert (geometry.stride, geometry.offset, geometry.receptive_field) == (32, offset, 355)
    assert backbone.min_side == min_input_side(layout) == min_side
    assert grid_length(min_side, layout) == 1 and grid_length(min_side - 1, layout) == 0
    # Cell 0 of the smallest input is centred on it.
    assert geometry.offset == (min_side - 1) / 2
    for height, width in [(min_side, min_side), (min_side + 40, min_side + 70)]:
        output = backbone.model(random_images(1, height, width))
        assert output.shape[1:3] == (grid_length(height, layout), grid_length(width, layout))


def test_paper_grid_for_a_bsds_image():
    """321x481 at scale 3.4 becomes 1091x1635: (1091 - 227) / 32 + 1 = 28 rows, 45 columns (the
    paper says 28x44). Both sides are then exactly 227 + 32k, so the grid is centred."""
    assert (scaled_size(321, 3.4), scaled_size(481, 3.4)) == (1091, 1635)
    assert grid_shape(321, 481) == (28, 45)
    geometry = GridGeometry.from_layers(spatial_layers("caffe"))
    rows = geometry.cell_centres(28, 321, scale=3.4)
    cols = geometry.cell_centres(45, 481, scale=3.4)
    np.testing.assert_allclose([rows[0] + rows[-1], cols[0] + cols[-1]], [320, 480], atol=1e-9)
    np.testing.assert_allclose(np.diff(rows), 32 / (1091 / 321))


def test_full_bsds_sized_image_gives_the_predicted_grid():
    backbone = build_backbone("alexnet", weights=None)
    features = backbone.model(random_images(1, 321, 481))
    assert features.shape == (1, 28, 45, 4096)


def test_a_pixel_reaches_exactly_the_cells_its_receptive_field_predicts(caffe_net):
    """Changing a few pixels of one column changes exactly the cells whose centre
    (offset + stride * j) is within half a receptive field (177) of it: columns 290 and 291 are
    the last and first out of reach of cell 0, centred on 113."""
    geometry = caffe_net.geometry
    width = 227 + 32 * 4  # five cells in a row
    base = random_images(1, 227, width, seed=2)
    columns = [0, 40, 177, 200, 290, 291, 354]
    images = np.repeat(base, len(columns) + 1, axis=0)
    for index, column in enumerate(columns, start=1):
        images[index, 100:110, column] = 255 - images[index, 100:110, column]
    features = np.asarray(caffe_net.model(images)[0])[:, 0]  # (batch, 5 cells, 4096)
    centres = geometry.offset + geometry.stride * np.arange(5)
    for index, column in enumerate(columns, start=1):
        changed = np.abs(features[index] - features[0]).max(axis=-1) > 1e-4 * features.max()
        reachable = np.abs(centres - column) <= (geometry.receptive_field - 1) / 2
        np.testing.assert_array_equal(changed, reachable, err_msg=f"column {column}")


def test_dilated_net_is_the_stride_16_version_of_the_same_net():
    plain = build_alexnet(scale=1.0, weights=None)
    dilated = build_alexnet(scale=1.0, weights=None, dilated=True)
    dilated.model.set_weights(plain.model.get_weights())
    assert (dilated.geometry.stride, dilated.geometry.offset) == (16, plain.geometry.offset)
    assert dilated.geometry.receptive_field == plain.geometry.receptive_field
    images = random_images(1, 291, 259, seed=3)  # plain: 3x2 cells, dilated: 5x3
    coarse, fine = np.asarray(plain.model(images)), np.asarray(dilated.model(images))
    assert coarse.shape[1:3] == (3, 2) and fine.shape[1:3] == (5, 3)
    assert fine.shape[1:3] == (grid_length(291, dilated=True), grid_length(259, dilated=True))
    np.testing.assert_allclose(fine[:, ::2, ::2], coarse, rtol=1e-4, atol=1e-4 * coarse.max())


def test_classifier_head_is_a_softmax_over_imagenet(caffe_net):
    features, probabilities = caffe_net.model(random_images(2, 227, 259))
    assert features.shape == (2, 1, 2, 4096) and probabilities.shape == (2, 1, 2, 1000)
    assert np.all(np.asarray(probabilities) >= 0)
    np.testing.assert_allclose(np.asarray(probabilities).sum(-1), 1.0, rtol=1e-5)
    plain = build_alexnet(scale=1.0, weights=None)
    assert len(plain.model.outputs) == 1


def test_lrn_uses_caffes_alpha_over_size():
    """Caffe: x / (1 + 1e-4 / 5 * sum of 5 squares) ** 0.75; TF's alpha must be 2e-5, not 1e-4."""
    x = np.random.default_rng(4).uniform(0, 200, (1, 3, 3, 12)).astype(np.float32)
    padded = np.pad(x ** 2, ((0, 0), (0, 0), (0, 0), (2, 2)))
    sums = sum(padded[..., i:i + 12] for i in range(5))
    expected = x / (1 + 1e-4 / 5 * sums) ** 0.75
    np.testing.assert_allclose(LocalResponseNorm()(x), expected, rtol=1e-5)
    per_element = tf.nn.local_response_normalization(x, depth_radius=2, bias=1.0, alpha=1e-4, beta=0.75)
    assert np.abs(per_element - expected).max() > 0.1 * expected.max()


@pytest.mark.parametrize("layout, release", [("caffe", "bvlc_alexnet.npy"),
                                             ("torchvision", "alexnet-owt-7be5be79.pth")])
def test_missing_imported_weights_say_where_and_how(layout, release, tmp_path, monkeypatch):
    monkeypatch.setenv("BINMAP_TF_HOME", str(tmp_path))
    with pytest.raises(FileNotFoundError) as error:
        build_backbone("alexnet", layout=layout)
    message = str(error.value)
    assert str(tmp_path / f"alexnet_{layout}.weights.h5") in message
    assert release in message and "http" in message
    assert f"binmap-weights import {release} --layout {layout}" in message
