"""Codes trained through the merge scorer (experiments.joint_codes, experiments.train_codes)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tensorflow as tf
from conftest import random_itq
from scipy import ndimage
from skimage import data

from binmap_tf.binary_map.backbones import GridGeometry
from binmap_tf.binary_map.hashing import ITQParams
from binmap_tf.binary_map.maps import BinaryMap
from binmap_tf.segmentation.hierarchy import DEFAULT_WEIGHTS
from binmap_tf.segmentation.superpixels import egs
from binmap_tf.training.merge_training import TrainingImage, scorer_from_model
from experiments.joint_codes import build_joint_model, joint_example, make_joint_dataset, standardisation

DIM, BITS = 16, 8


@pytest.fixture(scope="module")
def example():
    """One image with random backbone features whose ITQ bits are its binary map, and its logged pairs."""
    image = data.astronaut()[::2, ::2]
    rng = np.random.default_rng(0)
    grid = (image.shape[0] // 16 + 1, image.shape[1] // 16 + 1)
    features = ndimage.gaussian_filter(rng.standard_normal((*grid, DIM)), (1, 1, 0)).astype(np.float32)
    params = random_itq(DIM, BITS, seed=1)
    edges = ndimage.gaussian_filter(rng.random(image.shape[:2]), 3)
    binary_map = BinaryMap(bits=params.encode(features), logits=params.project(features).astype(np.float32),
                           geometry=GridGeometry(stride=16.0, offset=7.5, receptive_field=16.0), scale=1.0,
                           image_shape=image.shape[:2], edges=((edges - edges.min()) / np.ptp(edges)).astype(np.float32))
    annotation = 1 + (np.arange(image.shape[1])[None, :] >= image.shape[1] // 3).repeat(image.shape[0], 0).astype(int)
    item = TrainingImage(image, egs(image, scale=50), binary_map, [annotation])
    return params, joint_example(item, features, None, DEFAULT_WEIGHTS, 100000, np.random.default_rng(0))


def model_and_scorer(params: ITQParams, example, scale: float = 3.0):
    columns = np.concatenate([example.code_features, example.features], axis=1)
    mean, std = standardisation(columns)
    model = build_joint_model(params, scale, example.features.shape[1], mean, std, hidden=(8,))
    return model, scorer_from_model(model.get_layer("merge_scorer"), mean, std, codes=True, n_bits=BITS), columns


def test_joint_model_computes_the_merges_own_code_features(example):
    """Votes from the cells' bits through the nodes' cell fractions are the votes the greedy merge
    logged (binmap_tf.segmentation.merge.bit_votes summed along the tree): the model's logits equal the numpy
    scorer's on the logged features."""
    params, pairs = example
    assert pairs.fractions.shape[1] == pairs.cells.shape[0]
    np.testing.assert_allclose(pairs.fractions.sum(axis=1), 1.0, rtol=1e-5)
    model, scorer, columns = model_and_scorer(params, pairs)
    inputs, _ = next(iter(make_joint_dataset([pairs], chunk=len(pairs.labels), seed=None)))
    logits = np.asarray(model(inputs))[:, 0]
    np.testing.assert_allclose(logits, scorer.logits(columns), rtol=1e-4, atol=1e-4)


def test_the_pair_loss_reaches_the_hashing_kernel(example):
    params, pairs = example
    model, _, _ = model_and_scorer(params, pairs)
    inputs, labels = next(iter(make_joint_dataset([pairs], chunk=512, seed=0)))
    with tf.GradientTape() as tape:
        loss = tf.keras.losses.binary_crossentropy(labels, model(inputs), from_logits=True)
    gradient = tape.gradient(loss, model.get_layer("hconv8").kernel)
    assert np.all(np.isfinite(gradient)) and np.abs(gradient).max() > 0


def test_shuffled_chunks_cover_every_pair_once(example):
    _, pairs = example
    chunks = list(make_joint_dataset([pairs], chunk=100, seed=3))
    assert max(len(labels) for _, labels in chunks) == 100
    seen = np.concatenate([inputs["first"] * 100000 + inputs["second"] for inputs, _ in chunks])
    logged = pairs.first * 100000 + pairs.second
    np.testing.assert_array_equal(np.sort(seen), np.sort(logged))
    assert not np.array_equal(seen, logged)  # shuffled, not in log order


@pytest.mark.slow
def test_train_codes_runs_end_to_end(tmp_path):
    from experiments.train_codes import main

    out = tmp_path / "joint"
    assert main(["--limit", "3", "--val-limit", "2", "--epochs", "2", "--max-pairs", "300", "--hidden", "8",
                 "--cache", str(tmp_path / "maps"), "--feature-cache", str(tmp_path / "features"),
                 "--out", str(out)]) == 0
    record = json.loads((out / "train_codes.json").read_text())
    assert record["data"]["train_images"] == 3 and record["data"]["train_pairs"] <= 2 * 3 * 300
    assert record["epochs_run"] == 2 and 0 <= record["val_bits_changed"] <= 1
    layer = ITQParams.load(out / "hashing_joint.npz")
    assert layer.bits == 8 and layer.info["order"] == ["hand-set", "learned-no-codes"]
