"""The learned merge scorer: a small MLP from a region pair's features to P(different segments).

It is trained with ``model.fit`` (:mod:`binmap_tf.training.merge_training`) as a Keras model and
exported to plain arrays, because the greedy merge calls it hundreds of times per image on a
few rows at a time, where numpy costs microseconds and a Keras call milliseconds.
:class:`MergeScorer` holds the standardisation and the dense layers and runs them in numpy;
:meth:`MergeScorer.save` / :func:`load_scorer` keep them in an ``.npz`` with a ``.json``
record beside it (data, seed, settings, val figures, the val-chosen threshold).

The shipped scorers live in ``binmap_tf/assets/merge_scorer_<name>.npz``; ``scorer="learned"``
(or any name in :data:`SHIPPED_SCORERS`) loads one of them.
"""

from __future__ import annotations

import functools
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import scipy.linalg

from binmap_tf.common.files import write_json, write_npz
from binmap_tf.common.paths import ASSETS_DIR
from binmap_tf.segmentation.merge_features import feature_names

# Shipped scorers: name -> file stem in binmap_tf/assets (see README, "Learned merging").
SHIPPED_SCORERS = {"learned": "merge_scorer_learned", "learned-no-codes": "merge_scorer_no_codes"}
# The scorer name that asks for the hand-set cue mix instead of a learned scorer (binmap_tf.segmentation.pipeline).
HAND_SET = "hand-set"


@dataclass(frozen=True, eq=False)
class MergeScorer:
    """An MLP in numpy: standardise, dense + ReLU layers, a dense logit, sigmoid.

    Attributes
    ----------
    mean, std : ndarray, shape (F,)
        Standardisation of the input features (from the training pairs).
    kernels, biases : list of ndarray
        Dense layers, the last one with a single output (the logit).
    codes : bool
        Whether the features include the binary codes (:func:`binmap_tf.segmentation.merge_features.feature_names`).
    n_bits : int
        Code length the scorer was trained with (0 when ``codes`` is False).
    info : dict
        The training record (data, seed, settings, val figures, ``threshold``).
    """

    mean: np.ndarray
    std: np.ndarray
    kernels: list[np.ndarray]
    biases: list[np.ndarray]
    codes: bool = True
    n_bits: int = 8
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        """A short name for records and cache keys."""
        return str(self.info.get("name", "custom"))

    @property
    def threshold(self) -> float | None:
        """Height at which to cut this scorer's hierarchy: its ODS threshold on val, if recorded."""
        value = self.info.get("threshold")
        return None if value is None else float(value)

    @property
    def cues_until(self) -> int:
        """Regions down to which the hand-set cues order this scorer's hierarchy, the scorer the coarser
        merges (:func:`~binmap_tf.segmentation.hierarchy.build_hierarchy`); 0, the scorer throughout,
        unless recorded."""
        return check_cues_until(self.info.get("cues_until", 0))

    def check_map(self, binary_map: Any) -> None:
        """``ValueError`` naming the fix when ``binary_map`` (a :class:`~binmap_tf.binary_map.maps.BinaryMap`)
        lacks what this scorer reads: the network's edge map, and codes of the length it was trained on."""
        flat = "merge='adjacent' (the paper's flat merge)"
        trained_on = self.info.get("features")
        if trained_on is not None and list(trained_on) != feature_names(self.n_bits, self.codes):
            raise ValueError(f"the learned merge scorer {self.name!r} was trained on other pair features than this "
                             "version computes (binmap_tf.segmentation.merge_features.feature_names); retrain it with "
                             f"binmap-train-merge, use a shipped scorer, scorer='{HAND_SET}' or {flat}")
        if binary_map.edges is None:
            raise ValueError(f"the learned merge scorer {self.name!r} needs the network's edge map: map with a "
                             f"backbone that has one (vgg16-hed, BinaryMapper(edges=True)), or pass {flat}")
        if self.codes and binary_map.n_bits != self.n_bits:
            raise ValueError(f"the learned merge scorer {self.name!r} was trained on {self.n_bits}-bit codes and the "
                             f"binary map has {binary_map.n_bits}; map with {self.n_bits} bits, pass a scorer trained "
                             f"on {binary_map.n_bits}-bit codes, scorer='{HAND_SET}' (the hand-set cues) or {flat}")

    def logits(self, features: np.ndarray) -> np.ndarray:
        """Pre-sigmoid outputs ``(m,)`` for features ``(m, F)``."""
        if features.shape[1] != len(self.mean):
            raise ValueError(f"the scorer takes {len(self.mean)} features, got {features.shape[1]}")
        hidden = (features - self.mean) / self.std
        for kernel, bias in zip(self.kernels[:-1], self.biases[:-1]):
            hidden = np.maximum(hidden @ kernel + bias, 0.0)
        return (hidden @ self.kernels[-1] + self.biases[-1])[:, 0]

    def __call__(self, features: np.ndarray) -> np.ndarray:
        """Probability ``(m,)`` that each pair's regions belong to different segments."""
        return 1.0 / (1.0 + np.exp(-np.clip(self.logits(features), -50, 50)))

    def save(self, path: str | os.PathLike) -> None:
        """Write the arrays to ``path`` (``.npz``) and :attr:`info` to the ``.json`` beside it."""
        path = Path(path)
        layers = {f"kernel{i}": k for i, k in enumerate(self.kernels)} | {f"bias{i}": b for i, b in enumerate(self.biases)}
        write_npz(path, mean=self.mean, std=self.std, codes=np.array(self.codes), n_bits=np.array(self.n_bits),
                  n_layers=np.array(len(self.kernels)), **layers)
        write_json(path.with_suffix(".json"), self.info)


def check_cues_until(value: Any) -> int:
    """``value`` as an int, or ``ValueError`` unless it is an integer >= 0 (a number of regions)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise ValueError(f"cues_until is a number of regions, an integer >= 0, got {value!r}")
    return int(value)


def average_scorers(members: list[MergeScorer]) -> MergeScorer:
    """One :class:`MergeScorer` whose logit is the mean of the ``members``' logits (a seed ensemble).

    The members' hidden layers sit side by side (block-diagonal kernels), so the greedy merge
    still runs one small numpy MLP per call. The members must share their standardisation and
    inputs, as scorers fitted on the same pairs with different seeds do."""
    first = members[0]
    if any(not (np.array_equal(m.mean, first.mean) and np.array_equal(m.std, first.std)
                and m.codes == first.codes and m.n_bits == first.n_bits and len(m.kernels) == len(first.kernels))
           for m in members):
        raise ValueError("scorers to average must share standardisation, code features and depth")
    kernels = [np.concatenate([m.kernels[0] for m in members], axis=1)]
    kernels += [scipy.linalg.block_diag(*(m.kernels[i] for m in members)) for i in range(1, len(first.kernels) - 1)]
    kernels.append(np.concatenate([m.kernels[-1] for m in members], axis=0) / len(members))
    biases = [np.concatenate([m.biases[i] for m in members]) for i in range(len(first.biases) - 1)]
    biases.append(np.mean([m.biases[-1] for m in members], axis=0))
    return MergeScorer(first.mean, first.std, kernels, biases, codes=first.codes, n_bits=first.n_bits,
                       info=first.info)


def load_scorer(path: str | os.PathLike) -> MergeScorer:
    """A :class:`MergeScorer` from an ``.npz`` written by :meth:`MergeScorer.save` (and its ``.json``)."""
    path = Path(path)
    with np.load(path) as data:
        layers = int(data["n_layers"])
        kernels = [data[f"kernel{i}"].astype(np.float64) for i in range(layers)]
        biases = [data[f"bias{i}"].astype(np.float64) for i in range(layers)]
        scorer_arrays = (data["mean"].astype(np.float64), data["std"].astype(np.float64))
        codes, n_bits = bool(data["codes"]), int(data["n_bits"])
    record = path.with_suffix(".json")
    info = json.loads(record.read_text()) if record.exists() else {}
    return MergeScorer(*scorer_arrays, kernels, biases, codes=codes, n_bits=n_bits, info=info)


@functools.lru_cache(maxsize=8)
def shipped_scorer(name: str) -> MergeScorer:
    """The shipped scorer ``name`` (a key of :data:`SHIPPED_SCORERS`), loaded once."""
    if name not in SHIPPED_SCORERS:
        raise ValueError(f"unknown merge scorer {name!r}; shipped: {', '.join(SHIPPED_SCORERS)}, or pass a path")
    return load_scorer(ASSETS_DIR / f"{SHIPPED_SCORERS[name]}.npz")


def resolve_scorer(scorer: MergeScorer | str | os.PathLike) -> MergeScorer:
    """A scorer object from itself, a shipped name or a path to an ``.npz``."""
    if isinstance(scorer, MergeScorer):
        return scorer
    if isinstance(scorer, str) and scorer in SHIPPED_SCORERS:
        return shipped_scorer(scorer)
    path = Path(scorer)
    if not path.exists():
        raise ValueError(f"merge scorer {scorer!r} is neither a shipped name ({', '.join(SHIPPED_SCORERS)}) "
                         "nor an existing .npz")
    return _loaded_scorer(str(path.resolve()), path.stat().st_mtime_ns)


@functools.lru_cache(maxsize=8)
def _loaded_scorer(path: str, modified: int) -> MergeScorer:
    """:func:`load_scorer` once per file version: merge trees are cached per scorer object, so every
    threshold of a sweep must get the same one."""
    return load_scorer(path)
