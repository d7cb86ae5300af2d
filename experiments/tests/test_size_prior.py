"""The size prior on the learned probability (experiments/size_prior.py), on hand-made regions."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from experiments.size_prior import SizePriorCriterion


def constant(value: float):
    """A stand-in for the learned criterion: the same probability for every pair."""
    return lambda regions, first, second, border, n_regions: np.full(len(first), value)


def test_small_regions_are_scaled_down_as_the_hand_set_cues_scale_them():
    # 4 regions of a 400-pixel image: the mean is 100 pixels, "small" at prior 0.25 is 25.
    regions = SimpleNamespace(area=np.array([100.0, 100.0, 25.0, 4.0]))
    first, second = np.array([0, 0, 0]), np.array([1, 2, 3])
    scaled = SizePriorCriterion(constant(0.8), 0.25, 400.0)(regions, first, second, None, 4)
    np.testing.assert_allclose(scaled, [0.8, 0.8, 0.8 * np.sqrt(4 / 25)])
    assert SizePriorCriterion.depends_on_count


def test_a_zero_prior_keeps_the_learned_probability():
    regions = SimpleNamespace(area=np.array([100.0, 1.0]))
    result = SizePriorCriterion(constant(0.3), 0.0, 400.0)(regions, np.array([0]), np.array([1]), None, 2)
    np.testing.assert_allclose(result, [0.3])
