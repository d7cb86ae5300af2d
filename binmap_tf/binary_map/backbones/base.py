"""What every backbone provides: a Keras model from raw images to a feature grid, and the
geometry (:mod:`binmap_tf.binary_map.geometry`) that ties each grid cell back to the pixels it sees."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import keras
import tensorflow as tf

from binmap_tf.binary_map.geometry import GridGeometry, scaled_size  # noqa: F401  (re-exported)


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
    ``context`` is the geometry of the deepest layer any output depends on (its stride aligns
    tiles, its receptive field sets their overlap; see :meth:`BinaryMapper.map_batch`); None
    when it is ``geometry`` itself.
    """

    name: str
    model: keras.Model
    geometry: GridGeometry
    feature_dim: int
    min_side: int
    scale: float
    options: dict
    context: GridGeometry | None = None

    @property
    def tiling_geometry(self) -> GridGeometry:
        """Geometry that bounds every output: the largest stride and receptive field of the model."""
        return self.geometry if self.context is None else self.context

    def min_image_side(self) -> int:
        """Smallest side of the *original* image that yields one grid cell."""
        return int(math.ceil((self.min_side - 0.5) / self.scale))


@dataclass(frozen=True)
class BackboneSpec:
    """A registered backbone: ``build(scale=..., **options) -> Backbone``.

    ``has_edges`` says whether ``build(edges=True)`` adds an edge map, which the merge hierarchy
    and the watershed superpixels need (so the hierarchy can be the default only for such backbones).
    """

    name: str
    default_scale: float
    build: Callable[..., Backbone]
    description: str = ""
    has_edges: bool = False


_REGISTRY: dict[str, BackboneSpec] = {}


def register_backbone(spec: BackboneSpec) -> BackboneSpec:
    """Make ``spec`` available by name to :func:`binmap_tf.binary_map.backbones.get_backbone` and every CLI."""
    _REGISTRY[spec.name] = spec
    return spec
