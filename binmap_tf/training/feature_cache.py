"""On-disk cache of backbone feature grids, so fine-tuning the hashing layer never reruns the CNN.

With the backbone frozen, hconv8 only ever sees the backbone's features; caching them turns an
epoch over BSDS500 train into seconds of CPU. Each image is one ``.npz`` holding ``features``
``(h, w, d)`` as float16 by default (half the disk and memory; conv5_3 activations stay far
below float16's 65504 limit) or float32 (``dtype="float32"``: exact, so hashing layers applied
to them give the binary mapper's bits, see :mod:`experiments.feature_maps`) under
``cache_home()/features/<feature key>[-float32]/<namespace>/<image id>.npz``, written
atomically. The feature key names the backbone's features and input scale (not a custom
weights file: use another ``root`` for those). The backbone runs as one traced graph, as
:class:`~binmap_tf.binary_map.model.BinaryMapper` runs it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Protocol

import numpy as np
import tensorflow as tf

from binmap_tf.binary_map.backbones import Backbone
from binmap_tf.binary_map.model import hashing_key
from binmap_tf.common.files import write_npz
from binmap_tf.common.images import as_rgb_uint8
from binmap_tf.common.paths import cache_home
from binmap_tf.training.options import FEATURE_DTYPES


class ImageSource(Protocol):
    """What the cache needs of an image: a stable id and a way to read the pixels (a dataset sample)."""

    id: str

    def load_image(self) -> np.ndarray: ...


def feature_key(backbone: Backbone) -> str:
    """Folder name for ``backbone``'s features: its hashing key plus the input scale."""
    return f"{hashing_key(backbone)}-scale{backbone.scale:g}"


class FeatureCache:
    """Feature grids of named images under ``root/<feature key>[-float32]/<namespace>/<image id>.npz``.

    ``namespace`` separates image sets whose ids could clash, e.g. ``"bsds500-train"``;
    ``root`` defaults to ``cache_home()/features``; ``dtype`` is ``"float16"`` or ``"float32"``.
    """

    def __init__(self, backbone: Backbone, namespace: str, root: str | os.PathLike | None = None,
                 dtype: str = "float16") -> None:
        if dtype not in FEATURE_DTYPES:
            raise ValueError(f"dtype must be one of {FEATURE_DTYPES}, got {dtype!r}")
        self.backbone = backbone
        self.dtype = dtype
        key = feature_key(backbone) + ("" if dtype == "float16" else f"-{dtype}")
        self.folder = Path(root or cache_home() / "features") / key / namespace
        self._forward = tf.function(lambda images: backbone.model(images, training=False),
                                    input_signature=[tf.TensorSpec((None, None, None, 3), tf.uint8)])

    def path(self, image_id: str) -> Path:
        return self.folder / f"{image_id}.npz"

    def get(self, source: ImageSource) -> np.ndarray:
        """Features ``(h, w, d)`` (:attr:`dtype`) of ``source``'s image: read from disk, or computed and stored."""
        path = self.path(source.id)
        if path.exists():
            with np.load(path) as data:
                return data["features"]
        outputs = self._forward(as_rgb_uint8(source.load_image())[None])
        features = np.asarray(outputs[0] if isinstance(outputs, (list, tuple)) else outputs)[0]
        features = features.astype(self.dtype)
        if not np.all(np.isfinite(features)):
            raise ValueError(f"features of {source.id} overflow {self.dtype}; cache them at another scale")
        write_npz(path, features=features)
        return features
