"""The files one segmented image is written as, by every entry point that writes them (the
``segment`` CLI, the batch pipeline): labels as 16-bit PNG and ``.npy``, the boundary overlay,
the binary map and a JSON record. An image's files are written atomically, together."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from binmap_tf.binary_map.tiling import row_bands
from binmap_tf.common.errors import OutputError
from binmap_tf.common.files import atomic_paths, save_json, save_npy, save_png
from binmap_tf.common.images import as_rgb_uint8

# The suffixes of the files write_segmentation writes for one image stem.
OUTPUT_SUFFIXES = ("_labels.npy", "_labels.png", "_overlay.png", "_binary_map.png", ".json")


def boundary_overlay(image: np.ndarray, labels: np.ndarray, color: tuple[float, float, float] = (1.0, 1.0, 0.0)
                     ) -> np.ndarray:
    """Segment boundaries drawn on ``image`` in ``color`` (RGB in [0, 1]), as uint8 RGB."""
    from skimage.segmentation import mark_boundaries

    rgb = as_rgb_uint8(image)
    overlay = np.empty_like(rgb)
    halo = 2  # mark_boundaries looks one pixel around each pixel; two rows of context are enough
    height = rgb.shape[0]
    # mark_boundaries works in float64 (24 bytes a pixel): draw it in row bands with context rows.
    for start, stop in row_bands(*rgb.shape[:2]):
        low, high = max(0, start - halo), min(height, stop + halo)
        band = mark_boundaries(rgb[low:high], labels[low:high], color=color)
        overlay[start:stop] = as_rgb_uint8(band[start - low:stop - low])
    return overlay


def label_image_uint16(labels: np.ndarray) -> np.ndarray:
    """``labels`` as uint16 for a 16-bit PNG; ``ValueError`` when a label exceeds 65535."""
    if labels.max() > np.iinfo(np.uint16).max:
        raise ValueError(f"{labels.max() + 1} segments do not fit a 16-bit PNG; use the .npy labels")
    return labels.astype(np.uint16)


def output_paths(out: str | os.PathLike, stem: str) -> list[Path]:
    """The files :func:`write_segmentation` writes for ``stem`` in folder ``out``."""
    return [Path(out) / f"{stem}{suffix}" for suffix in OUTPUT_SUFFIXES]


def write_segmentation(out: str | os.PathLike, stem: str, image: np.ndarray, result: Any,
                       record: dict[str, Any]) -> None:
    """Write ``result`` (a :class:`~binmap_tf.segmentation.pipeline.SegmentationResult` of ``image``) as
    ``<stem>_labels.npy``, ``<stem>_labels.png`` (16-bit), ``<stem>_overlay.png``,
    ``<stem>_binary_map.png`` and ``<stem>.json`` (``record``, then the result's summary) in ``out``,
    or raise :class:`~binmap_tf.common.errors.OutputError` naming the folder and the fix. The five
    files appear together or not at all (:func:`~binmap_tf.common.files.atomic_paths`: a full disk
    or a read-only folder fails the image before any of its files is in place), the JSON last, so
    its presence means the image is complete."""
    labels = label_image_uint16(result.labels)  # refuses too many segments before anything is written
    try:
        with atomic_paths(output_paths(out, stem)) as (labels_npy, labels_png, overlay, binary_map, summary):
            save_npy(labels_npy, result.labels)
            save_png(labels_png, labels)
            save_png(overlay, boundary_overlay(image, result.labels))
            save_png(binary_map, result.binary_map.to_image())
            save_json(summary, {**record, "scale": result.binary_map.scale, **result.summary()})
    except OSError as error:
        raise OutputError(f"cannot write the outputs of {stem} into {out}: {error.strerror or error}; free space "
                          "there or make it writable, then segment it again") from error
