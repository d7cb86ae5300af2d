"""Grid geometry: which pixels each feature-grid cell sees. Pure numpy, so host-side code
(merging, serving clients, evaluation workers) never needs TensorFlow.

Convention: pixel ``y`` of the image the CNN receives has its centre at coordinate ``y``. Grid
cell ``i`` is centred on coordinate ``offset + stride * i`` and sees ``receptive_field``
pixels around it. When the model first resizes the image by ``scale`` (half-pixel centres, as
``tf.image.resize``), pixel ``y`` of the original image sits at ``(y + 0.5) * s - 0.5`` in the
resized one, with ``s`` the actual ratio of the rounded resized length to the original.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np


@dataclass(frozen=True)
class GridGeometry:
    """Stride, offset and receptive field of a feature grid, in pixels of the CNN's input."""

    stride: float
    offset: float
    receptive_field: float

    @classmethod
    def from_layers(cls, layers: Sequence[tuple[int, int, int]]) -> "GridGeometry":
        """Compose ``(kernel, stride, padding_before)`` of each spatial layer, input to output."""
        stride, offset, field = 1.0, 0.0, 1.0
        for kernel, layer_stride, pad in layers:
            offset += ((kernel - 1) / 2.0 - pad) * stride
            field += (kernel - 1) * stride
            stride *= layer_stride
        return cls(stride=stride, offset=offset, receptive_field=field)

    def pixel_to_cell(self, image_len: int, n_cells: int, scale: float = 1.0) -> np.ndarray:
        """Index of the grid cell whose centre is nearest to each of ``image_len`` original pixels."""
        scaled_len = scaled_size(image_len, scale)
        factor = scaled_len / image_len
        coords = (np.arange(image_len) + 0.5) * factor - 0.5
        cells = np.rint((coords - self.offset) / self.stride).astype(np.int64)
        return np.clip(cells, 0, n_cells - 1)

    def cell_index(self, image_shape: tuple[int, int], grid_shape: tuple[int, int], scale: float = 1.0) -> np.ndarray:
        """Flat index (``row * w + col``) of the nearest cell of an ``(h, w)`` grid for every pixel of an
        image of ``image_shape`` ``(H, W)``: how a binary map, and anything else on the grid, is tied to pixels.
        int32 (half the memory of int64 on large images) unless the grid has 2**31 cells or more."""
        (height, width), (grid_h, grid_w) = image_shape, grid_shape
        dtype = np.int32 if grid_h * grid_w < 2**31 else np.int64
        return (self.pixel_to_cell(height, grid_h, scale).astype(dtype)[:, None] * dtype(grid_w)
                + self.pixel_to_cell(width, grid_w, scale).astype(dtype)[None, :])

    def cell_centres(self, n_cells: int, image_len: int, scale: float = 1.0) -> np.ndarray:
        """Centre of each grid cell in original-image pixel coordinates."""
        factor = scaled_size(image_len, scale) / image_len
        return (self.offset + self.stride * np.arange(n_cells) + 0.5) / factor - 0.5


def scaled_size(length: int, scale: float) -> int:
    """Length of a side after resizing by ``scale`` (the rule the preprocessing layer uses)."""
    return max(1, int(math.floor(length * scale + 0.5)))
