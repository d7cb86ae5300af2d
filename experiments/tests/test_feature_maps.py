"""Binary maps from cached features equal the binary mapper's maps (a real backbone: slow)."""

from __future__ import annotations

import numpy as np
import pytest

from binmap_tf.binary_map.model import BinaryMapper, build_backbone_at
from binmap_tf.evaluation.datasets import load_dataset
from binmap_tf.evaluation.map_cache import BinaryMapCache
from binmap_tf.training.feature_cache import FeatureCache
from experiments.feature_maps import fill_cache, verify


@pytest.mark.slow
def test_maps_from_cached_features_are_the_mappers_maps(tmp_path):
    dataset = load_dataset("bsds500", "val", limit=2)
    target = BinaryMapCache(BinaryMapper(bits=16, edges=True), "val", root=tmp_path / "maps")
    edge_maps = BinaryMapCache(BinaryMapper(bits=8, edges=True), "val", root=tmp_path / "maps")
    features = FeatureCache(build_backbone_at("vgg16-hed"), "val", root=tmp_path / "features", dtype="float32")
    assert fill_cache(dataset, target, features, edge_maps) == 2
    assert fill_cache(dataset, target, features, edge_maps) == 0  # cached maps are kept
    record = verify(dataset, target, 2)
    assert record["differing_bits"] == 0 and record["max_abs_logit_difference"] < 1e-4
    cached, seconds = target.get(dataset[0].id, dataset[0].load_image())
    assert cached.bits.shape[-1] == 16 and cached.edges is not None and seconds > 0
    assert np.all(features.get(dataset[0]).dtype == np.float32)
