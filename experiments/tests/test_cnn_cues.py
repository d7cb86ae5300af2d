"""The CNN-cues experiment (experiments/cnn_cues.py): its PCA whitens, its region sums are sums, and inside
its patch the greedy merge scores pairs with the descriptors' differences and the side outputs' border
means appended."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from skimage import data

from binmap_tf.segmentation import hierarchy
from binmap_tf.segmentation.hierarchy import build_hierarchy
from binmap_tf.segmentation.merge_features import feature_names
from binmap_tf.segmentation.superpixels import egs
from binmap_tf.training.merge_training import LoggingCriterion
from experiments.cnn_cues import (
    SIDES,
    DescribedMap,
    cue_feature_names,
    cues_patched,
    descriptor_sums,
    fit_projection,
)
from tests.test_hierarchy import random_map


def test_the_projection_whitens_each_layer_on_its_own():
    rng = np.random.default_rng(0)
    samples = np.concatenate([rng.standard_normal((500, 512)) * 5 + 3, rng.standard_normal((500, 512)) * 0.1], axis=1)
    projection = fit_projection(samples, ("conv4_3", "conv5_3"), 4)
    projected = projection(samples[None])[0]
    assert projected.shape == (500, 8) and projection.dims == 8
    np.testing.assert_allclose(projected.mean(axis=0), 0, atol=1e-4)
    np.testing.assert_allclose(projected.std(axis=0, ddof=1), 1, rtol=1e-4)
    for components in projection.components:
        np.testing.assert_allclose(components.T @ components, np.eye(4), atol=1e-5)


def test_descriptor_sums_add_each_pixels_cell():
    rng = np.random.default_rng(1)
    labels, cells, grid = rng.integers(0, 5, (6, 7)), rng.integers(0, 12, (6, 7)), rng.standard_normal((3, 4, 2))
    expected = np.array([grid.reshape(12, 2)[cells[labels == region]].sum(axis=0) for region in range(5)])
    np.testing.assert_allclose(descriptor_sums(labels, cells, grid), expected)


def logged_first_level(image, superpixels, binary_map) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Features and node ids of the pairs the greedy merge scores first (the superpixels' pairs)."""
    loggers = []

    def criterion(features, cues):
        loggers.append(LoggingCriterion(cues, features))
        return loggers[-1]

    build_hierarchy(image, superpixels, binary_map, criterion=criterion)
    return loggers[0].log[0]


@pytest.fixture(scope="module")
def scene():
    image = data.astronaut()[::4, ::4]
    return image, egs(image, scale=50), random_map(image)


def described(binary_map, **cues) -> DescribedMap:
    fields = {field.name: getattr(binary_map, field.name) for field in dataclasses.fields(binary_map)}
    return DescribedMap(**fields, **cues)


def test_inside_the_patch_the_merge_appends_the_descriptor_differences(scene):
    image, superpixels, binary_map = scene
    rng = np.random.default_rng(2)
    dims, cells = 3, binary_map.cell_index()
    grid = rng.standard_normal((*binary_map.grid_shape, dims))
    original = hierarchy.PairFeatures
    with cues_patched(lambda dataset, items: items, dims, side_edges=False):
        features, first, second = logged_first_level(image, superpixels,
                                                     described(binary_map, descriptors=grid, descriptor_cells=cells))
    assert hierarchy.PairFeatures is original  # restored
    base = len(feature_names(8))
    assert features.shape[1] == base + len(cue_feature_names(dims, side_edges=False)) == base + 1 + dims
    labels = np.unique(superpixels, return_inverse=True)[1].reshape(superpixels.shape)  # as the merge numbers them
    means = descriptor_sums(labels, cells, grid) / np.bincount(labels.ravel())[:, None]
    difference = np.abs(means[first] - means[second])
    np.testing.assert_allclose(features[:, base + 1:], difference)
    np.testing.assert_allclose(features[:, base], np.linalg.norm(difference, axis=1))
    np.testing.assert_allclose(features[:, :base], logged_first_level(image, superpixels, binary_map)[0])


def test_side_outputs_equal_to_the_fused_edges_give_its_border_mean(scene):
    """Five side outputs that are each the fused edge map: every side column is the pair's edge_mean."""
    image, superpixels, binary_map = scene
    sides = np.repeat(binary_map.edges[..., None], SIDES, axis=2)
    with cues_patched(lambda dataset, items: items, 0, side_edges=True):
        features, _, _ = logged_first_level(image, superpixels, described(binary_map, sides=sides))
    names = feature_names(8) + cue_feature_names(0, side_edges=True)
    assert features.shape[1] == len(names)
    edge_mean = features[:, names.index("edge_mean")]
    for k in range(1, SIDES + 1):
        np.testing.assert_allclose(features[:, names.index(f"side{k}_mean")], edge_mean)
    base = len(feature_names(8))
    np.testing.assert_allclose(features[:, :base], logged_first_level(image, superpixels, binary_map)[0])
