"""The cuts a hierarchy is scored at: fixed numbers of segments per image (levels) and thresholds.

A hierarchy whose every cut is good scores high at all of :data:`LEVELS`; one good only near its own
threshold does not (issue 23; ``benchmarks.levels`` and docs/research/levels.md). ``binmap-train-merge``
records a scorer's val covering at each level with :func:`covering_per_level`, and chooses its threshold
from :func:`scores_at_thresholds`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from binmap_tf.evaluation.metrics import RegionScores, region_scores, summarize

LEVELS = (10, 20, 40, 80, 160)  # segments per image


def level_counts(n_superpixels: int, levels: Sequence[int]) -> list[int]:
    """The number of segments each level cuts a tree of ``n_superpixels`` leaves at: the level, or
    all the leaves where the first level has fewer."""
    return [min(int(level), n_superpixels) for level in levels]


def covering_per_level(trees: Sequence, ground_truths: Sequence[list[np.ndarray]],
                       levels: Sequence[int] = LEVELS) -> dict[str, float]:
    """Dataset covering of ``trees`` (:class:`~binmap_tf.segmentation.hierarchy.MergeTree` at their images'
    size) cut per image at each of ``levels``, keyed by the level."""
    scores: list[list] = [[] for _ in levels]
    for tree, truths in zip(trees, ground_truths):
        for row, count in zip(scores, level_counts(tree.n_superpixels, levels)):
            row.append(region_scores(tree.cut(n_segments=count), truths))
    return {str(level): summarize(row).covering for level, row in zip(levels, scores)}


def scores_at_thresholds(tree, ground_truths: list[np.ndarray], thresholds: Sequence[float],
                         cut: Callable[..., np.ndarray] | None = None) -> tuple[list[RegionScores], list[int]]:
    """The scores of ``tree`` (a :class:`~binmap_tf.segmentation.hierarchy.MergeTree`) cut at each threshold,
    and the number of segments of each cut. ``cut(threshold=)`` gives a cut's labels at the image's size
    (default: the tree's own, for a tree of the image's size)."""
    cut = tree.cut if cut is None else cut
    counts = [tree.n_segments_at(threshold) for threshold in thresholds]
    by_count: dict[int, RegionScores] = {}  # thresholds with no merge height between them give one cut: score it once
    for count, threshold in zip(counts, thresholds):
        if count not in by_count:
            by_count[count] = region_scores(cut(threshold=threshold), ground_truths)
    return [by_count[count] for count in counts], counts
