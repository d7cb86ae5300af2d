"""Region measures of a segmentation against human ground truth.

* :func:`average_best_overlap` (ABO): the paper's "Segmentation-IoU" read literally: every
  ground-truth segment is matched with the predicted segment of highest IoU, and those best
  IoUs are averaged without weights over all segments of all images.
* :func:`segmentation_covering`, :func:`probabilistic_rand_index`,
  :func:`variation_of_information`: the BSDS500 region benchmark, ported from the official
  MATLAB code (``evaluation_reg_image.m``, ``match_segmentations.m``, ``match_segmentations2.m``,
  ``collect_eval_reg.m``) so that :func:`region_benchmark` reproduces its output files.

Every measure is computed from one sparse contingency table per (segmentation, annotation)
pair, so the cost is a few passes over the pixels whatever the number of segments.
:func:`boundary_counts` adds the boundary benchmark's precision and recall (relaxed matching), to
judge where label boundaries lie, e.g. after upsampling labels to a photo's full resolution.

Typical use: :func:`region_scores` per image (it returns the raw per-image accumulators),
then :func:`summarize` (one segmentation per image) or :func:`region_benchmark` (several
segmentations or thresholds per image, with the official ODS / OIS / Best figures).

References
----------
.. [1] P. Arbelaez, M. Maire, C. Fowlkes, J. Malik, "Contour Detection and Hierarchical Image
   Segmentation", IEEE TPAMI 33(5), 2011. Section 3.2 defines covering, PRI and VoI.
.. [2] "CNN-aware binary map for general semantic segmentation", ICIP 2016, Evaluation Protocol
   (Segmentation-IoU).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import scipy.sparse
from numpy.typing import ArrayLike
from scipy import ndimage

from binmap_tf.segmentation.labels import sequential_labels

__all__ = [
    "BenchmarkResult",
    "BoundaryCounts",
    "DatasetScores",
    "RegionScores",
    "average_best_overlap",
    "boundary_counts",
    "boundary_map",
    "contingency",
    "probabilistic_rand_index",
    "region_benchmark",
    "region_scores",
    "segmentation_covering",
    "summarize",
    "ucm_segmentation",
    "ucm_thresholds",
    "variation_of_information",
]


# ---------------------------------------------------------------------------------------------
# Contingency table
# ---------------------------------------------------------------------------------------------


def _as_labels(labels: ArrayLike, name: str) -> np.ndarray:
    """Return ``labels`` as an integer array, or raise an actionable ``ValueError``."""
    array = np.asarray(labels)
    if array.dtype == bool:
        return array.astype(np.uint8)
    if not np.issubdtype(array.dtype, np.integer):
        raise ValueError(
            f"{name} must be an integer label array, got dtype {array.dtype}; "
            "cast label images with .astype(int)"
        )
    if array.size == 0:
        raise ValueError(f"{name} is empty (shape {array.shape}); pass a label image")
    return array


def _as_gt(gt: ArrayLike, shape: tuple[int, ...]) -> np.ndarray:
    """Return one annotation as an integer array, checking it has the segmentation's shape."""
    array = _as_labels(gt, "gt")
    if array.shape != shape:
        raise ValueError(
            f"gt shape {array.shape} differs from pred shape {shape}; "
            "score the segmentation at the ground truth's resolution"
        )
    return array


def _as_gt_list(gt: ArrayLike | Sequence[ArrayLike], shape: tuple[int, ...]) -> list[np.ndarray]:
    """Return ``gt`` (one label array or a sequence of annotations) as a list of arrays."""
    if isinstance(gt, np.ndarray) and gt.ndim == len(shape):
        gt = [gt]
    arrays = [_as_gt(item, shape) for item in gt]
    if not arrays:
        raise ValueError("gt holds no annotation; pass a label array or a list of them")
    return arrays


def _compact(labels: np.ndarray) -> tuple[np.ndarray, int]:
    """The labels numbered 0..n-1 (sorted by value) as a flat array, and n."""
    index, n = sequential_labels(labels)
    return index.ravel(), n


@dataclass(frozen=True)
class _Overlap:
    """Non-zero cells of a contingency table plus its marginals (segment areas)."""

    rows: np.ndarray  # predicted segment of each cell
    cols: np.ndarray  # ground-truth segment of each cell
    counts: np.ndarray  # pixels in both segments
    pred_area: np.ndarray  # pixels of each predicted segment (row sums)
    gt_area: np.ndarray  # pixels of each ground-truth segment (column sums)

    @classmethod
    def build(cls, pred: tuple[np.ndarray, int], gt: tuple[np.ndarray, int]) -> _Overlap:
        """Count pixel pairs of two compacted label maps (see :func:`_compact`)."""
        (pred_index, n_pred), (gt_index, n_gt) = pred, gt
        keys = pred_index.astype(np.int64) * n_gt + gt_index
        if n_pred * n_gt <= 4 * keys.size:  # dense histogram is cheaper than sorting
            histogram = np.bincount(keys, minlength=n_pred * n_gt)
            cells = np.flatnonzero(histogram)
            counts = histogram[cells]
        else:
            cells, counts = np.unique(keys, return_counts=True)
        return cls(
            rows=cells // n_gt,
            cols=cells % n_gt,
            counts=counts.astype(np.float64),
            pred_area=np.bincount(pred_index, minlength=n_pred).astype(np.float64),
            gt_area=np.bincount(gt_index, minlength=n_gt).astype(np.float64),
        )

    def iou(self) -> np.ndarray:
        """IoU of every overlapping (predicted, ground-truth) pair, as ``match_segmentations.m``."""
        return self.counts / (self.gt_area[self.cols] + self.pred_area[self.rows] - self.counts)

    def rand_index(self) -> float:
        """Rand index, the formula of ``match_segmentations2.m`` (``rand_index``)."""
        n = self.counts.sum()
        if n < 2:
            return 1.0  # one pixel: every pair (there is none) agrees
        disagreements = (
            np.sum(self.pred_area**2) / 2 + np.sum(self.gt_area**2) / 2 - np.sum(self.counts**2)
        )
        return float(1 - disagreements / (n * (n - 1) / 2))

    def variation_of_information(self) -> float:
        """VoI in bits, the formula of ``match_segmentations2.m`` (``variation_of_information``)."""
        n = self.counts.sum()
        joint = self.counts / n
        pred_p, gt_p = self.pred_area / n, self.gt_area / n  # all > 0: labels are compacted
        entropy_pred = -np.sum(pred_p * np.log2(pred_p))
        entropy_gt = -np.sum(gt_p * np.log2(gt_p))
        independent = (self.pred_area[self.rows] / n) * (self.gt_area[self.cols] / n)
        mutual_information = np.sum(joint * np.log2(joint / independent))
        return float(entropy_pred + entropy_gt - 2 * mutual_information)


def contingency(pred: ArrayLike, gt: ArrayLike) -> scipy.sparse.csr_array:
    """Overlap counts between the segments of two label images.

    Parameters
    ----------
    pred, gt : (..., ) array of int
        Label images of the same shape; each distinct value is one segment.

    Returns
    -------
    table : scipy.sparse.csr_array of shape (n_pred, n_gt)
        ``table[i, j]`` is the number of pixels labelled with the ``i``-th smallest value of
        ``pred`` and the ``j``-th smallest value of ``gt``. Row and column sums are the
        segment areas.

    Examples
    --------
    >>> contingency(np.array([[0, 0, 1]]), np.array([[5, 7, 7]])).toarray()
    array([[1, 1],
           [0, 1]])
    """
    pred = _as_labels(pred, "pred")
    gt = _as_gt(gt, pred.shape)
    overlap = _Overlap.build(_compact(pred), _compact(gt))
    shape = (len(overlap.pred_area), len(overlap.gt_area))
    counts = overlap.counts.astype(np.int64)
    return scipy.sparse.csr_array((counts, (overlap.rows, overlap.cols)), shape=shape)


def _max_by(index: np.ndarray, values: np.ndarray, size: int) -> np.ndarray:
    """Largest of ``values`` per group ``index`` (0 for empty groups)."""
    best = np.zeros(size)
    np.maximum.at(best, index, values)
    return best


# ---------------------------------------------------------------------------------------------
# Per-image scores
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RegionScores:
    """Raw region-benchmark accumulators of one segmentation against all annotations of an image.

    Attributes
    ----------
    gt_areas : ndarray of float
        Pixels of every ground-truth segment, annotations one after another (``regionsGT``).
    gt_best_iou : ndarray of float
        Best IoU of each of those segments over the predicted segments (``matchesGT``).
    pred_areas : ndarray of float
        Pixels of every predicted segment (``regionsSeg``).
    pred_best_iou : ndarray of float
        Best IoU of each predicted segment over the segments of *all* annotations
        (``matchesSeg``).
    rand_index : float
        Probabilistic Rand Index: the Rand index averaged over the annotations (``sumRI``).
    variation_of_information : float
        Variation of information in bits averaged over the annotations (``sumVOI``).

    Notes
    -----
    The names in parentheses are the variables of the official ``evaluation_reg_image.m``;
    :attr:`covering_sum`, :attr:`gt_area`, :attr:`reverse_covering_sum` and :attr:`pred_area`
    are its ``cntR``, ``sumR``, ``cntP`` and ``sumP`` (the columns 2-5 of ``<id>_ev2.txt``).
    """

    gt_areas: np.ndarray
    gt_best_iou: np.ndarray
    pred_areas: np.ndarray
    pred_best_iou: np.ndarray
    rand_index: float
    variation_of_information: float

    @property
    def covering_sum(self) -> float:
        """Area-weighted sum of the best IoUs of the ground-truth segments (``cntR``)."""
        return float(self.gt_areas @ self.gt_best_iou)

    @property
    def gt_area(self) -> float:
        """Pixels summed over all annotations, i.e. annotations x image pixels (``sumR``)."""
        return float(self.gt_areas.sum())

    @property
    def covering(self) -> float:
        """Segmentation covering of the annotations by the segmentation, averaged over annotations."""
        return self.covering_sum / self.gt_area

    @property
    def reverse_covering_sum(self) -> float:
        """Area-weighted sum of the best IoUs of the predicted segments (``cntP``)."""
        return float(self.pred_areas @ self.pred_best_iou)

    @property
    def pred_area(self) -> float:
        """Pixels of the segmentation (``sumP``)."""
        return float(self.pred_areas.sum())

    @property
    def reverse_covering(self) -> float:
        """Covering of the segmentation by the annotations (the official "precision" ``P``)."""
        return self.reverse_covering_sum / self.pred_area

    @property
    def abo_sum(self) -> float:
        """Sum of the best IoUs of all ground-truth segments (numerator of ABO)."""
        return float(self.gt_best_iou.sum())

    @property
    def abo_count(self) -> int:
        """Number of ground-truth segments over all annotations (denominator of ABO)."""
        return len(self.gt_best_iou)

    @property
    def abo(self) -> float:
        """Average best overlap of this image (unweighted mean of the best IoUs)."""
        return self.abo_sum / self.abo_count


def region_scores(pred: ArrayLike, gt: ArrayLike | Sequence[ArrayLike]) -> RegionScores:
    """Score one segmentation against one or several human annotations of an image.

    Parameters
    ----------
    pred : (M, N) array of int
        Segmentation to score; each distinct value is one segment (any integers, 0 included).
    gt : (M, N) array of int, or sequence of them
        Ground-truth annotation(s); for BSDS500 pass every annotation of the image.

    Returns
    -------
    scores : RegionScores
        Per-image accumulators; its properties give covering, ABO, PRI and VoI, and
        :func:`summarize` / :func:`region_benchmark` turn a list of them into dataset figures.

    Notes
    -----
    This is ``evaluation_reg_image.m`` for one segmentation (one threshold). One deliberate
    difference: the official code treats label 0 as unlabelled (it ignores those pixels in
    PRI/VoI and never matches them as a segment), while here every value is a segment, so
    0-based segmentations (e.g. :func:`skimage.segmentation.felzenszwalb`) need no shift.
    Both agree whenever labels start at 1, as in BSDS500 ground truth and the official inputs.
    Missing label values (gaps) have zero area and change nothing, as in the official code.

    Examples
    --------
    One segment over a 3-pixel and a 1-pixel ground-truth segment: IoUs 3/4 and 1/4.

    >>> scores = region_scores(np.array([[0, 0, 0, 0]]), np.array([[1, 1, 1, 2]]))
    >>> scores.abo, scores.covering
    (0.5, 0.625)
    """
    pred = _as_labels(pred, "pred")
    gts = _as_gt_list(gt, pred.shape)
    compact_pred = _compact(pred)
    overlaps = [_Overlap.build(compact_pred, _compact(annotation)) for annotation in gts]
    n_pred = compact_pred[1]
    gt_best, pred_best = [], np.zeros(n_pred)
    for overlap in overlaps:
        iou = overlap.iou()
        gt_best.append(_max_by(overlap.cols, iou, len(overlap.gt_area)))
        pred_best = np.maximum(pred_best, _max_by(overlap.rows, iou, n_pred))
    return RegionScores(
        gt_areas=np.concatenate([overlap.gt_area for overlap in overlaps]),
        gt_best_iou=np.concatenate(gt_best),
        pred_areas=overlaps[0].pred_area,
        pred_best_iou=pred_best,
        rand_index=float(np.mean([overlap.rand_index() for overlap in overlaps])),
        variation_of_information=float(np.mean([overlap.variation_of_information() for overlap in overlaps])),
    )


def average_best_overlap(pred: ArrayLike, gt: ArrayLike | Sequence[ArrayLike]) -> float:
    """Average Best Overlap: the mean over ground-truth segments of their best IoU.

    Parameters
    ----------
    pred : (M, N) array of int
        Segmentation; each distinct value is one segment.
    gt : (M, N) array of int, or sequence of them
        Annotation(s); with several, the mean runs over the segments of all of them.

    Returns
    -------
    abo : float
        In [0, 1]; 1 when every ground-truth segment is exactly a predicted segment.

    Notes
    -----
    The paper's "Segmentation-IoU" [2]_: for each ground-truth segment :math:`P_{gt}` the
    predicted segment :math:`P_m` of maximum :math:`|P_m \\cap P_{gt}| / |P_m \\cup P_{gt}|` is
    selected, and the value is averaged over all segments. Unlike covering it does not weight
    by area, so small segments count as much as large ones. For a dataset figure do not
    average this per-image value; sum :attr:`RegionScores.abo_sum` and
    :attr:`RegionScores.abo_count` over images (see :func:`summarize`).

    References
    ----------
    .. [1] P. Arbelaez et al., "Contour Detection and Hierarchical Image Segmentation",
       IEEE TPAMI 33(5), 2011.
    .. [2] "CNN-aware binary map for general semantic segmentation", ICIP 2016.

    Examples
    --------
    >>> gt = np.array([[1, 1, 2, 2]])
    >>> average_best_overlap(np.array([[5, 5, 5, 7]]), gt)  # best IoUs 2/3 and 1/2
    0.5833333333333333
    """
    return region_scores(pred, gt).abo


def segmentation_covering(pred: ArrayLike, gt: ArrayLike | Sequence[ArrayLike]) -> float:
    """Segmentation covering of the annotation(s) by ``pred``, as the BSDS500 benchmark.

    Parameters
    ----------
    pred : (M, N) array of int
        Segmentation; each distinct value is one segment.
    gt : (M, N) array of int, or sequence of them
        Annotation(s).

    Returns
    -------
    covering : float
        :math:`\\frac{1}{N} \\sum_{R \\in S'} |R| \\max_{R' \\in S} O(R, R')` with :math:`O` the
        IoU, :math:`S'` the annotation and :math:`S` the segmentation [1]_; with several
        annotations their segments are pooled, which averages the covering over annotations.

    Notes
    -----
    The area-weighted sibling of :func:`average_best_overlap`: merging two small segments
    may lower ABO while raising covering, since covering is dominated by large regions.

    References
    ----------
    .. [1] P. Arbelaez et al., "Contour Detection and Hierarchical Image Segmentation",
       IEEE TPAMI 33(5), 2011, Section 3.2.1.
    """
    return region_scores(pred, gt).covering


def probabilistic_rand_index(pred: ArrayLike, gt: ArrayLike | Sequence[ArrayLike]) -> float:
    """Probabilistic Rand Index: the Rand index of ``pred`` averaged over the annotations.

    Parameters
    ----------
    pred : (M, N) array of int
        Segmentation; each distinct value is one segment.
    gt : (M, N) array of int, or sequence of them
        Annotation(s).

    Returns
    -------
    pri : float
        Fraction of pixel pairs (unordered, distinct) on which ``pred`` and an annotation
        agree (same segment in both or different in both), averaged over annotations.

    References
    ----------
    .. [1] P. Arbelaez et al., "Contour Detection and Hierarchical Image Segmentation",
       IEEE TPAMI 33(5), 2011, Section 3.2.2.
    """
    return region_scores(pred, gt).rand_index


def variation_of_information(pred: ArrayLike, gt: ArrayLike | Sequence[ArrayLike]) -> float:
    """Variation of information between ``pred`` and the annotations, averaged over them.

    Parameters
    ----------
    pred : (M, N) array of int
        Segmentation; each distinct value is one segment.
    gt : (M, N) array of int, or sequence of them
        Annotation(s).

    Returns
    -------
    voi : float
        :math:`H(S) + H(S') - 2 I(S, S')` in bits (log base 2, as the official code); 0 for
        identical partitions, lower is better.

    References
    ----------
    .. [1] P. Arbelaez et al., "Contour Detection and Hierarchical Image Segmentation",
       IEEE TPAMI 33(5), 2011, Section 3.2.3.
    .. [2] M. Meila, "Comparing clusterings: an axiomatic view", ICML 2005.
    """
    return region_scores(pred, gt).variation_of_information


# ---------------------------------------------------------------------------------------------
# Dataset figures
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BenchmarkResult:
    """Dataset figures of :func:`region_benchmark`, named after the official output files.

    Attributes
    ----------
    thresholds : ndarray, (T,)
        Threshold or segmentation index of each scale (column 1 of ``eval_cover_th.txt`` and
        ``eval_RI_VOI_thr.txt``).
    covering_per_threshold : ndarray, (T,)
        Dataset covering at each threshold (``eval_cover_th.txt`` column 2).
    pri_per_threshold, voi_per_threshold : ndarray, (T,)
        Mean over images of PRI / VoI at each threshold (``eval_RI_VOI_thr.txt`` columns 2, 3).
    abo_per_threshold : ndarray, (T,)
        Average best overlap over all segments of all images at each threshold (not official).
    image_best_threshold, image_best_covering, image_best_reverse_covering : ndarray, (n_images,)
        Per image: the threshold of highest covering, that covering, and the reverse covering
        ("precision") there (``eval_cover_img.txt`` columns 2, 3, 4; column 1 is the 1-based
        image index).
    covering_ods_threshold, covering_ods, covering_ois, covering_best : float
        ``eval_cover.txt`` columns 1-4: the best dataset-scale threshold (ODS) and its covering,
        the covering with each image at its own best threshold (OIS), and "Best": every
        ground-truth segment matched with its best segment over all thresholds.
    pri_ods_threshold, pri_ods, pri_ois, voi_ods_threshold, voi_ods, voi_ois : float
        ``eval_RI_VOI.txt`` columns 1-6 (for VoI, lower is better, so "best" is the minimum).
    """

    thresholds: np.ndarray
    covering_per_threshold: np.ndarray
    pri_per_threshold: np.ndarray
    voi_per_threshold: np.ndarray
    abo_per_threshold: np.ndarray
    image_best_threshold: np.ndarray
    image_best_covering: np.ndarray
    image_best_reverse_covering: np.ndarray
    covering_ods_threshold: float
    covering_ods: float
    covering_ois: float
    covering_best: float
    pri_ods_threshold: float
    pri_ods: float
    pri_ois: float
    voi_ods_threshold: float
    voi_ods: float
    voi_ois: float

    def official_tables(self) -> dict[str, np.ndarray]:
        """The rows of the official region-benchmark files, keyed by file name.

        Writing each table with ``np.savetxt(path, table, fmt="%10g")`` gives files in the
        format of ``collect_eval_reg.m``.
        """
        n_images = len(self.image_best_threshold)
        return {
            "eval_cover.txt": np.array(
                [[self.covering_ods_threshold, self.covering_ods, self.covering_ois, self.covering_best]]
            ),
            "eval_cover_img.txt": np.column_stack([
                np.arange(1, n_images + 1),
                self.image_best_threshold,
                self.image_best_covering,
                self.image_best_reverse_covering,
            ]),
            "eval_cover_th.txt": np.column_stack([self.thresholds, self.covering_per_threshold]),
            "eval_RI_VOI.txt": np.array([[
                self.pri_ods_threshold, self.pri_ods, self.pri_ois,
                self.voi_ods_threshold, self.voi_ods, self.voi_ois,
            ]]),
            "eval_RI_VOI_thr.txt": np.column_stack(
                [self.thresholds, self.pri_per_threshold, self.voi_per_threshold]
            ),
        }


def _last_argmax(values: np.ndarray) -> int:
    """Index of the last maximum (``ff = find(x == max(x)); ff(end)`` in MATLAB)."""
    return len(values) - 1 - int(np.argmax(values[::-1]))


def _round_like_matlab_files(value: float) -> float:
    """``value`` after a round trip through ``fprintf('%10g')`` and ``dlmread`` (6 significant digits)."""
    return float(f"{value:10g}")


def region_benchmark(
    scores: Sequence[Sequence[RegionScores]],
    thresholds: ArrayLike | None = None,
    *,
    official_rounding: bool = False,
) -> BenchmarkResult:
    """Dataset-scale region benchmark over several segmentations (thresholds) per image.

    Parameters
    ----------
    scores : sequence of sequences of RegionScores
        ``scores[i][t]``: image ``i`` segmented at threshold ``t`` (same thresholds for all
        images), from :func:`region_scores`.
    thresholds : (T,) array_like, optional
        The threshold values, used only to report the best ones. Default ``1..T``, as the
        official code for a cell of segmentations; for hierarchies pass :func:`ucm_thresholds`.
    official_rounding : bool, optional
        Round the per-image accumulators to 6 significant digits first, as the official code
        does by passing them through its temporary ``<id>_ev*.txt`` files. Off by default
        (full precision); on, the output equals the official files digit for digit.

    Returns
    -------
    result : BenchmarkResult
        ODS / OIS / Best covering, PRI and VoI and the per-threshold and per-image curves,
        exactly as ``collect_eval_reg.m`` writes them.

    Notes
    -----
    Port of ``collect_eval_reg.m``. Covering pools all annotations: per threshold it is
    :math:`\\sum_i cntR_i / \\sum_i sumR_i` where ``sumR`` counts the image pixels once per
    annotation, so images with more annotations weigh more. ODS picks the threshold
    maximising that pooled covering; OIS pools each image at its own best threshold. PRI and
    VoI are plain means over images (ODS: best threshold of the mean; OIS: mean of per-image
    bests). Ties resolve as in MATLAB: the first maximum for reported thresholds and
    ``eval_cover_img.txt``, the last for the OIS sums (the values are equal either way).
    Without ``official_rounding`` results differ from the official files by a few 1e-6
    (one unit in their 6th printed digit at most), the rounding of those temporary files.
    """
    if not scores or not scores[0]:
        raise ValueError("scores is empty; pass scores[i][t] for at least one image and threshold")
    n_thresholds = len(scores[0])
    if any(len(image) != n_thresholds for image in scores):
        raise ValueError("every image needs scores for the same thresholds")
    thresholds = np.arange(1, n_thresholds + 1) if thresholds is None else np.asarray(thresholds, float)
    if thresholds.shape != (n_thresholds,):
        raise ValueError(f"got {thresholds.size} thresholds for {n_thresholds} scores per image")

    as_read = _round_like_matlab_files if official_rounding else float

    def table(field: str) -> np.ndarray:
        """(images, thresholds) array of one per-image figure."""
        return np.array([[as_read(getattr(s, field)) for s in image] for image in scores])

    cover_sum, gt_area = table("covering_sum"), table("gt_area")
    reverse_sum, pred_area = table("reverse_covering_sum"), table("pred_area")
    ri, voi = table("rand_index"), table("variation_of_information")
    abo_sum, abo_count = table("abo_sum"), table("abo_count")

    recall = cover_sum / np.where(gt_area == 0, 1, gt_area)
    precision = reverse_sum / np.where(pred_area == 0, 1, pred_area)
    image_best = np.argmax(recall, axis=1)
    rows = np.arange(len(scores))
    ois = np.array([_last_argmax(image) for image in recall])
    ri_ois = np.array([_last_argmax(image) for image in ri])
    voi_ois = np.array([_last_argmax(-image) for image in voi])
    # "Best": every ground-truth segment at its best threshold (the per-image ``cntR_best``).
    best_sum = sum(
        as_read(image[0].gt_areas @ np.max([s.gt_best_iou for s in image], axis=0)) for image in scores
    )

    covering = cover_sum.sum(0) / gt_area.sum(0)
    pri, mean_voi = ri.mean(0), voi.mean(0)
    return BenchmarkResult(
        thresholds=thresholds,
        covering_per_threshold=covering,
        pri_per_threshold=pri,
        voi_per_threshold=mean_voi,
        abo_per_threshold=abo_sum.sum(0) / abo_count.sum(0),
        image_best_threshold=thresholds[image_best],
        image_best_covering=recall[rows, image_best],
        image_best_reverse_covering=precision[rows, image_best],
        covering_ods_threshold=float(thresholds[np.argmax(covering)]),
        covering_ods=float(covering.max()),
        covering_ois=float(cover_sum[rows, ois].sum() / gt_area[rows, ois].sum()),
        covering_best=best_sum / float(gt_area[:, 0].sum()),
        pri_ods_threshold=float(thresholds[np.argmax(pri)]),
        pri_ods=float(pri.max()),
        pri_ois=float(ri[rows, ri_ois].mean()),
        voi_ods_threshold=float(thresholds[np.argmin(mean_voi)]),
        voi_ods=float(mean_voi.min()),
        voi_ois=float(voi[rows, voi_ois].mean()),
    )


@dataclass(frozen=True)
class DatasetScores:
    """Dataset figures for one segmentation per image (see :func:`summarize`).

    Attributes
    ----------
    abo : float
        The paper's Segmentation-IoU: best IoUs summed over all ground-truth segments of all
        images (all annotations) divided by their number.
    abo_image_mean : float
        Mean over images of the per-image ABO (weighs images equally; not the paper's figure).
    covering, pri, voi : float
        The official ODS figures for a single threshold (``eval_cover.txt`` column 2,
        ``eval_RI_VOI.txt`` columns 2 and 5); with one threshold ODS and OIS coincide.
    n_images, n_gt_segments : int
        Images scored and ground-truth segments over all their annotations.
    """

    abo: float
    abo_image_mean: float
    covering: float
    pri: float
    voi: float
    n_images: int
    n_gt_segments: int


def summarize(scores: Sequence[RegionScores]) -> DatasetScores:
    """Dataset figures from the per-image :func:`region_scores` of one segmentation per image.

    Parameters
    ----------
    scores : sequence of RegionScores
        One entry per image.

    Returns
    -------
    summary : DatasetScores
        ABO pooled over segments (the paper's figure) and the official covering, PRI, VoI.
    """
    result = region_benchmark([[image] for image in scores])
    return DatasetScores(
        abo=float(result.abo_per_threshold[0]),
        abo_image_mean=float(np.mean([image.abo for image in scores])),
        covering=result.covering_ods,
        pri=result.pri_ods,
        voi=result.voi_ods,
        n_images=len(scores),
        n_gt_segments=sum(image.abo_count for image in scores),
    )


# ---------------------------------------------------------------------------------------------
# Hierarchies (ultrametric contour maps)
# ---------------------------------------------------------------------------------------------


def ucm_thresholds(n: int) -> np.ndarray:
    """The ``n`` thresholds the official benchmark applies to a ucm2 in [0, 1].

    ``linspace(1/(n+1), 1-1/(n+1), n)`` evaluated as MATLAB does (``d1 + k*(d2-d1)/(n-1)``,
    last value exactly ``d2``), so comparisons ``ucm <= t`` break ties as in the official code.
    """
    first, last = 1 / (n + 1), 1 - 1 / (n + 1)
    if n == 1:
        return np.array([last])  # MATLAB linspace(a, b, 1) returns b
    values = first + np.arange(n) * (last - first) / (n - 1)
    values[-1] = last
    return values


def ucm_segmentation(ucm2: ArrayLike, threshold: float) -> np.ndarray:
    """Segmentation of a hierarchy at one threshold, as ``evaluation_reg_image.m`` cuts it.

    Parameters
    ----------
    ucm2 : (2M+1, 2N+1) array of float
        Ultrametric contour map in "doubleSize" format: pixels at odd (0-based) positions,
        boundary strengths between them.
    threshold : float
        Boundaries of strength above it are kept.

    Returns
    -------
    labels : (M, N) array of int
        Connected components (8-connectivity, MATLAB ``bwlabel``'s default) of
        ``ucm2 <= threshold``, sampled at the pixel positions (``labels2(2:2:end, 2:2:end)``).
        Labels start at 1; their order may differ from ``bwlabel`` but no measure depends on it.
    """
    ucm2 = np.asarray(ucm2, dtype=float)
    if ucm2.ndim != 2 or ucm2.shape[0] % 2 == 0 or ucm2.shape[1] % 2 == 0:
        raise ValueError(f"ucm2 must be a (2M+1, 2N+1) doubleSize map, got shape {ucm2.shape}")
    labels, _ = ndimage.label(ucm2 <= threshold, structure=np.ones((3, 3), dtype=bool))
    return labels[1::2, 1::2]


# ---------------------------------------------------------------------------------------------
# Boundaries
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BoundaryCounts:
    """Boundary pixels of one image, matched within the tolerance (summed over images for a dataset)."""

    matched_predicted: int
    predicted: int
    matched_ground_truth: int
    ground_truth: int

    def __add__(self, other: BoundaryCounts) -> BoundaryCounts:
        return BoundaryCounts(*(a + b for a, b in zip(dataclasses.astuple(self), dataclasses.astuple(other))))

    @property
    def precision(self) -> float:
        return self.matched_predicted / self.predicted if self.predicted else 1.0

    @property
    def recall(self) -> float:
        return self.matched_ground_truth / self.ground_truth if self.ground_truth else 1.0

    @property
    def f_measure(self) -> float:
        precision, recall = self.precision, self.recall
        return 2 * precision * recall / (precision + recall) if precision + recall else 0.0


def boundary_map(labels: np.ndarray) -> np.ndarray:
    """One-pixel boundaries of a label image: pixels whose right or lower neighbour has another label."""
    boundary = np.zeros(labels.shape, bool)
    boundary[:, :-1] |= labels[:, :-1] != labels[:, 1:]
    boundary[:-1, :] |= labels[:-1, :] != labels[1:, :]
    return boundary


def _within(boundary: np.ndarray, radius: int) -> np.ndarray:
    """Pixels within ``radius`` (chessboard distance) of a boundary pixel: two 1-d maximum filters,
    whose cost does not grow with the radius (a 10 MP image at an 8x tolerance stays fast)."""
    grown = ndimage.maximum_filter1d(boundary.view(np.uint8), 2 * radius + 1, axis=0)
    return ndimage.maximum_filter1d(grown, 2 * radius + 1, axis=1).view(bool)


def boundary_counts(pred: ArrayLike, gt: ArrayLike | Sequence[ArrayLike], tolerance: float = 0.0075) -> BoundaryCounts:
    """Boundary precision and recall counts of a segmentation against its human annotations.

    The BSDS boundary benchmark's quantities with its default tolerance (``maxDist`` 0.0075 of the
    image diagonal), with one relaxation that keeps it fast at tens of megapixels: a boundary pixel is
    matched when the other side has a boundary pixel within the tolerance (chessboard distance), not
    through the benchmark's one-to-one assignment (``correspondPixels``). Precision counts predicted
    pixels matched by any annotation; recall sums every annotation's matched pixels, as the benchmark
    does. Use it to compare segmentations with each other, not with published boundary figures.
    """
    pred = _as_labels(pred, "pred")
    gts = _as_gt_list(gt, pred.shape)
    radius = max(1, int(np.ceil(tolerance * np.hypot(*pred.shape))))
    predicted = boundary_map(pred)
    near_predicted = _within(predicted, radius)
    any_truth = np.zeros(pred.shape, bool)
    matched_truth = truth = 0
    for annotation in gts:
        edges = boundary_map(annotation)
        any_truth |= edges
        matched_truth += int(np.count_nonzero(edges & near_predicted))
        truth += int(np.count_nonzero(edges))
    matched_predicted = int(np.count_nonzero(predicted & _within(any_truth, radius)))
    return BoundaryCounts(matched_predicted, int(np.count_nonzero(predicted)), matched_truth, truth)
