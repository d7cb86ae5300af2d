"""The binary-map network: backbone + ``hconv8`` hashing layer as one Keras model, and the
:class:`BinaryMapper` that runs it on numpy images.

Performance options (see ``benchmarks/run.py`` for the figures): :class:`BinaryMapper` runs the
model as one TensorFlow graph traced once for every image size (``execution="graph"``, the
default), eagerly layer by layer (``"eager"``), or compiled by XLA once per input shape
(``"xla"``); ``precision="bf16"`` computes the backbone in bfloat16 (Keras mixed precision:
float32 weights, bfloat16 activations) while the ``hconv8`` projection stays float32.

Grid cells map back to pixels through the backbone's :class:`~binmap_tf.binary_map.backbones.GridGeometry`:
cell ``(i, j)`` is centred at ``offset + stride * (i, j)`` in the resized image (the model
resizes by ``scale`` first), i.e. at ``(offset + stride * i + 0.5) / scale - 0.5`` in the
original image, and sees ``receptive_field`` resized pixels around that centre.

Memory is bounded for any image size: an image whose resized pixels exceed
``max_tile_pixels`` runs on overlapping, stride-aligned tiles (:mod:`binmap_tf.binary_map.tiling`) and
the cells and edge pixels are stitched from each tile's interior, so the map equals the
untiled one (``benchmarks/tiling.py`` measures how closely).
"""

from __future__ import annotations

import contextlib
import os
import warnings
from pathlib import Path
from typing import Callable, Iterable, Iterator

import keras
import numpy as np
import tensorflow as tf

from binmap_tf.binary_map.backbones import Backbone, build_backbone
from binmap_tf.binary_map.hardware import has_fast_bf16
from binmap_tf.binary_map.hashing import ITQHashing, ITQParams, load_itq
from binmap_tf.binary_map.maps import BinaryMap, edges_at
from binmap_tf.binary_map.options import DEFAULT_BACKBONE, DEFAULT_BITS, EXECUTIONS, PRECISIONS
from binmap_tf.binary_map.tiling import (
    DEFAULT_MAX_TILE_PIXELS,
    TilePlan,
    over_tile_budget,
    plan_tiles,
    stitch_tiles,
)
from binmap_tf.common.images import as_rgb_uint8, check_size, downscale_to_limit, map_in_shape_batches
from binmap_tf.common.paths import FINE_TUNED

@keras.saving.register_keras_serializable(package="binmap_tf")
class PackBits(keras.layers.Layer):
    """Float bits (..., k) in {0, 1} -> uint8 bits and int32 codes (bit 0 most significant)."""

    def call(self, bits):
        k = bits.shape[-1]
        if k is None or k > 31:
            raise ValueError(f"PackBits packs at most 31 bits into int32 codes, got {k}")
        weights = tf.constant([1 << (k - 1 - j) for j in range(k)], dtype=tf.int32)
        as_int = tf.cast(tf.round(bits), tf.int32)
        return tf.cast(as_int, tf.uint8), tf.reduce_sum(as_int * weights, axis=-1)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape), tuple(input_shape[:-1])


def hashing_key(backbone: Backbone) -> str:
    """Name under which ITQ parameters for this backbone's features are stored."""
    variant = backbone.options.get("features") or backbone.options.get("layout")
    return f"{backbone.name}_{variant}" if variant else backbone.name


def resolve_hashing(hashing: str | os.PathLike | ITQParams | None, backbone: Backbone, bits: int) -> ITQParams:
    """ITQ parameters from an object, an ``.npz`` file, :data:`FINE_TUNED` (the shipped fine-tuned
    layer), or None (the shipped/fitted ITQ); ``bits`` picks among the shipped ones."""
    if isinstance(hashing, ITQParams):
        return hashing
    if hashing is None or hashing == FINE_TUNED:
        return load_itq(hashing_key(backbone), bits, fine_tuned=hashing == FINE_TUNED)
    path = Path(hashing)
    if not path.exists():
        raise FileNotFoundError(f"hashing parameters not found: {path}; pass an .npz written by "
                                "binmap_tf.cli.fit_itq or binmap_tf.cli.train")
    return ITQParams.load(path)


def _check_choice(name: str, value: str, choices: Iterable[str]) -> None:
    """Raise ``ValueError`` naming the valid ``choices`` when ``value`` is not one of them."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {tuple(choices)}, got {value!r}")


@contextlib.contextmanager
def _dtype_policy(policy: str) -> Iterator[None]:
    """Build layers under the global Keras dtype ``policy``, restoring the previous one after."""
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(policy)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def build_backbone_at(name: str, precision: str = "fp32", scale: float | None = None, **options) -> Backbone:
    """:func:`~binmap_tf.binary_map.backbones.build_backbone` with its layers computing in ``precision``.

    ``"bf16"`` uses Keras mixed precision (float32 weights, so weight files load unchanged;
    bfloat16 inputs and outputs). Caffe's LRN stays float32: TensorFlow has no bfloat16 LRN
    kernel on CPU.
    """
    from binmap_tf.binary_map.backbones.alexnet.network import LocalResponseNorm

    _check_choice("precision", precision, PRECISIONS)
    if precision == "bf16" and has_fast_bf16() is False:
        warnings.warn("precision='bf16' on a CPU without bfloat16 instructions (avx512_bf16 or amx_bf16) gives "
                      "no speed-up (an AVX2-only host measured 0.852 s per image against 0.846 s in fp32) and "
                      "changes a few bits; use the default fp32 here", stacklevel=2)
    with _dtype_policy(PRECISIONS[precision]):
        backbone = build_backbone(name, scale=scale, **options)
    if precision != "fp32":
        for layer in backbone.model.layers:
            if isinstance(layer, LocalResponseNorm):
                layer.dtype_policy = "float32"
    return backbone


def build_binmap_model(
    backbone: str | Backbone = DEFAULT_BACKBONE,
    bits: int | None = DEFAULT_BITS,
    hashing: str | os.PathLike | ITQParams | None = None,
    scale: float | None = None,
    precision: str = "fp32",
    **backbone_options,
) -> keras.Model:
    """Backbone + hconv8 as one functional model from uint8 RGB images.

    Outputs a dict: ``bits`` uint8 (b, h, w, k), ``codes`` int32 (b, h, w), ``logits`` float32
    (b, h, w, k) pre-sign activations, and ``edges`` (b, H', W', 1) when the backbone was built
    with ``edges=True``. ``hashing`` is an :class:`ITQParams`, an ``.npz`` path, :data:`FINE_TUNED`
    or None for the parameters fitted for this backbone; ``bits=None`` takes the code length from
    ``hashing`` (:data:`DEFAULT_BITS` for the shipped ones); ``scale`` resizes the image inside the model (None:
    the backbone's default, 3.4 for ``alexnet`` as in the paper). ``precision`` (``"fp32"`` or
    ``"bf16"``, see :func:`build_backbone_at`) applies when ``backbone`` is a name; every output
    stays float32 or integer either way.
    """
    if isinstance(backbone, Backbone):
        if precision != "fp32":
            raise ValueError("precision applies to a backbone built here; build it with build_backbone_at")
        net = backbone
    else:
        net = build_backbone_at(backbone, precision, scale=scale, **backbone_options)
    params = resolve_hashing(hashing, net, DEFAULT_BITS if bits is None else bits)
    bits = params.bits if bits is None else bits
    if params.bits != bits:
        raise ValueError(f"hashing parameters have {params.bits} bits, but bits={bits} was asked for")
    outputs = net.model.outputs
    features = outputs[0]
    hashed, logits = ITQHashing.from_itq(params, return_logits=True, name="hconv8")(features)
    packed_bits, codes = PackBits(name="pack_bits")(hashed)
    result = {"bits": packed_bits, "codes": codes, "logits": logits}
    if len(outputs) > 1:
        edges = outputs[1]
        if edges.dtype != "float32":
            edges = keras.layers.Activation("linear", dtype="float32", name="edges_float32")(edges)
        result["edges"] = edges
    return keras.Model(net.model.inputs[0], result, name=f"binmap_{net.name.replace('-', '_')}_{bits}bits")


class BinaryMapper:
    """Runs the binary-map model on numpy images and returns :class:`BinaryMap` objects.

    Parameters
    ----------
    backbone : str
        Registered backbone name (``"vgg16-hed"`` default, ``"alexnet"``).
    bits : int or None
        Code length ``k`` (8 in the paper; 24 displays as RGB); None: that of ``hashing``.
    hashing : ITQParams, path, "fine-tuned" or None
        Hashing parameters; None uses the ITQ fitted for this backbone and ``bits``,
        :data:`FINE_TUNED` the shipped fine-tuned layer.
    scale : float or None
        Input resize factor; None uses the backbone's default.
    precision : {"fp32", "bf16"}
        Backbone arithmetic: float32 (default) or bfloat16 activations: ``vgg16-hed`` twice as
        fast on CPUs with AVX512_BF16, with 99.9% of the bits of float32's maps (20 BSDS500 val
        images; ``benchmarks/run.py``). ``hconv8`` is float32 either way.
    execution : {"graph", "eager", "xla"}
        How :meth:`map_batch` runs the model: one ``tf.function`` graph for every image size
        (default), Keras eager calls (as before these options), or XLA-compiled once per input
        shape (a new size costs seconds of compilation; faster for ``alexnet``, above all its
        dilated conv6, which TensorFlow's graph runs through space-to-batch; slower for ``vgg16-hed``).
    max_tile_pixels : int or None
        Most pixels (after the resize by ``scale``) one forward pass sees, but never less than one
        stride between two margins (see :func:`~binmap_tf.binary_map.tiling.plan_tiles`). A larger image runs
        on overlapping tiles aligned to the backbone's stride, with margins of half its
        receptive field, and the map is stitched from the tiles' interiors: it equals the
        untiled map up to float rounding (``benchmarks/tiling.py``). Default
        :data:`~binmap_tf.binary_map.tiling.DEFAULT_MAX_TILE_PIXELS` (1 MP: about 1.3 GiB peak for
        ``vgg16-hed`` with edges); None runs every image whole. Where no tile alignment
        exists for ``scale``, a larger image is downscaled to the budget with a warning.
    **backbone_options
        Passed to the backbone builder (e.g. ``edges=True``, ``features=...``, ``weights=...``).
    """

    def __init__(self, backbone: str = DEFAULT_BACKBONE, bits: int | None = DEFAULT_BITS,
                 hashing: str | os.PathLike | ITQParams | None = None, scale: float | None = None,
                 precision: str = "fp32", execution: str = "graph",
                 max_tile_pixels: int | None = DEFAULT_MAX_TILE_PIXELS, **backbone_options) -> None:
        _check_choice("execution", execution, EXECUTIONS)
        if max_tile_pixels is not None and max_tile_pixels < 1:
            raise ValueError(f"max_tile_pixels must be a positive number of pixels or None, got {max_tile_pixels}")
        self.max_tile_pixels = max_tile_pixels
        self.backbone = build_backbone_at(backbone, precision, scale=scale, **backbone_options)
        self.precision = precision
        self.execution = execution
        self.model = build_binmap_model(self.backbone, bits=bits, hashing=hashing)
        self.bits = int(self.model.get_layer("hconv8").bits)
        self._forward = _forward_function(self.model, execution)

    @property
    def scale(self) -> float:
        return self.backbone.scale

    def prepare(self, image: np.ndarray) -> np.ndarray:
        """Normalise ``image`` to uint8 RGB and check it is large enough for the receptive field."""
        rgb = as_rgb_uint8(image)
        check_size(rgb, min_side=self.backbone.min_image_side())
        return rgb

    def __call__(self, image: np.ndarray) -> BinaryMap:
        """Binary map of one image (any size, grey/RGB/RGBA, uint8 or float in [0, 1])."""
        return self.map_batch([image])[0]

    def map_batch(self, images: list[np.ndarray]) -> list[BinaryMap]:
        """Binary maps of several images; equal-sized images share one forward pass, images over
        ``max_tile_pixels`` run alone on tiles (see :meth:`tile_plan`)."""
        return map_in_shape_batches(
            [self.prepare(image) for image in images], self._batch_maps, run_alone=self._map_large,
            alone=lambda image: over_tile_budget(image.shape[:2], self.scale, self.max_tile_pixels))

    def _batch_maps(self, batch: np.ndarray) -> list[BinaryMap]:
        """Binary maps of a stack of equal-shaped prepared images, one forward pass."""
        outputs = self.forward(batch)
        return [self._binary_map(outputs, row, batch.shape[1:3]) for row in range(len(batch))]

    def tile_plan(self, shape: tuple[int, int], max_tile_pixels: int | None = None) -> TilePlan | None:
        """The tiles an image of ``shape`` runs on (one tile when it fits the budget); None when the
        backbone's ``scale`` allows no aligned tiles. ``max_tile_pixels`` overrides the mapper's."""
        budget = self.max_tile_pixels if max_tile_pixels is None else max_tile_pixels
        if budget is None:
            raise ValueError("this mapper runs images whole (max_tile_pixels=None); pass a budget")
        return plan_tiles(shape, budget, self.backbone.tiling_geometry, self.scale)

    def _map_large(self, image: np.ndarray) -> BinaryMap:
        """Map of an image over the tile budget: tiled, or downscaled with a warning without an alignment."""
        plan = self.tile_plan(image.shape[:2])
        if plan is not None:
            return self.map_tiled(image, plan)
        budget = int(self.max_tile_pixels / self.scale ** 2)
        small, factor = downscale_to_limit(image, budget)
        warnings.warn(f"{self.backbone.name} at scale {self.scale} cannot be tiled exactly; the "
                      f"{image.shape[1]}x{image.shape[0]} image is downscaled by {factor:.3f} for the CNN "
                      f"(max_tile_pixels={self.max_tile_pixels})", stacklevel=3)
        outputs = self.forward(small[None])
        # The cells keep their place in the original image: the effective input scale is the product.
        effective = self.scale * small.shape[0] / image.shape[0]
        return self._binary_map(outputs, 0, image.shape[:2], scale=effective)

    def map_tiled(self, image: np.ndarray, plan: TilePlan) -> BinaryMap:
        """Binary map of ``image`` stitched from the forward passes over the tiles of ``plan``
        (:func:`~binmap_tf.binary_map.tiling.stitch_tiles`)."""
        image = self.prepare(image)

        def tile(rows: slice, cols: slice) -> dict[str, np.ndarray]:
            outputs = self.forward(image[None, rows, cols])
            return {name: value[0, ..., 0] if name == "edges" else value[0] for name, value in outputs.items()}

        return stitch_tiles(image.shape[:2], plan, tile, self.backbone.geometry, self.scale)

    def forward(self, images: np.ndarray) -> dict[str, np.ndarray]:
        """Model outputs (``bits``, ``codes``, ``logits`` [, ``edges``]) of a uint8 RGB batch (b, H, W, 3)."""
        return {name: np.asarray(value) for name, value in self._forward(images).items()}

    def _binary_map(self, outputs: dict[str, np.ndarray], row: int, image_shape: tuple[int, int],
                    scale: float | None = None) -> BinaryMap:
        edges = outputs.get("edges")
        if edges is not None:
            edges = edges_at(edges[row, ..., 0], image_shape)
        return BinaryMap(bits=outputs["bits"][row], logits=outputs["logits"][row],
                         geometry=self.backbone.geometry, scale=self.scale if scale is None else scale,
                         image_shape=tuple(image_shape), edges=edges)


def _forward_function(model: keras.Model, execution: str) -> Callable[[np.ndarray], dict]:
    """``uint8 images -> model outputs``, run as ``execution`` (see :class:`BinaryMapper`)."""
    if execution == "eager":
        return lambda images: model(images, training=False)
    # One trace for any batch and size; XLA still compiles once per concrete input shape.
    return tf.function(lambda images: model(images, training=False), jit_compile=execution == "xla",
                       input_signature=[tf.TensorSpec((None, None, None, 3), tf.uint8)])

