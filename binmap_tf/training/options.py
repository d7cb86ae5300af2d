"""The choices a training command offers, as plain values: importing this module does not load
TensorFlow, so that ``binmap-train --help`` and its usage errors answer at once."""

from __future__ import annotations

LOSS_NAMES = ("segment", "regions", "unsupervised")  # binmap_tf.training.losses.make_loss
MONITORS = ("covering", "abo")  # validation figures that can pick the epoch
FEATURE_DTYPES = ("float16", "float32")  # how the feature cache stores backbone features
