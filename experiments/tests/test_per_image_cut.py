"""The per-image cut rules of benchmarks/per_image_cut.py, on hand-made hierarchies' scores."""

from __future__ import annotations

import numpy as np

from experiments.per_image_cut import (
    compare,
    global_choice,
    neighbour_choice,
    pooled_covering,
    widest_gap_choice,
)


def test_global_choice_leaves_the_image_out():
    # Image 0 alone is best at threshold 0 (by far); the other two at threshold 1.
    sums = np.array([[10.0, 0.0], [0.0, 3.0], [0.0, 3.0]])
    np.testing.assert_array_equal(global_choice(sums), [1, 0, 0])
    assert pooled_covering(sums, np.full(3, 10.0), np.array([0, 1, 1])) == 16 / 30


def test_all_other_images_as_neighbours_is_the_global_choice():
    rng = np.random.default_rng(0)
    sums = rng.uniform(0, 1, (6, 5))
    counts = rng.integers(1, 50, (6, 5))
    np.testing.assert_array_equal(neighbour_choice(sums, counts, k=5), global_choice(sums))


def test_widest_gap_cuts_in_the_middle_of_the_largest_height_gap():
    thresholds = np.round(np.arange(0.0, 1.0001, 0.05), 2)
    centre = np.array([int(np.argmin(np.abs(thresholds - 0.4)))])
    # Window (0.1, 0.7): heights 0.2 and 0.6 inside, the widest gap 0.2-0.6, its middle 0.4.
    choice = widest_gap_choice([np.array([0.05, 0.2, 0.6, 0.9])], thresholds, centre, 0.3)
    assert thresholds[choice[0]] == 0.4
    choice = widest_gap_choice([np.array([0.05, 0.15, 0.2, 0.9])], thresholds, centre, 0.3)
    assert thresholds[choice[0]] == 0.45  # gap 0.2-0.7, middle 0.45


def test_compare_scores_each_rule_by_its_own_choice():
    """Two images, two thresholds: image 0 is best at the first, image 1 at the second. The oracle
    picks each image's best, the global rule (leave-one-out) picks for each image what suits the
    other, so it gets both wrong here: pooled covering 2/20 against 20/20."""
    sums = np.array([[10.0, 1.0], [1.0, 10.0]])
    areas = np.full(2, 10.0)
    counts = np.array([[5, 3], [5, 3]])
    heights = [np.array([0.2, 0.8]), np.array([0.2, 0.8])]
    results = compare(sums, areas, counts, heights, np.array([0.3, 0.7]))
    assert results["per-image best (OIS)"] == 1.0
    assert results["global"] == 0.1
