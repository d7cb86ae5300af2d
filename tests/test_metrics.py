"""Region measures: hand-computed cases and the official BSDS benchmark self-test."""

from __future__ import annotations

import numpy as np
import pytest

from binmap_tf.evaluation.datasets import official_bench
from binmap_tf.evaluation.metrics import (
    average_best_overlap,
    contingency,
    probabilistic_rand_index,
    region_benchmark,
    region_scores,
    segmentation_covering,
    summarize,
    ucm_segmentation,
    ucm_thresholds,
    variation_of_information,
)

# A 4x4 image: a small 4-pixel square S (label 2) in a 12-pixel background B (label 1).
GT = np.array([
    [2, 2, 1, 1],
    [2, 2, 1, 1],
    [1, 1, 1, 1],
    [1, 1, 1, 1],
])
# S found exactly, B cut into four 3-pixel pieces (a refinement of GT).
FRAGMENTED = np.array([
    [0, 0, 1, 1],
    [0, 0, 1, 2],
    [3, 3, 4, 2],
    [3, 4, 4, 2],
])
# Everything merged into one segment.
MERGED = np.zeros((4, 4), dtype=int)


def test_contingency_counts_overlaps_of_sorted_labels():
    table = contingency(np.array([[0, 0, 1]]), np.array([[5, 7, 7]]))
    np.testing.assert_array_equal(table.toarray(), [[1, 1], [0, 1]])
    table = contingency(FRAGMENTED, GT)
    np.testing.assert_array_equal(table.sum(axis=1), [4, 3, 3, 3, 3])
    np.testing.assert_array_equal(table.sum(axis=0), [12, 4])


def test_perfect_segmentation_scores_perfectly_under_any_labels():
    relabelled = np.where(GT == 1, -7, 40)
    assert average_best_overlap(relabelled, GT) == 1.0
    assert segmentation_covering(relabelled, GT) == 1.0
    assert probabilistic_rand_index(relabelled, GT) == 1.0
    assert variation_of_information(relabelled, GT) == 0.0


def test_fragmented_by_hand():
    # Best IoUs: B -> a 3-pixel piece, 3/12; S -> itself, 1.
    assert average_best_overlap(FRAGMENTED, GT) == pytest.approx((3 / 12 + 1) / 2)
    assert segmentation_covering(FRAGMENTED, GT) == pytest.approx((12 * 3 / 12 + 4 * 1) / 16)
    # 120 pixel pairs; GT joins C(12,2) + C(4,2) = 72, the pieces keep C(4,2) + 4 C(3,2) = 18 of them.
    assert probabilistic_rand_index(FRAGMENTED, GT) == pytest.approx(1 - (72 - 18) / 120)
    # A refinement: VoI = H(pred) - H(gt) = 0.75 log2(16/3) + 0.5 - (0.75 log2(4/3) + 0.5) = 1.5.
    assert variation_of_information(FRAGMENTED, GT) == pytest.approx(1.5)


def test_merged_by_hand():
    # One segment: IoU 12/16 with B, 4/16 with S.
    assert average_best_overlap(MERGED, GT) == pytest.approx((12 / 16 + 4 / 16) / 2)
    assert segmentation_covering(MERGED, GT) == pytest.approx((12 * 12 / 16 + 4 * 4 / 16) / 16)
    assert probabilistic_rand_index(MERGED, GT) == pytest.approx(72 / 120)
    # VoI = H(gt) = -(3/4 log2 3/4 + 1/4 log2 1/4).
    entropy_gt = -(0.75 * np.log2(0.75) + 0.25 * np.log2(0.25))
    assert variation_of_information(MERGED, GT) == pytest.approx(entropy_gt)


def test_merging_raises_covering_but_lowers_abo():
    # Covering is area-weighted (B dominates and gains); ABO weighs S equally (and it is lost).
    assert segmentation_covering(MERGED, GT) > segmentation_covering(FRAGMENTED, GT)
    assert average_best_overlap(MERGED, GT) < average_best_overlap(FRAGMENTED, GT)


def test_one_segment_per_pixel_uses_the_sparse_path():
    rng = np.random.default_rng(0)
    gt = rng.integers(0, 6, size=(20, 30))
    pred = np.arange(gt.size).reshape(gt.shape) * 1_000_003  # many, sparse, huge labels
    areas = np.bincount(gt.ravel())
    # Every best IoU is 1 / area, so covering = segments / pixels and ABO = mean(1 / area).
    assert segmentation_covering(pred, gt) == pytest.approx(len(areas) / gt.size)
    assert average_best_overlap(pred, gt) == pytest.approx(np.mean(1 / areas))
    assert probabilistic_rand_index(pred, gt) == pytest.approx(
        1 - np.sum(areas * (areas - 1) / 2) / (gt.size * (gt.size - 1) / 2)
    )


def test_several_annotations_pool_segments_and_average_pri_voi():
    other = np.where(np.arange(16).reshape(4, 4) < 8, 1, 2)  # top / bottom halves
    single = [region_scores(FRAGMENTED, gt) for gt in (GT, other)]
    both = region_scores(FRAGMENTED, [GT, other])
    assert both.covering == pytest.approx(np.mean([s.covering for s in single]))
    assert both.abo == pytest.approx(sum(s.abo_sum for s in single) / sum(s.abo_count for s in single))
    assert both.rand_index == pytest.approx(np.mean([s.rand_index for s in single]))
    voi = [s.variation_of_information for s in single]
    assert both.variation_of_information == pytest.approx(np.mean(voi))
    # A stacked (n, H, W) array is read as n annotations.
    assert region_scores(FRAGMENTED, np.stack([GT, other])).covering == both.covering


def test_reverse_covering_is_covering_with_roles_swapped():
    assert region_scores(MERGED, GT).reverse_covering == pytest.approx(segmentation_covering(GT, MERGED))


def test_summarize_pools_abo_over_segments_not_images():
    scores = [region_scores(FRAGMENTED, GT), region_scores(MERGED, [GT, GT])]
    summary = summarize(scores)
    assert summary.abo == pytest.approx((scores[0].abo_sum + scores[1].abo_sum) / (2 + 4))
    assert summary.abo_image_mean == pytest.approx((scores[0].abo + scores[1].abo) / 2)
    # Covering pools annotations: the second image (two annotations) weighs twice.
    assert summary.covering == pytest.approx((scores[0].covering + 2 * scores[1].covering) / 3)
    assert summary.pri == pytest.approx((scores[0].rand_index + scores[1].rand_index) / 2)
    assert (summary.n_images, summary.n_gt_segments) == (2, 6)


def test_bad_inputs_raise_actionable_errors():
    with pytest.raises(ValueError, match="differs from pred shape"):
        segmentation_covering(GT, GT[:3])
    with pytest.raises(ValueError, match="astype"):
        segmentation_covering(GT.astype(float), GT)
    with pytest.raises(ValueError, match="no annotation"):
        region_scores(GT, [])
    with pytest.raises(ValueError, match="same thresholds"):
        region_benchmark([[region_scores(GT, GT)], []])


def test_ucm_thresholds_are_the_official_ones():
    np.testing.assert_allclose(ucm_thresholds(5), np.arange(1, 6) / 6)
    assert ucm_thresholds(5)[-1] == 1 - 1 / 6


# ---------------------------------------------------------------------------------------------
# The official self-test (BSDS500 bench/test_benchs.m): 5 images, 5 segmentations each.
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bench():
    """Scores of the self-test inputs: the ``segs`` cells and the ``ucm2`` cut at 5 thresholds."""
    samples = official_bench()
    thresholds = ucm_thresholds(5)
    segs, cuts, gts = [], [], []
    for sample in samples:
        gts.append(sample.load_ground_truths())
        segs.append(sample.load_segs())
        ucm2 = sample.load_ucm2()
        cuts.append([ucm_segmentation(ucm2, t) for t in thresholds])
    return {
        "root": samples.root,
        "segs": segs,
        "cuts": cuts,
        # test_benchs.m: test_1 scores ucm2 with nthresh = 5; test_4 (allBench) and test_5
        # (regionBench) score the segs cells, whose thresholds are the indices 1..5.
        "test_1": ([[region_scores(c, gt) for c in image] for image, gt in zip(cuts, gts)], thresholds),
        "test_4": ([[region_scores(s, gt) for s in image] for image, gt in zip(segs, gts)], None),
    }


def test_ucm_cuts_give_the_shipped_segmentations(bench):
    for image_cuts, image_segs in zip(bench["cuts"], bench["segs"]):
        for cut, seg in zip(image_cuts, image_segs):
            assert cut.shape == seg.shape
            table = contingency(cut, seg)
            assert table.nnz == table.shape[0] == table.shape[1]  # same partition


@pytest.mark.parametrize("folder, inputs", [("test_1", "test_1"), ("test_4", "test_4"), ("test_5", "test_4")])
def test_matches_official_output(bench, folder, inputs):
    scores, thresholds = bench[inputs]
    exact = region_benchmark(scores, thresholds, official_rounding=True).official_tables()
    full = region_benchmark(scores, thresholds).official_tables()
    for name, table in exact.items():
        official = (bench["root"] / folder / name).read_text().split()
        assert [f"{value:g}" for value in table.ravel()] == official, name
        # Full precision differs only by the rounding of the official temporary files.
        np.testing.assert_allclose(full[name], np.array(official, float).reshape(table.shape), atol=5e-6)


def test_boundary_counts_match_within_the_tolerance_only():
    from binmap_tf.evaluation.metrics import boundary_counts, boundary_map

    truth = np.zeros((100, 200), np.int32)
    truth[:, 100:] = 1
    assert boundary_map(truth).sum() == 100  # one column of boundary pixels
    same = boundary_counts(truth, truth)
    assert same.precision == same.recall == same.f_measure == 1.0
    near, far = truth.copy(), truth.copy()
    near[:, 98:100] = 1  # boundary moved 2 pixels: within 0.0075 of the 224-pixel diagonal (2 pixels)
    far[:, 90:100] = 1  # moved 10 pixels: outside
    assert boundary_counts(near, truth).f_measure == 1.0
    assert boundary_counts(far, truth).f_measure == 0.0
    split = truth.copy()
    split[:50, :100] = 2  # an extra boundary the annotation does not have: precision drops, recall stays
    counts = boundary_counts(split, [truth, truth])
    assert counts.recall == 1.0 and counts.precision < 1.0 and counts.ground_truth == 200
