"""The GBT merge scorer experiment (experiments/gbt_scorer.py): its pair figures, and the LightGBM wrapper in the
greedy merge on a small synthetic scene (skipped without LightGBM, the experiment's own dependency)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from skimage import data

from binmap_tf.segmentation.hierarchy import build_hierarchy
from binmap_tf.segmentation.merge_features import feature_names
from binmap_tf.segmentation.superpixels import egs
from experiments.gbt_scorer import BoosterScorer, soft_log_loss, weighted_auc
from tests.test_hierarchy import random_map


def test_weighted_auc_is_the_pairwise_order_of_weighted_positives_and_negatives():
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 6, 40) / 5.0  # many ties
    labels = rng.choice([0.0, 0.25, 0.5, 1.0], 40)
    # Every (positive i, negative j) with weights y_i (1 - y_j): 1 if i scores above j, 1/2 on a tie.
    order = (scores[:, None] > scores[None]) + 0.5 * (scores[:, None] == scores[None])
    weights = labels[:, None] * (1 - labels[None])
    assert weighted_auc(scores, labels) == pytest.approx(np.sum(order * weights) / (labels.sum() * (1 - labels).sum()))
    assert weighted_auc(np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1])) == pytest.approx(0.75)


def test_soft_log_loss_is_the_mean_cross_entropy():
    assert soft_log_loss(np.full(3, 0.5), np.array([0.0, 1.0, 0.3])) == pytest.approx(np.log(2))
    assert soft_log_loss(np.array([0.2]), np.array([0.2])) == pytest.approx(-(0.2 * np.log(0.2) + 0.8 * np.log(0.8)))


def test_a_booster_orders_the_greedy_merge_as_a_merge_scorer_does():
    lgb = pytest.importorskip("lightgbm")
    names = feature_names(8, codes=True)
    rng = np.random.default_rng(0)
    features = rng.standard_normal((400, len(names)))
    labels = 1 / (1 + np.exp(-2 * features[:, 0]))  # soft labels
    booster = lgb.train({"objective": "cross_entropy", "num_leaves": 4, "verbose": -1, "num_threads": 1},
                        lgb.Dataset(features, label=labels), num_boost_round=10)
    scorer = BoosterScorer(booster, 10, info={"name": "gbt", "threshold": 0.4, "cues_until": 5, "features": names})
    assert (scorer.name, scorer.threshold, scorer.cues_until, scorer.codes, scorer.n_bits) == ("gbt", 0.4, 5, True, 8)
    probabilities = scorer(features[:7])
    assert probabilities.shape == (7,) and ((probabilities > 0) & (probabilities < 1)).all()
    with pytest.raises(ValueError, match="features"):
        scorer(features[:, :-1])

    image = data.astronaut()[::4, ::4]
    superpixels, binary_map = egs(image, scale=50), random_map(image)
    tree = build_hierarchy(image, superpixels, binary_map, scorer=scorer)  # cues to 5 regions, the booster above
    assert len(tree.children) == tree.n_superpixels - 1
    assert ((tree.heights >= 0) & (tree.heights <= 1)).all()
    assert len(np.unique(tree.cut(n_segments=3))) == 3
    with pytest.raises(ValueError, match="edge map"):
        build_hierarchy(image, superpixels, dataclasses.replace(binary_map, edges=None), scorer=scorer)
