"""The segmentation methods the evaluation compares, each at one parameter setting.

A method is a low-level superpixel algorithm (``egs`` or ``slic``) optionally followed by a
merge driven by a binary map (``binmap-egs``, ``binmap-slic``; ``-ft`` variants use the
fine-tuned hashing layer). Its parameter is the superpixel knob the paper's Fig. 4 sweeps:
the EGS ``scale`` (Felzenszwalb's k) or the SLIC ``n_segments``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from binmap_tf.binary_map import BinaryMap
from binmap_tf.merge import merge_superpixels, superpixel_codes
from binmap_tf.superpixels import EGS_SCALE, SLIC_N_SEGMENTS, compute_superpixels

# Parameter grids of the sweep (Fig. 4): wide enough to span ~30 to ~1500 superpixels.
SWEEP_VALUES = {
    "egs": (50.0, 100.0, 200.0, 300.0, 500.0, 800.0, 1200.0, 2000.0),
    "slic": (25.0, 50.0, 100.0, 200.0, 400.0, 800.0, 1600.0),
}
DEFAULT_VALUES = {"egs": EGS_SCALE, "slic": float(SLIC_N_SEGMENTS)}
PARAMETER_NAMES = {"egs": "scale", "slic": "n_segments"}


@dataclass(frozen=True)
class Method:
    """A named method: which superpixels, and which binary map (if any) merges them."""

    name: str
    superpixels: str
    map_variant: str | None  # None: superpixels alone; "itq" or "ft": merge with that map

    def superpixel_params(self, value: float) -> dict:
        """Keyword arguments of :func:`compute_superpixels` for parameter ``value``."""
        key = PARAMETER_NAMES[self.superpixels]
        return {key: int(value) if key == "n_segments" else float(value)}


def parse_method(name: str) -> Method:
    """``egs``, ``slic``, ``binmap-egs``, ``binmap-slic``, ``binmap-egs-ft``, ``binmap-slic-ft``."""
    parts = name.split("-")
    if parts[0] in DEFAULT_VALUES and len(parts) == 1:
        return Method(name, parts[0], None)
    if parts[0] == "binmap" and len(parts) in (2, 3) and parts[1] in DEFAULT_VALUES:
        if len(parts) == 2 or parts[2] == "ft":
            return Method(name, parts[1], "itq" if len(parts) == 2 else "ft")
    raise ValueError(f"unknown method {name!r}; use egs, slic, binmap-egs, binmap-slic, "
                     "binmap-egs-ft or binmap-slic-ft")


@dataclass
class MethodOutput:
    """Labels of one method on one image, with its counts and host-side seconds."""

    labels: np.ndarray
    n_superpixels: int
    seconds: float


def run_method(method: Method, value: float, image: np.ndarray, binary_map: BinaryMap | None,
               superpixel_cache: dict, hamming: int = 0, merge: str = "adjacent") -> MethodOutput:
    """Segment ``image`` with ``method`` at parameter ``value``.

    ``superpixel_cache`` maps ``(superpixel method, value)`` to ``(labels, seconds)`` so a
    baseline and its binary-map variant share one superpixel computation per image.
    """
    key = (method.superpixels, value)
    if key not in superpixel_cache:
        start = time.perf_counter()
        labels = compute_superpixels(image, method.superpixels, **method.superpixel_params(value))
        superpixel_cache[key] = (labels, time.perf_counter() - start)
    superpixels, superpixel_seconds = superpixel_cache[key]
    n_superpixels = int(superpixels.max()) + 1
    if method.map_variant is None:
        return MethodOutput(superpixels, n_superpixels, superpixel_seconds)
    if binary_map is None:
        raise ValueError(f"method {method.name} needs a binary map")
    start = time.perf_counter()
    codes = superpixel_codes(superpixels, binary_map.bits, binary_map.cell_index())
    labels = merge_superpixels(superpixels, codes, hamming=hamming, mode=merge)
    return MethodOutput(labels, n_superpixels, superpixel_seconds + time.perf_counter() - start)
