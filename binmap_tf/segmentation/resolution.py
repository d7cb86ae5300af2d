"""The working resolution: every image is segmented at about the scale the models were trained on,
and its labels come back at the image's own size (for a photo, with boundaries refined on its
full-resolution pixels).

Every learned part of the pipeline saw BSDS500-sized images (481x321): the CNN's receptive field,
the watershed's ``h`` on HED's edges and the scorer's border statistics all mean something at that
scale and drift away from it (a 12 MP photo gave 1 segment at native scale). Systems users know do
the same: gPb, HED and MCG run on BSDS-sized images, SAM on a 1024-pixel long side. So the CNN, the
superpixels, the codes and the merge run on the image resized (aspect kept) to about
:data:`DEFAULT_WORKING_PIXELS` pixels, down or up (a BSDS image is segmented as it is), so the
segmentation does not depend on the size the image comes at. :func:`refine_labels` maps the labels
back: for a larger image nearest-neighbour upsampling, then a watershed of the colour gradient (of
the photo, or of the photo resized to at most :data:`REFINE_MAX_PIXELS`) inside a band around the
upsampled boundaries, seeded by the labels outside the band, moves each boundary onto the photo's
own edge (in row bands of about a megapixel, so its memory stays bounded); for a smaller image,
nearest-neighbour downsampling that keeps every segment.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

from binmap_tf.common.bands import BAND_PIXELS, row_bands

# Pixels of the image the pipeline runs on; chosen on BSDS500 val upscaled 4x for covering,
# boundary F-measure and speed among 0.15, 0.3 and 0.8 MP (benchmarks/working_resolution.py,
# docs/large_images.md). It is BSDS500's own size (481x321), so a BSDS image is segmented as it is;
# smaller images are brought up to it too (chosen on BSDS500 val downscaled to MSRC's size,
# benchmarks/results/working_resolution_small_val.json).
DEFAULT_WORKING_PIXELS = 481 * 321
# Half-width, in working pixels, of the band around the upsampled boundaries where the full-resolution
# watershed may move them (chosen with the working side).
DEFAULT_REFINE_BAND = 1
# The refinement's gradient is taken on at most this many pixels (the photo resized above it): the
# boundaries it places are then within a fraction of a pixel of that guide, and its cost stays that
# of a 4 MP image whatever the photo's size (docs/large_images.md).
REFINE_MAX_PIXELS = 4_000_000
# The working image is resized as PIL's resize(reducing_gap=3.0) does: box reduction first, Lanczos after.
RESIZE_REDUCING_GAP = 3.0


# The smallest working size: two cells of the CNN's stride-16 grid on each side.
MIN_WORKING_PIXELS = 32 * 32
# The shortest side of an image brought to the working size: one cell of the CNN's stride-16 grid.
# A smaller image holds less than one cell of content, and its labels too few pixels for every segment.
MIN_IMAGE_SIDE = 16


def check_working_pixels(max_pixels: int) -> None:
    """``ValueError`` naming the bound when ``max_pixels`` is below :data:`MIN_WORKING_PIXELS`."""
    if max_pixels < MIN_WORKING_PIXELS:
        raise ValueError(f"the working size must be at least {MIN_WORKING_PIXELS} pixels, got {max_pixels}")


def working_shape(shape: tuple[int, int], pixels: int | None = DEFAULT_WORKING_PIXELS) -> tuple[int, int]:
    """(height, width) an image of ``shape`` is segmented at: resized, aspect kept, to about ``pixels``
    pixels, down or up (:func:`shape_of_pixels`); its own with ``pixels`` None."""
    if pixels is None:
        return tuple(shape)
    check_working_pixels(pixels)
    return shape_of_pixels(shape, pixels)


def shape_of_pixels(shape: tuple[int, int], pixels: int) -> tuple[int, int]:
    """(height, width) of about ``pixels`` pixels with the aspect of ``shape``, larger or smaller (the
    same shape when it has ``pixels`` pixels)."""
    height, width = shape
    factor = math.sqrt(pixels / (height * width))
    return max(1, math.floor(height * factor + 0.5)), max(1, math.floor(width * factor + 0.5))


def resize_image(image: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """``image`` (uint8 RGB) resized to ``shape`` (height, width) with an antialiasing Lanczos filter;
    the same object when it has that shape already."""
    if tuple(shape) == image.shape[:2]:
        return image
    from PIL import Image

    # PIL's resize with reducing_gap=3 (within rounding of plain Lanczos at these factors, several
    # times faster): first box-reduce by the integer factors that leave at least 3x the target size,
    # then Lanczos for the rest. The reduction is done here, in bands (reduce_image), so that a photo
    # is never copied whole into PIL; the pixels are those of PIL's own resize.
    height, width = image.shape[:2]
    factor_y, factor_x = (max(1, int(full / small / RESIZE_REDUCING_GAP)) for full, small in zip(image.shape, shape))
    reduced = Image.fromarray(reduce_image(image, (factor_y, factor_x)))
    box = (0, 0, width / factor_x, height / factor_y)
    return np.asarray(reduced.resize(tuple(shape)[::-1], Image.Resampling.LANCZOS, box=box))


def reduce_image(image: np.ndarray, factors: tuple[int, int]) -> np.ndarray:
    """``image`` (uint8 RGB) area-averaged by the integer ``factors`` (rows, columns): PIL's ``reduce``,
    a band of rows at a time (whole blocks of ``factors[0]`` rows, so the pixels are those of one pass),
    never holding the image as a PIL image; the same object when both factors are 1."""
    if factors == (1, 1):
        return image
    from PIL import Image

    height, width = image.shape[:2]
    rows = factors[0] * max(1, BAND_PIXELS // (width * factors[0]))
    bands = [np.asarray(Image.fromarray(image[start:start + rows]).reduce(factors[::-1]))
             for start in range(0, height, rows)]
    return np.concatenate(bands)


def _source_index(full: int, small: int) -> np.ndarray:
    """For each of ``full`` positions, the one of ``small`` positions whose cell holds its centre."""
    return ((2 * np.arange(full) + 1) * small // (2 * full)).astype(np.intp)


def upsample_labels(labels: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour upsampling of a label image to ``shape``: every label keeps pixels, and each
    output pixel takes the label of the input pixel under its centre."""
    rows, cols = _source_index(shape[0], labels.shape[0]), _source_index(shape[1], labels.shape[1])
    out = np.empty(shape, labels.dtype)
    for start, stop in row_bands(*shape):  # two 1-d gathers a band: 5x a 2-d fancy index, no whole temporary
        out[start:stop] = np.take(labels[rows[start:stop]], cols, axis=1)
    return out


def boundary_band(labels: np.ndarray, band: int = DEFAULT_REFINE_BAND) -> np.ndarray:
    """Pixels of ``labels`` with a 4-neighbour of another label, grown by ``band`` pixels: where the
    upsampled boundary is uncertain."""
    edge = np.zeros(labels.shape, bool)
    across = labels[:, 1:] != labels[:, :-1]
    down = labels[1:, :] != labels[:-1, :]
    edge[:, 1:] |= across
    edge[:, :-1] |= across
    edge[1:, :] |= down
    edge[:-1, :] |= down
    if band > 0:
        edge = ndimage.binary_dilation(edge, np.ones((3, 3), bool), iterations=band)
    return edge


def colour_gradient(image: np.ndarray) -> np.ndarray:
    """Gradient magnitude of an RGB image, float32: the root of the summed squared Sobel responses
    of its three channels (colour edges count, not only brightness ones)."""
    total = np.zeros(image.shape[:2], np.float32)
    for channel in range(image.shape[2]):
        values = image[..., channel].astype(np.float32)
        total += ndimage.sobel(values, axis=0) ** 2
        total += ndimage.sobel(values, axis=1) ** 2
    return np.sqrt(total)


def refine_labels(labels: np.ndarray, image: np.ndarray, band: int = DEFAULT_REFINE_BAND,
                  refine: bool = True, max_pixels: int = REFINE_MAX_PIXELS) -> np.ndarray:
    """Labels computed at working size, at the size of ``image`` (int32 (H, W)).

    For a larger image: outside a band of ``band`` working pixels around the boundaries the labels
    are upsampled by nearest neighbour; inside it a watershed of the colour gradient, seeded by the
    labels around it, places each boundary on the strongest edge between its two regions. The
    gradient is taken on the image itself up to ``max_pixels`` pixels, on the image resized to that
    size above it (the last upsampling step is nearest neighbour, a fraction of a pixel of that
    guide: invisible at a photo's resolution, and the cost stops growing with the photo). Every
    label keeps pixels (one that the band would swallow keeps its upsampled ones).
    ``refine=False``: nearest neighbour only. For a smaller image: :func:`downsample_labels`. An
    image of the labels' own size gets them back unchanged.
    """
    height, width = image.shape[:2]
    labels = np.asarray(labels, np.int32)
    if labels.shape == (height, width):
        return labels.copy()
    if labels.shape[0] >= height and labels.shape[1] >= width:
        return downsample_labels(labels, (height, width))
    if not refine:
        return upsample_labels(labels, (height, width))
    guide = _guide(image, max_pixels)
    refined = _refine_on(labels, guide, band)
    return refined if guide is image else upsample_labels(refined, (height, width))


def downsample_labels(labels: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Labels at the smaller ``shape``: each pixel takes the label under its centre (as
    :func:`upsample_labels`), and a label no centre falls on (thinner than a pixel of ``shape``) takes
    the pixel that holds most of it from a label with pixels to spare, so every label keeps pixels
    (as long as ``shape`` has a pixel for each)."""
    out = upsample_labels(labels, shape)
    n = int(labels.max()) + 1
    counts = np.bincount(out.ravel(), minlength=n)
    lost = np.flatnonzero((np.bincount(labels.ravel(), minlength=n) > 0) & (counts == 0))
    # the pixel of shape that holds the centre of each row and column of labels
    rows, cols = _source_index(labels.shape[0], shape[0]), _source_index(labels.shape[1], shape[1])
    for label in lost:  # rare: a segment thinner than a pixel of shape
        at_rows, at_cols = np.nonzero(labels == label)
        cells, votes = np.unique(rows[at_rows] * shape[1] + cols[at_cols], return_counts=True)
        for cell in cells[np.argsort(-votes, kind="stable")]:
            if counts[out.flat[cell]] > 1:
                counts[out.flat[cell]] -= 1
                out.flat[cell], counts[label] = label, 1
                break
    return out


def _guide(image: np.ndarray, max_pixels: int) -> np.ndarray:
    """The image the refinement's gradient is taken on: ``image``, or above ``max_pixels`` the image
    area-averaged by the smallest integer factor that brings it under (:func:`reduce_image`: a box
    filter, ten times faster than resampling a 50 MP photo)."""
    height, width = image.shape[:2]
    factor = max(1, math.ceil(math.sqrt(height * width / max_pixels)))
    return reduce_image(image, (factor, factor))


def _refine_on(labels: np.ndarray, guide: np.ndarray, band: int) -> np.ndarray:
    """:func:`refine_labels` at the size of ``guide``, in row bands of about a megapixel."""
    from skimage.segmentation import watershed

    height, width = guide.shape[:2]
    rows, cols = _source_index(height, labels.shape[0]), _source_index(width, labels.shape[1])
    out = np.empty((height, width), np.int32)
    uncertain = boundary_band(labels, band)
    # Rows of context around each band: the watershed of a band's uncertain pixels reaches as far as
    # the uncertain region spans, (2 * band + 1) working pixels of full-resolution rows.
    margin = (2 * band + 2) * math.ceil(height / labels.shape[0])
    for start, stop in row_bands(height, width):
        top, bottom = max(0, start - margin), min(height, stop + margin)
        nearest = labels[rows[top:bottom, None], cols[None, :]]
        band_mask = uncertain[rows[top:bottom, None], cols[None, :]]
        if band_mask.any():
            seeds = np.where(band_mask, 0, nearest + 1)
            # the uncertain pixels and the seeds touching them: the watershed works on those alone
            region = ndimage.binary_dilation(band_mask, np.ones((3, 3), bool))
            flooded = watershed(colour_gradient(guide[top:bottom]), seeds, mask=region)
            nearest = np.where(band_mask & (flooded > 0), flooded - 1, nearest)
        out[start:stop] = nearest[start - top:stop - top]
    _restore_lost_labels(out, labels, rows, cols)
    return out


def _restore_lost_labels(out: np.ndarray, labels: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> None:
    """Give every label the refinement left without pixels its nearest-neighbour pixels back."""
    n = int(labels.max()) + 1
    counts = np.zeros(n, np.int64)
    for start, stop in row_bands(*out.shape):
        counts += np.bincount(out[start:stop].ravel(), minlength=n)[:n]
    lost = np.flatnonzero(counts == 0)
    lost = lost[np.isin(lost, labels)]
    if not len(lost):
        return
    for start, stop in row_bands(*out.shape):
        nearest = labels[rows[start:stop, None], cols[None, :]]
        keep = np.isin(nearest, lost)
        out[start:stop][keep] = nearest[keep]
