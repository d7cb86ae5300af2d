"""The files one segmented image is written as, by every entry point that writes them (the
``segment`` CLI, the batch pipeline, the demo's downloads, Python callers): labels as 16-bit PNG and
``.npy``, the boundary overlay, the binary map and a JSON record; on request the hierarchy as a
BSDS ``ucm2`` (``.mat`` and 16-bit PNG) and the region table (CSV), and one COCO file per run
(:mod:`binmap_tf.segmentation.interchange` encodes those). An image's files are written atomically,
together, and the same result gives the same bytes wherever it is written."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from binmap_tf.common.bands import row_bands
from binmap_tf.common.errors import OutputError
from binmap_tf.common.files import (
    atomic_paths,
    save_json,
    save_mat,
    save_npy,
    write_json,
)
from binmap_tf.common.images import as_rgb_uint8
from binmap_tf.common.png import save_png, save_png_bands
from binmap_tf.segmentation.interchange import (
    coco_document,
    coco_entries,
    region_table,
    table_csv,
    ucm2_png,
)

# The files of each output, by name: those every image gets, then those asked for (--ucm, --regions).
FILE_SUFFIXES = {"labels": ("_labels.npy", "_labels.png"), "overlay": ("_overlay.png",),
                 "binary_map": ("_binary_map.png",), "ucm": ("_ucm2.mat", "_ucm2.png"), "regions": ("_regions.csv",)}
BASE_OUTPUTS = ("labels", "overlay", "binary_map")
EXTRA_OUTPUTS = ("ucm", "regions")
# The JSON record, written last: its presence means the image is complete.
RECORD_SUFFIX = ".json"
# The suffixes of the files write_segmentation writes for one image stem without extras.
OUTPUT_SUFFIXES = (*(suffix for name in BASE_OUTPUTS for suffix in FILE_SUFFIXES[name]), RECORD_SUFFIX)
# The extra outputs that need the merge tree, not just labels.
NEEDS_TREE = ("ucm",)
# One COCO file per run, beside the images' files (an image with this stem is refused: its JSON
# record would have the same name).
COCO_FILE = "coco.json"
# The variable of a ucm2 .mat, as in the BSDS benchmark's and gPb-owt-ucm's files.
UCM2_VARIABLE = "ucm2"


def boundary_overlay(image: np.ndarray, labels: np.ndarray, color: tuple[float, float, float] = (1.0, 1.0, 0.0)
                     ) -> np.ndarray:
    """Segment boundaries drawn on ``image`` in ``color`` (RGB in [0, 1]), as uint8 RGB."""
    return np.concatenate(list(overlay_bands(image, labels, color)))


def overlay_bands(image: np.ndarray, labels: np.ndarray, color: tuple[float, float, float] = (1.0, 1.0, 0.0)
                  ) -> Iterator[np.ndarray]:
    """:func:`boundary_overlay` as its row bands (:func:`~binmap_tf.common.bands.row_bands`), top to
    bottom: the overlay file is written from them without a whole-image copy."""
    from skimage.segmentation import mark_boundaries

    rgb = as_rgb_uint8(image)
    halo = 2  # mark_boundaries looks one pixel around each pixel; two rows of context are enough
    height = rgb.shape[0]
    # mark_boundaries works in float64 (24 bytes a pixel): draw it in row bands with context rows.
    for start, stop in row_bands(*rgb.shape[:2]):
        low, high = max(0, start - halo), min(height, stop + halo)
        band = mark_boundaries(rgb[low:high], labels[low:high], color=color)
        yield as_rgb_uint8(band[start - low:stop - low])


def label_bands_uint16(labels: np.ndarray) -> Iterator[np.ndarray]:
    """``labels`` as uint16 row bands for a 16-bit PNG; ``ValueError`` at once when a label exceeds 65535."""
    if labels.max() > np.iinfo(np.uint16).max:
        raise ValueError(f"{labels.max() + 1} segments do not fit a 16-bit PNG; use the .npy labels")
    return (labels[start:stop].astype(np.uint16) for start, stop in row_bands(*labels.shape))


def check_extras(extras: Iterable[str], merge: str) -> tuple[str, ...]:
    """``extras`` (names in :data:`EXTRA_OUTPUTS`) as a tuple; ``ValueError`` naming the fix for an
    unknown one, or for a UCM asked of ``merge`` other than the hierarchy (a flat merge has no tree)."""
    extras = tuple(extras)
    unknown = sorted(set(extras) - set(EXTRA_OUTPUTS))
    if unknown:
        raise ValueError(f"unknown outputs {unknown}; choose among {list(EXTRA_OUTPUTS)}")
    if merge != "hierarchy" and any(name in NEEDS_TREE for name in extras):
        raise ValueError(f"the UCM is the merge hierarchy's, and merge {merge!r} builds none: segment with the "
                         "hierarchy (merge='hierarchy', the default) or leave the UCM out; the labels, COCO file "
                         "and region table work with any merge")
    return extras


def _files(out: str | os.PathLike, stem: str, name: str) -> list[Path]:
    return [Path(out) / f"{stem}{suffix}" for suffix in FILE_SUFFIXES[name]]


def output_paths(out: str | os.PathLike, stem: str, extras: Iterable[str] = ()) -> list[Path]:
    """The files :func:`write_segmentation` writes for ``stem`` in folder ``out`` (with ``extras``),
    the JSON record last."""
    files = [path for name in (*BASE_OUTPUTS, *extras) for path in _files(out, stem, name)]
    return [*files, Path(out) / f"{stem}{RECORD_SUFFIX}"]


def _save_labels(npy: Path, png: Path, image: np.ndarray, result: Any) -> None:
    save_npy(npy, result.labels)
    save_png_bands(png, result.labels.shape, np.uint16, label_bands_uint16(result.labels))


def _save_overlay(path: Path, image: np.ndarray, result: Any) -> None:
    save_png_bands(path, (*result.labels.shape, 3), np.uint8, overlay_bands(image, result.labels))


def _save_binary_map(path: Path, image: np.ndarray, result: Any) -> None:
    save_png(path, result.binary_map.to_image())


def _save_ucm(mat: Path, png: Path, image: np.ndarray, result: Any) -> None:
    """``result.ucm()`` as ``mat`` (variable ``ucm2``, float64, as the BSDS files) and as a 16-bit PNG
    (:func:`~binmap_tf.segmentation.interchange.ucm2_png`)."""
    ucm2 = result.ucm()
    save_mat(mat, UCM2_VARIABLE, ucm2)
    save_png(png, ucm2_png(ucm2))


def _save_regions(path: Path, image: np.ndarray, result: Any) -> None:
    Path(path).write_text(table_csv(region_table(image, result)))


_SAVERS = {"labels": _save_labels, "overlay": _save_overlay, "binary_map": _save_binary_map,
           "ucm": _save_ucm, "regions": _save_regions}


def write_files(out: str | os.PathLike, stem: str, image: np.ndarray, result: Any, names: Iterable[str],
                record: dict[str, Any] | None = None) -> list[Path]:
    """Write the files of the outputs ``names`` (keys of :data:`FILE_SUFFIXES`) of ``result`` (a
    :class:`~binmap_tf.segmentation.pipeline.SegmentationResult` of ``image``) as ``<stem><suffix>`` in
    ``out``, and ``record`` as ``<stem>.json`` last when given; return the outputs' paths. The one
    writer of each file, for every entry point. The files appear together or not at all
    (:func:`~binmap_tf.common.files.atomic_paths`: a full disk or a read-only folder fails the image
    before any of its files is in place); such a failure raises
    :class:`~binmap_tf.common.errors.OutputError` naming the folder and the fix."""
    groups = [(name, _files(out, stem, name)) for name in names]
    paths = [path for _, files in groups for path in files]
    targets = [*paths, Path(out) / f"{stem}{RECORD_SUFFIX}"] if record is not None else paths
    try:
        with atomic_paths(targets) as temporary:
            position = 0
            for name, files in groups:
                _SAVERS[name](*temporary[position:position + len(files)], image=image, result=result)
                position += len(files)
            if record is not None:
                save_json(temporary[-1], record)
    except OSError as error:
        raise OutputError(f"cannot write the outputs of {stem} into {out}: {error.strerror or error}; free space "
                          "there or make it writable, then segment it again") from error
    return paths


def write_segmentation(out: str | os.PathLike, stem: str, image: np.ndarray, result: Any,
                       record: dict[str, Any], extras: Iterable[str] = ()) -> None:
    """Write ``result`` (a :class:`~binmap_tf.segmentation.pipeline.SegmentationResult` of ``image``) as
    ``<stem>_labels.npy``, ``<stem>_labels.png`` (16-bit), ``<stem>_overlay.png``,
    ``<stem>_binary_map.png``, the ``extras`` asked for (``"ucm"``: ``<stem>_ucm2.mat`` and
    ``<stem>_ucm2.png``; ``"regions"``: ``<stem>_regions.csv``) and ``<stem>.json`` (``record``, then
    the result's summary) in ``out``, all together (:func:`write_files`). The JSON is written last, so
    its presence means the image is complete."""
    extras = check_extras(extras, result.options["merge"])
    write_files(out, stem, image, result, (*BASE_OUTPUTS, *extras),
                record={**record, "scale": result.binary_map.scale, **result.summary()})


def read_coco(path: str | os.PathLike) -> dict[str, dict[str, Any]]:
    """The images of a COCO file :func:`write_coco` wrote, by file name (empty when it is missing)."""
    path = Path(path)
    return coco_entries(json.loads(path.read_text())) if path.is_file() else {}


def write_coco(path: str | os.PathLike, entries: Iterable[dict[str, Any]]) -> None:
    """One COCO file of the images ``entries`` (:func:`~binmap_tf.segmentation.interchange.coco_entry`
    each), numbered by file name (:func:`~binmap_tf.segmentation.interchange.coco_document`)."""
    write_json(path, coco_document(entries))
