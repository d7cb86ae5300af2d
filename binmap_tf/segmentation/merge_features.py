"""Features of a pair of adjacent regions for the learned merge scorer, from additive sums.

Everything a pair's features need is kept as sums that add when regions (or borders) merge,
so :func:`binmap_tf.segmentation.hierarchy.build_hierarchy` can re-score pairs at every level of the
hierarchy from running sums, never re-reading pixels:

* per region: pixels, bit votes (:func:`binmap_tf.segmentation.merge.bit_votes`), summed CIELAB, a CIELAB
  histogram (:data:`COLOUR_BINS` bins per channel, marginals) and a texture histogram (uniform
  local binary patterns, :data:`TEXTURE_BINS` codes);
* per border: summed HED edge strength, number of pixel pairs, and a histogram of the pairs'
  edge strengths (:data:`EDGE_BINS` bins on [0, 1]), from which max and quantiles are read.

:func:`pair_features` turns the sums of ``m`` pairs into an ``(m, F)`` array whose columns are
:func:`feature_names`; the scorer (:mod:`binmap_tf.segmentation.merge_scorer`) maps a row to the
probability that the two regions belong to different human segments.
"""

from __future__ import annotations

import numpy as np

from binmap_tf.common.bands import row_bands
from binmap_tf.common.images import as_rgb_uint8
from binmap_tf.segmentation.labels import channel_sums

COLOUR_BINS = 10  # per CIELAB channel
# Channel ranges of the colour histogram; values outside are clipped into the end bins.
COLOUR_RANGES = ((0.0, 100.0), (-60.0, 60.0), (-60.0, 60.0))
TEXTURE_BINS = 10  # uniform LBP with 8 neighbours at radius 1: codes 0..9
# Rows of context a band needs for the texture codes of its own rows: radius 1, plus one because
# scikit-image interpolates the neighbours at rounded float offsets whose floor/ceil can reach a
# second row (with weight ~0; one row of context changed 2 codes in 20000).
TEXTURE_CONTEXT = 2
EDGE_BINS = 16  # on [0, 1]
EDGE_QUANTILES = (0.1, 0.25, 0.5, 0.75, 0.9)
COLOUR_SCALE = 50.0  # a CIELAB distance of 50 counts as "very different" (as in binmap_tf.segmentation.hierarchy)
# Region histograms: 3 * COLOUR_BINS colour bins (each pixel counted once per channel), then the texture codes.
HISTOGRAM_WIDTH = 3 * COLOUR_BINS + TEXTURE_BINS
# Border sums: column 0 summed strength, 1 number of pixel pairs, 2.. the strength histogram.
BORDER_WIDTH = 2 + EDGE_BINS


def pixel_histograms(rgb: np.ndarray, top: int = 0, bottom: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-pixel CIELAB ``(P, 3)``, colour-bin indices ``(P, 3)`` (offset per channel) and texture codes
    ``(P,)`` of uint8 RGB ``rgb`` without its first ``top`` and last ``bottom`` rows: those rows only
    give the texture codes their neighbours, so the bands of an image give its codes."""
    from skimage.color import rgb2gray, rgb2lab
    from skimage.feature import local_binary_pattern

    rows = slice(top, rgb.shape[0] - bottom)
    lab = rgb2lab(rgb[rows]).reshape(-1, 3)
    colour_bins = np.stack([
        np.clip(((lab[:, c] - low) / (high - low) * COLOUR_BINS).astype(np.int64), 0, COLOUR_BINS - 1) + c * COLOUR_BINS
        for c, (low, high) in enumerate(COLOUR_RANGES)], axis=1)
    grey = (rgb2gray(rgb) * 255).astype(np.uint8)
    texture = local_binary_pattern(grey, 8, 1, method="uniform")[rows].astype(np.int64).ravel()
    return lab, colour_bins, texture


def region_histograms(image: np.ndarray, labels: np.ndarray, n: int,
                      band_pixels: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Summed CIELAB ``(n, 3)`` and histograms ``(n, HISTOGRAM_WIDTH)`` (colour bins, then texture
    codes) of every region of ``labels`` (``0 .. n-1``).

    The pixels are visited in row bands of about ``band_pixels`` (:func:`binmap_tf.common.bands.row_bands`),
    each with :data:`TEXTURE_CONTEXT` rows of context above and below for the texture codes: CIELAB and its
    temporaries cost ~100 bytes a pixel, so one pass over a 12 MP photo would need over 1 GB.
    The sums equal one pass's."""
    rgb = as_rgb_uint8(image)
    height = rgb.shape[0]
    lab_sum, histogram = np.zeros((n, 3)), np.zeros(n * HISTOGRAM_WIDTH)
    for start, stop in row_bands(*labels.shape, band_pixels):
        low, high = max(start - TEXTURE_CONTEXT, 0), min(stop + TEXTURE_CONTEXT, height)
        lab, colour_bins, texture = pixel_histograms(rgb[low:high], start - low, high - stop)
        flat = labels[start:stop].ravel().astype(np.int64)
        lab_sum += channel_sums(flat, lab, n)
        bins = np.column_stack([colour_bins, texture + 3 * COLOUR_BINS])
        histogram += np.bincount((flat[:, None] * HISTOGRAM_WIDTH + bins).ravel(), minlength=n * HISTOGRAM_WIDTH)
    return lab_sum, histogram.reshape(n, HISTOGRAM_WIDTH)


def border_histograms(inverse: np.ndarray, strength: np.ndarray, n_borders: int) -> np.ndarray:
    """Border sums ``(n_borders, BORDER_WIDTH)``: strength sum, pixel pairs, strength histogram.

    ``inverse[i]`` is the border of pixel pair ``i`` and ``strength[i]`` its edge strength in [0, 1].
    """
    bins = np.clip((strength * EDGE_BINS).astype(np.int64), 0, EDGE_BINS - 1)
    histogram = np.bincount(inverse * EDGE_BINS + bins, minlength=n_borders * EDGE_BINS).reshape(n_borders, EDGE_BINS)
    return np.column_stack([np.bincount(inverse, strength, n_borders), np.bincount(inverse, minlength=n_borders),
                            histogram]).astype(np.float64)


def feature_names(n_bits: int, codes: bool = True) -> list[str]:
    """Names of the columns of :func:`pair_features` (``codes=False`` drops the code features)."""
    code = ["code_hamming", *(f"code_bit{j}" for j in range(n_bits))] if codes else []
    edges = ["edge_mean", "edge_max", *(f"edge_q{int(100 * q)}" for q in EDGE_QUANTILES),
             *(f"edge_hist{j}" for j in range(EDGE_BINS))]
    colour = ["colour_distance", "colour_l", "colour_a", "colour_b", "colour_chi2", "texture_chi2"]
    size = ["log_area_min", "log_area_max", "log_border_rel_side", "log_border_rel_min_area"]
    return code + edges + colour + size


def histogram_quantiles(histogram: np.ndarray, quantiles: tuple[float, ...]) -> np.ndarray:
    """Quantiles ``(m, len(quantiles))`` of values in [0, 1] from their ``(m, B)`` histograms (linear within a bin)."""
    bins = histogram.shape[1]
    cdf = np.cumsum(histogram, axis=1)
    cdf /= np.maximum(cdf[:, -1:], 1e-12)
    below = np.concatenate([np.zeros((len(cdf), 1)), cdf[:, :-1]], axis=1)
    q = np.asarray(quantiles)
    index = np.minimum((cdf[:, None, :] < q[None, :, None]).sum(axis=2), bins - 1)  # first bin reaching q
    low, high = np.take_along_axis(below, index, axis=1), np.take_along_axis(cdf, index, axis=1)
    return (index + np.clip((q - low) / np.maximum(high - low, 1e-12), 0, 1)) / bins


def pair_features(area: np.ndarray, votes: np.ndarray, lab: np.ndarray, histogram: np.ndarray,
                  border: np.ndarray, image_area: float, codes: bool = True) -> np.ndarray:
    """Features ``(m, F)`` of ``m`` region pairs, columns as :func:`feature_names`.

    ``area`` ``(2, m)``, ``votes`` ``(2, m, k)``, ``lab`` ``(2, m, 3)`` and ``histogram``
    ``(2, m, HISTOGRAM_WIDTH)`` hold the sums of each pair's two regions (see
    :func:`region_histograms`); ``border`` is ``(m, BORDER_WIDTH)`` (:func:`border_histograms`).
    The features are symmetric in the two regions (min / max or absolute differences), so a pair
    scores the same either way. They do not change with the image's size (areas relative to the
    image, border lengths relative to its side) nor with the number of regions left: a scorer that
    read the count (and areas relative to the mean region) learned BSDS500's typical number of
    segments as a prior, scored lower on val (README, "Learned merging"), and forced the greedy
    merge to re-score every queued pair as the count fell. Colour and texture differ by the
    chi-square distance ``0.5 * sum (p - q)^2 / (p + q)`` of the normalised histograms.
    """
    columns = []
    if codes:
        per_bit = np.abs(votes[0] / area[0, :, None] - votes[1] / area[1, :, None])
        columns += [per_bit.mean(axis=1, keepdims=True), per_bit]
    length = np.maximum(border[:, 1], 1.0)
    edge_histogram = border[:, 2:]
    top = (EDGE_BINS - np.argmax(edge_histogram[:, ::-1] > 0, axis=1)) / EDGE_BINS  # upper edge of the highest bin used
    columns += [(border[:, 0] / length)[:, None], top[:, None], histogram_quantiles(edge_histogram, EDGE_QUANTILES),
                edge_histogram / length[:, None]]
    mean_lab = lab / area[..., None]
    difference = (mean_lab[0] - mean_lab[1]) / COLOUR_SCALE
    normalised = histogram / area[..., None]  # colour bins sum to 3 per pixel, texture bins to 1
    total = normalised[0] + normalised[1]
    chi = np.divide((normalised[0] - normalised[1]) ** 2, total, out=np.zeros_like(total), where=total > 0)
    chi = np.add.reduceat(chi, [0, 3 * COLOUR_BINS], axis=1) * np.array([0.5 / 3, 0.5])
    small, large = np.minimum(area[0], area[1]), np.maximum(area[0], area[1])
    # Border length relative to the side of a square of the image's area, and to the smaller region's.
    logs = np.log(np.column_stack([small / image_area, large / image_area, length / np.sqrt(image_area),
                                   length / np.sqrt(small)]))
    columns += [np.sqrt((difference ** 2).sum(axis=1, keepdims=True)), np.abs(difference), chi, logs]
    return np.concatenate(columns, axis=1)
