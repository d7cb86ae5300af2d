"""binmap_tf: CNN-aware binary maps for general semantic segmentation (ICIP 2016) in Keras 3.

The public API, importable from the package itself::

    from binmap_tf import segment
    result = segment(image)            # numpy (H, W[, 3]) in, result.labels (H, W) int32 out
    coarse = result.cut(n_segments=5)  # another level of the same merge tree, no CNN re-run

The stages live in subpackages named after them: :mod:`binmap_tf.binary_map` (stage 1, the CNN
and the hashing layer), :mod:`binmap_tf.segmentation` (superpixels, codes, merging, the one
pipeline), :mod:`binmap_tf.evaluation`, :mod:`binmap_tf.training`, :mod:`binmap_tf.batch` and the
command lines in :mod:`binmap_tf.cli`.

Names resolve on first use (PEP 562), so ``import binmap_tf`` stays cheap: TensorFlow loads only
when the model is built.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# Public name -> the module that defines it.
_EXPORTS = {
    "segment": "binmap_tf.segmentation.pipeline",
    "segment_labels": "binmap_tf.segmentation.pipeline",
    "segment_with_map": "binmap_tf.segmentation.pipeline",
    "SegmentationResult": "binmap_tf.segmentation.pipeline",
    "MergeTree": "binmap_tf.segmentation.hierarchy",
    "MergeWeights": "binmap_tf.segmentation.hierarchy",
    "MergeScorer": "binmap_tf.segmentation.merge_scorer",
    "BinaryMap": "binmap_tf.binary_map.maps",
    "BinaryMapper": "binmap_tf.binary_map.model",
    "load_image": "binmap_tf.common.images",
    "write_segmentation": "binmap_tf.segmentation.outputs",
    "write_coco": "binmap_tf.segmentation.outputs",
    "coco_entry": "binmap_tf.segmentation.interchange",
}
__all__ = [*_EXPORTS, "__version__"]

if TYPE_CHECKING:
    from binmap_tf.binary_map.maps import BinaryMap
    from binmap_tf.binary_map.model import BinaryMapper
    from binmap_tf.common.images import load_image
    from binmap_tf.segmentation.hierarchy import MergeTree, MergeWeights
    from binmap_tf.segmentation.merge_scorer import MergeScorer
    from binmap_tf.segmentation.interchange import coco_entry
    from binmap_tf.segmentation.outputs import write_coco, write_segmentation
    from binmap_tf.segmentation.pipeline import SegmentationResult, segment, segment_labels, segment_with_map


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'binmap_tf' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value  # resolve once
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
