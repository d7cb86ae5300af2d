"""Fine-tuning hconv8: losses, gradients through the straight-through sign, the feature cache,
the exported layer and the training command line."""

from __future__ import annotations

import csv

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import random_itq

from binmap_tf.binary_map.backbones import Backbone, GridGeometry
from binmap_tf.binary_map.backbones.base import ImagePreprocessing
from binmap_tf.binary_map.hashing import ITQHashing, ITQParams, fit_itq
from binmap_tf.binary_map.model import build_binmap_model
from binmap_tf.cli.train import main
from binmap_tf.training.feature_cache import FeatureCache, feature_key
from binmap_tf.training.hashing_fine_tune import (
    GridExample,
    build_training_model,
    cell_labels,
    export_hashing,
    feature_scale,
    make_dataset,
)
from binmap_tf.training.losses import RegionLoss, SegmentLoss, UnsupervisedLoss, bit_balance, make_loss


def tiny_backbone() -> Backbone:
    """A 4x4/4 conv 'backbone' (6 channels) with exact geometry, for fast end-to-end checks."""
    images = keras.Input((None, None, 3), dtype="uint8")
    x = ImagePreprocessing(mean=(120.0, 120.0, 120.0), std=(60.0, 60.0, 60.0))(images)
    features = keras.layers.Conv2D(6, 4, strides=4, activation="relu")(x)
    return Backbone(name="tiny", model=keras.Model(images, features), geometry=GridGeometry.from_layers([(4, 4, 0)]),
                    feature_dim=6, min_side=4, scale=1.0, options={})


def synthetic_examples(n_images: int = 6, grid: tuple[int, int] = (8, 10), dim: int = 16,
                       seed: int = 0) -> list[GridExample]:
    """Images of four rectangular segments; each segment's cells share a random prototype plus noise."""
    rng = np.random.default_rng(seed)
    examples = []
    for index in range(n_images):
        rows, cols = rng.integers(2, grid[0] - 1), rng.integers(2, grid[1] - 1)
        labels = np.ones(grid, np.int32)
        labels[rows:, :cols] = 2
        labels[:rows, cols:] = 3
        labels[rows:, cols:] = 4
        prototypes = rng.standard_normal((5, dim)) * 3.0
        features = prototypes[labels] + rng.standard_normal(grid + (dim,))
        examples.append(GridExample(str(index), features.astype(np.float16), labels[None]))
    return examples


def stacked_features(examples: list[GridExample]) -> np.ndarray:
    return np.concatenate([e.features.reshape(-1, e.features.shape[-1]) for e in examples]).astype(np.float32)


def test_gradients_reach_the_kernel_through_the_straight_through_sign():
    params = random_itq(dim=16, bits=4)
    model = build_training_model(params, scale=2.0)
    features = tf.random.stateless_normal((2, 5, 7, 16), seed=(1, 2))
    weights = tf.random.stateless_normal((2, 5, 7, 4), seed=(3, 4))
    kernel = model.get_layer("hconv8").kernel
    with tf.GradientTape() as tape:
        bits = model(features)[..., :4]  # the straight-through bits only, no logits
        loss = tf.reduce_sum(bits * weights)
    gradient = tape.gradient(loss, kernel)
    # Expected: the hard-tanh surrogate's derivative 1/2 inside |logit| <= 1, 0 outside.
    logits = np.asarray(model(features)[..., 4:])
    passing = 0.5 * (np.abs(logits) <= 1.0) * np.asarray(weights)
    expected = np.einsum("bhwd,bhwk->dk", np.asarray(features) / 2.0, passing)
    assert np.abs(expected).max() > 0
    np.testing.assert_allclose(np.asarray(gradient), expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("loss", [SegmentLoss(), RegionLoss(), UnsupervisedLoss()])
def test_each_loss_has_a_gradient_on_the_kernel(loss):
    examples = synthetic_examples(2)
    params = fit_itq(stacked_features(examples), bits=4, seed=0)
    model = build_training_model(params, feature_scale(params, [e.features for e in examples]))
    features, labels = next(iter(make_dataset(examples, batch_size=2, seed=0, shuffle=False)))
    with tf.GradientTape() as tape:
        value = loss(labels, model(features))
    gradient = tape.gradient(value, model.get_layer("hconv8").kernel)
    assert np.all(np.isfinite(gradient)) and np.abs(gradient).max() > 0


def test_segment_loss_is_zero_for_ideal_codes_and_counts_violations():
    labels = np.array([[[1, 1, 2, 2]]], np.float32)  # one row of cells, two segments
    loss = SegmentLoss(neighbours=4, balance_weight=0.0)

    def value(signs: list[list[int]]) -> float:
        logits = 9.0 * np.array([[signs]], np.float32)  # saturated: tanh(9) ~ 1
        bits = (logits >= 0).astype(np.float32)
        return float(loss(labels, np.concatenate([bits, logits], axis=-1)))

    # Constant codes inside each segment, one bit apart across the boundary: nothing to fix.
    assert value([[1, 1], [1, 1], [-1, 1], [-1, 1]]) == pytest.approx(0.0, abs=1e-6)
    # Equal codes across the boundary (they would merge): the hinge misses its margin of 1 bit.
    assert value([[1, 1], [1, 1], [1, 1], [1, 1]]) == pytest.approx(1.0, abs=1e-6)
    # One bit flips inside each segment (they would not merge): pull = 1 bit per same pair.
    assert value([[1, 1], [1, -1], [-1, 1], [-1, -1]]) == pytest.approx(1.0, abs=1e-6)


def test_region_loss_compares_the_mean_codes_of_adjacent_segments():
    labels = np.array([[[1, 1, 2, 2, 3]]], np.float32)  # segments 1-2 and 2-3 touch, 1 and 3 do not
    loss = RegionLoss(margin=1.0, max_segments=4, balance_weight=0.0)

    def value(signs: list[list[int]]) -> float:
        logits = 9.0 * np.array([[signs]], np.float32)
        return float(loss(labels, np.concatenate([(logits >= 0).astype(np.float32), logits], axis=-1)))

    # Adjacent segments one bit apart, every cell at its segment's mean: nothing to fix
    # (segments 1 and 3 share a code, but they do not touch).
    assert value([[1, 1], [1, 1], [-1, 1], [-1, 1], [1, 1]]) == pytest.approx(0.0, abs=1e-6)
    # Segments 1 and 2 with equal codes: one of the two adjacent pairs misses its margin of 1.
    assert value([[1, 1], [1, 1], [1, 1], [1, 1], [-1, -1]]) == pytest.approx(0.5, abs=1e-6)
    # A bit flips inside segment 1: its mean is (1, 0), two cells a quarter bit from it (pull 0.1
    # over 5 cells); the means of 1 and 2 stay a bit and a quarter apart.
    assert value([[1, 1], [1, -1], [-1, 1], [-1, 1], [1, 1]]) == pytest.approx(0.1, abs=1e-6)


def test_bit_balance_measures_the_hard_bits():
    bits = tf.constant([[[[1.0, 1.0], [0.0, 1.0]]]])
    valid = tf.ones((1, 1, 2))
    assert float(bit_balance(bits, valid)) == pytest.approx((0.0 + 1.0) / 2)


@pytest.mark.parametrize("name", ["segment", "regions", "unsupervised"])
def test_a_few_fit_steps_lower_the_loss(name):
    keras.utils.set_random_seed(0)
    examples = synthetic_examples()
    params = fit_itq(stacked_features(examples), bits=4, seed=0)  # start at ITQ's optimum
    model = build_training_model(params, feature_scale(params, [e.features for e in examples]))
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss=make_loss(name), jit_compile=False)
    data = make_dataset(examples, batch_size=3, seed=0, shuffle=False)
    before = model.evaluate(data, verbose=0)
    model.fit(data, epochs=15, shuffle=False, verbose=0)
    after = model.evaluate(data, verbose=0)
    assert after < 0.8 * before


def test_cell_labels_take_the_majority_of_the_pixels_each_cell_codes_for():
    geometry = GridGeometry(stride=4.0, offset=1.5, receptive_field=4.0)
    ground_truth = np.ones((8, 12), np.int32)
    ground_truth[:, 5:] = 2  # cell column 1 covers pixels 4-7: pixel 4 is 1, pixels 5-7 are 2
    ground_truth[0, :] = 3  # one pixel row of 3s never wins a 4-row cell
    labels = cell_labels(ground_truth, geometry, 1.0, (2, 3))
    np.testing.assert_array_equal(labels, [[1, 2, 2], [1, 2, 2]])


def test_dataset_pads_with_label_zero_and_draws_an_annotation():
    examples = synthetic_examples(2, grid=(4, 6))
    transposed = GridExample("t", examples[1].features.transpose(1, 0, 2),
                             np.stack([examples[1].labels[0].T, examples[1].labels[0].T + 10]))
    features, labels = next(iter(make_dataset([examples[0], transposed], batch_size=2, seed=0, shuffle=False)))
    assert features.shape == (2, 6, 6, 16) and features.dtype == tf.float32
    assert np.all(labels.numpy()[0, 4:] == 0) and np.all(labels.numpy()[1, :, 4:] == 0)
    drawn = labels.numpy()[1, :, :4]
    assert np.array_equal(drawn, transposed.labels[0]) or np.array_equal(drawn, transposed.labels[1])


class CountingSample:
    """A dataset-sample stand-in that counts how often its image is read."""

    def __init__(self, image_id: str, image: np.ndarray) -> None:
        self.id, self.image, self.reads = image_id, image, 0

    def load_image(self) -> np.ndarray:
        self.reads += 1
        return self.image


def test_feature_cache_round_trips(tmp_path):
    backbone = tiny_backbone()
    image = np.random.default_rng(0).integers(0, 256, (20, 28, 3), dtype=np.uint8)
    sample = CountingSample("img1", image)
    cache = FeatureCache(backbone, "toy-train", root=tmp_path)
    computed = cache.get(sample)
    assert cache.path("img1") == tmp_path / feature_key(backbone) / "toy-train" / "img1.npz"
    assert cache.path("img1").exists() and computed.dtype == np.float16 and computed.shape == (5, 7, 6)
    np.testing.assert_array_equal(computed, np.asarray(backbone.model(image[None]))[0].astype(np.float16))
    reread = FeatureCache(backbone, "toy-train", root=tmp_path).get(sample)
    assert sample.reads == 1
    np.testing.assert_array_equal(reread, computed)


def test_saved_layer_reloads_with_identical_outputs(tmp_path):
    backbone = tiny_backbone()
    params = random_itq(dim=6, bits=4, seed=1)
    model = build_training_model(params, scale=3.0)
    hconv8 = model.get_layer("hconv8")
    rng = np.random.default_rng(2)
    hconv8.set_weights([w + 0.3 * rng.standard_normal(w.shape) for w in hconv8.get_weights()])  # "trained"
    export_hashing(model, {"note": "test"}).save(tmp_path / "hashing_ft.npz")

    images = rng.integers(0, 256, (2, 24, 32, 3), dtype=np.uint8)
    trained = np.asarray(model(backbone.model(images)))
    served = build_binmap_model(backbone, bits=4, hashing=tmp_path / "hashing_ft.npz")(images)
    np.testing.assert_allclose(np.asarray(served["logits"]), trained[..., 4:], rtol=1e-5, atol=1e-5)
    decided = np.abs(trained[..., 4:]) > 1e-4
    np.testing.assert_array_equal(np.asarray(served["bits"])[decided], np.rint(trained[..., :4])[decided])
    loaded = ITQParams.load(tmp_path / "hashing_ft.npz")
    assert loaded.info["note"] == "test"
    bits, logits = ITQHashing.from_itq(loaded, return_logits=True)(np.asarray(backbone.model(images)))
    np.testing.assert_allclose(np.asarray(logits), trained[..., 4:], rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_train_cli_runs_on_three_images(tmp_path, monkeypatch):
    monkeypatch.setenv("BINMAP_TF_HOME", str(tmp_path / "home"))
    out = tmp_path / "out"
    assert main(["--limit", "3", "--val-limit", "2", "--epochs", "1", "--batch-size", "2", "--out", str(out)]) == 0
    params = ITQParams.load(out / "hashing_ft.npz")
    assert params.bits == 8 and params.info["fine_tuned"] and params.info["epochs_trained"] in (0, 1)
    with open(out / "history.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 1 and {"loss", "val_loss", "val_abo", "val_covering"} <= set(rows[0])
    assert (out / "training.png").stat().st_size > 0 and (out / "train.json").exists()
    assert len(list((tmp_path / "home" / "features").glob("*/bsds500-train/*.npz"))) == 3


def test_cli_refuses_to_select_on_test(tmp_path):
    with pytest.raises(SystemExit):
        main(["--val-split", "test", "--out", str(tmp_path)])
