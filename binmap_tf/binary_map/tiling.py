"""Overlapping tiles for running a fully convolutional backbone on images of any size.

One forward pass over a 12 MP image needs several GiB of activations (VGG16's first block
alone holds 64 float32 channels per pixel); on tiles of at most ``max_tile_pixels`` the peak
is bounded by the tile, not the image. A tile is a *core* plus a *margin* on every side that
borders another tile; each grid cell (and, for the edge map, each pixel) is taken from the
one tile whose core holds its centre. Tiles are aligned so that tiled and untiled maps agree:

* every tile starts at a multiple of the backbone's largest stride (``context.stride``, in
  the pixels the CNN sees), so each tile's grid is a sub-grid of the whole image's and every
  pooling window covers the same pixels;
* the margin is at least half the largest receptive field, so a cell whose centre lies in a
  core sees only pixels of its tile, and none of the zero padding at the tile's border.

With ``scale != 1`` the tile starts are multiples of the smallest original length that the
resize maps onto a whole number of strides; the image-wide resize ratio then differs from
the tile's by at most half a resized pixel over the image, so agreement is close, not exact.
Pure numpy: the planning is tested without TensorFlow, and :func:`stitch_tiles` assembles the
tiles' maps for the local mapper and the serving client alike.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

from binmap_tf.binary_map.geometry import GridGeometry, scaled_size
from binmap_tf.binary_map.maps import BinaryMap, edges_at

# Default budget of pixels the CNN sees in one forward pass: about 0.5 GiB of vgg16-hed
# activations (with its edge map) on top of the ~0.8 GiB of a process with the model loaded.
DEFAULT_MAX_TILE_PIXELS = 1024 * 1024


@dataclass(frozen=True)
class AxisTile:
    """One tile along one axis, in pixels of the original image.

    The tile spans ``start .. stop - 1``; the cells and pixels whose centres lie in
    ``[core_start, core_stop)`` are taken from it (infinite at the image's ends).
    """

    start: int
    stop: int
    core_start: float
    core_stop: float

    def cells(self, n_cells: int, geometry: GridGeometry, scale: float) -> slice:
        """The tile's own grid cells (of ``n_cells``) whose centres lie in its core."""
        first = round(self.start * scale / geometry.stride)  # whole: tiles are aligned to the stride
        centres = (geometry.offset + geometry.stride * (first + np.arange(n_cells)) + 0.5) / scale - 0.5
        inside = np.flatnonzero((centres >= self.core_start) & (centres < self.core_stop))
        return slice(int(inside[0]), int(inside[-1]) + 1) if len(inside) else slice(0, 0)

    def pixels(self) -> tuple[slice, slice]:
        """``(in the image, in the tile)``: the core's pixels, clipped to the tile."""
        low = max(self.start, int(math.ceil(self.core_start)) if math.isfinite(self.core_start) else self.start)
        high = min(self.stop, int(math.ceil(self.core_stop)) if math.isfinite(self.core_stop) else self.stop)
        return slice(low, high), slice(low - self.start, high - self.start)


@dataclass(frozen=True)
class TilePlan:
    """Tiles of one image: every row tile crossed with every column tile."""

    rows: tuple[AxisTile, ...]
    cols: tuple[AxisTile, ...]
    align: int
    margin: int

    @property
    def n_tiles(self) -> int:
        return len(self.rows) * len(self.cols)


def alignment(stride: float, scale: float, limit: int = 4096) -> int | None:
    """Smallest original length (pixels) that the resize by ``scale`` maps onto a whole number of
    ``stride``; None when there is none up to ``limit`` (an irrational-looking ``scale``)."""
    for length in range(1, limit + 1):
        strides = length * scale / stride
        if strides >= 1 and abs(strides - round(strides)) < 1e-9:
            return length
    return None


def margin_for(context: GridGeometry, scale: float, align: int) -> int:
    """Overlap on each inner side of a tile (original pixels): half the receptive field, rounded up
    to a multiple of ``align``, so cells centred in the core never see the tile's border."""
    half_field = context.receptive_field / 2.0 / scale
    return int(math.ceil(half_field / align)) * align


def plan_axis(length: int, tile: int, align: int, margin: int) -> tuple[AxisTile, ...]:
    """Split ``0 .. length - 1`` into tiles of at most ``tile`` pixels with aligned, balanced cores."""
    if length <= tile:
        return (AxisTile(0, length, -math.inf, math.inf),)
    largest_core = (tile - 2 * margin) // align * align
    if largest_core < align:
        raise ValueError(f"a tile of {tile} pixels cannot hold a core of {align} pixels between two margins of "
                         f"{margin}; raise max_tile_pixels to at least {(2 * margin + align) ** 2}")
    count = math.ceil(length / largest_core)
    core = math.ceil(length / count / align) * align
    bounds = list(range(0, length, core))
    tiles = []
    for index, begin in enumerate(bounds):
        last = index == len(bounds) - 1
        tiles.append(AxisTile(start=max(0, begin - margin), stop=min(length, begin + core + margin),
                              core_start=-math.inf if index == 0 else float(begin),
                              core_stop=math.inf if last else float(begin + core)))
    return tuple(tiles)


def tile_shape(shape: tuple[int, int], max_pixels: int) -> tuple[int, int]:
    """Largest tile (rows, cols) of at most ``max_pixels``: square, or the whole short side."""
    height, width = shape
    side = math.isqrt(max_pixels)
    if height <= side:
        return height, max_pixels // height
    if width <= side:
        return max_pixels // width, width
    return side, side


def plan_tiles(shape: tuple[int, int], max_pixels: int, context: GridGeometry, scale: float = 1.0) -> TilePlan | None:
    """Tiles for an original image of ``shape`` whose resized pixels per tile stay within ``max_pixels``.

    A tile is never smaller than one aligned core between two margins (240x240 pixels for
    ``vgg16-hed``, 480x480 for AlexNet at scale 3.4), whatever ``max_pixels`` says. Returns a
    plan with one tile when the whole image fits, and None when no tile alignment exists for
    ``scale`` (the caller then downscales).
    """
    align = alignment(context.stride, scale)
    if align is None:
        return None
    margin = margin_for(context, scale, align)
    budget = max(int(max_pixels / (scale * scale)), (2 * margin + align) ** 2)  # original pixels per tile
    rows, cols = tile_shape(shape, budget) if shape[0] * shape[1] > budget else shape
    return TilePlan(plan_axis(shape[0], rows, align, margin), plan_axis(shape[1], cols, align, margin),
                    align, margin)


def over_tile_budget(shape: tuple[int, int], scale: float, max_tile_pixels: int | None) -> bool:
    """Whether one forward pass over an image of ``shape``, resized by ``scale``, would see more than
    ``max_tile_pixels`` pixels (never, for None: images run whole)."""
    if max_tile_pixels is None:
        return False
    return scaled_size(shape[0], scale) * scaled_size(shape[1], scale) > max_tile_pixels


def stitch_tiles(image_shape: tuple[int, int], plan: TilePlan, tile: Callable[[slice, slice], dict[str, np.ndarray]],
                 geometry: GridGeometry, scale: float) -> BinaryMap:
    """The binary map of an image of ``image_shape`` stitched from its tiles' maps.

    ``tile(rows, cols)`` gives the map of the image's pixels ``[rows, cols]``: ``bits`` and
    ``logits`` (h, w, k) and, if the model has one, ``edges`` (H', W') at the network's
    resolution; a local forward pass or a request to a model server. Each grid cell comes from
    the tile whose core holds the cell's centre, each edge pixel from the tile whose core holds
    the pixel; the cores partition the image.
    """
    bits_rows, logits_rows = [], []
    edges = None
    for row in plan.rows:
        bits_blocks, logits_blocks = [], []
        for col in plan.cols:
            outputs = tile(slice(row.start, row.stop), slice(col.start, col.stop))
            cells = (row.cells(outputs["bits"].shape[0], geometry, scale),
                     col.cells(outputs["bits"].shape[1], geometry, scale))
            bits_blocks.append(outputs["bits"][cells])
            logits_blocks.append(outputs["logits"][cells])
            if "edges" in outputs:
                if edges is None:
                    edges = np.zeros(image_shape, np.float32)
                tile_edges = edges_at(outputs["edges"], (row.stop - row.start, col.stop - col.start))
                (rows_at, rows_in), (cols_at, cols_in) = row.pixels(), col.pixels()
                edges[rows_at, cols_at] = tile_edges[rows_in, cols_in]
        bits_rows.append(np.concatenate(bits_blocks, axis=1))
        logits_rows.append(np.concatenate(logits_blocks, axis=1))
    return BinaryMap(bits=np.concatenate(bits_rows), logits=np.concatenate(logits_rows), geometry=geometry,
                     scale=scale, image_shape=tuple(image_shape), edges=edges)

