"""Export the binary-map model as a versioned SavedModel for TensorFlow Serving.

``binmap-export [--backbone vgg16-hed] [--bits 8] [--hashing PATH] [--version N]
--out serving/models/binmap`` writes ``<out>/<version>/`` (``saved_model.pb``, ``variables/``,
``assets.extra/``), the layout TF Serving polls; the version is the next free number unless
``--version`` is given. The version folder is assembled under a hidden temporary name in
``<out>`` and renamed into place, so a polling server never sees a half-written version.

Signatures (check with ``saved_model_cli show --all --dir <out>/<version>``):

* ``serving_default``: ``images`` uint8 ``[batch, height, width, 3]``;
* ``encoded``: ``image_bytes`` string ``[batch]`` of JPEG/PNG/BMP/GIF files decoded in the graph
  (all images of one request must share a size);

both returning ``bits`` uint8 ``[batch, h, w, k]``, ``codes`` int32 ``[batch, h, w]``,
``logits`` float32 ``[batch, h, w, k]`` and ``geometry`` string ``[batch]`` (the
:class:`~serving.protocol.ModelInfo` JSON). Resizing and normalisation are inside the model.
When the backbone has an edge map (``vgg16-hed``; the command line builds it with one),
``with_edges`` and ``encoded_with_edges`` take the same inputs and add ``edges`` float32
``[batch, height, width]``, HED's boundary probability at the input's resolution (times
``scale``), unrounded: the merge hierarchy's watershed and border statistics read it.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import keras
import numpy as np
import tensorflow as tf

from binmap_tf.binary_map.model import BinaryMapper
from serving.protocol import (
    DEFAULT_MODEL_NAME,
    EDGES_OUTPUT,
    ENCODED_INPUT,
    GEOMETRY_OUTPUT,
    IMAGES_INPUT,
    INFO_FILE,
    MAP_OUTPUTS,
    SIGNATURES,
    WARMUP_FILE,
    ModelInfo,
)

if TYPE_CHECKING:
    from tensorflow_serving.apis.predict_pb2 import PredictRequest

# Warm-up requests use the BSDS500 image size, so a GPU server autotunes its convolutions for
# the usual input before the first real request.
WARMUP_SHAPE = (321, 481)
SAME_SIZE_MESSAGE = ("all images in one request must have the same height and width; send "
                     "differently sized images in separate requests or resize them client-side")


def model_info(mapper: BinaryMapper) -> ModelInfo:
    """The facts a client needs to place ``mapper``'s grid cells on image pixels."""
    backbone = mapper.backbone
    context = backbone.tiling_geometry
    return ModelInfo(backbone=backbone.name, backbone_options=dict(backbone.options), bits=mapper.bits,
                     scale=mapper.scale, stride=backbone.geometry.stride, offset=backbone.geometry.offset,
                     receptive_field=backbone.geometry.receptive_field,
                     min_image_side=backbone.min_image_side(), context_stride=context.stride,
                     context_offset=context.offset, context_receptive_field=context.receptive_field)


def _decode(data: tf.Tensor) -> tf.Tensor:
    """One encoded image to uint8 RGB (H, W, 3); grey/RGBA are converted, GIFs give their first frame."""
    return tf.io.decode_image(data, channels=3, dtype=tf.uint8, expand_animations=False)


def decode_images(image_bytes: tf.Tensor) -> tf.Tensor:
    """Decode a [batch] string tensor of image files into one uint8 batch, or fail with a clear message."""
    not_empty = tf.debugging.assert_positive(tf.size(image_bytes), message="send at least one image")
    with tf.control_dependencies([not_empty]):
        first_shape = tf.shape(_decode(image_bytes[0]))  # decoded twice: cheap next to the CNN

    def decode_same_size(data: tf.Tensor) -> tf.Tensor:
        image = _decode(data)
        same = tf.debugging.assert_equal(tf.shape(image), first_shape, message=SAME_SIZE_MESSAGE)
        with tf.control_dependencies([same]):
            return tf.identity(image)

    return tf.map_fn(decode_same_size, image_bytes,
                     fn_output_signature=tf.TensorSpec([None, None, 3], tf.uint8))


def edge_options(backbone: str) -> dict[str, bool]:
    """``{"edges": True}`` when ``backbone`` can output an edge map (HED's, for ``vgg16-hed``), so that
    the command line exports it and the merge hierarchy can run on served maps; else ``{}``."""
    from binmap_tf.binary_map.backbones import get_backbone

    return {"edges": True} if get_backbone(backbone).has_edges else {}


def has_edges(mapper: BinaryMapper) -> bool:
    """Whether ``mapper``'s model outputs an edge map (its backbone was built with ``edges=True``)."""
    return EDGES_OUTPUT in mapper.model.output


def build_archive(mapper: BinaryMapper) -> keras.export.ExportArchive:
    """The Keras export archive: ``serving_default`` and ``encoded``, plus ``with_edges`` and
    ``encoded_with_edges`` when the model has an edge map."""
    model = mapper.model
    info = model_info(mapper)
    geometry = tf.constant(info.to_json())

    def serve(images: tf.Tensor, edges: bool) -> dict[str, tf.Tensor]:
        big_enough = tf.debugging.assert_greater_equal(
            tf.reduce_min(tf.shape(images)[1:3]), info.min_image_side,
            message=f"images must be at least {info.min_image_side} pixels on their shorter side "
                    "for one grid cell; upscale smaller images")
        with tf.control_dependencies([big_enough]):
            outputs = model(images, training=False)
        result = {name: outputs[name] for name in MAP_OUTPUTS}
        result[GEOMETRY_OUTPUT] = tf.fill(tf.shape(images)[:1], geometry)
        if edges:  # float32 as the model gives it: rounding would move the watershed's minima
            result[EDGES_OUTPUT] = outputs[EDGES_OUTPUT][..., 0]
        return result

    def endpoint(decode: Callable[[tf.Tensor], tf.Tensor], edges: bool) -> Callable:
        return lambda value: serve(decode(value), edges)

    archive = keras.export.ExportArchive()
    archive.track(model)
    for signature, encoded, edges in signatures(has_edges(mapper)):
        spec = tf.TensorSpec([None], tf.string, name=ENCODED_INPUT) if encoded else \
            tf.TensorSpec([None, None, None, 3], tf.uint8, name=IMAGES_INPUT)
        archive.add_endpoint(signature, endpoint(decode_images if encoded else tf.identity, edges),
                             input_signature=[spec])
    return archive


def signatures(edges: bool) -> list[tuple[str, bool, bool]]:
    """``(name, encoded input, with edges)`` of the exported signatures: all four for a model with an
    edge map (``edges``), else the two without."""
    return [(name, encoded, with_edges) for (encoded, with_edges), name in SIGNATURES.items()
            if edges or not with_edges]


def warmup_requests(model_name: str = DEFAULT_MODEL_NAME, edges: bool = True) -> list[PredictRequest]:
    """One ``PredictRequest`` per exported signature (see :func:`signatures`), on a blank BSDS-sized
    image, so every signature's graph is built (and, on a GPU, autotuned) before real requests."""
    from tensorflow_serving.apis import predict_pb2

    image = np.zeros((*WARMUP_SHAPE, 3), np.uint8)
    files = np.array([tf.io.encode_png(image).numpy()], dtype=object)
    requests = []
    for signature, encoded, _ in signatures(edges):
        request = predict_pb2.PredictRequest()
        request.model_spec.name = model_name
        request.model_spec.signature_name = signature
        request.inputs[ENCODED_INPUT if encoded else IMAGES_INPUT].CopyFrom(
            tf.make_tensor_proto(files if encoded else image[None]))
        requests.append(request)
    return requests


def write_warmup(path: Path, requests: list[PredictRequest]) -> None:
    """Write ``requests`` as the TFRecord of ``PredictionLog`` s that TF Serving replays on load."""
    from tensorflow_serving.apis import prediction_log_pb2

    with tf.io.TFRecordWriter(str(path)) as writer:
        for request in requests:
            log = prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=request))
            writer.write(log.SerializeToString())


def read_warmup(path: Path) -> list[PredictRequest]:
    """The ``PredictRequest`` s of a warm-up file (as TF Serving reads it)."""
    from tensorflow_serving.apis import prediction_log_pb2

    requests = []
    for record in tf.data.TFRecordDataset(str(path)).as_numpy_iterator():
        requests.append(prediction_log_pb2.PredictionLog.FromString(record).predict_log.request)
    return requests


def versions(base: Path) -> list[int]:
    """Version numbers present under ``base`` (numeric folder names, as TF Serving reads them)."""
    if not base.is_dir():
        return []
    return sorted(int(entry.name) for entry in base.iterdir() if entry.is_dir() and entry.name.isdigit())


def next_version(base: Path) -> int:
    """One more than the highest version under ``base``, or 1."""
    return max(versions(base), default=0) + 1


def _publish(staging: Path, base: Path, version: int | None) -> Path:
    """Rename the finished ``staging`` folder to ``base/<version>``; a taken auto version moves on."""
    os.chmod(staging, 0o755)  # mkdtemp makes the folder private; servers may run as another user
    while True:
        target = base / str(version if version is not None else next_version(base))
        try:
            os.rename(staging, target)  # atomic; fails when another export took the number
            return target
        except OSError:
            if version is not None or not target.exists():
                raise FileExistsError(f"{target} already exists; choose another --version or leave it "
                                      "out to get the next free one") from None


def export_model(mapper: BinaryMapper, out: str | os.PathLike, version: int | None = None,
                 model_name: str = DEFAULT_MODEL_NAME, warmup: bool = True) -> Path:
    """Export ``mapper``'s model to ``out/<version>`` and return that folder.

    ``version`` None takes the next free number. ``warmup`` writes
    ``assets.extra/tf_serving_warmup_requests`` (requests naming ``model_name``).
    """
    base = Path(out)
    if version is not None and (version < 1 or (base / str(version)).exists()):
        raise FileExistsError(f"version {version} is taken or invalid in {base}; versions are "
                              "positive integers, leave --version out for the next free one")
    base.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".export-", dir=base))  # hidden, non-numeric: ignored by TF Serving
    try:
        build_archive(mapper).write_out(str(staging), verbose=False)
        extra = staging / "assets.extra"
        extra.mkdir()
        (extra / INFO_FILE).write_text(model_info(mapper).to_json() + "\n")
        if warmup:
            write_warmup(extra / WARMUP_FILE, warmup_requests(model_name, has_edges(mapper)))
        return _publish(staging, base, version)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
