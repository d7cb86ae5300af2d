"""The binary-map cache is keyed by the weights actually loaded, so it cannot serve stale maps."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import random_itq

from binmap_tf.binary_map.model import BinaryMapper
from binmap_tf.evaluation.map_cache import BinaryMapCache, mapper_key


@pytest.fixture(scope="module")
def mapper():
    return BinaryMapper(hashing=random_itq(512, 8), weights=None, edges=True)  # random VGG16: no file needed


def test_cached_map_is_reused_then_missed_after_the_backbone_weights_change(mapper, tmp_path):
    image = np.random.default_rng(0).integers(0, 256, (64, 80, 3), dtype=np.uint8)
    cache = BinaryMapCache(mapper, "test", root=tmp_path)
    computed, _ = cache.get("picture", image)
    assert cache.path("picture", image.shape).is_file()
    reloaded, _ = BinaryMapCache(mapper, "test", root=tmp_path).get("picture", image)
    np.testing.assert_array_equal(reloaded.bits, computed.bits)
    # bit for bit, edges included: the hierarchy must not depend on whether the cache was warm
    assert reloaded.edges.dtype == computed.edges.dtype
    np.testing.assert_array_equal(reloaded.edges, computed.edges)

    old_key = mapper_key(mapper)
    conv = next(layer for layer in mapper.backbone.model.layers if layer.weights)
    kernel = conv.weights[0]
    original = kernel.numpy()
    try:
        kernel.assign(original * 1.5)  # as if other weights had been imported
        assert mapper_key(mapper) != old_key
        assert not BinaryMapCache(mapper, "test", root=tmp_path).path("picture", image.shape).exists()
    finally:
        kernel.assign(original)
    assert mapper_key(mapper) == old_key
