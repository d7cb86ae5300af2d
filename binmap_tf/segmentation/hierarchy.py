"""A hierarchy of superpixel merges driven by the binary map, the network's edges and colour.

The paper's step (d) merges superpixels with *equal* codes in one flat pass, which leaves no
control over the number of segments. Here adjacent regions are merged greedily, the most
similar pair first, over the region adjacency graph, until one region is left. Every merge is
recorded with a height, so one computation gives every coarser segmentation: cut at a
threshold on the heights, or at a number of segments, or read the whole hierarchy as an
ultrametric contour map (UCM) in the format of the BSDS benchmark.

The dissimilarity of two adjacent regions mixes three cues, each scaled to [0, 1]:

* ``codes``: the distance between the regions' binary codes, softened. Each region keeps the
  fraction of its pixels that have each bit set (the vote behind
  :func:`binmap_tf.segmentation.merge.superpixel_codes`); the distance is the mean absolute difference of
  those fractions over the ``k`` bits, i.e. the Hamming distance of the voted codes divided
  by ``k`` when every region is uniform, and smaller when a vote was close.
* ``edges``: the mean HED boundary probability (``BinaryMap.edges``) along the regions'
  shared border, over all pairs of neighbouring pixels (8-neighbourhood by default) that
  straddle it; a pair's strength is the larger probability of its two pixels.
* ``colour``: the Euclidean distance between the regions' mean CIELAB colours, divided by
  :data:`COLOUR_SCALE` and clipped to 1.

A size prior scales the mix down for regions much smaller than the current mean region, so
specks and slivers merge before large regions at every level (see :func:`build_hierarchy`).

Instead of the hand-set mix, a learned scorer (``scorer=``, :mod:`binmap_tf.segmentation.merge_scorer`) can
order the merges: the probability that two regions belong to different human segments, from
the features of :mod:`binmap_tf.segmentation.merge_features` (soft codes, histograms of the HED strength
along the border, CIELAB and texture histogram distances, sizes), computed from the same
running sums and re-scored as regions grow. Both criteria share one greedy loop, and a learned
hierarchy uses both: the hand-set cues order its fine merges, down to ``cues_until`` regions (80
for the shipped scorer), the scorer the coarse ones, as each order gives the better cuts at its
end (:class:`SwitchedCriterion`).

Sums (pixels, bit votes, colours, border strengths, border lengths; for the learned scorer
also colour, texture and edge-strength histograms) are kept per region and per border and
added when regions merge, so a merge costs work proportional to the number of
neighbours of the merged regions; stale heap entries are skipped when popped.

Heights are made monotone (``height = max(dissimilarity, children's heights)``): a merge can
make the merged region *more* similar to a neighbour than the pair just merged, and without
the maximum a coarser cut could split a region of a finer one. With it the heights form an
ultrametric and cuts at increasing thresholds are nested.

Why this is written by hand rather than with higra (issue 13, item 4; measured by
``benchmarks/hierarchy_higra.py`` on 10 BSDS500 test images, README "Hierarchical merging"):

* the greedy loop: higra's binary partition trees re-weight only the merged region's edges with a
  fixed linkage, while the hand-set mix re-scores *all* queued pairs as the mean region grows (the
  size prior) and the learned scorer is an MLP of additive histograms and sums, not a fixed
  linkage. Only edges-only merging without size prior is a fixed (average) linkage;
  higra gives the same cuts 3.5x faster there, but no method uses that setting;
* the cuts (:meth:`MergeTree.segment_of`): the same as higra's horizontal cuts, which save about
  9 ms per 37-threshold sweep, but ``import higra`` (it loads matplotlib) costs 0.5-0.7 s per process;
* the UCM: higra's saliency on the Khalimsky grid is the same map, 5x slower on BSDS500 images and
  with 5x the peak memory of the banded version below at 12 MP (an explicit pixel graph);
* the region adjacency (:func:`_border_sums`): the same pairs and sums, 8-16x slower in higra (an
  explicit 8-adjacency graph) and not bounded by row bands.

References
----------
.. [1] P. Arbelaez, M. Maire, C. Fowlkes, J. Malik, "Contour Detection and Hierarchical Image
   Segmentation", IEEE TPAMI 33(5), 2011 (OWT-UCM: greedy merging by mean boundary strength,
   and the ultrametric contour map).
.. [2] S. Xie and Z. Tu, "Holistically-Nested Edge Detection", ICCV 2015 (the edge map).
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from binmap_tf.binary_map.maps import BinaryMap
from binmap_tf.common.bands import row_bands
from binmap_tf.common.images import as_rgb_uint8
from binmap_tf.segmentation.labels import channel_sums, check_labels, connected_groups, sequential_labels
from binmap_tf.segmentation.merge import bit_votes, boundary_pixel_pairs, label_pair_keys
from binmap_tf.segmentation.merge_features import (
    COLOUR_SCALE,
    HISTOGRAM_WIDTH,
    border_histograms,
    pair_features,
    region_histograms,
)
from binmap_tf.segmentation.merge_scorer import MergeScorer, check_cues_until

# Size prior of build_hierarchy: regions under 5 % of the current mean region area merge
# preferentially (chosen on BSDS500 val).
SIZE_PRIOR = 0.05
# The queued dissimilarities are recomputed each time the number of regions drops by 10 %.
REFRESH = 0.1
# A learned hierarchy's fine merges, ordered by the hand-set cues (``cues_until``), get heights scaled into
# [0, CUE_HEIGHT_SCALE]: under the scorer's probabilities, so a threshold on the heights cuts the coarse
# levels by the scorer's probability as it would without the switch.
CUE_HEIGHT_SCALE = 1e-3
# COLOUR_SCALE (binmap_tf.segmentation.merge_features): a CIELAB distance of 50 (about the difference between
# mid-grey and saturated red) counts as "completely different"; larger distances are clipped.


@dataclass(frozen=True)
class MergeWeights:
    """Weights of the cues in the merge dissimilarity; they are normalised to sum to 1.

    Attributes
    ----------
    codes : float
        Weight of the soft Hamming distance between the regions' binary codes.
    edges : float
        Weight of the mean HED boundary probability along the shared border; needs a
        :class:`~binmap_tf.binary_map.maps.BinaryMap` with ``edges`` (a mapper built with
        ``edges=True``).
    colour : float
        Weight of the CIELAB distance between the regions' mean colours.
    """

    codes: float = 0.0
    edges: float = 0.0
    colour: float = 0.0

    def normalised(self) -> np.ndarray:
        """The weights as an array ``[codes, edges, colour]`` summing to 1; ``ValueError`` if invalid."""
        values = np.array([self.codes, self.edges, self.colour], dtype=np.float64)
        if not np.all(np.isfinite(values)) or values.min() < 0 or values.sum() <= 0:
            raise ValueError(f"merge weights must be finite, >= 0 and not all 0, got {self}")
        return values / values.sum()


# The weights of ``binmap-hier``: the best mix with all three cues on 50 BSDS500 val images
# (covering at the best threshold), chosen while the method was built (README, "Hierarchical merging").
DEFAULT_WEIGHTS = MergeWeights(codes=0.5, edges=2.0, colour=1.0)
# Where to cut a hierarchy of DEFAULT_WEIGHTS when no threshold or count is asked for: its ODS
# threshold (best covering with one threshold for all) on the same 50 BSDS500 val images.
DEFAULT_THRESHOLD = 0.475


def check_segment_count(value: int, name: str = "n_segments") -> int:
    """``value`` as an int, or ``ValueError`` naming ``name`` unless it is an integer >= 1."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    return int(value)


@dataclass(frozen=True)
class MergeTree:
    """The merges of :func:`build_hierarchy`, from superpixels up to the whole image.

    Nodes ``0 .. n-1`` are the superpixels; merge ``i`` joins nodes ``children[i]`` into node
    ``n + i`` (the numbering of :func:`scipy.cluster.hierarchy.linkage`).

    Attributes
    ----------
    superpixels : ndarray of int32, shape (H, W)
        Superpixel (leaf) ``0 .. n-1`` of every pixel.
    children : ndarray of int64, shape (m, 2)
        The two nodes each merge joins, in the order the merges were made.
    heights : ndarray of float64, shape (m,)
        Height of each merge, in [0, 1]; a node is never lower than its children.
    pairs : ndarray of int64, shape (e, 2)
        Every pair ``a < b`` of touching superpixels (see ``connectivity``), sorted.
    pair_heights : ndarray of float64, shape (e,)
        Height at which each pair first lies in one region: the ultrametric distance.
    """

    superpixels: np.ndarray
    children: np.ndarray
    heights: np.ndarray
    pairs: np.ndarray
    pair_heights: np.ndarray

    @property
    def n_superpixels(self) -> int:
        """Number of leaves ``n``."""
        return int(self.superpixels.max()) + 1

    def n_segments_at(self, threshold: float) -> int:
        """Number of segments :meth:`cut` gives at ``threshold``."""
        return self.n_superpixels - int(np.count_nonzero(self.heights <= threshold))

    def _chosen(self, n_segments: int | None, threshold: float | None) -> np.ndarray:
        """Indices of the merges a cut keeps (see :meth:`cut`)."""
        if (n_segments is None) == (threshold is None):
            raise ValueError("pass exactly one of n_segments and threshold")
        if threshold is not None:
            return np.flatnonzero(self.heights <= threshold)
        count = check_segment_count(n_segments)
        # Lowest merges first; ties in merge order, so a merge never precedes its children.
        order = np.lexsort((np.arange(len(self.heights)), self.heights))
        return order[:max(self.n_superpixels - count, 0)]

    def _groups(self, chosen: np.ndarray) -> np.ndarray:
        """Component of every node (leaves, then merges) when the ``chosen`` merges are kept."""
        n = self.n_superpixels
        # Each chosen merge links its two children to its node. Components are numbered in order
        # of their smallest node, so the components holding leaves come first.
        links = np.stack([self.children[chosen].ravel(), np.repeat(n + chosen, 2)], axis=1)
        return connected_groups(n + len(self.children), links)

    def segment_of(self, n_segments: int | None = None, threshold: float | None = None) -> np.ndarray:
        """Segment ``0 .. K-1`` of every superpixel for a cut (see :meth:`cut`), shape (n,)."""
        return self._groups(self._chosen(n_segments, threshold))[:self.n_superpixels]

    @property
    def node_heights(self) -> np.ndarray:
        """Height of every node, shape (2n-1,): 0 for the superpixels, then each merge's height."""
        return np.concatenate([np.zeros(self.n_superpixels), self.heights])

    @property
    def parents(self) -> np.ndarray:
        """Parent node of every node, shape (2n-1,); -1 for the root (and for every node of a forest's
        top, when the superpixels do not all touch)."""
        parents = np.full(self.n_superpixels + len(self.children), -1, np.int64)
        parents[self.children.ravel()] = np.repeat(self.n_superpixels + np.arange(len(self.children)), 2)
        return parents

    def segment_nodes(self, n_segments: int | None = None, threshold: float | None = None) -> np.ndarray:
        """The tree node each segment of a cut is, shape (K,), in the numbering of :meth:`segment_of`:
        a superpixel ``0 .. n-1`` never merged below the cut, or the merge ``n + i`` that made it.
        Its height (:attr:`node_heights`) is the height at which the segment appears, its parent's
        the height at which it is merged away."""
        chosen = self._chosen(n_segments, threshold)
        groups, n = self._groups(chosen), self.n_superpixels
        kept = np.concatenate([np.arange(n), n + chosen])  # the nodes of the cut's forest
        # A merge's node number is above its children's, so each segment's top node is its largest.
        nodes = np.full(int(groups[:n].max()) + 1, -1, np.int64)
        np.maximum.at(nodes, groups[kept], kept)
        return nodes

    def cut(self, n_segments: int | None = None, threshold: float | None = None) -> np.ndarray:
        """Segmentation at one level of the hierarchy.

        Parameters
        ----------
        n_segments : int, optional
            Undo the highest merges until this many segments are left (at most
            :attr:`n_superpixels`; a larger value gives the superpixels).
        threshold : float, optional
            Keep exactly the merges of height ``<= threshold``; a higher threshold only merges
            more. Pass one of ``n_segments`` and ``threshold``.

        Returns
        -------
        labels : ndarray of int32, shape (H, W)
            Segment ``0 .. K-1`` of every pixel, numbered by smallest superpixel label; every
            segment is a union of whole superpixels.
        """
        return self.segment_of(n_segments, threshold)[self.superpixels]

    def ucm(self) -> np.ndarray:
        """The hierarchy as an ultrametric contour map in the BSDS "doubleSize" format.

        Returns
        -------
        ucm2 : ndarray of float64, shape (2H+1, 2W+1)
            Pixel ``(y, x)`` sits at ``(2y+1, 2x+1)`` with value 0; the position between two
            4-neighbouring pixels holds the height at which their regions merge (0 inside a
            superpixel); the positions where contours meet hold the largest of the contours
            around them, contours reach into the outer frame as in the official files.
            ``binmap_tf.evaluation.metrics.ucm_segmentation(ucm2, t)`` equals ``cut(threshold=t)`` up
            to numbering where superpixels and merged regions are 4-connected (a region that
            touches itself only diagonally is split there). ``ucm2[2::2, 2::2]`` is an
            image-sized boundary map for display.
        """
        labels = self.superpixels
        height, width = labels.shape
        n = self.n_superpixels
        keys = self.pairs[:, 0] * n + self.pairs[:, 1]

        def contour(first: np.ndarray, second: np.ndarray) -> np.ndarray:
            low, high = np.minimum(first, second).astype(np.int64), np.maximum(first, second).astype(np.int64)
            values = np.zeros(first.shape)
            differ = low != high
            values[differ] = self.pair_heights[np.searchsorted(keys, low[differ] * n + high[differ])]
            return values

        # The output (32 bytes a pixel) is the only whole-image array: the contours are looked up in
        # row bands and the junctions filled in place, so the temporaries stay bounded at any size.
        ucm2 = np.zeros((2 * height + 1, 2 * width + 1))
        for start, stop in row_bands(height, width):
            rows = labels[start:min(stop + 1, height)]  # one more row: the pairs reaching down into it
            ucm2[2 * start + 1:2 * stop:2, 2:-1:2] = contour(rows[:stop - start, :-1], rows[:stop - start, 1:])
            ucm2[2 * start + 2:2 * (start + len(rows)) - 1:2, 1:-1:2] = contour(rows[:-1], rows[1:])
        # A junction (even row and column) takes the largest of the up to four contours around it:
        # those above and below sit at odd rows, those left and right at odd columns.
        junctions, across, along = ucm2[::2, ::2], ucm2[1::2, ::2], ucm2[::2, 1::2]
        for target, source in ((junctions[1:], across), (junctions[:-1], across),
                               (junctions[:, 1:], along), (junctions[:, :-1], along)):
            np.maximum(target, source, out=target)
        return ucm2


@dataclass(frozen=True)
class _Regions:
    """Per-region sums, one row per node (superpixels first, merged regions appended); every
    array adds when two regions merge. The histograms have 0 columns unless a scorer needs them."""

    area: np.ndarray  # (nodes,) pixels
    votes: np.ndarray  # (nodes, k) pixels with each bit set
    colour: np.ndarray  # (nodes, 3) summed CIELAB
    histogram: np.ndarray  # (nodes, HISTOGRAM_WIDTH) colour and texture histograms, or (nodes, 0)

    def arrays(self) -> tuple[np.ndarray, ...]:
        return self.area, self.votes, self.colour, self.histogram

    def merge(self, node: int, a: int, b: int) -> None:
        """Sums of the new region ``node`` = those of ``a`` plus ``b``."""
        for array in self.arrays():
            array[node] = array[a] + array[b]

    def pair(self, first: np.ndarray, second: np.ndarray) -> tuple[np.ndarray, ...]:
        """Each array's rows for ``first`` and ``second``, stacked on a leading axis of 2."""
        index = np.stack([first, second])
        return tuple(array[index] for array in self.arrays())


def _region_sums(image: np.ndarray | None, superpixels: np.ndarray, binary_map: BinaryMap,
                 n_nodes: int, histograms: bool = False) -> _Regions:
    """Pixels, bit votes and CIELAB sums (and, with ``histograms``, the colour and texture
    histograms of :mod:`binmap_tf.segmentation.merge_features`) of every superpixel, with room for all nodes."""
    n = int(superpixels.max()) + 1
    area = np.zeros(n_nodes)
    votes = np.zeros((n_nodes, binary_map.n_bits))
    votes[:n], area[:n] = bit_votes(superpixels, binary_map.bits, binary_map.cell_index())
    colour = np.zeros((n_nodes, 3))
    histogram = np.zeros((n_nodes, HISTOGRAM_WIDTH if histograms else 0))
    if image is not None:
        if histograms:
            colour[:n], histogram[:n] = region_histograms(image, superpixels, n)
        else:
            from skimage.color import rgb2lab

            rgb = as_rgb_uint8(image)
            # CIELAB is float64, 24 bytes a pixel with more in rgb2lab's temporaries: convert in row bands.
            for start, stop in row_bands(*superpixels.shape):
                lab = rgb2lab(rgb[start:stop]).reshape(-1, 3)
                band = superpixels[start:stop].ravel()
                colour[:n] += channel_sums(band, lab, n)
    return _Regions(area, votes, colour, histogram)


def _border_sums(superpixels: np.ndarray, edges: np.ndarray | None, connectivity: int
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Touching superpixel pairs ``(e, 2)`` and their border sums ``(e, BORDER_WIDTH)``: summed edge
    strength, number of pixel pairs along the border and the histogram of their strengths.

    Every pair of neighbouring pixels (4-neighbours, plus diagonals for ``connectivity`` 2)
    with different labels is one sample of the border between their superpixels; its strength
    is the larger edge probability of the two pixels (0 without ``edges``).
    """
    first, second = boundary_pixel_pairs(superpixels, connectivity)
    pair_keys, n = label_pair_keys(superpixels, first, second)
    keys, inverse = np.unique(pair_keys, return_inverse=True)
    strength = np.zeros(len(first)) if edges is None else \
        np.maximum(edges.ravel()[first], edges.ravel()[second]).astype(np.float64)
    pairs = np.stack([keys // n, keys % n], axis=1)
    return pairs, border_histograms(inverse, strength, len(keys))


@dataclass(frozen=True)
class CueCriterion:
    """The hand-set merge dissimilarity: weighted cues, scaled down for regions small against the current mean."""

    weights: np.ndarray  # [codes, edges, colour], summing to 1
    size_prior: float  # fraction of the mean region area; 0 turns the size prior off
    image_area: float  # pixels

    refresh_at = 0  # no number of regions at which every queued value must be recomputed

    @property
    def depends_on_count(self) -> bool:
        """Whether a pair's value changes as the number of regions falls (then queued values are refreshed)."""
        return self.size_prior > 0

    def __call__(self, regions: _Regions, first: np.ndarray, second: np.ndarray, border: np.ndarray,
                 n_regions: int) -> np.ndarray:
        """Dissimilarity of each pair of regions ``(first[i], second[i])`` while ``n_regions`` remain, in [0, 1].

        ``border`` holds the pairs' border sums (see :func:`_border_sums`)."""
        area = regions.area[first, None], regions.area[second, None]
        code = np.abs(regions.votes[first] / area[0] - regions.votes[second] / area[1]).mean(axis=1)
        colour = np.linalg.norm(regions.colour[first] / area[0] - regions.colour[second] / area[1], axis=1)
        distance = (self.weights[0] * code + self.weights[1] * border[:, 0] / border[:, 1]
                    + self.weights[2] * np.minimum(colour / COLOUR_SCALE, 1.0))
        if self.size_prior > 0:
            small = self.size_prior * self.image_area / n_regions
            distance *= np.sqrt(np.minimum(np.minimum(area[0][:, 0], area[1][:, 0]) / small, 1.0))
        return distance


@dataclass(frozen=True)
class PairFeatures:
    """The learned scorer's input: :func:`binmap_tf.segmentation.merge_features.pair_features` from the running sums."""

    image_area: float
    codes: bool = True

    def __call__(self, regions: _Regions, first: np.ndarray, second: np.ndarray, border: np.ndarray,
                 n_regions: int) -> np.ndarray:
        return pair_features(*regions.pair(first, second), border, self.image_area, codes=self.codes)


@dataclass(frozen=True)
class LearnedCriterion:
    """The learned dissimilarity: the scorer's probability that the two regions belong to different segments."""

    scorer: MergeScorer
    features: PairFeatures

    # The scorer's features do not read the number of regions
    # (:func:`~binmap_tf.segmentation.merge_features.pair_features`), so queued values never go stale.
    depends_on_count = False
    refresh_at = 0

    def __call__(self, regions: _Regions, first: np.ndarray, second: np.ndarray, border: np.ndarray,
                 n_regions: int) -> np.ndarray:
        features = self.features(regions, first, second, border, n_regions)
        if not self.scorer.codes and self.features.codes:
            features = features[:, 1 + regions.votes.shape[1]:]
        return self.scorer(features)


@dataclass(frozen=True)
class SwitchedCriterion:
    """The hand-set cues while more than ``switch_at`` regions remain, the learned scorer from then on.

    On BSDS500 val the hand-set order gives the better fine cuts (40-160 segments) and the learned one
    the better coarse cuts (docs/research/levels.md): switching gives one tree with each order where
    it is best. The queue is recomputed when ``switch_at`` regions remain, so every coarse merge is
    ordered by the scorer; the cue merges' heights are scaled by :data:`CUE_HEIGHT_SCALE`."""

    cues: CueCriterion
    learned: LearnedCriterion
    switch_at: int

    depends_on_count = True  # the cues' size prior follows the count, and the switch happens at one

    @property
    def refresh_at(self) -> int:
        """The number of regions at which every queued value is recomputed: the switch."""
        return self.switch_at

    def __call__(self, regions: _Regions, first: np.ndarray, second: np.ndarray, border: np.ndarray,
                 n_regions: int) -> np.ndarray:
        if n_regions > self.switch_at:
            return CUE_HEIGHT_SCALE * self.cues(regions, first, second, border, n_regions)
        return self.learned(regions, first, second, border, n_regions)


def scorer_criterion(scorer: MergeScorer, features: PairFeatures, cues: CueCriterion, cues_until: int
                     ) -> LearnedCriterion | SwitchedCriterion:
    """The criterion of a learned hierarchy: ``scorer`` throughout (``cues_until`` 0), or ``cues`` while
    more than ``cues_until`` regions remain and ``scorer`` from then on."""
    learned = LearnedCriterion(scorer, features)
    return SwitchedCriterion(cues, learned, cues_until) if cues_until > 0 else learned


class _Border:
    """Running sums of one border between two current regions, and the superpixel pairs it holds."""

    __slots__ = ("sums", "pairs")

    def __init__(self, sums: np.ndarray, pairs: list[int]) -> None:
        self.sums, self.pairs = sums, pairs

    def absorb(self, other: _Border) -> None:
        self.sums = self.sums + other.sums
        self.pairs += other.pairs


def _heap_entries(regions: _Regions, criterion, n_regions: int,
                  borders: list[tuple[int, int, _Border]]) -> list[tuple[float, int, int]]:
    """``(dissimilarity, a, b)`` of each border ``(a, b, sums)``, computed in one vectorised call."""
    if not borders:
        return []
    first, second = (np.fromiter((border[i] for border in borders), np.int64, len(borders)) for i in (0, 1))
    sums = np.stack([border.sums for _, _, border in borders])
    distances = criterion(regions, first, second, sums, n_regions)
    return list(zip(distances.tolist(), first.tolist(), second.tolist()))


def _live_borders(borders: list[dict[int, _Border] | None]) -> list[tuple[int, int, _Border]]:
    """Every border between two current regions, once, as ``(a, b, sums)`` with ``a < b``."""
    return [(a, b, border) for a, neighbours in enumerate(borders) if neighbours
            for b, border in neighbours.items() if a < b]


def _agglomerate(regions: _Regions, pairs: np.ndarray, border_sums: np.ndarray, criterion, n: int
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Greedy merging over the adjacency graph: children, heights and the height of every pair.

    ``criterion(regions, first, second, border_sums, n_regions)`` scores pairs (the hand-set
    mix or the learned scorer). With the hand-set mix's size prior a pair's value changes as the
    number of regions falls, so queued values go stale; all of them are recomputed whenever the
    number of regions has dropped by :data:`REFRESH` since the last time (between refreshes the size prior overestimates the
    dissimilarity of small regions by at most a factor ``1 / sqrt(1 - REFRESH)``), and when
    ``criterion.refresh_at`` regions remain (:class:`SwitchedCriterion`'s switch).
    """
    borders: list[dict[int, _Border] | None] = [{} for _ in range(2 * n - 1)]
    for index, (a, b) in enumerate(pairs.tolist()):
        borders[a][b] = borders[b][a] = _Border(border_sums[index], [index])
    node_height = np.zeros(2 * n - 1)
    pair_heights = np.zeros(len(pairs))
    heap = _heap_entries(regions, criterion, n, _live_borders(borders))
    heapq.heapify(heap)
    refresh_below = n * (1 - REFRESH) if criterion.depends_on_count else 0
    refresh_at = criterion.refresh_at
    children: list[tuple[int, int]] = []
    heights: list[float] = []
    while heap:
        distance, a, b = heapq.heappop(heap)
        if borders[a] is None or borders[b] is None:  # stale: a or b was merged already
            continue
        node = n + len(children)
        height = max(distance, node_height[a], node_height[b])
        node_height[node] = height
        children.append((a, b))
        heights.append(height)
        shared = borders[a].pop(b)
        del borders[b][a]
        pair_heights[shared.pairs] = height
        regions.merge(node, a, b)
        # The new region's borders: those of a and b, summed where both touched a neighbour.
        merged: dict[int, _Border] = {}
        for child in (a, b):
            for neighbour, border in borders[child].items():
                del borders[neighbour][child]
                if neighbour in merged:
                    merged[neighbour].absorb(border)
                else:
                    merged[neighbour] = border
            borders[child] = None
        for neighbour, border in merged.items():
            borders[neighbour][node] = border
        borders[node] = merged
        n_regions = n - len(children)
        if n_regions < refresh_below or n_regions == refresh_at:
            heap = _heap_entries(regions, criterion, n_regions, _live_borders(borders))
            heapq.heapify(heap)
            refresh_below = n_regions * (1 - REFRESH)
        else:  # queue the new region's borders; other < node, so children stay ordered
            new_borders = [(other, node, border) for other, border in merged.items()]
            for entry in _heap_entries(regions, criterion, n_regions, new_borders):
                heapq.heappush(heap, entry)
    return (np.array(children, np.int64).reshape(-1, 2), np.array(heights, np.float64), pair_heights)


def build_hierarchy(image: np.ndarray | None, superpixels: np.ndarray, binary_map: BinaryMap,
                    weights: MergeWeights | None = None, size_prior: float = SIZE_PRIOR,
                    connectivity: int = 2, scorer: MergeScorer | None = None, cues_until: int | None = None,
                    criterion: Callable[[PairFeatures, CueCriterion], Callable] | None = None) -> MergeTree:
    """Merge adjacent superpixels greedily, most similar first, and record the merge tree.

    Parameters
    ----------
    image : ndarray or None
        The (H, W) grey or (H, W, 3|4) RGB(A) image the superpixels and map belong to; only the
        ``colour`` cue reads it, so it may be None when ``weights.colour`` is 0.
    superpixels : ndarray of int, shape (H, W)
        Superpixel labels (e.g. :func:`binmap_tf.segmentation.superpixels.compute_superpixels`); any
        non-negative integers, renumbered ``0 .. n-1`` in increasing order.
    binary_map : BinaryMap
        The image's binary map; ``binary_map.edges`` is needed when ``weights.edges > 0``.
    weights : MergeWeights, optional
        Weights of the cues; default :data:`DEFAULT_WEIGHTS` (codes + edges + colour, chosen
        on BSDS500 val).
    size_prior : float
        Size prior, as a fraction of the mean region area: while ``m`` regions remain, the
        dissimilarity of two regions is multiplied by ``sqrt(a / (size_prior * A / m))`` when
        the smaller one has ``a`` of the image's ``A`` pixels and ``a < size_prior * A / m``.
        Specks and slivers, such as superpixels inside a thick HED edge (strong borders on
        every side), then merge before large regions instead of surviving to the coarse levels
        as segments of their own; tying "small" to the current mean keeps this true at every
        level, so cuts at few and at many segments both spend their segments on real regions.
        0 turns it off; default :data:`SIZE_PRIOR` (5 %, chosen on BSDS500 val).
    connectivity : {1, 2}
        Which superpixels touch: 2 (default) counts diagonal neighbours, as Felzenszwalb
        segments are 8-connected and :func:`binmap_tf.segmentation.merge.adjacency` does; 1 uses the 4
        direct neighbours only, which makes :meth:`MergeTree.ucm` exact for 4-connected
        superpixels.
    scorer : MergeScorer, optional
        A learned scorer (:mod:`binmap_tf.segmentation.merge_scorer`): pairs are merged in order of its
        probability that they belong to different segments, re-scored from running sums as
        regions grow; ``weights`` and ``size_prior`` then order only the merges ``cues_until`` gives them.
    cues_until : int, optional
        With a ``scorer``: the hand-set cues (``weights``, ``size_prior``) order the merges while more
        than this many regions remain, the scorer the rest (:class:`SwitchedCriterion`); 0 lets the
        scorer order them all. Default: the scorer's recorded value (:attr:`MergeScorer.cues_until`).
    criterion : callable, optional
        Another way to score pairs: ``criterion(features, cues)`` gets the learned features'
        computer (:class:`PairFeatures`, codes included) and the hand-set cues
        (:class:`CueCriterion`) and returns the pair criterion, a callable
        ``(regions, first, second, border_sums, n_regions) -> dissimilarities`` with the attributes
        ``depends_on_count`` and ``refresh_at`` (see :func:`_agglomerate`). Training uses it to see every pair the greedy merge meets
        (:func:`binmap_tf.training.merge_training.logged_pairs`).

    Returns
    -------
    tree : MergeTree
        ``tree.cut(n_segments=K)``, ``tree.cut(threshold=t)`` and ``tree.ucm()`` give
        segmentations at any level without recomputing.

    Notes
    -----
    Only touching regions merge (in the neighbourhood ``connectivity`` gives), so every segment
    of a cut is connected and is a union of whole superpixels. Ties between equal
    dissimilarities break by node number, so the result is deterministic. The cost is a few
    passes over the pixels for the sums plus ``O(e log e)`` heap work for ``e`` borders: about
    0.1 s for the ~500 EGS superpixels of a BSDS500 image.

    Examples
    --------
    >>> from skimage import data
    >>> from binmap_tf.binary_map.model import BinaryMapper
    >>> from binmap_tf.segmentation.superpixels import egs
    >>> image = data.astronaut()
    >>> binary_map = BinaryMapper(edges=True)(image)  # doctest: +SKIP
    >>> tree = build_hierarchy(image, egs(image), binary_map)  # doctest: +SKIP
    >>> int(tree.cut(n_segments=20).max())  # doctest: +SKIP
    19
    """
    weights = DEFAULT_WEIGHTS if weights is None else weights
    normalised = weights.normalised()
    learned = scorer is not None or criterion is not None
    if not 0 <= size_prior <= 1:
        raise ValueError(f"size_prior is a fraction of the mean region area in [0, 1], got {size_prior}")
    labels, n = sequential_labels(check_labels(superpixels, "superpixels"))
    if labels.shape != tuple(binary_map.image_shape):
        raise ValueError(f"superpixels {labels.shape} do not match the binary map's image {binary_map.image_shape}")
    if scorer is not None:
        scorer.check_map(binary_map)
    if (normalised[1] > 0 or learned) and binary_map.edges is None:
        raise ValueError("the edges cue needs a binary map with edges; build the mapper with "
                         "BinaryMapper(edges=True) or set weights.edges to 0")
    if (normalised[2] > 0 or learned) and image is None:
        raise ValueError("the colour cue needs the image; pass it or set weights.colour to 0")
    regions = _region_sums(image if normalised[2] > 0 or learned else None, labels, binary_map, 2 * n - 1,
                           histograms=learned)
    pairs, border_sums = _border_sums(labels, binary_map.edges if normalised[1] > 0 or learned else None,
                                      connectivity)
    cues = CueCriterion(normalised, size_prior, labels.size)
    if criterion is not None:
        scoring = criterion(PairFeatures(labels.size, codes=True), cues)
    elif scorer is not None:  # a no-codes scorer never needs the code columns computed
        switch = scorer.cues_until if cues_until is None else check_cues_until(cues_until)
        scoring = scorer_criterion(scorer, PairFeatures(labels.size, codes=scorer.codes), cues, switch)
    else:
        scoring = cues
    children, heights, pair_heights = _agglomerate(regions, pairs, border_sums, scoring, n)
    return MergeTree(labels, children, heights, pairs, pair_heights)
