"""``alexnet``: the paper's backbone, ImageNet AlexNet converted to a fully convolutional net.

conv1 ... conv5 and pool5 as in the classifier, then fc6 as a 6x6x256 -> 4096 valid conv
(``conv6``) and fc7 as a 1x1 conv (``conv7``); the features are conv7 (4096-d, ReLU), one
vector per 227x227 window (stride 32). ``classifier=True`` adds fc8 as a 1x1 conv
(``conv8``) and a softmax over the 1000 ImageNet classes as a second output, for checks.

Two layouts, matching the public releases (see :mod:`binmap_tf.binary_map.backbones.alexnet.weights` to import them):

* ``caffe`` (BVLC AlexNet, ``bvlc_alexnet.npy`` / ``.caffemodel``): 96/256/384/384/256
  channels, conv2/4/5 with group=2, LRN after conv1 and conv2 (before the pools), BGR input
  minus the mean ``[104, 117, 123]`` on 0-255. Smallest input 227.
* ``torchvision`` (``alexnet-owt-7be5be79.pth``): 64/192/384/256/256 channels, conv1 padding
  2, no groups, no LRN, RGB/255 normalised by the ImageNet mean and std. Smallest input 223
  (its adaptive 6x6 average pool is the identity there and is dropped in the FCN).

Pools are 3x3 stride 2 without padding, rounding down (as the TF port of the Caffe weights and
torchvision; Caffe itself rounds up, which only adds a partial cell at the bottom/right on
some sizes). The default ``scale=3.4`` is the paper's: a 321x481 BSDS image becomes 1091x1635
and the conv7 grid is 28x45 (the paper reports "28x44").

``dilated=True`` applies the DeepLab "hole" trick: pool5 with stride 1 and conv6 dilated by 2,
the same weights, a stride-16 grid whose even cells equal the stride-32 grid; use it with
``scale=1.0`` for a native-resolution map (a 321x481 image gives 6x16 with the Caffe layout).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import keras
import numpy as np
import tensorflow as tf

from binmap_tf.binary_map.backbones.base import (
    ImagePreprocessing,
    scaled_size,
)

FEATURE_DIM = 4096
N_CLASSES = 1000
KERNELS = (11, 5, 3, 3, 3)
STRIDES = (4, 1, 1, 1, 1)
POOLED = (1, 2, 5)  # convs followed by a 3x3 stride-2 max pool
POOL5_SHAPE = (6, 6, 256)  # fc6 input (H, W, C) for both layouts
# Caffe's LRN parameters in the bvlc_alexnet prototxt (local_size, alpha, beta, k).
CAFFE_LRN = {"size": 5, "alpha": 1e-4, "beta": 0.75, "bias": 1.0}


@dataclass(frozen=True)
class AlexNetLayout:
    """What differs between the public AlexNet releases: widths, groups, padding, LRN, input."""

    name: str
    channels: tuple[int, ...]
    groups: tuple[int, ...]
    conv1_padding: int
    lrn: bool
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    bgr: bool
    pixel_range: float
    releases: str


LAYOUTS = {
    "caffe": AlexNetLayout(
        name="caffe", channels=(96, 256, 384, 384, 256), groups=(1, 2, 1, 2, 2), conv1_padding=0,
        lrn=True, mean=(104.0, 117.0, 123.0), std=(1.0, 1.0, 1.0), bgr=True, pixel_range=255.0,
        releases=("bvlc_alexnet.npy (TF port of the Caffe weights: "
                  "http://www.cs.toronto.edu/~guerzhoy/tf_alexnet/bvlc_alexnet.npy) or "
                  "bvlc_alexnet.caffemodel (http://dl.caffe.berkeleyvision.org/bvlc_alexnet.caffemodel)"),
    ),
    "torchvision": AlexNetLayout(
        name="torchvision", channels=(64, 192, 384, 256, 256), groups=(1, 1, 1, 1, 1), conv1_padding=2,
        lrn=False, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), bgr=False, pixel_range=1.0,
        releases="alexnet-owt-7be5be79.pth (https://download.pytorch.org/models/alexnet-owt-7be5be79.pth)",
    ),
}


def get_layout(layout: str) -> AlexNetLayout:
    """The :class:`AlexNetLayout` called ``layout`` (``"caffe"`` or ``"torchvision"``)."""
    try:
        return LAYOUTS[layout]
    except KeyError:
        raise ValueError(f"unknown AlexNet layout {layout!r}; choose one of {sorted(LAYOUTS)}") from None


@keras.saving.register_keras_serializable(package="binmap_tf")
class LocalResponseNorm(keras.layers.Layer):
    """Caffe's across-channel LRN: ``x / (bias + alpha / size * sum_window(x^2)) ** beta``.

    Takes Caffe's parameters (``alpha=1e-4`` for AlexNet). Caffe divides alpha by the window
    ``size``; ``tf.nn.local_response_normalization`` applies its alpha to each squared element,
    so it gets ``alpha / size`` (2e-5) and ``depth_radius = (size - 1) / 2`` (2).
    """

    def __init__(self, size: int = 5, alpha: float = 1e-4, beta: float = 0.75, bias: float = 1.0,
                 **kwargs) -> None:
        super().__init__(**kwargs)
        if size % 2 != 1:
            raise ValueError(f"LRN size must be odd, got {size}")
        self.size, self.alpha, self.beta, self.bias = int(size), float(alpha), float(beta), float(bias)

    def call(self, x):
        return tf.nn.local_response_normalization(x, depth_radius=(self.size - 1) // 2, bias=self.bias,
                                                  alpha=self.alpha / self.size, beta=self.beta)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(size=self.size, alpha=self.alpha, beta=self.beta, bias=self.bias)
        return config


def _conv_padding(spec: AlexNetLayout, index: int) -> int:
    """Zero padding on each side of conv ``index`` (1-based), as Caffe's / torchvision's ``pad``."""
    return spec.conv1_padding if index == 1 else (KERNELS[index - 1] - 1) // 2


def _pool_stride(index: int, dilated: bool) -> int:
    """Stride of the pool after conv ``index``: 2, but 1 for pool5 of the dilated net."""
    return 1 if dilated and index == 5 else 2


def _conv6_dilation(dilated: bool) -> int:
    """Dilation of conv6: 2 in the dilated net, so it reads every other cell of stride-1 pool5."""
    return 2 if dilated else 1


def spatial_layers(layout: str = "caffe", dilated: bool = False) -> list[tuple[int, int, int]]:
    """``(kernel, stride, padding)`` of every spatial layer up to conv7, input to output.

    conv6 of the dilated net (6x6 dilated by 2) is given by its effective kernel, 11.
    """
    spec = get_layout(layout)
    layers = []
    for index, (kernel, stride) in enumerate(zip(KERNELS, STRIDES), start=1):
        layers.append((kernel, stride, _conv_padding(spec, index)))
        if index in POOLED:
            layers.append((3, _pool_stride(index, dilated), 0))
    conv6 = _conv6_dilation(dilated) * (POOL5_SHAPE[0] - 1) + 1
    return layers + [(conv6, 1, 0), (1, 1, 0)]


def grid_length(length: int, layout: str = "caffe", dilated: bool = False) -> int:
    """Number of conv7 cells along a side of ``length`` pixels of the CNN's (resized) input."""
    for kernel, stride, padding in spatial_layers(layout, dilated):
        length = (length + 2 * padding - kernel) // stride + 1
        if length < 1:
            return 0
    return length


def grid_shape(height: int, width: int, scale: float = 3.4, layout: str = "caffe",
               dilated: bool = False) -> tuple[int, int]:
    """conv7 grid ``(rows, cols)`` of an original image resized by ``scale`` inside the model."""
    return (grid_length(scaled_size(height, scale), layout, dilated),
            grid_length(scaled_size(width, scale), layout, dilated))


def min_input_side(layout: str = "caffe", dilated: bool = False) -> int:
    """Smallest side of the CNN's input that yields one conv7 cell (227 Caffe, 223 torchvision)."""
    side = 1
    while grid_length(side, layout, dilated) < 1:
        side += 1
    return side


def build_alexnet_classifier(layout: str = "caffe", scale: float = 1.0, dilated: bool = False,
                             random_weights: bool = True) -> keras.Model:
    """The fully convolutional AlexNet ``uint8 RGB -> [conv7, softmax(conv8)]``.

    With ``random_weights`` kernels are seeded Glorot-uniform (one seed per layer), so builds
    are reproducible; without, they start at zero, to be overwritten (drawing 61M random numbers
    costs seconds). This two-output model is the one whose ``.weights.h5``
    :mod:`binmap_tf.binary_map.backbones.alexnet.weights` writes and reads; the dilated net has the same layers and loads
    the same file.
    """
    spec = get_layout(layout)
    images = keras.Input(shape=(None, None, 3), dtype="uint8", name="images")
    x = ImagePreprocessing(scale=scale, mean=spec.mean, std=spec.std, bgr=spec.bgr,
                           pixel_range=spec.pixel_range, name="preprocess")(images)

    def conv(inputs, index: int, filters: int, kernel: int, **kwargs):
        initializer = keras.initializers.GlorotUniform(seed=index) if random_weights else "zeros"
        return keras.layers.Conv2D(filters, kernel, name=f"conv{index}", kernel_initializer=initializer,
                                   **kwargs)(inputs)

    for index, (kernel, stride) in enumerate(zip(KERNELS, STRIDES), start=1):
        padding = _conv_padding(spec, index)
        if index == 1 and padding:
            x = keras.layers.ZeroPadding2D(padding, name="pad1")(x)
        # conv2-5 have stride 1 and odd kernels: Keras "same" pads (k - 1) / 2 on each side,
        # exactly Caffe's / torchvision's pad. Keras groups split input and output channels
        # into contiguous halves, as Caffe's group=2.
        x = conv(x, index, spec.channels[index - 1], kernel, strides=stride, groups=spec.groups[index - 1],
                 padding="valid" if index == 1 else "same", activation="relu")
        if spec.lrn and index in (1, 2):
            x = LocalResponseNorm(**CAFFE_LRN, name=f"norm{index}")(x)
        if index in POOLED:
            x = keras.layers.MaxPooling2D(3, strides=_pool_stride(index, dilated), name=f"pool{index}")(x)
    x = conv(x, 6, FEATURE_DIM, POOL5_SHAPE[0], dilation_rate=_conv6_dilation(dilated), activation="relu")
    features = conv(x, 7, FEATURE_DIM, 1, activation="relu")
    probabilities = keras.layers.Softmax(name="prob")(conv(features, 8, N_CLASSES, 1))
    return keras.Model(images, [features, probabilities], name=f"alexnet_{layout}")


def assign_weights(model: keras.Model, weights: Mapping[str, Sequence[np.ndarray]]) -> None:
    """Set ``conv1`` ... ``conv8`` of ``model`` from ``{name: [kernel HWIO, bias]}`` (Keras layout).

    Checks every name and shape first, so a wrong file fails with a clear message instead
    of a half-loaded model.
    """
    names = [f"conv{index}" for index in range(1, 9)]
    if sorted(weights) != sorted(names):
        raise ValueError(f"AlexNet weights must have exactly the layers {names}, got {sorted(weights)}")
    for name in names:
        expected = [tuple(variable.shape) for variable in model.get_layer(name).weights]
        given = [tuple(np.shape(array)) for array in weights[name]]
        if given != expected:
            raise ValueError(f"{name}: weights of shapes {given} do not fit the {model.name} layer {expected}")
    for name in names:
        model.get_layer(name).set_weights([np.asarray(array, np.float32) for array in weights[name]])
