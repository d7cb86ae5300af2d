"""FLOPs of a Keras image model from its layer shapes, for one input size.

Counts the multiply-adds of convolutions and dense projections, 2 FLOPs each (bias,
activations, pooling, LRN and resizing are left out: they are a fraction of a percent of these
models and memory-bound rather than compute-bound):

* ``Conv2D``: ``2 * B * H_out * W_out * kh * kw * (C_in / groups) * C_out``;
* any other layer with a 2-D ``kernel`` weight (``Dense``, the ``hconv8`` hashing layer),
  applied along the last axis: ``2 * (elements of the output / d_out) * d_in * d_out``.

Shapes come from walking the functional graph with each layer's ``compute_output_spec``; the
preprocessing layer, whose output size depends on the input values' shape at run time, is
given the size its ``scale`` produces (:func:`binmap_tf.binary_map.geometry.scaled_size`).
"""

from __future__ import annotations

from dataclasses import dataclass

import keras
from keras import tree

from binmap_tf.binary_map.backbones import ImagePreprocessing
from binmap_tf.binary_map.geometry import scaled_size


@dataclass(frozen=True)
class LayerFlops:
    """FLOPs of one layer at one input size, with the shapes they were counted from."""

    name: str
    kind: str
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    flops: int


def _spec(shape: tuple[int | None, ...], dtype: str = "float32") -> keras.KerasTensor:
    return keras.KerasTensor(shape, dtype=dtype)


def _output_specs(layer: keras.layers.Layer, inputs):
    """Concrete output spec(s) of ``layer`` for concrete input spec(s) ``inputs``."""
    if isinstance(layer, ImagePreprocessing):
        batch, height, width, channels = inputs.shape
        return _spec((batch, scaled_size(height, layer.scale), scaled_size(width, layer.scale), channels))
    return layer.compute_output_spec(inputs)


def _layer_flops(layer: keras.layers.Layer, inputs, outputs) -> int:
    """Multiply-add FLOPs of ``layer`` given its concrete input and output specs (0 if none counted)."""
    first_output = tree.flatten(outputs)[0]
    if isinstance(layer, keras.layers.Conv2D):
        kh, kw = layer.kernel_size
        batch, height, width, c_out = first_output.shape
        c_in = inputs.shape[-1]
        return 2 * batch * height * width * kh * kw * (c_in // layer.groups) * c_out
    kernel = getattr(layer, "kernel", None)
    if kernel is not None and len(kernel.shape) == 2:
        d_in, d_out = kernel.shape
        positions = 1
        for size in first_output.shape[:-1]:
            positions *= size
        return 2 * positions * d_in * d_out
    return 0


def count_flops(model: keras.Model, image_shape: tuple[int, int], batch: int = 1) -> list[LayerFlops]:
    """Per-layer FLOPs of ``model`` (uint8 images in) on ``batch`` images of ``image_shape`` (H, W).

    Layers with no counted FLOPs are left out. ``model`` is a flat functional model (as
    :func:`binmap_tf.binary_map.model.build_binmap_model` and the backbones build), walked in the
    topological order of ``model.layers``.
    """
    specs = {id(tensor): _spec((batch, *image_shape, tensor.shape[-1]), tensor.dtype) for tensor in model.inputs}
    counted = []
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        inputs = tree.map_structure(lambda tensor: specs[id(tensor)], layer.input)
        outputs = _output_specs(layer, inputs)
        flops = _layer_flops(layer, inputs, outputs)
        if flops:
            counted.append(LayerFlops(layer.name, type(layer).__name__, tuple(inputs.shape),
                                      tuple(tree.flatten(outputs)[0].shape), flops))
        for symbolic, concrete in zip(tree.flatten(layer.output), tree.flatten(outputs)):
            specs[id(symbolic)] = concrete
    return counted

