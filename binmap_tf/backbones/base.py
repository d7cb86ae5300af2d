"""What every backbone provides: a Keras model from raw images to a feature grid, and the
geometry that ties each grid cell back to the pixels it sees.

Geometry convention: pixel ``y`` of the image the CNN receives has its centre at coordinate
``y``. Grid cell ``i`` is centred on coordinate ``offset + stride * i`` and sees
``receptive_field`` pixels around it. When the model first resizes the image by ``scale``
(half-pixel centres, as ``tf.image.resize``), pixel ``y`` of the original image sits at
``(y + 0.5) * scale - 0.5`` in the resized one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import keras
import numpy as np
import tensorflow as tf


@dataclass(frozen=True)
class GridGeometry:
    """Stride, offset and receptive field of a feature grid, in pixels of the CNN's input."""

    stride: float
    offset: float
    receptive_field: float

    @classmethod
    def from_layers(cls, layers: Sequence[tuple[int, int, int]]) -> "GridGeometry":
        """Compose ``(kernel, stride, padding_before)`` of each spatial layer, input to output."""
        stride, offset, field = 1.0, 0.0, 1.0
        for kernel, layer_stride, pad in layers:
            offset += ((kernel - 1) / 2.0 - pad) * stride
            field += (kernel - 1) * stride
            stride *= layer_stride
        return cls(stride=stride, offset=offset, receptive_field=field)

    def pixel_to_cell(self, image_len: int, n_cells: int, scale: float = 1.0) -> np.ndarray:
        """Index of the grid cell whose centre is nearest to each of ``image_len`` original pixels."""
        scaled_len = scaled_size(image_len, scale)
        factor = scaled_len / image_len
        coords = (np.arange(image_len) + 0.5) * factor - 0.5
        cells = np.rint((coords - self.offset) / self.stride).astype(np.int64)
        return np.clip(cells, 0, n_cells - 1)

    def cell_centres(self, n_cells: int, image_len: int, scale: float = 1.0) -> np.ndarray:
        """Centre of each grid cell in original-image pixel coordinates."""
        factor = scaled_size(image_len, scale) / image_len
        return (self.offset + self.stride * np.arange(n_cells) + 0.5) / factor - 0.5


def scaled_size(length: int, scale: float) -> int:
    """Length of a side after resizing by ``scale`` (the rule the preprocessing layer uses)."""
    return max(1, int(math.floor(length * scale + 0.5)))


@keras.saving.register_keras_serializable(package="binmap_tf")
class ImagePreprocessing(keras.layers.Layer):
    """Raw uint8 RGB images in, the backbone's normalised input out (inside the model, so
    a served model takes plain pixels).

    Resizes by ``scale`` (bilinear, half-pixel centres), optionally swaps RGB to BGR, then
    subtracts ``mean`` and divides by ``std`` (both in the output channel order, on the
    ``pixel_range`` scale: 255 for Caffe models, 1 for torchvision ones).
    """

    def __init__(
        self,
        scale: float = 1.0,
        mean: Sequence[float] = (0.0, 0.0, 0.0),
        std: Sequence[float] = (1.0, 1.0, 1.0),
        bgr: bool = False,
        pixel_range: float = 255.0,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        if scale <= 0:
            raise ValueError(f"scale must be positive, got {scale}")
        self.scale = float(scale)
        self.mean = tuple(float(v) for v in mean)
        self.std = tuple(float(v) for v in std)
        self.bgr = bool(bgr)
        self.pixel_range = float(pixel_range)

    def call(self, images):
        x = tf.cast(images, tf.float32)
        if self.scale != 1.0:
            shape = tf.cast(tf.shape(x)[1:3], tf.float32)
            size = tf.maximum(tf.cast(tf.floor(shape * self.scale + 0.5), tf.int32), 1)
            x = tf.image.resize(x, size, method="bilinear")
        if self.pixel_range != 255.0:
            x = x * (self.pixel_range / 255.0)
        if self.bgr:
            x = x[..., ::-1]
        return (x - tf.constant(self.mean)) / tf.constant(self.std)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], None, None, 3)

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(scale=self.scale, mean=list(self.mean), std=list(self.std), bgr=self.bgr,
                      pixel_range=self.pixel_range)
        return config


@dataclass(frozen=True)
class Backbone:
    """A built backbone: the Keras model and the facts needed to read its output.

    ``model`` maps uint8 RGB images ``(batch, None, None, 3)`` to features
    ``(batch, h, w, feature_dim)``; ``geometry`` is in pixels of the resized input, and the
    image is resized by ``scale`` inside the model. ``min_side`` is the smallest side of the
    resized image that yields one grid cell. ``options`` rebuilds the same backbone.
    """

    name: str
    model: keras.Model
    geometry: GridGeometry
    feature_dim: int
    min_side: int
    scale: float
    options: dict

    def min_image_side(self) -> int:
        """Smallest side of the *original* image that yields one grid cell."""
        return int(math.ceil((self.min_side - 0.5) / self.scale))


@dataclass(frozen=True)
class BackboneSpec:
    """A registered backbone: ``build(scale=..., **options) -> Backbone``."""

    name: str
    default_scale: float
    build: Callable[..., Backbone]
    description: str = ""


_REGISTRY: dict[str, BackboneSpec] = {}


def register_backbone(spec: BackboneSpec) -> BackboneSpec:
    """Make ``spec`` available by name to :func:`get_backbone` and every CLI."""
    _REGISTRY[spec.name] = spec
    return spec


def get_backbone(name: str) -> BackboneSpec:
    """Return the registered backbone ``name`` (e.g. ``"vgg16-hed"``, ``"alexnet"``)."""
    from binmap_tf import backbones  # noqa: F401  (registers the built-in backbones)

    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown backbone {name!r}; choose one of {sorted(_REGISTRY)}") from None


def build_backbone(name: str, scale: float | None = None, **options) -> Backbone:
    """Build backbone ``name`` at input ``scale`` (its default when None) with its ``options``."""
    spec = get_backbone(name)
    return spec.build(scale=spec.default_scale if scale is None else float(scale), **options)


def backbone_names() -> list[str]:
    """Names of all registered backbones."""
    from binmap_tf import backbones  # noqa: F401

    return sorted(_REGISTRY)
