"""The segmentation methods the evaluation compares, each at one parameter setting: a method is
a named setting of the one pipeline, :func:`binmap_tf.segmentation.pipeline.segment_with_map`
(:meth:`Method.segment_options`), never a second implementation of it.

A method is a low-level superpixel algorithm (``egs`` or ``slic``) optionally followed by a
merge driven by a binary map (``binmap-egs``, ``binmap-slic``; ``-ft`` variants use the
fine-tuned hashing layer). Its parameter is the superpixel knob the paper's Fig. 4 sweeps:
the EGS ``scale`` (Felzenszwalb's k) or the SLIC ``n_segments``.

Hierarchical methods (``binmap-hier`` and its ablations ``hier-codes``, ``hier-edges``,
``hier-colour``, ``hier-codes-edges``, ``hier-edges-colour``; see :mod:`binmap_tf.segmentation.hierarchy`)
merge EGS superpixels at the default scale greedily; their parameter is the ``threshold`` on
the merge heights (keyed by the method's own name in the tables below), so a sweep cuts one
hierarchy per image at every threshold. Their ``-n`` variants (``binmap-hier-n``, ...) cut
every image at the same number of segments instead (parameter ``n_segments``).

Learned hierarchies (``binmap-learned``, and ``learned-no-codes`` whose scorer never saw the
codes; :mod:`binmap_tf.segmentation.merge_scorer`) merge the same superpixels in the order of a scorer
trained on BSDS500 train; their parameter is also a threshold, by default the one the scorer's
training chose on BSDS500 val (recorded with the shipped scorer); their ``-n`` variants cut at a
number of segments too. ``binmap-learned`` (and ``binmap-learned-n``) can take another scorer file
(``parse_method(name, scorer=path)``, ``evaluate --scorer``), e.g. one trained on other codes by
``binmap-train-merge``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import numpy as np

from binmap_tf.binary_map.maps import BinaryMap
from binmap_tf.segmentation.hierarchy import DEFAULT_THRESHOLD, DEFAULT_WEIGHTS, MergeWeights
from binmap_tf.segmentation.merge_scorer import resolve_scorer, shipped_scorer
from binmap_tf.segmentation.pipeline import StageCache, segment_with_map
from binmap_tf.segmentation.resolution import DEFAULT_WORKING_PIXELS
from binmap_tf.segmentation.superpixels import EGS_SCALE, SLIC_N_SEGMENTS

# Parameter grids of the sweep (Fig. 4): wide enough to span ~30 to ~1500 superpixels.
SWEEP_VALUES = {
    "egs": (50.0, 100.0, 200.0, 300.0, 500.0, 800.0, 1200.0, 2000.0),
    "slic": (25.0, 50.0, 100.0, 200.0, 400.0, 800.0, 1600.0),
}
_FIXED_VALUES = {"egs": EGS_SCALE, "slic": float(SLIC_N_SEGMENTS)}
PARAMETER_NAMES = {"egs": "scale", "slic": "n_segments"}

# Hierarchical merging: each method's cues, and its ODS threshold on the merge heights and ODS
# number of segments on 50 BSDS500 val images (README, "Hierarchical merging"). A method's
# parameter key is its own name, as every mix of cues has its own scale of heights.
HIERARCHY_METHODS = {
    "binmap-hier": (DEFAULT_WEIGHTS, DEFAULT_THRESHOLD, 50),
    "hier-codes": (MergeWeights(codes=1.0), 0.25, 10),
    "hier-edges": (MergeWeights(edges=1.0), 0.625, 30),
    "hier-colour": (MergeWeights(colour=1.0), 0.275, 30),
    "hier-codes-edges": (MergeWeights(codes=1.0, edges=2.0), 0.475, 50),
    "hier-edges-colour": (MergeWeights(edges=2.0, colour=1.0), 0.525, 80),
}
HIERARCHY_THRESHOLDS = tuple(float(t) for t in np.round(np.arange(0.05, 0.951, 0.025), 3))
SWEEP_VALUES.update({name: HIERARCHY_THRESHOLDS for name in HIERARCHY_METHODS})
_FIXED_VALUES.update({name: threshold for name, (_, threshold, _) in HIERARCHY_METHODS.items()})
PARAMETER_NAMES.update({name: "threshold" for name in HIERARCHY_METHODS})
# Learned hierarchies: method name -> shipped scorer; threshold from the scorer's val record.
LEARNED_METHODS = {"binmap-learned": "learned", "learned-no-codes": "learned-no-codes"}
SCORER_METHOD = "binmap-learned"  # the learned method that takes another scorer file
SWEEP_VALUES.update({name: HIERARCHY_THRESHOLDS for name in LEARNED_METHODS})
PARAMETER_NAMES.update({name: "threshold" for name in LEARNED_METHODS})
COUNT_SUFFIX = "-n"  # "<hierarchical method>-n": cut every image at n_segments instead
HIERARCHY_COUNTS = (3.0, 5.0, 10.0, 20.0, 30.0, 50.0, 80.0, 120.0, 200.0)
# The learned hierarchies' ODS number of segments on the first 50 BSDS500 val images (README,
# "Learned merging"), as HIERARCHY_METHODS records the hand-set ones'.
LEARNED_COUNTS = {"binmap-learned": 10, "learned-no-codes": 10}
COUNTS = {**LEARNED_COUNTS, **{name: count for name, (_, _, count) in HIERARCHY_METHODS.items()}}
SWEEP_VALUES.update({name + COUNT_SUFFIX: HIERARCHY_COUNTS for name in COUNTS})
_FIXED_VALUES.update({name + COUNT_SUFFIX: float(count) for name, count in COUNTS.items()})
PARAMETER_NAMES.update({name + COUNT_SUFFIX: "n_segments" for name in COUNTS})


class _DefaultValues(Mapping):
    """Each method's main parameter value, keyed like ``SWEEP_VALUES``: fixed ones, and the learned
    hierarchies' thresholds read from their shipped scorers' records on first use (importing
    this module loads no scorer)."""

    def __getitem__(self, key: str) -> float:
        if key in LEARNED_METHODS:
            return shipped_scorer(LEARNED_METHODS[key]).threshold
        return _FIXED_VALUES[key]

    def __iter__(self) -> Iterator[str]:
        return iter([*_FIXED_VALUES, *LEARNED_METHODS])

    def __len__(self) -> int:
        return len(_FIXED_VALUES) + len(LEARNED_METHODS)


DEFAULT_VALUES: Mapping[str, float] = _DefaultValues()


@dataclass(frozen=True)
class Method:
    """A named method: which superpixels, and which binary map (if any) merges them."""

    name: str
    superpixels: str
    map_variant: str | None  # None: superpixels alone; "itq" or "ft": merge with that map; "edges": ITQ + HED edges
    weights: MergeWeights | None = None  # hierarchical merging with these cues
    by_count: bool = False  # cut the hierarchy at n_segments rather than at a threshold
    scorer: str | None = None  # hierarchical merging ordered by this learned scorer (shipped name or .npz)

    @property
    def hierarchical(self) -> bool:
        """Whether the method cuts a merge hierarchy (hand-set cues or a learned scorer)."""
        return self.weights is not None or self.scorer is not None

    @property
    def parameter_key(self) -> str:
        """Key of the method's parameter in ``SWEEP_VALUES``, ``DEFAULT_VALUES``, ``PARAMETER_NAMES``."""
        return self.name if self.hierarchical else self.superpixels

    def superpixel_params(self, value: float) -> dict:
        """Keyword arguments of :func:`compute_superpixels` for parameter ``value``."""
        key = PARAMETER_NAMES[self.superpixels]
        return {key: int(value) if key == "n_segments" else float(value)}

    def segment_options(self, value: float, hamming: int = 0, merge: str = "adjacent") -> dict:
        """Keyword arguments of :func:`binmap_tf.segmentation.pipeline.segment` (and ``segment_with_map``) that make
        this method at parameter ``value``: a method is a setting of the one pipeline.

        ``hamming`` and ``merge`` are the flat merge's options, used by ``binmap-*`` methods only.
        """
        if self.hierarchical:
            cut = {"segments": int(value)} if self.by_count else {"threshold": float(value)}
            if self.scorer is not None:  # the scorer's recorded first level (superpixels=None)
                return {"merge": "hierarchy", "scorer": self.scorer, **cut}
            return {"superpixels": self.superpixels, "merge": "hierarchy", "weights": self.weights, **cut,
                    **self.superpixel_params(DEFAULT_VALUES[self.superpixels])}
        flat = {"merge": "none"} if self.map_variant is None else {"merge": merge, "hamming": hamming}
        return {"superpixels": self.superpixels, **flat, **self.superpixel_params(value)}


def parse_method(name: str, scorer: str | None = None) -> Method:
    """``egs``, ``slic``, ``binmap-egs``, ``binmap-slic``, ``binmap-egs-ft``, ``binmap-slic-ft``,
    a hierarchical method of ``HIERARCHY_METHODS``, optionally with ``COUNT_SUFFIX``, or a learned
    one of ``LEARNED_METHODS`` (also with ``COUNT_SUFFIX``); ``scorer`` (an ``.npz``) replaces the
    shipped scorer of :data:`SCORER_METHOD`."""
    base = name.removesuffix(COUNT_SUFFIX)
    if base in LEARNED_METHODS:  # starts from the superpixels its scorer was trained on
        source = scorer if scorer is not None and base == SCORER_METHOD else LEARNED_METHODS[base]
        level = resolve_scorer(source).info["first_level"]["superpixels"]
        return Method(name, level, "edges", scorer=source, by_count=base != name)
    if base in HIERARCHY_METHODS:
        return Method(name, "egs", "edges", HIERARCHY_METHODS[base][0], by_count=base != name)
    parts = name.split("-")
    if parts[0] in DEFAULT_VALUES and len(parts) == 1:
        return Method(name, parts[0], None)
    if parts[0] == "binmap" and len(parts) in (2, 3) and parts[1] in DEFAULT_VALUES:
        if len(parts) == 2 or parts[2] == "ft":
            return Method(name, parts[1], "itq" if len(parts) == 2 else "ft")
    raise ValueError(f"unknown method {name!r}; use egs, slic, binmap-egs, binmap-slic, "
                     f"binmap-egs-ft, binmap-slic-ft, {', '.join(COUNTS)} (each also with {COUNT_SUFFIX!r})")


@dataclass
class MethodOutput:
    """Labels of one method on one image, with its counts and host-side seconds."""

    labels: np.ndarray
    n_superpixels: int
    seconds: float


def run_method(method: Method, value: float, image: np.ndarray, binary_map: BinaryMap | None,
               stages: StageCache, hamming: int = 0, merge: str = "adjacent",
               working_pixels: int | None = DEFAULT_WORKING_PIXELS) -> MethodOutput:
    """Segment ``image`` with ``method`` at parameter ``value`` through the one pipeline,
    :func:`binmap_tf.segmentation.pipeline.segment_with_map`, at ``working_pixels`` (``binary_map``
    is of :func:`~binmap_tf.segmentation.pipeline.working_image`; None: of the image itself).

    ``stages`` is the image's :class:`~binmap_tf.segmentation.pipeline.StageCache`: a baseline and its binary-map
    variant share one superpixel computation, and every threshold of a hierarchy one merge tree.
    ``seconds`` counts the host-side stages (superpixels, codes, merging), reused ones included.
    """
    if method.map_variant is not None and binary_map is None:
        raise ValueError(f"method {method.name} needs a binary map")
    result = segment_with_map(image, binary_map if method.map_variant else None, stages=stages,
                              working_pixels=working_pixels, **method.segment_options(value, hamming, merge))
    timings = result.timings
    return MethodOutput(result.labels, result.n_superpixels,
                        timings["superpixels"] + timings["assign"] + timings["merge"])
