"""The level benchmark's cuts, level mean and ODS, and its candidates, on a tiny synthetic tree (no CNN)."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.levels import HierarchyRows, Level, Rows, parse_candidate
from binmap_tf.evaluation.levels import covering_per_level, level_counts
from binmap_tf.segmentation.hierarchy import MergeTree


def four_stripes() -> MergeTree:
    """Superpixels 0-3 in a row: 0+1 merge at 0.1 (node 4), 2+3 at 0.2 (node 5), then 4+5 at 0.9."""
    superpixels = np.repeat(np.arange(4, dtype=np.int32), 2)[None, :].repeat(3, axis=0)
    return MergeTree(superpixels=superpixels, children=np.array([[0, 1], [2, 3], [4, 5]]),
                     heights=np.array([0.1, 0.2, 0.9]), pairs=np.array([[0, 1], [1, 2], [2, 3]]),
                     pair_heights=np.array([0.1, 0.9, 0.2]))


def test_levels_above_the_first_level_give_the_superpixels():
    assert level_counts(4, [1, 2, 3, 10, 160]) == [1, 2, 3, 4, 4]


def test_each_level_is_scored_at_its_count_and_ods_at_the_best_threshold():
    tree = four_stripes()
    halves = np.repeat([0, 1], 4)[None, :].repeat(3, axis=0)  # one annotator: superpixels {0, 1} and {2, 3}
    rows = HierarchyRows([Rows() for _ in range(4)])
    rows.add(tree, tree.cut, [halves], [1, 2, 3, 10], [0.05, 0.15, 0.5, 0.95], seconds=0.0)
    summary = rows.summary([1, 2, 3, 10], [0.05, 0.15, 0.5, 0.95])
    levels = summary["levels"]
    assert [levels[k]["mean_segments"] for k in ("1", "2", "3", "10")] == [1, 2, 3, 4]
    assert levels["2"]["covering"] == 1.0 and levels["1"]["covering"] == 0.5
    assert levels["10"]["matched_images"] == 0 and levels["3"]["matched_images"] == 1  # 4 superpixels only
    assert summary["level_mean_covering"] == pytest.approx(np.mean([levels[k]["covering"] for k in levels]))
    assert summary["ods"]["threshold"] == 0.5 and summary["ods"]["covering"] == 1.0
    assert summary["ods"]["mean_segments"] == 2


def test_a_level_at_an_egs_scale_asks_each_image_for_egs_count_there():
    fixed, matched = Level(count=40), Level(egs_scale=500.0)
    assert (fixed.name, matched.name) == ("40", "egs500")
    assert fixed.target({500.0: 137}) == 40 and matched.target({500.0: 137, 1000.0: 88}) == 137
    tree = four_stripes()
    halves = np.repeat([0, 1], 4)[None, :].repeat(3, axis=0)
    rows = HierarchyRows([Rows()])
    rows.add(tree, tree.cut, [halves], [matched.target({500.0: 2})], [], seconds=0.0)
    rows.add(tree, tree.cut, [halves], [matched.target({500.0: 9})], [], seconds=0.0)  # more than 4 superpixels
    summary = rows.summary([matched.name], [])
    assert summary["levels"]["egs500"]["mean_segments"] == 3 and summary["levels"]["egs500"]["matched_images"] == 1
    assert "ods" not in summary


def test_training_records_the_covering_of_each_level():
    tree = four_stripes()
    halves = np.repeat([0, 1], 4)[None, :].repeat(3, axis=0)
    coverings = covering_per_level([tree, tree], [[halves], [halves]], levels=(1, 2, 10))
    assert coverings == {"1": 0.5, "2": 1.0, "10": pytest.approx(0.5)}  # 10: the 4 stripes, each half of a half


def test_candidates_parse_a_method_on_another_first_level():
    learned = parse_candidate("binmap-learned")
    assert learned.options["merge"] == "hierarchy" and "threshold" not in learned.options
    finer = parse_candidate("binmap-learned@egs:scale=500")
    assert finer.options["superpixels"] == "egs" and finer.options["scale"] == 500.0
    assert finer.options["scorer"] == learned.options["scorer"]
    hand = parse_candidate("binmap-hier@watershed:h=0.02")
    assert hand.options["h"] == 0.02 and "scale" not in hand.options and hand.options["weights"] is not None
    with pytest.raises(ValueError, match="unknown hierarchy"):
        parse_candidate("egs")
    with pytest.raises(ValueError, match="take"):
        parse_candidate("binmap-learned@egs:h=0.1")
