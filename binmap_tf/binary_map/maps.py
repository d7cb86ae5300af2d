"""The binary map: a k-bit code per grid location, tied back to image pixels.

Codes pack bit 0 into the most significant position: ``code = sum_j bits[j] << (k - 1 - j)``.
So an 8-bit map shows as grey levels and a 24-bit map as RGB with bits 0-7 in red, 8-15 in
green and 16-23 in blue (the paper's display of 24 bits as a 3-channel image).

Command line: ``binmap-map`` (:mod:`binmap_tf.cli.binary_map`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from binmap_tf.binary_map.geometry import GridGeometry


def pack_bits(bits: np.ndarray) -> np.ndarray:
    """Pack (..., k) bits in {0, 1} into integer codes (...,), bit 0 most significant."""
    bits = np.asarray(bits)
    k = bits.shape[-1]
    if k > 62:
        raise ValueError(f"cannot pack {k} bits into one integer code; use at most 62")
    weights = np.left_shift(np.int64(1), np.arange(k - 1, -1, -1, dtype=np.int64))
    return (bits.astype(np.int64) * weights).sum(axis=-1)


def unpack_codes(codes: np.ndarray, bits: int) -> np.ndarray:
    """Inverse of :func:`pack_bits`: integer codes (...,) to (..., bits) uint8."""
    shifts = np.arange(bits - 1, -1, -1, dtype=np.int64)
    return ((np.asarray(codes, dtype=np.int64)[..., None] >> shifts) & 1).astype(np.uint8)


def codes_to_image(codes: np.ndarray, bits: int) -> np.ndarray:
    """Display codes: up to 8 bits as grey levels spread over 0-255, more as RGB bytes (first 24 bits)."""
    codes = np.asarray(codes, dtype=np.int64)
    if bits <= 8:
        return np.round(codes * (255.0 / max(2**bits - 1, 1))).astype(np.uint8)
    top24 = codes >> max(bits - 24, 0) << max(24 - bits, 0)
    return np.stack([(top24 >> 16) & 255, (top24 >> 8) & 255, top24 & 255], axis=-1).astype(np.uint8)


def edges_at(edges: np.ndarray, image_shape: tuple[int, int]) -> np.ndarray:
    """An edge map as the network gives it (at its input's resolution, i.e. the image's times the
    backbone's ``scale``), bilinearly resized to ``image_shape``; a no-op at ``scale`` 1. Local and
    served maps both go through it, so their edges agree to the bit."""
    if edges.shape == tuple(image_shape):
        return edges
    from skimage.transform import resize

    return resize(edges, image_shape, order=1, preserve_range=True).astype(np.float32)


@dataclass
class BinaryMap:
    """One image's binary map.

    ``bits`` (h, w, k) uint8 and ``logits`` (h, w, k) float32 (pre-sign activations) live on the
    feature grid; ``geometry`` and ``scale`` place grid cells on the original image of shape
    ``image_shape``; ``edges`` is the backbone's edge probability at image size, when it has one.
    """

    bits: np.ndarray
    logits: np.ndarray
    geometry: GridGeometry
    scale: float
    image_shape: tuple[int, int]
    edges: np.ndarray | None = None

    @property
    def n_bits(self) -> int:
        return int(self.bits.shape[-1])

    @property
    def grid_shape(self) -> tuple[int, int]:
        return int(self.bits.shape[0]), int(self.bits.shape[1])

    @property
    def codes(self) -> np.ndarray:
        """Packed integer code per grid cell (h, w)."""
        return pack_bits(self.bits)

    def _cell_rows_cols(self) -> tuple[np.ndarray, np.ndarray]:
        """Grid row of every image row and grid column of every image column."""
        height, width = self.image_shape
        grid_h, grid_w = self.grid_shape
        return (self.geometry.pixel_to_cell(height, grid_h, self.scale),
                self.geometry.pixel_to_cell(width, grid_w, self.scale))

    def cell_index(self) -> np.ndarray:
        """Flat index (row * w + col) of the nearest grid cell for every image pixel, (H, W)."""
        return self.geometry.cell_index(self.image_shape, self.grid_shape, self.scale)

    def pixel_bits(self) -> np.ndarray:
        """Bits of each image pixel's nearest grid cell (H, W, k) uint8."""
        rows, cols = self._cell_rows_cols()
        return self.bits[rows[:, None], cols[None, :]]

    def to_image(self) -> np.ndarray:
        """The map upsampled to the image, as grey (<= 8 bits) or RGB (more bits) uint8."""
        rows, cols = self._cell_rows_cols()  # colour the grid, then upsample: no per-pixel codes
        return codes_to_image(self.codes, self.n_bits)[rows[:, None], cols[None, :]]
