"""Segmentation with a CNN-aware binary map: the whole method of the paper (its Fig. 1).

(a) the CNN gives a k-bit binary map of the image; (b) low-level superpixels (EGS or SLIC)
are computed on the image; (c) each superpixel takes the code of its region of the map; (d)
superpixels with equal (or, with ``hamming > 0``, close) codes are merged into segments.
With ``merge="hierarchy"`` (the default) step (d) instead builds a merge tree
(:mod:`binmap_tf.segmentation.hierarchy`), ordered by a learned scorer of the regions' codes, the network's edge
map, colour and texture (:mod:`binmap_tf.segmentation.merge_scorer`; or the hand-set cue mix), and cuts it at a
``threshold`` or a number of ``segments``. The paper's flat merge is ``merge="adjacent"``.

:func:`segment` runs all four; :func:`segment_with_map` runs (b)-(d) on the host from a
binary map computed elsewhere (a cache, a TF Serving client, a batch through
:meth:`~binmap_tf.binary_map.model.BinaryMapper.map_batch`). It is the one segmentation pipeline: the
command line, ``evaluate`` (whose methods are settings of it), the demo, the serving client
and the batch pipeline all call it.

Command line (:mod:`binmap_tf.cli.segment`)::

    binmap-segment IMAGE_OR_FOLDER... --out DIR [--superpixels egs|slic|watershed]
        [--merge hierarchy [--scorer NAME|PATH] [--threshold T | --segments K]
         | --merge adjacent|global [--hamming N]]
        [superpixel options]
        [model options | --serving HOST:PORT]

writes, per image, ``<stem>_labels.png`` (16-bit segment labels), ``<stem>_labels.npy``
(int32), ``<stem>_overlay.png`` (segment boundaries on the image), ``<stem>_binary_map.png``
and ``<stem>.json`` (counts, settings and seconds per stage). With ``--serving`` the CNN runs on
a model server (see ``serving/README.md``) and only steps (b)-(d) run here.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Iterator

import numpy as np

from binmap_tf.common.images import as_rgb_uint8, check_shape
from binmap_tf.segmentation.hierarchy import (
    DEFAULT_THRESHOLD,
    DEFAULT_WEIGHTS,
    MergeTree,
    MergeWeights,
    build_hierarchy,
    check_segment_count,
)
from binmap_tf.segmentation.merge import MERGE_MODES, check_merge_options, group_superpixels, superpixel_codes
from binmap_tf.segmentation.merge_scorer import HAND_SET, MergeScorer, resolve_scorer
from binmap_tf.segmentation.resolution import DEFAULT_WORKING_PIXELS, MIN_IMAGE_SIDE, refine_labels, resize_image
from binmap_tf.segmentation.resolution import working_shape as segmentation_shape
from binmap_tf.segmentation.superpixels import (
    EDGE_METHODS,
    compute_superpixels,
    superpixel_params,
    working_shape,
)

# Step (d): none (the superpixels are the segments), the flat merges of binmap_tf.segmentation.merge, or a
# merge hierarchy cut at one level.
MERGES = ("none", *MERGE_MODES, "hierarchy")
# The default step (d): the hierarchy ordered by the shipped learned scorer, the best segmentation
# on BSDS500 val (README, "Learned merging"); the paper's flat merge is merge="adjacent".
DEFAULT_MERGE = "hierarchy"
DEFAULT_SCORER = "learned"

if TYPE_CHECKING:
    from binmap_tf.binary_map.maps import BinaryMap
    from binmap_tf.binary_map.model import BinaryMapper


@dataclass
class SegmentationResult:
    """One image's segmentation and what it was built from.

    Attributes
    ----------
    labels : ndarray of int32, shape (H, W)
        Segment ``0 .. m-1`` of every pixel of the image, at its full resolution.
    superpixels : ndarray of int32, shape (h, w)
        Superpixel ``0 .. n-1`` of every pixel (step b) of the working image: the image resized to
        the working size (``options["working_shape"]``), or the image itself at that size.
    superpixel_codes : ndarray of uint8, shape (n, k)
        Code assigned to each superpixel by majority vote on the binary map (step c).
    segment_of : ndarray of int32, shape (n,)
        Segment of each superpixel (step d): ``labels == segment_of[superpixels]``.
    codes : ndarray of uint8, shape (m, k)
        Code of each segment, by majority vote over its pixels; with ``hamming=0`` it is the
        code shared by all of its superpixels. ``(m, 0)`` without a binary map.
    binary_map : BinaryMap or None
        The binary map (step a); None for ``merge="none"`` without a map.
    timings : dict of str to float
        Seconds per stage: ``cnn`` (absent when the map was passed in), ``superpixels``,
        ``assign``, ``merge`` and ``total`` (the whole call); for an image not at the working size
        also ``resize`` (to the working size) and ``refine`` (labels back at its size).
    options : dict
        The settings used: ``superpixels``, ``superpixel_params`` (defaults filled in),
        ``hamming``, ``merge`` and, for ``merge="hierarchy"``, ``cut`` (``{"threshold": t}`` or
        ``{"segments": K}``) and the cues' ``weights``; ``superpixel_working_shape`` when the
        image was over :data:`~binmap_tf.segmentation.superpixels.SUPERPIXEL_MAX_PIXELS` and its superpixels
        were computed downscaled to that (height, width); ``working_shape`` when the image was
        segmented at that working size (see ``working_pixels``).
    hierarchy : MergeTree or None
        The merge tree of ``merge="hierarchy"`` (None otherwise), over the superpixels: cut it again
        at any level with :meth:`cut` (full resolution) or :meth:`MergeTree.cut` (working size).
    full_resolution : callable or None
        Working-size labels -> labels at the image's size (upsampled and refined, or downsampled:
        :func:`~binmap_tf.segmentation.resolution.refine_labels`); None when the image was segmented
        at its own size.
    """

    labels: np.ndarray
    superpixels: np.ndarray
    superpixel_codes: np.ndarray
    segment_of: np.ndarray
    codes: np.ndarray
    binary_map: BinaryMap | None
    timings: dict[str, float]
    options: dict[str, Any]
    hierarchy: MergeTree | None = None
    full_resolution: Callable[[np.ndarray], np.ndarray] | None = dataclasses.field(default=None, repr=False)

    @property
    def n_segments(self) -> int:
        return len(self.codes)

    @property
    def n_superpixels(self) -> int:
        return len(self.superpixel_codes)

    def _tree(self) -> MergeTree:
        if self.hierarchy is None:
            raise ValueError(f"merge={self.options['merge']!r} builds no merge tree; segment with "
                             "merge='hierarchy' (the default) to cut other levels or get a UCM")
        return self.hierarchy

    def cut(self, n_segments: int | None = None, threshold: float | None = None) -> np.ndarray:
        """Labels of another level of the merge tree: ``n_segments`` regions or the merges up to
        ``threshold``, at the image's full resolution; neither the CNN nor the merge runs again."""
        labels = self._tree().segment_of(n_segments=n_segments, threshold=threshold)[self.superpixels]
        return labels if self.full_resolution is None else self.full_resolution(labels)

    def ucm(self) -> np.ndarray:
        """The whole hierarchy as an ultrametric contour map in the BSDS ``ucm2`` layout
        (shape ``(2h+1, 2w+1)`` of the working image, BSDS500's 481x321 pixels by default: a BSDS
        image's own size); see :meth:`MergeTree.ucm`."""
        return self._tree().ucm()

    def summary(self) -> dict[str, Any]:
        """Counts, map size, settings and timings as plain JSON-ready values."""
        has_map = self.binary_map is not None
        return {
            "n_segments": self.n_segments,
            "n_superpixels": self.n_superpixels,
            "bits": self.binary_map.n_bits if has_map else None,
            "image_shape": list(self.labels.shape),
            "grid_shape": list(self.binary_map.grid_shape) if has_map else None,
            **self.options,
            "timings": {stage: round(seconds, 6) for stage, seconds in self.timings.items()},
        }


@contextlib.contextmanager
def _stage(timings: dict[str, float], name: str) -> Iterator[None]:
    """Record the seconds the block takes as ``timings[name]``."""
    start = time.perf_counter()
    yield
    timings[name] = time.perf_counter() - start


class StageCache:
    """Stage results of one image, shared by several settings of the pipeline.

    A sweep segments one image many times: a baseline and its binary-map variant share one
    superpixel computation, every threshold of a hierarchy shares one merge tree. Pass the same
    cache to :func:`segment_with_map` for all settings of one image; each stage reports the
    seconds it took when it was computed, so timings do not depend on the order of settings.
    """

    def __init__(self) -> None:
        self._entries: dict[tuple, tuple[Any, float]] = {}

    def get(self, key: tuple, compute: Callable[[], Any]) -> tuple[Any, float]:
        """``compute()`` and its seconds, computed on the first call with ``key`` only."""
        if key not in self._entries:
            start = time.perf_counter()
            value = compute()
            self._entries[key] = (value, time.perf_counter() - start)
        return self._entries[key]


def choose_scorer(merge: str, scorer: MergeScorer | str | None, weights: MergeWeights | None = None
                  ) -> MergeScorer | None:
    """The learned scorer step (d) merges by: ``scorer`` resolved (a shipped name or an ``.npz``);
    with neither ``scorer`` nor ``weights``, a hierarchy's default :data:`DEFAULT_SCORER`; None for
    the hand-set cues (``scorer="hand-set"`` or ``weights``) and for the flat merges."""
    if scorer is None:
        return resolve_scorer(DEFAULT_SCORER) if merge == "hierarchy" and weights is None else None
    if merge != "hierarchy":
        raise ValueError("scorer belongs to a merge hierarchy; pass merge='hierarchy' with it")
    if isinstance(scorer, str) and scorer == HAND_SET:
        return None
    try:
        return resolve_scorer(scorer)
    except ValueError as error:
        raise ValueError(f"{error}; or pass '{HAND_SET}' for the hand-set cues") from None


def _hierarchy_cut(merge: str, hamming: int, segments: int | None, threshold: float | None,
                   weights: MergeWeights | None, scorer: MergeScorer | None = None) -> dict[str, Any]:
    """Check the step-(d) options; return the hierarchy's cut (``{}`` for a flat merge or none)."""
    if merge != "hierarchy":
        if segments is not None or threshold is not None or weights is not None or scorer is not None:
            raise ValueError("segments, threshold, weights and scorer belong to a merge hierarchy; pass "
                             "merge='hierarchy' with them")
        if merge == "none":
            if hamming != 0:
                raise ValueError("hamming applies to the flat merges; merge='none' keeps the superpixels")
        else:
            check_merge_options(hamming, merge)
        return {}
    if hamming != 0:
        raise ValueError("hamming applies to the flat merges (merge='adjacent' or 'global'); a hierarchy is cut "
                         "by threshold or segments")
    if weights is not None:
        if scorer is not None:
            raise ValueError("pass weights (hand-set cues) or scorer (learned), not both")
        weights.normalised()  # ValueError for invalid weights
    if segments is not None and threshold is not None:
        raise ValueError("pass one of segments and threshold, not both")
    if segments is not None:
        return {"segments": check_segment_count(segments, "segments")}
    if threshold is None:  # the val-chosen threshold of the learned scorer, or of the hand-set cues
        threshold = scorer.threshold if scorer is not None and scorer.threshold is not None else DEFAULT_THRESHOLD
    if not 0 <= threshold <= 1:
        raise ValueError(f"threshold is a merge height in [0, 1], got {threshold!r}")
    return {"threshold": float(threshold)}


def first_level(superpixels: str | None, params: dict[str, Any], scorer: MergeScorer | None) -> tuple[str, dict]:
    """The superpixels to start from: the first level the learned ``scorer`` was trained on (its
    record's ``first_level``, updated by ``params``) unless ``superpixels`` names another method
    (then that one with ``params``); without a scorer, ``superpixels`` or else EGS. Naming the
    scorer's own method (the demo's default, ``--superpixels watershed``) keeps its recorded settings."""
    recorded = dict(scorer.info.get("first_level", {})) if scorer is not None else {}
    method = recorded.pop("superpixels", "egs")
    if superpixels is not None and superpixels != method:
        return superpixels, params
    return method, {**recorded, **params}


def needs_edges(superpixels: str | None, merge: str | None) -> bool:
    """Whether segmenting with these options reads the map's edge map (a mapper with ``edges=True``,
    locally or served): the merge hierarchy's cues and the learned scorer's features do, and so does a
    first level computed from the edges. ``merge`` None stands for :data:`DEFAULT_MERGE`;
    ``superpixels`` None for the default first level (a scorer's comes with the hierarchy)."""
    return (DEFAULT_MERGE if merge is None else merge) == "hierarchy" or superpixels in EDGE_METHODS


def resolve_options(superpixels: str, hamming: int, merge: str, params: dict[str, Any],
                    segments: int | None = None, threshold: float | None = None,
                    weights: MergeWeights | None = None, scorer: MergeScorer | None = None) -> dict[str, Any]:
    """Check the options of :func:`segment` (before any expensive stage); return them with defaults
    filled in, as :attr:`SegmentationResult.options` records them. ``ValueError`` names a bad one.
    ``scorer`` is a resolved :class:`~binmap_tf.segmentation.merge_scorer.MergeScorer` (see :func:`resolve_scorer`)."""
    if merge not in MERGES:
        raise ValueError(f"unknown merge mode {merge!r}; choose one of {MERGES}")
    cut = _hierarchy_cut(merge, hamming, segments, threshold, weights, scorer)
    options = {"superpixels": superpixels, "superpixel_params": superpixel_params(superpixels, **params),
               "hamming": int(hamming), "merge": merge}
    if merge != "hierarchy":
        return options
    if scorer is not None:
        return {**options, "cut": cut, "scorer": scorer.name}
    cues = DEFAULT_WEIGHTS if weights is None else weights
    return {**options, "cut": cut, "weights": dataclasses.asdict(cues)}


def segment_with_map(image: np.ndarray, binary_map: BinaryMap | None, superpixels: str | None = None, hamming: int = 0,
                     merge: str = DEFAULT_MERGE, *, segments: int | None = None, threshold: float | None = None,
                     weights: MergeWeights | None = None, scorer: MergeScorer | str | None = None,
                     stages: StageCache | None = None, working_pixels: int | None = DEFAULT_WORKING_PIXELS,
                     working: np.ndarray | None = None, **superpixel_params: Any) -> SegmentationResult:
    """Steps (b)-(d) on the host: superpixels of ``image``, codes from ``binary_map``, merging.

    This is the one segmentation pipeline: :func:`segment`, the ``segment`` and ``evaluate``
    commands, the demo, the serving client and the batch pipeline all call it. Parameters are
    those of :func:`segment`. ``image`` is the image at its own size; ``binary_map`` must have been
    computed for its working image (:func:`working_image`: the image resized to about
    ``working_pixels``) and, for ``merge="hierarchy"`` with an edge cue, carry the edge map (a
    mapper built with ``edges=True``). ``working`` passes that working image when the caller has
    it already (it is made again otherwise). The map may be None only for ``merge="none"`` (the
    superpixels alone, e.g. the EGS and SLIC baselines). ``stages`` shares the superpixels and merge
    trees between calls on the same image (see :class:`StageCache`).
    """
    start = time.perf_counter()
    scorer = choose_scorer(merge, scorer, weights)
    superpixels, superpixel_params = first_level(superpixels, superpixel_params, scorer)
    options = resolve_options(superpixels, hamming, merge, superpixel_params, segments, threshold, weights, scorer)
    full_shape = tuple(np.shape(image)[:2])
    check_image_shape(full_shape, working_pixels)
    image_shape = segmentation_shape(full_shape, working_pixels)
    timings: dict[str, float] = {}
    full_image = image
    if image_shape != full_shape:
        options["working_shape"] = list(image_shape)
        if working is None or tuple(np.shape(working)[:2]) != image_shape:
            with _stage(timings, "resize"):
                working = working_image(image, working_pixels)
        image = working
    if working_shape(image_shape) != image_shape:  # recorded with the result, as the warning says
        options["superpixel_working_shape"] = list(working_shape(image_shape))
    if binary_map is None and merge != "none":
        raise ValueError(f"merge={merge!r} needs the image's binary map; pass one or use merge='none'")
    if binary_map is not None and image_shape != tuple(binary_map.image_shape):
        size = "its own size" if image_shape == full_shape else f"its working size {image_shape}"
        raise ValueError(f"the binary map was computed for an image of {tuple(binary_map.image_shape)}, "
                         f"not this {full_shape} image at {size}; pass the map of working_image(image)")
    if scorer is not None:  # before the superpixels: a map the scorer cannot read fails at once
        scorer.check_map(binary_map)
    stages = StageCache() if stages is None else stages
    params = options["superpixel_params"]
    superpixel_key = ("superpixels", superpixels, tuple(sorted(params.items())))
    edges = None
    if superpixels in EDGE_METHODS:  # superpixels from the map's edges: key them by the map too
        if binary_map is None or binary_map.edges is None:
            raise ValueError(f"{superpixels} superpixels need a binary map with edges (BinaryMapper(edges=True))")
        edges, superpixel_key = binary_map.edges, (*superpixel_key, id(binary_map))
    superpixel_labels, timings["superpixels"] = stages.get(  # (b)
        superpixel_key, lambda: compute_superpixels(image, superpixels, edges=edges, **params))
    with _stage(timings, "assign"):  # (c)
        cell_index = None if binary_map is None else binary_map.cell_index()
        codes = _codes(superpixel_labels, binary_map, cell_index)
    tree, tree_seconds = None, 0.0
    if merge == "hierarchy":
        cues = None if scorer is not None else MergeWeights(**options["weights"])
        # The tree depends on the map too: key it by the map object, which the entry keeps alive
        # (a scorer is keyed by identity too).
        (tree, _), tree_seconds = stages.get(
            ("tree", superpixel_key, cues, scorer, id(binary_map)),
            lambda: (build_hierarchy(image, superpixel_labels, binary_map, cues, scorer=scorer), binary_map))
    with _stage(timings, "merge"):  # (d)
        if tree is not None:
            segment_of = tree.segment_of(n_segments=segments, threshold=options["cut"].get("threshold"))
        elif merge == "none":
            segment_of = np.arange(len(codes), dtype=np.int32)
        else:
            segment_of = group_superpixels(superpixel_labels, codes, hamming, merge)
        labels = segment_of[superpixel_labels]
        segment_codes = _codes(labels, binary_map, cell_index)
    timings["merge"] += tree_seconds  # building the tree is part of merging, also when it was reused
    full_resolution = None
    if image_shape != full_shape:  # labels back at the image's size, boundaries on its own edges
        full_resolution = functools.partial(refine_labels, image=as_rgb_uint8(full_image))
        with _stage(timings, "refine"):
            labels = full_resolution(labels)
    timings["total"] = time.perf_counter() - start
    return SegmentationResult(labels=labels, superpixels=superpixel_labels, superpixel_codes=codes,
                              segment_of=segment_of, codes=segment_codes, binary_map=binary_map,
                              timings=timings, options=options, hierarchy=tree, full_resolution=full_resolution)


def check_image_shape(shape: tuple[int, int], working_pixels: int | None = DEFAULT_WORKING_PIXELS) -> None:
    """:class:`~binmap_tf.common.images.ImageError` for an image of ``shape`` over the hard pixel limit
    or, brought to the working size (``working_pixels`` not None), with a side under
    :data:`~binmap_tf.segmentation.resolution.MIN_IMAGE_SIDE`."""
    check_shape(shape, min_side=1 if working_pixels is None else MIN_IMAGE_SIDE)


def working_image(image: np.ndarray, working_pixels: int | None = DEFAULT_WORKING_PIXELS) -> np.ndarray:
    """The image the CNN and the host stages run on: ``image`` resized to about ``working_pixels``
    pixels, aspect kept, up or down (uint8 RGB; ``image`` itself at that size or with
    ``working_pixels`` None); see :mod:`binmap_tf.segmentation.resolution`. Pass its binary map to
    :func:`segment_with_map`. An image :func:`check_image_shape` refuses raises its ``ImageError``."""
    check_image_shape(np.shape(image)[:2], working_pixels)
    shape = segmentation_shape(np.shape(image)[:2], working_pixels)
    return image if shape == tuple(np.shape(image)[:2]) else resize_image(as_rgb_uint8(image), shape)


def _codes(labels: np.ndarray, binary_map: BinaryMap | None, cell_index: np.ndarray | None) -> np.ndarray:
    """Voted code of every region of ``labels``; ``(n, 0)`` without a binary map."""
    if binary_map is None:
        return np.zeros((int(labels.max()) + 1, 0), np.uint8)
    return superpixel_codes(labels, binary_map.bits, cell_index)


@functools.lru_cache(maxsize=2)
def default_mapper(edges: bool = False) -> BinaryMapper:
    """The default :class:`~binmap_tf.binary_map.model.BinaryMapper` (vgg16-hed, 8 bits), built once; with
    ``edges`` its maps also carry HED's edge map, which ``merge="hierarchy"`` needs."""
    from binmap_tf.binary_map.model import BinaryMapper

    return BinaryMapper(edges=True) if edges else BinaryMapper()


def segment(image: np.ndarray, mapper: Callable[[np.ndarray], BinaryMap] | None = None, *,
            superpixels: str | None = None, hamming: int = 0, merge: str = DEFAULT_MERGE, segments: int | None = None,
            threshold: float | None = None, weights: MergeWeights | None = None,
            scorer: MergeScorer | str | None = None, binary_map: BinaryMap | None = None,
            working_pixels: int | None = DEFAULT_WORKING_PIXELS, **superpixel_params: Any) -> SegmentationResult:
    """Segment ``image`` by merging superpixels by their codes in its CNN-aware binary map.

    By default the superpixels (a watershed of the network's edges) are merged greedily in the
    order of the shipped learned scorer and the tree is cut at its BSDS500-val threshold: the
    best segmentation of the package. ``merge="adjacent"`` is the paper's method: superpixels
    with equal codes merged.

    Parameters
    ----------
    image : ndarray
        (H, W) grey or (H, W, 3|4) RGB(A) image, uint8 or floats in [0, 1].
    mapper : callable, optional
        ``image -> BinaryMap``; default :func:`default_mapper` (vgg16-hed, 8 bits, fitted ITQ;
        with HED's edges for ``merge="hierarchy"``). Any callable works, e.g. a client of the
        served model.
    superpixels : {"egs", "slic", "watershed"}, optional
        Low-level superpixels to start from: with a learned scorer (the default hierarchy) the
        first level it was trained on (``"watershed"`` of the HED edges for the shipped ones),
        else ``"egs"`` (the paper's main baseline). ``"watershed"`` needs a map with edges.
    hamming : int
        Merge superpixels whose codes differ in at most this many bits; 0 (default) is the
        paper's "zero distance in Hamming space".
    merge : {"hierarchy", "adjacent", "global", "none"}
        ``"hierarchy"`` (default) merges touching regions greedily, ordered by ``scorer`` (or
        the hand-set ``weights`` of codes, the network's edges and colour;
        :func:`binmap_tf.segmentation.hierarchy.build_hierarchy`), and cuts the tree at ``threshold`` or
        ``segments``; the map must carry edges (vgg16-hed). ``"adjacent"`` (the paper's) merges
        touching superpixels with close codes, ``"global"`` any superpixels with close codes;
        see :func:`binmap_tf.segmentation.merge.merge_superpixels`.
        ``"none"`` keeps the superpixels as segments (the EGS and SLIC baselines); the CNN
        does not run unless a ``mapper`` is passed.
    segments : int, optional
        With ``merge="hierarchy"``: cut the tree at this many segments.
    threshold : float, optional
        With ``merge="hierarchy"``: keep the merges up to this height in [0, 1] (default: the
        learned scorer's own threshold, chosen on BSDS500 val; for the hand-set cues
        :data:`~binmap_tf.segmentation.hierarchy.DEFAULT_THRESHOLD`).
    weights : MergeWeights, optional
        With ``merge="hierarchy"``: merge by hand-set weights of the cues instead of a learned
        scorer (``scorer="hand-set"`` alone uses :data:`~binmap_tf.segmentation.hierarchy.DEFAULT_WEIGHTS`:
        codes, edges and colour).
    scorer : MergeScorer or str, optional
        With ``merge="hierarchy"``: the learned scorer that orders the merges: a
        :class:`~binmap_tf.segmentation.merge_scorer.MergeScorer`, a shipped name (``"learned"``, the default,
        or ``"learned-no-codes"``) or an ``.npz`` path; ``"hand-set"`` for the hand-set cues. It
        needs a map with edges and, unless it ignores codes, codes of its length (8 bits).
    binary_map : BinaryMap, optional
        A map already computed for this image's working image; ``mapper`` is then not used.
    working_pixels : int or None
        Every image is segmented resized to about this many pixels (aspect kept, down or up; default
        BSDS500's 481x321, the scale every learned part was trained at), so the segmentation does
        not depend on the size the image comes at, and its labels come back at its size: for a
        larger image upsampled with boundaries refined on its own pixels, for a smaller one
        downsampled (:mod:`binmap_tf.segmentation.resolution`); its sides must be at least
        :data:`~binmap_tf.segmentation.resolution.MIN_IMAGE_SIDE` pixels. None segments every
        image at its own size (the CNN then runs on tiles; slower and coarser on large photos).
    **superpixel_params
        Options of the superpixel method: ``scale`` (k), ``sigma``, ``min_size`` for EGS;
        ``n_segments``, ``compactness``, ``sigma`` for SLIC.

    Returns
    -------
    SegmentationResult
        Segment labels, the superpixels, codes, the binary map and seconds per stage.

    Notes
    -----
    Paper names: the binary map is the output of *hconv8*; :attr:`SegmentationResult.superpixels`
    are step (b) of Fig. 1, ``superpixel_codes`` step (c), ``labels`` the merged segmentation
    of step (d) / Fig. 3(e). Every option is checked before the CNN runs.

    References
    ----------
    .. [1] M. Ravanbakhsh, H. Mousavi, M. Nabi, M. Rastegari and C. Regazzoni, "CNN-aware
       binary map for general semantic segmentation", ICIP 2016.

    Examples
    --------
    >>> from skimage import data
    >>> from binmap_tf import segment
    >>> image = data.astronaut()[::2, ::2]  # (256, 256, 3) uint8
    >>> result = segment(image)
    >>> result.labels.shape, result.labels.dtype
    ((256, 256), dtype('int32'))
    >>> 1 <= result.n_segments <= result.n_superpixels
    True
    >>> fine = result.cut(n_segments=20)  # another level of the same tree: no CNN, no re-merge
    >>> int(fine.max()) + 1
    20
    >>> result.ucm().shape  # the whole hierarchy, BSDS ucm2 layout, at the working size (393x393)
    (787, 787)
    >>> paper = segment(image, merge="adjacent", superpixels="egs")  # the paper's flat merge
    >>> paper.hierarchy is None
    True
    """
    start = time.perf_counter()
    chosen = choose_scorer(merge, scorer, weights)
    level, level_params = first_level(superpixels, superpixel_params, chosen)
    resolve_options(level, hamming, merge, level_params, segments, threshold, weights, chosen)
    timings: dict[str, float] = {}
    with _stage(timings, "resize"):
        working = working_image(image, working_pixels)
    if working is image:  # segmented at its own size: nothing was resized
        del timings["resize"]
    edges = needs_edges(level, merge)
    if binary_map is None and (merge != "none" or mapper is not None or edges):
        mapper = mapper if mapper is not None else default_mapper(edges=edges)
        with _stage(timings, "cnn"):  # (a)
            binary_map = mapper(working)
    result = segment_with_map(image, binary_map, superpixels, hamming, merge, segments=segments,
                              threshold=threshold, weights=weights, scorer=scorer, working_pixels=working_pixels,
                              working=working, **superpixel_params)
    result.timings = {**timings, **result.timings, "total": time.perf_counter() - start}
    return result


def segment_labels(image: np.ndarray, mapper: Callable[[np.ndarray], BinaryMap] | None = None,
                   **options: Any) -> np.ndarray:
    """Segment labels only (scikit-image style ``image -> (H, W) int32``); options as :func:`segment`."""
    return segment(image, mapper, **options).labels
