"""A segmentation in the formats other tools read: the merge hierarchy as a BSDS ``ucm2`` contour map,
COCO instance masks, and a table of region properties.

* **ucm2** (gPb-owt-ucm, MCG, higra and the BSDS benchmark exchange hierarchies this way):
  :meth:`~binmap_tf.segmentation.hierarchy.MergeTree.ucm`'s double-resolution map, as float64 in a
  ``.mat`` and as a 16-bit PNG holding ``round(height * 65535)`` (:func:`ucm2_png`).
* **COCO** (CVAT, Label Studio, FiftyOne, detectron2 read it): one class-agnostic annotation per
  segment with its mask run-length encoded by ``pycocotools``, the reference implementation of
  COCO's RLE; ``score`` is the merge height at which the segment appears (:func:`coco_entry`,
  :func:`coco_document`).
* **Region table**: ``skimage.measure.regionprops_table``'s area, box, centroid and mean CIELAB
  colour per segment, with the segment's node in the merge tree (:func:`region_table`).

Everything here encodes a :class:`~binmap_tf.segmentation.pipeline.SegmentationResult` (its labels,
``hierarchy``, ``options["cut"]`` and ``ucm()``) and writes nothing: :mod:`binmap_tf.segmentation.outputs`
writes the files, for every entry point alike.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterable

import numpy as np

from binmap_tf.common.bands import row_bands
from binmap_tf.common.images import as_rgb_uint8

if TYPE_CHECKING:
    from binmap_tf.segmentation.pipeline import SegmentationResult

# The 16-bit PNG of a ucm2 holds round(height * UCM_PNG_SCALE): heights in [0, 1] onto 0 .. 65535.
UCM_PNG_SCALE = np.iinfo(np.uint16).max
# COCO's one category: segments are class-agnostic.
COCO_CATEGORY = {"id": 1, "name": "segment", "supercategory": "segment"}
COCO_INFO = {"description": "class-agnostic segments by binmap_tf; an annotation's label is its value in "
                            "<stem>_labels.png, its score the merge height at which it appears"}


def ucm2_png(ucm2: np.ndarray) -> np.ndarray:
    """A ucm2 (heights in [0, 1]) as uint16 ``round(height * 65535)`` for a 16-bit PNG; divide by
    :data:`UCM_PNG_SCALE` to read heights back (to within half a step, 7.6e-6). Converted in row
    bands, so no float temporary of the whole map is made."""
    if ucm2.size and (ucm2.min() < 0 or ucm2.max() > 1):
        raise ValueError(f"a ucm2 for a 16-bit PNG holds heights in [0, 1], got {ucm2.min()} .. {ucm2.max()}")
    scaled = np.empty(ucm2.shape, np.uint16)
    for start, stop in row_bands(*ucm2.shape):
        scaled[start:stop] = np.rint(ucm2[start:stop] * UCM_PNG_SCALE)
    return scaled


@dataclass(frozen=True)
class SegmentNodes:
    """Where each segment of a cut sits in the merge tree, one entry per segment label.

    Attributes
    ----------
    node : ndarray of int64, shape (K,)
        Its node in :class:`~binmap_tf.segmentation.hierarchy.MergeTree` numbering: a superpixel
        ``0 .. n-1``, or ``n + i`` for the merge ``i`` that made it.
    height : ndarray of float64, shape (K,)
        The merge height at which it appears (0 for a superpixel that no merge below the cut touched).
    parent : ndarray of int64, shape (K,)
        The node it is merged into above the cut; -1 for the root.
    parent_height : ndarray of float64, shape (K,)
        The height at which it is merged away (NaN for the root): it is a segment of every cut at a
        threshold in ``[height, parent_height)``.
    """

    node: np.ndarray
    height: np.ndarray
    parent: np.ndarray
    parent_height: np.ndarray


def segment_nodes(result: SegmentationResult) -> SegmentNodes | None:
    """The tree nodes of ``result``'s segments, from its hierarchy and the cut it was made at; None
    for a flat merge (no tree)."""
    tree = result.hierarchy
    if tree is None:
        return None
    cut = result.options["cut"]
    node = tree.segment_nodes(n_segments=cut.get("segments"), threshold=cut.get("threshold"))
    if len(node) != result.n_segments:
        raise ValueError(f"the tree's cut {cut} has {len(node)} segments, the labels {result.n_segments}")
    heights = tree.node_heights
    parent = tree.parents[node]
    parent_height = np.where(parent >= 0, heights[parent], np.nan)
    return SegmentNodes(node=node, height=heights[node], parent=parent, parent_height=parent_height)


# -- COCO ------------------------------------------------------------------------------------------
def coco_entry(result: SegmentationResult, file_name: str) -> dict[str, Any]:
    """One image of a COCO file: ``{"image": {...}, "annotations": [...]}`` without ids (given by
    :func:`coco_document`). One annotation per segment, in label order: its mask as compressed
    RLE (``pycocotools.mask.encode``), ``area`` and ``bbox`` (``[x, y, width, height]``) from the RLE,
    ``label`` (its value in the label image) and, with a hierarchy, ``score`` (the merge height at
    which it appears)."""
    from pycocotools import mask as coco_mask

    labels = result.labels
    height, width = labels.shape
    nodes = segment_nodes(result)
    column_major = np.asfortranarray(labels)  # COCO's RLE runs down the columns
    annotations = []
    for label in range(result.n_segments):
        rle = coco_mask.encode(np.asfortranarray(column_major == label, dtype=np.uint8))
        annotation = {"category_id": COCO_CATEGORY["id"], "label": label,
                      "segmentation": {"size": [height, width], "counts": rle["counts"].decode("ascii")},
                      "area": int(coco_mask.area(rle)), "bbox": [float(v) for v in coco_mask.toBbox(rle)],
                      "iscrowd": 0}
        if nodes is not None:
            annotation["score"] = float(nodes.height[label])
        annotations.append(annotation)
    return {"image": {"file_name": file_name, "height": height, "width": width}, "annotations": annotations}


def coco_document(entries: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """A COCO file of the images ``entries`` (from :func:`coco_entry`): images sorted by file name and
    numbered from 1, annotations numbered from 1 in that order, so the same images give the same
    file in whatever order they were segmented."""
    images, annotations = [], []
    for image_id, entry in enumerate(sorted(entries, key=lambda entry: entry["image"]["file_name"]), start=1):
        images.append({"id": image_id, **entry["image"]})
        annotations += [{"id": len(annotations) + 1 + index, "image_id": image_id, **annotation}
                        for index, annotation in enumerate(entry["annotations"])]
    return {"info": COCO_INFO, "images": images, "annotations": annotations, "categories": [COCO_CATEGORY]}


def coco_entries(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The entries of a :func:`coco_document` by file name, ids removed: what :func:`coco_entry` gave
    (a resumed run adds the images it skips from its earlier file)."""
    by_id = {image["id"]: {"image": {key: value for key, value in image.items() if key != "id"}, "annotations": []}
             for image in document["images"]}
    for annotation in document["annotations"]:
        by_id[annotation["image_id"]]["annotations"].append(
            {key: value for key, value in annotation.items() if key not in ("id", "image_id")})
    return {entry["image"]["file_name"]: entry for entry in by_id.values()}


# -- region table ----------------------------------------------------------------------------------
REGION_COLUMNS = ("label", "area", "bbox_min_row", "bbox_min_col", "bbox_max_row", "bbox_max_col",
                  "centroid_row", "centroid_col", "mean_L", "mean_a", "mean_b")
TREE_COLUMNS = ("node", "height", "parent", "parent_height")


def mean_lab(image: np.ndarray, labels: np.ndarray, n: int) -> np.ndarray:
    """Mean CIELAB colour ``(n, 3)`` of each label ``0 .. n-1``: ``regionprops_table``'s
    ``intensity_mean`` on ``rgb2lab`` of the image, in row bands weighted by area (one band for
    images up to about a megapixel). CIELAB in float32: a third of float64's time and half its
    memory; the means stay within 0.01 of float64's (a difference of 1 is about the smallest visible)."""
    from skimage.color import rgb2lab
    from skimage.measure import regionprops_table

    rgb = as_rgb_uint8(image)
    sums, areas = np.zeros((n, 3)), np.zeros(n)
    for start, stop in row_bands(*labels.shape):
        lab = rgb2lab(rgb[start:stop].astype(np.float32) / np.float32(255))
        band = regionprops_table(labels[start:stop] + 1, intensity_image=lab,
                                 properties=("label", "area", "intensity_mean"))
        index = band["label"] - 1
        areas[index] += band["area"]
        sums[index] += band["area"][:, None] * np.stack([band[f"intensity_mean-{c}"] for c in range(3)], axis=1)
    return sums / areas[:, None]


def region_table(image: np.ndarray, result: SegmentationResult) -> dict[str, np.ndarray]:
    """One row per segment, in label order: :data:`REGION_COLUMNS` from
    ``skimage.measure.regionprops_table`` (box corners as it gives them: max row and column one past
    the region) and :func:`mean_lab`; with a hierarchy also :data:`TREE_COLUMNS` (:func:`segment_nodes`)."""
    from skimage.measure import regionprops_table

    labels = result.labels
    # regionprops skips label 0 (background): shift by one, and back in the table.
    props = regionprops_table(labels + 1, properties=("label", "area", "bbox", "centroid"))
    lab = mean_lab(image, labels, result.n_segments)
    table = {"label": props["label"] - 1, "area": props["area"].astype(np.int64),
             **{name: props[f"bbox-{i}"] for i, name in enumerate(REGION_COLUMNS[2:6])},
             "centroid_row": props["centroid-0"], "centroid_col": props["centroid-1"],
             "mean_L": lab[:, 0], "mean_a": lab[:, 1], "mean_b": lab[:, 2]}
    if not np.array_equal(table["label"], np.arange(result.n_segments)):
        raise ValueError("the labels must number the segments 0 .. n_segments-1, each with pixels")
    nodes = segment_nodes(result)
    if nodes is not None:
        table.update(node=nodes.node, height=nodes.height, parent=nodes.parent, parent_height=nodes.parent_height)
    return table


def table_csv(table: dict[str, np.ndarray]) -> str:
    """``table`` (equal-length columns) as CSV text: a header row, integers as integers, floats in
    Python's shortest round-tripping form, NaN as an empty field (pandas reads it back as NaN)."""
    def cell(value: Any) -> Any:
        if isinstance(value, (float, np.floating)):
            return "" if np.isnan(value) else repr(float(value))
        return int(value)

    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(table)
    writer.writerows(zip(*([cell(value) for value in column.tolist()] for column in table.values())))
    return text.getvalue()
