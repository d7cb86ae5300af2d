"""Row bands: the stages that visit every pixel of a large image (decoding, neighbour pairs, bit
votes, CIELAB sums, the overlay, the refinement, PNG encoding) take it a band of rows at a time, so
their temporaries stay tens of MiB whatever the image size."""

from __future__ import annotations

# Pixels per band: the temporaries are a few int64 or float64 values per pixel, so bands of ~1 MP
# bound them to tens of MiB. Results do not depend on it.
BAND_PIXELS = 1 << 20


def row_bands(height: int, width: int, band_pixels: int | None = None) -> list[tuple[int, int]]:
    """Consecutive row ranges ``(start, stop)`` covering ``0 .. height - 1``, each of about
    ``band_pixels`` pixels (default :data:`BAND_PIXELS`) and at least one row."""
    rows = max(1, (BAND_PIXELS if band_pixels is None else band_pixels) // max(width, 1))
    return [(start, min(height, start + rows)) for start in range(0, height, rows)]
