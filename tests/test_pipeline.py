"""One segmentation pipeline: every method of ``evaluate`` is a setting of ``segment``, so the
two entry points give identical labels (evaluate shares superpixels and trees between methods
through a StageCache; segment computes each one afresh)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from binmap_tf.cli.evaluate import build_mappers, main, parse_args
from binmap_tf.evaluation.datasets import load_dataset
from binmap_tf.evaluation.map_cache import BinaryMapCache
from binmap_tf.evaluation.methods import (
    COUNT_SUFFIX,
    COUNTS,
    DEFAULT_VALUES,
    HIERARCHY_METHODS,
    LEARNED_METHODS,
    parse_method,
)
from binmap_tf.segmentation.pipeline import segment

FLAT_METHODS = ["egs", "slic", "binmap-egs", "binmap-slic", "binmap-egs-ft", "binmap-slic-ft"]
EVERY_METHOD = (FLAT_METHODS + list(HIERARCHY_METHODS) + list(LEARNED_METHODS)
                + [name + COUNT_SUFFIX for name in COUNTS])
N_IMAGES = 2  # BSDS500 val images each method segments


@pytest.mark.slow
def test_every_evaluate_method_gives_the_labels_of_segment(tmp_path):
    out, cache = tmp_path / "eval", tmp_path / "cache"
    assert main(["--dataset", "bsds500", "--split", "val", "--limit", str(N_IMAGES), "--workers", "1", "--save-labels",
                 "--methods", *EVERY_METHOD, "--out", str(out), "--cache", str(cache)]) == 0
    methods = [parse_method(name) for name in EVERY_METHOD]
    args = parse_args(["--out", str(out), "--cache", str(cache)])  # the same model options as the run above
    maps = {variant: BinaryMapCache(mapper, "bsds500-val", root=cache)
            for variant, mapper in build_mappers(args, methods).items()}
    compared = 0
    for sample in load_dataset("bsds500", "val", limit=N_IMAGES):
        image = sample.load_image()
        for method in methods:
            binary_map = maps[method.map_variant].get(sample.id, image)[0] if method.map_variant else None
            options = method.segment_options(DEFAULT_VALUES[method.parameter_key])
            labels = segment(image, binary_map=binary_map, **options).labels
            saved = np.asarray(Image.open(out / "labels" / method.name / f"{sample.id}.png"))
            np.testing.assert_array_equal(saved, labels, err_msg=f"{method.name} on {sample.id}")
            compared += 1
    assert compared == N_IMAGES * len(EVERY_METHOD)
    assert len(list(cache.rglob("*.npz"))) == N_IMAGES * 3  # three map variants; the maps came from evaluate's cache: no recomputation
