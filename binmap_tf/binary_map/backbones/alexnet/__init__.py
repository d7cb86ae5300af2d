"""``alexnet``: the paper's backbone, ImageNet AlexNet as a fully convolutional net.

:mod:`.network` builds the layers (both public layouts, the FCN and the classifier),
:mod:`.weights` reads the public weight releases into them; this module puts the two
together as the registered ``alexnet`` backbone. ``binmap-weights`` is the
command line of :mod:`.weights`.
"""

from __future__ import annotations

import os

import keras

from binmap_tf.binary_map.backbones.alexnet.network import (
    FEATURE_DIM,
    build_alexnet_classifier,
    get_layout,
    min_input_side,
    spatial_layers,
)
from binmap_tf.binary_map.backbones.alexnet.weights import load_weights_into, resolve_weights
from binmap_tf.binary_map.backbones.base import Backbone, BackboneSpec, GridGeometry, register_backbone


def build_alexnet(
    scale: float = 3.4,
    layout: str = "caffe",
    weights: str | os.PathLike | None = "imported",
    dilated: bool = False,
    classifier: bool = False,
) -> Backbone:
    """Build the FCN AlexNet: uint8 RGB images -> conv7 features (4096-d, stride 32 or 16).

    ``weights="imported"`` loads ``alexnet_<layout>.weights.h5`` from the cache (written once by
    ``binmap-weights import FILE``), a path loads any file that command reads,
    ``None`` keeps seeded random weights (tests, timing). ``classifier=True`` makes the model
    output ``[conv7, softmax(conv8)]``.
    """
    spec = get_layout(layout)
    path = None if weights is None else resolve_weights(weights, spec.name)  # fail before building
    full = build_alexnet_classifier(spec.name, scale=scale, dilated=dilated, random_weights=path is None)
    if path is not None:
        load_weights_into(full, path, spec.name)
    model = full if classifier else keras.Model(full.input, full.outputs[0], name=full.name)
    return Backbone(
        name="alexnet",
        model=model,
        geometry=GridGeometry.from_layers(spatial_layers(layout, dilated)),
        feature_dim=FEATURE_DIM,
        min_side=min_input_side(layout, dilated),
        scale=scale,
        options={"layout": layout, "dilated": dilated, "classifier": classifier,
                 "weights": None if weights is None else str(weights)},
    )


register_backbone(BackboneSpec(
    name="alexnet",
    default_scale=3.4,
    build=build_alexnet,
    description="the paper's FCN AlexNet, conv7 (4096-d, stride 32); needs imported ImageNet weights",
))
