"""ITQ fitting and the hconv8 hashing layer."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from binmap_tf.binary_map.hashing import (
    ITQHashing,
    ITQParams,
    fit_itq,
    fit_pca,
    load_itq,
    straight_through_bits,
)


def clustered_data(n: int = 2000, dim: int = 32, clusters: int = 8, seed: int = 1) -> np.ndarray:
    """Structured data: tight Gaussian clusters in a random low-dimensional subspace."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim)) * 4.0
    labels = rng.integers(0, clusters, n)
    return centres[labels] + rng.standard_normal((n, dim)) * 0.5


def test_loss_history_is_non_increasing_and_rotation_orthogonal():
    params = fit_itq(clustered_data(), bits=8, iterations=50, seed=0)
    history = np.asarray(params.loss_history)
    assert len(history) == 51
    assert np.all(np.diff(history) <= 1e-9 * history[0])
    assert history[-1] < history[0]
    np.testing.assert_allclose(params.rotation @ params.rotation.T, np.eye(8), atol=1e-10)


def hypercube_data(n: int = 4000, dim: int = 32, bits: int = 8, seed: int = 2) -> np.ndarray:
    """Points near the corners of a randomly rotated ``bits``-cube: the structure ITQ is for."""
    rng = np.random.default_rng(seed)
    corners = rng.choice([-1.0, 1.0], size=(n, bits))
    basis, _ = np.linalg.qr(rng.standard_normal((dim, bits)))
    return corners @ basis.T + rng.standard_normal((n, dim)) * 0.1


def test_itq_quantizes_better_than_pca_sign():
    data = hypercube_data()
    params = fit_itq(data, bits=8, seed=0)
    mean, pcs = fit_pca(data, 8)
    projected = (data - mean) @ pcs
    pca_loss = np.sum((np.where(projected >= 0, 1.0, -1.0) - projected) ** 2) / len(data)
    assert params.loss_history[-1] < 0.5 * pca_loss


def test_pca_directions_are_the_top_eigenvectors():
    rng = np.random.default_rng(0)
    data = rng.standard_normal((5000, 4)) * np.array([5.0, 3.0, 1.0, 0.1])
    _, pcs = fit_pca(data, 2)
    np.testing.assert_allclose(np.abs(pcs), np.eye(4)[:, :2], atol=0.05)


def test_bits_use_greater_equal_not_sign():
    params = ITQParams(mean=np.zeros(2), pcs=np.eye(2), rotation=np.eye(2))
    np.testing.assert_array_equal(params.encode(np.array([[0.0, -1.0]])), [[1, 0]])


def test_fit_itq_rejects_bad_input():
    with pytest.raises(ValueError, match="bits must be between"):
        fit_itq(np.ones((10, 4)), bits=5)
    with pytest.raises(ValueError, match="NaN"):
        fit_itq(np.full((10, 4), np.nan), bits=2)


def test_layer_reproduces_itq_projection(tmp_path):
    data = clustered_data().astype(np.float32)
    params = fit_itq(data, bits=8, seed=3)
    layer = ITQHashing.from_itq(params, return_logits=True)
    bits, logits = layer(data)
    expected = params.project(data)
    np.testing.assert_allclose(np.asarray(logits), expected, rtol=1e-4, atol=1e-3)
    decided = np.abs(expected) > 1e-3  # away from the threshold, where float order can't flip a bit
    np.testing.assert_array_equal(np.asarray(bits)[decided], params.encode(data)[decided])


def test_params_round_trip_through_npz(tmp_path):
    params = fit_itq(clustered_data(), bits=4, seed=0)
    params.info["data"] = "synthetic"
    params.save(tmp_path / "itq.npz")
    loaded = ITQParams.load(tmp_path / "itq.npz")
    np.testing.assert_allclose(loaded.kernel, params.kernel, atol=1e-6)  # stored as float32
    assert loaded.info["data"] == "synthetic"
    assert loaded.loss_history == pytest.approx(params.loss_history)


def test_straight_through_gradient_is_clipped_identity():
    logits = tf.constant([-2.0, -0.5, 0.0, 0.5, 2.0])
    with tf.GradientTape() as tape:
        tape.watch(logits)
        bits = straight_through_bits(logits)
    np.testing.assert_array_equal(bits.numpy(), [0, 0, 1, 1, 1])
    np.testing.assert_allclose(tape.gradient(bits, logits).numpy(), [0, 0.5, 0.5, 0.5, 0])


def test_kernel_receives_nonzero_gradients():
    rng = np.random.default_rng(0)
    data = rng.standard_normal((64, 16)).astype(np.float32)
    layer = ITQHashing.from_itq(fit_itq(data, bits=4, seed=0))
    target = rng.integers(0, 2, (64, 4)).astype(np.float32)
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean((layer(data) - target) ** 2)
    kernel_grad, bias_grad = tape.gradient(loss, [layer.kernel, layer.bias])
    assert np.abs(kernel_grad.numpy()).sum() > 0
    assert np.abs(bias_grad.numpy()).sum() > 0


def test_layer_config_and_keras_file_round_trip(tmp_path):
    data = clustered_data(dim=16).astype(np.float32)
    inputs = keras.Input((None, None, 16))
    outputs = ITQHashing.from_itq(fit_itq(data, bits=6), name="hconv8")(inputs)
    model = keras.Model(inputs, outputs)
    grid = data[:48].reshape(1, 6, 8, 16)
    model.save(tmp_path / "hash.keras")
    reloaded = keras.models.load_model(tmp_path / "hash.keras")
    np.testing.assert_array_equal(np.asarray(reloaded(grid)), np.asarray(model(grid)))
    assert reloaded.get_layer("hconv8").get_config()["bits"] == 6


def test_missing_parameters_name_the_fit_command(monkeypatch, tmp_path):
    monkeypatch.setenv("BINMAP_TF_HOME", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="binmap-fit-itq --backbone nosuch --bits 8"):
        load_itq("nosuch", 8)
