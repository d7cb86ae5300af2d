"""The cuts of the level-aware criterion: a hierarchy cut per image at fixed numbers of segments.

A hierarchy whose every cut is good scores high at all of :data:`LEVELS`; one good only near its own
threshold does not (issue 23; ``benchmarks.levels`` and docs/research/levels.md). ``binmap-train-merge``
records a scorer's val covering at each level with :func:`covering_per_level`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from binmap_tf.evaluation.metrics import region_scores, summarize

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
