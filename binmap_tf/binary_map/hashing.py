"""ITQ hashing (Gong & Lazebnik 2011) and the ``hconv8`` hashing layer of the paper.

Bit order and value convention: bit ``j`` of a location is ``1`` where its ``j``-th rotated
projection is ``>= 0`` (never ``np.sign``, whose 0 would be a third value). Packed codes put
bit 0 in the most significant position (see :mod:`binmap_tf.binary_map.maps`).
"""

from __future__ import annotations

import json
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import keras
import numpy as np
from keras import ops

from binmap_tf.common.paths import ASSETS_DIR, cache_home


@dataclass
class ITQParams:
    """Fitted ITQ: ``bits = ((x - mean) @ pcs @ rotation) >= 0``.

    ``loss_history[t]`` is the quantization loss ``||B - V R||_F^2 / n`` with the rotation of
    iteration ``t`` (index 0 is the random start); ``info`` records data, seed and settings.
    """

    mean: np.ndarray  # (d,)
    pcs: np.ndarray  # (d, bits): top principal directions, no whitening
    rotation: np.ndarray  # (bits, bits): orthogonal
    loss_history: list[float] = field(default_factory=list)
    info: dict = field(default_factory=dict)

    @property
    def bits(self) -> int:
        return int(self.pcs.shape[1])

    @property
    def kernel(self) -> np.ndarray:
        """The hashing layer's kernel ``W R`` (d, bits)."""
        return (self.pcs @ self.rotation).astype(np.float32)

    @property
    def bias(self) -> np.ndarray:
        """The hashing layer's bias ``-mean W R`` (bits,)."""
        return (-self.mean.astype(np.float64) @ (self.pcs @ self.rotation)).astype(np.float32)

    def project(self, features: np.ndarray) -> np.ndarray:
        """Rotated projections ``(x - mean) W R`` of ``features`` (..., d)."""
        return (features - self.mean) @ (self.pcs @ self.rotation)

    def encode(self, features: np.ndarray) -> np.ndarray:
        """Bits in {0, 1} (uint8) of ``features`` (..., d)."""
        return (self.project(features) >= 0).astype(np.uint8)

    def save(self, path: str | os.PathLike) -> None:
        """Write the parameters to an ``.npz`` file (atomically), with ``info`` as JSON inside."""
        from binmap_tf.common.files import atomic_path

        with atomic_path(path) as tmp, open(tmp, "wb") as handle:
            np.savez(handle, mean=self.mean.astype(np.float32), pcs=self.pcs.astype(np.float32),
                     rotation=self.rotation.astype(np.float32),
                     loss_history=np.asarray(self.loss_history, dtype=np.float64),
                     info=np.asarray(json.dumps(self.info)))

    @classmethod
    def load(cls, path: str | os.PathLike) -> "ITQParams":
        """Read parameters written by :meth:`save`; ``ValueError`` naming the file for anything else."""
        try:
            with np.load(path, allow_pickle=False) as data:
                return cls(mean=data["mean"], pcs=data["pcs"], rotation=data["rotation"],
                           loss_history=data["loss_history"].tolist(), info=json.loads(str(data["info"])))
        except (ValueError, KeyError, OSError, zipfile.BadZipFile, json.JSONDecodeError) as error:
            raise ValueError(f"{path} is not a hashing layer written by binmap-fit-itq or "
                             f"binmap_tf.cli.train ({type(error).__name__}: {error}); pass such an .npz") from None


def _quantization_loss(projected: np.ndarray, rotation: np.ndarray) -> tuple[float, np.ndarray]:
    """Return ``||B - V R||^2 / n`` and the signs ``B`` in {-1, +1} for rotation ``R``."""
    rotated = projected @ rotation
    signs = np.where(rotated >= 0, 1.0, -1.0)
    return float(np.sum((signs - rotated) ** 2) / len(projected)), signs


def fit_pca(features: np.ndarray, bits: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean and the top-``bits`` covariance eigenvectors (d, bits), largest first."""
    data = np.asarray(features, dtype=np.float64)
    mean = data.mean(axis=0)
    centred = data - mean
    covariance = centred.T @ centred / max(len(data) - 1, 1)
    eigenvalues, eigenvectors = np.linalg.eigh(covariance)
    order = np.argsort(eigenvalues)[::-1][:bits]
    return mean, eigenvectors[:, order]


def fit_itq(features: np.ndarray, bits: int = 8, iterations: int = 50, seed: int = 0) -> ITQParams:
    """Fit Iterative Quantization: centre, PCA to ``bits`` dimensions, then rotate.

    Parameters
    ----------
    features : (n, d) array
        One feature vector per row (e.g. conv7 or conv5_3 activations at sampled locations).
    bits : int
        Code length ``k``; at most ``d`` and at most ``n``.
    iterations : int
        Alternating steps (Gong & Lazebnik use 50): fix ``R`` and set ``B = sign(V R)``, then fix
        ``B`` and solve the orthogonal Procrustes problem ``R = argmin ||B - V R||``.
    seed : int
        Seed of the random orthogonal starting rotation.

    Returns
    -------
    ITQParams
        With ``loss_history`` of length ``iterations + 1``, non-increasing.

    Notes
    -----
    Deviation from the MATLAB original: it runs 51 updates and returns bits computed from the
    second-to-last rotation; here the returned rotation is the last one and codes are always
    computed from it, whose loss is the last (smallest) value of ``loss_history``.

    References
    ----------
    Y. Gong and S. Lazebnik, "Iterative quantization: A procrustean approach to learning
    binary codes", CVPR 2011.
    """
    data = np.asarray(features)
    if data.ndim != 2:
        raise ValueError(f"features must be a 2-D (n, d) array, got shape {data.shape}")
    n, dim = data.shape
    if not 1 <= bits <= min(n, dim):
        raise ValueError(f"bits must be between 1 and min(n, d) = {min(n, dim)}, got {bits}")
    if not np.all(np.isfinite(data)):
        raise ValueError("features contain NaN or infinite values")
    mean, pcs = fit_pca(data, bits)
    projected = (data - mean) @ pcs
    rng = np.random.default_rng(seed)
    rotation, _ = np.linalg.qr(rng.standard_normal((bits, bits)))
    loss, signs = _quantization_loss(projected, rotation)
    history = [loss]
    for _ in range(iterations):
        left, _, right_t = np.linalg.svd(signs.T @ projected)
        rotation = right_t.T @ left.T
        loss, signs = _quantization_loss(projected, rotation)
        history.append(loss)
    info = {"n_samples": int(n), "dim": int(dim), "bits": int(bits), "iterations": int(iterations),
            "seed": int(seed), "final_loss": history[-1]}
    return ITQParams(mean=mean, pcs=pcs, rotation=rotation, loss_history=history, info=info)


def itq_filename(key: str, bits: int, fine_tuned: bool = False) -> str:
    """File name of the ITQ parameters (or, ``fine_tuned``, of the hashing layer trained from them by
    :mod:`binmap_tf.cli.train`) for backbone features ``key`` and ``bits``."""
    return f"{'ft' if fine_tuned else 'itq'}_{key}_{bits}bits.npz"


def itq_search_path() -> list[Path]:
    """Folders searched for ITQ parameters: the user's cache (own fits) first, then the package's."""
    return [cache_home() / "itq", ASSETS_DIR]


def load_itq(key: str, bits: int, fine_tuned: bool = False) -> ITQParams:
    """Load the ITQ parameters fitted for ``key`` and ``bits`` (or, ``fine_tuned``, the shipped
    fine-tuned layer), with an actionable error when missing."""
    name = itq_filename(key, bits, fine_tuned)
    for folder in itq_search_path():
        if (folder / name).exists():
            return ITQParams.load(folder / name)
    backbone = key.split("_")[0]
    remedy = (f"train one with: binmap-train --backbone {backbone} --bits {bits} --out DIR, "
              "and pass DIR/hashing_ft.npz" if fine_tuned else
              f"fit them with: binmap-fit-itq --backbone {backbone} --bits {bits}")
    raise FileNotFoundError(f"no {'fine-tuned hashing' if fine_tuned else 'ITQ'} parameters {name} in "
                            f"{', '.join(map(str, itq_search_path()))}; {remedy}")


@keras.saving.register_keras_serializable(package="binmap_tf")
def straight_through_bits(logits):
    """Bits ``logits >= 0`` in {0, 1}; gradient passes straight through where ``|logits| <= 1``.

    The surrogate is ``(clip(x, -1, 1) + 1) / 2`` (a hard-tanh sign mapped to [0, 1]): its value
    is replaced by the hard bit in the forward pass, its derivative (1/2 inside [-1, 1], 0
    outside) is what back-propagates.
    """
    surrogate = (ops.clip(logits, -1.0, 1.0) + 1.0) * 0.5
    hard = ops.cast(ops.greater_equal(logits, 0.0), logits.dtype)
    return surrogate + ops.stop_gradient(hard - surrogate)


@keras.saving.register_keras_serializable(package="binmap_tf")
class ITQHashing(keras.layers.Layer):
    """``hconv8``: a Dense applied at every location (a 1x1 conv) followed by a straight-through sign.

    Input ``(..., d)`` features; output bits ``(..., bits)`` as floats in {0, 1} and, with
    ``return_logits=True``, also the pre-sign activations. Initialise from ITQ with
    :meth:`from_itq` (kernel ``W R``, bias ``-mean W R``); the kernel stays trainable so the
    layer can be fine-tuned with ``model.fit``.
    """

    def __init__(self, bits: int = 8, return_logits: bool = False, **kwargs) -> None:
        super().__init__(**kwargs)
        if bits < 1:
            raise ValueError(f"bits must be >= 1, got {bits}")
        self.bits = int(bits)
        self.return_logits = bool(return_logits)
        self._initial: tuple[np.ndarray, np.ndarray] | None = None

    @classmethod
    def from_itq(cls, params: ITQParams, **kwargs) -> "ITQHashing":
        """A layer whose weights are the ITQ projection ``params``."""
        layer = cls(bits=params.bits, **kwargs)
        layer._initial = (params.kernel, params.bias)
        return layer

    def build(self, input_shape) -> None:
        dim = int(input_shape[-1])
        initial = self._initial
        if initial is not None and initial[0].shape != (dim, self.bits):
            raise ValueError(f"ITQ kernel has shape {initial[0].shape}, but the features have "
                             f"{dim} channels and the layer {self.bits} bits; fit ITQ on this backbone")
        self.kernel = self.add_weight(
            name="kernel", shape=(dim, self.bits),
            initializer=keras.initializers.Constant(initial[0]) if initial else "glorot_uniform")
        self.bias = self.add_weight(
            name="bias", shape=(self.bits,),
            initializer=keras.initializers.Constant(initial[1]) if initial else "zeros")

    def logits(self, features):
        """Pre-sign activations ``features @ kernel + bias``."""
        return ops.matmul(features, self.kernel) + self.bias

    def call(self, features):
        logits = self.logits(features)
        bits = straight_through_bits(logits)
        return (bits, logits) if self.return_logits else bits

    def compute_output_shape(self, input_shape):
        shape = tuple(input_shape[:-1]) + (self.bits,)
        return (shape, shape) if self.return_logits else shape

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(bits=self.bits, return_logits=self.return_logits)
        return config


def export_hashing(model: keras.Model, info: dict | None = None) -> ITQParams:
    """The trained layer of ``model`` (an ``hconv8`` after a fixed ``Rescaling`` named ``feature_scale``,
    as :func:`binmap_tf.training.hashing_fine_tune.build_training_model` builds it) as :class:`ITQParams`, acting on raw
    features like ITQ's parameters.

    The effective kernel ``K = kernel * (1 / s)`` is stored as ``pcs`` with an identity
    ``rotation``; ``mean`` is the minimum-norm solution of ``-mean @ K = bias``, so
    ``ITQParams.kernel`` and ``.bias`` give back the layer (up to float32 rounding) and every
    loader of ``ITQParams`` (``build_binmap_model``, ``--hashing``, serving) uses it unchanged.
    Logits come out in units of ``s``, not ITQ's raw projection units; bits are what count.
    """
    layer = model.get_layer("hconv8")
    kernel = np.asarray(layer.kernel, np.float64) * model.get_layer("feature_scale").scale
    bias = np.asarray(layer.bias, np.float64)
    mean = -kernel @ np.linalg.solve(kernel.T @ kernel, bias)
    return ITQParams(mean=mean, pcs=kernel, rotation=np.eye(kernel.shape[1]), info=dict(info or {}))
