"""The model options a command line offers, as plain values: importing this module does not load
TensorFlow, so that ``--help`` and argument checks answer at once (the model modules re-export them)."""

from __future__ import annotations

DEFAULT_BACKBONE = "vgg16-hed"
# The backbones this package registers (binmap_tf.binary_map.backbones; a test keeps the two equal).
BUILT_IN_BACKBONES = ("alexnet", "vgg16-hed")
DEFAULT_BITS = 8
# Precision option -> the Keras dtype policy the backbone is built under.
PRECISIONS = {"fp32": "float32", "bf16": "mixed_bfloat16"}
EXECUTIONS = ("graph", "eager", "xla")
# The weight layouts of the public AlexNet releases (binmap_tf.binary_map.backbones.alexnet.network.LAYOUTS).
ALEXNET_LAYOUTS = ("caffe", "torchvision")
