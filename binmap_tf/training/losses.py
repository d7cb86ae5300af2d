"""Losses for fine-tuning the ``hconv8`` hashing layer with ``model.fit``.

Every loss reads the training model's output ``(b, h, w, 2k)``: the straight-through bits of
hconv8 (``[..., :k]``, hard {0, 1} forward, hard-tanh surrogate backward) followed by its
pre-sign activations (``[..., k:]``), and ``y_true`` the ground-truth segment label of every
grid cell, ``(b, h, w)``, with 0 marking padding (labels start at 1). Every term averages over
the valid (non-padding) cells of the whole batch, so each loss is one scalar per batch.

* :class:`SegmentLoss` (supervised): neighbouring cells in the same segment should share a
  code, neighbours in different segments should not, which is exactly what the merge step
  needs (adjacent superpixels with equal codes merge).
* :class:`RegionLoss` (supervised): what the learned merge reads (regions' mean bits): the
  mean codes of adjacent segments should differ, cells should keep their segment's code.
* :class:`UnsupervisedLoss`: ITQ's quantization loss plus bit balance and decorrelation; at the
  layer's initial scale (see :mod:`binmap_tf.cli.train`) ITQ's rotation is its starting optimum.

Bit statistics (balance, decorrelation) are measured on the hard bits, so they are the real
fractions and correlations of the codes; their gradients reach the kernel through the
straight-through sign, i.e. through locations with ``|logit| <= 1``.
"""

from __future__ import annotations

import keras
from keras import ops

from binmap_tf.training.options import LOSS_NAMES

# Offsets (dy, dx) that visit every unordered pair of 4- or 8-neighbours once.
NEIGHBOUR_OFFSETS = {4: ((0, 1), (1, 0)), 8: ((0, 1), (1, 0), (1, 1), (1, -1))}


def _split(y_true, y_pred):
    """``(bits, logits, valid)``: the two halves of ``y_pred`` and the mask of labelled cells."""
    k = y_pred.shape[-1] // 2
    return y_pred[..., :k], y_pred[..., k:], ops.cast(ops.greater(y_true, 0), y_pred.dtype)


def _masked_mean(values, weights):
    """``sum(values * weights) / sum(weights)``, 0 when no weight is set."""
    return ops.sum(values * weights) / ops.maximum(ops.sum(weights), 1.0)


def bit_balance(bits, valid):
    """Mean over bits of ``(2 p_j - 1)^2``, ``p_j`` the fraction of valid cells with bit ``j`` set.

    0 when every bit splits the cells in half, 1 when a bit is constant.
    """
    weights = valid[..., None]
    fraction = ops.sum(bits * weights, axis=(0, 1, 2)) / ops.maximum(ops.sum(weights), 1.0)
    return ops.mean(ops.square(2.0 * fraction - 1.0))


def _shifted_pair(x, dy: int, dx: int):
    """Aligned views ``(a, b)`` of ``x`` (b, h, w, ...): ``b[:, i, j]`` is ``(dy, dx)`` cells from ``a[:, i, j]``."""
    height, width = ops.shape(x)[1], ops.shape(x)[2]
    first = x[:, : height - dy, max(-dx, 0): width - max(dx, 0)]
    second = x[:, dy:, max(dx, 0): width - max(-dx, 0)]
    return first, second


class HashingLoss(keras.losses.Loss):
    """Base: a weighted sum of named terms of ``(bits, logits, labels, valid)``; see :meth:`terms`."""

    def __init__(self, balance_weight: float = 0.1, name: str | None = None, **kwargs) -> None:
        super().__init__(name=name, **kwargs)
        self.balance_weight = float(balance_weight)

    def terms(self, bits, logits, labels, valid) -> dict:
        """The loss terms as ``{name: (weight, scalar)}``."""
        raise NotImplementedError

    def call(self, y_true, y_pred):
        bits, logits, valid = _split(y_true, y_pred)
        return sum(weight * value for weight, value in self.terms(bits, logits, y_true, valid).values())

    def get_config(self) -> dict:
        return {**super().get_config(), "balance_weight": self.balance_weight}


class ContrastiveHashingLoss(HashingLoss):
    """Base of the supervised losses: codes relaxed to ``tanh(logits / temperature)``, pulled together
    inside a ground-truth segment and pushed at least ``margin`` bits apart across its border
    (weighted by ``push_weight``)."""

    def __init__(self, margin: float, push_weight: float = 1.0, temperature: float = 0.2,
                 balance_weight: float = 0.1, name: str | None = None, **kwargs) -> None:
        super().__init__(balance_weight=balance_weight, name=name, **kwargs)
        if margin <= 0 or temperature <= 0:
            raise ValueError(f"margin and temperature must be > 0, got {margin} and {temperature}")
        self.margin = float(margin)
        self.push_weight = float(push_weight)
        self.temperature = float(temperature)

    def get_config(self) -> dict:
        return {**super().get_config(), "margin": self.margin, "push_weight": self.push_weight,
                "temperature": self.temperature}


@keras.saving.register_keras_serializable(package="binmap_tf")
class SegmentLoss(ContrastiveHashingLoss):
    """Same code inside a ground-truth segment, different codes across its boundary.

    Codes are relaxed to ``c = tanh(logits / temperature)`` in (-1, 1); the soft Hamming
    distance of two cells is ``d = sum_j (c_j - c'_j)^2 / 4`` (the Hamming distance for
    saturated codes). Over all 4- or 8-neighbour pairs of labelled cells:

    ``loss = mean_same(d) + push_weight * mean_diff(max(0, margin - d)) + balance_weight * balance``

    The pull term removes code changes inside segments (they block merges: over-segmentation);
    the hinge keeps at least ``margin`` bits apart across boundaries (equal codes there merge
    two segments: under-segmentation). Each is averaged over its own pairs, so the rare
    boundary pairs are not swamped; :func:`bit_balance` keeps bits in use.

    Notes
    -----
    The temperature matters: at the training scale typical logits are ~0.4, where ``tanh`` is
    nearly linear, so with ``temperature=1`` a bit flip between cells at +-0.3 costs 0.09 of a
    bit: the pull term ignores exactly the low-confidence flips that stop merges, and training
    over-segments. ``temperature=0.2`` makes ``d`` close to the number of differing hard bits.
    The defaults (margin 1, push weight 1, temperature 0.2, balance 0.1, 8-neighbours) were
    chosen on 50 BSDS500 val images (see the README): temperature 1 over-segments (covering
    falls below ITQ's while Segmentation-IoU rises), 0.1 merges too much, and a push weight of 5
    keeps too many boundaries.
    """

    def __init__(self, margin: float = 1.0, push_weight: float = 1.0, temperature: float = 0.2,
                 balance_weight: float = 0.1, neighbours: int = 8, name: str = "segment_loss", **kwargs) -> None:
        if neighbours not in NEIGHBOUR_OFFSETS:
            raise ValueError(f"neighbours must be 4 or 8, got {neighbours}")
        super().__init__(margin, push_weight, temperature, balance_weight, name=name, **kwargs)
        self.neighbours = int(neighbours)

    def terms(self, bits, logits, labels, valid) -> dict:
        codes = ops.tanh(logits / self.temperature)
        pull_sum = pull_count = push_sum = push_count = 0.0
        for dy, dx in NEIGHBOUR_OFFSETS[self.neighbours]:
            code_a, code_b = _shifted_pair(codes, dy, dx)
            label_a, label_b = _shifted_pair(labels, dy, dx)
            valid_a, valid_b = _shifted_pair(valid, dy, dx)
            both = valid_a * valid_b
            same = both * ops.cast(ops.equal(label_a, label_b), both.dtype)
            different = both - same
            distance = ops.sum(ops.square(code_a - code_b), axis=-1) / 4.0
            pull_sum += ops.sum(distance * same)
            pull_count += ops.sum(same)
            push_sum += ops.sum(ops.relu(self.margin - distance) * different)
            push_count += ops.sum(different)
        return {
            "pull": (1.0, pull_sum / ops.maximum(pull_count, 1.0)),
            "push": (self.push_weight, push_sum / ops.maximum(push_count, 1.0)),
            "balance": (self.balance_weight, bit_balance(bits, valid)),
        }

    def get_config(self) -> dict:
        return {**super().get_config(), "neighbours": self.neighbours}


@keras.saving.register_keras_serializable(package="binmap_tf")
class RegionLoss(ContrastiveHashingLoss):
    """Adjacent ground-truth segments with different mean codes, each cell near its segment's mean.

    The learned merge scorer compares two regions by their pixels' mean bits
    (:mod:`binmap_tf.segmentation.merge_features`), not cell by cell: a segment's code may vary at its border,
    as long as the means of two adjacent segments differ. With ``c = tanh(logits / temperature)``
    and ``m_s`` the mean ``c`` of segment ``s``'s cells (per image),

    ``loss = mean_cells(|c - m_label|^2 / 4) + push_weight * mean_adjacent(max(0, margin - |m_s - m_t|^2 / 4))
    + balance_weight * balance``

    over the pairs of segments that touch on the grid (8-neighbours). For saturated codes
    ``|m_s - m_t|^2 / 4`` is the summed squared difference of the two segments' bit fractions, so
    ``margin`` counts fully flipped bits. Segment labels must be below ``max_segments``.
    """

    def __init__(self, margin: float = 2.0, push_weight: float = 1.0, temperature: float = 0.2,
                 balance_weight: float = 0.1, max_segments: int = 512, name: str = "region_loss", **kwargs) -> None:
        super().__init__(margin, push_weight, temperature, balance_weight, name=name, **kwargs)
        self.max_segments = int(max_segments)

    def terms(self, bits, logits, labels, valid) -> dict:
        codes = ops.tanh(logits / self.temperature)
        k = codes.shape[-1]
        members = ops.one_hot(ops.cast(labels, "int32"), self.max_segments) * valid[..., None]  # (b, h, w, S); void and padding: none
        flat_members = ops.reshape(members, (ops.shape(members)[0], -1, self.max_segments))
        flat_codes = ops.reshape(codes, (ops.shape(codes)[0], -1, k))
        counts = ops.sum(flat_members, axis=1)  # (b, S)
        means = ops.einsum("bps,bpk->bsk", flat_members, flat_codes) / ops.maximum(counts, 1.0)[..., None]
        own_mean = ops.einsum("bps,bsk->bpk", flat_members, means)
        pull = _masked_mean(ops.sum(ops.square(flat_codes - own_mean), axis=-1) / 4.0, ops.sum(flat_members, -1))
        touching = 0.0
        for dy, dx in NEIGHBOUR_OFFSETS[8]:
            first, second = _shifted_pair(members, dy, dx)
            first = ops.reshape(first, (ops.shape(first)[0], -1, self.max_segments))
            second = ops.reshape(second, (ops.shape(second)[0], -1, self.max_segments))
            touching = touching + ops.einsum("bps,bpt->bst", first, second)
        touching = touching + ops.transpose(touching, (0, 2, 1))
        adjacent = ops.cast(ops.greater(touching, 0.0), codes.dtype) * (1.0 - ops.eye(self.max_segments))
        squared = ops.sum(ops.square(means), axis=-1)
        distance = (squared[:, :, None] + squared[:, None, :] - 2.0 * ops.einsum("bsk,btk->bst", means, means)) / 4.0
        push = ops.sum(adjacent * ops.relu(self.margin - distance)) / ops.maximum(ops.sum(adjacent), 1.0)
        return {
            "pull": (1.0, pull),
            "push": (self.push_weight, push),
            "balance": (self.balance_weight, bit_balance(bits, valid)),
        }

    def get_config(self) -> dict:
        return {**super().get_config(), "max_segments": self.max_segments}


@keras.saving.register_keras_serializable(package="binmap_tf")
class UnsupervisedLoss(HashingLoss):
    """ITQ's objective without labels: quantization + bit balance + bit decorrelation.

    ``quantization = mean_valid(sum_j (B_j - z_j)^2) / k`` with ``B = sign(z)`` held fixed (as
    in ITQ's alternation) and ``z`` the logits; ``decorrelation`` is the mean squared
    off-diagonal entry of the correlation ``C = E[c c^T]`` of the ±1 codes ``c = 2 bits - 1``.
    Without the two regularisers the kernel could collapse every bit onto one bimodal direction.
    """

    def __init__(self, balance_weight: float = 0.1, decorrelation_weight: float = 0.1,
                 name: str = "unsupervised_loss", **kwargs) -> None:
        super().__init__(balance_weight=balance_weight, name=name, **kwargs)
        self.decorrelation_weight = float(decorrelation_weight)

    def terms(self, bits, logits, labels, valid) -> dict:
        signs = ops.stop_gradient(ops.where(ops.greater_equal(logits, 0.0), 1.0, -1.0))
        quantization = _masked_mean(ops.mean(ops.square(signs - logits), axis=-1), valid)
        k = bits.shape[-1]
        codes = ops.reshape((2.0 * bits - 1.0) * valid[..., None], (-1, k))
        correlation = ops.matmul(ops.transpose(codes), codes) / ops.maximum(ops.sum(valid), 1.0)
        off_diagonal = correlation * (1.0 - ops.eye(k, dtype=correlation.dtype))
        decorrelation = ops.sum(ops.square(off_diagonal)) / max(k * (k - 1), 1)
        return {
            "quantization": (1.0, quantization),
            "balance": (self.balance_weight, bit_balance(bits, valid)),
            "decorrelation": (self.decorrelation_weight, decorrelation),
        }

    def get_config(self) -> dict:
        return {**super().get_config(), "decorrelation_weight": self.decorrelation_weight}


def make_loss(name: str, **options) -> HashingLoss:
    """The loss ``name`` (one of :data:`LOSS_NAMES`) with its keyword ``options``."""
    if name == "segment":
        return SegmentLoss(**options)
    if name == "regions":
        return RegionLoss(**options)
    if name == "unsupervised":
        return UnsupervisedLoss(**options)
    raise ValueError(f"unknown loss {name!r}; choose one of {LOSS_NAMES}")
