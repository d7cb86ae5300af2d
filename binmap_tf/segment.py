"""Segmentation with a CNN-aware binary map: the whole method of the paper (its Fig. 1).

(a) the CNN gives a k-bit binary map of the image; (b) low-level superpixels (EGS or SLIC)
are computed on the image; (c) each superpixel takes the code of its region of the map; (d)
superpixels with equal (or, with ``hamming > 0``, close) codes are merged into segments.
With ``merge="hierarchy"`` step (d) instead builds a merge tree (:mod:`binmap_tf.hierarchy`:
codes, the network's edge map and colour) and cuts it at a ``threshold`` or a number of
``segments``.

:func:`segment` runs all four; :func:`segment_with_map` runs (b)-(d) on the host from a
binary map computed elsewhere (a cache, a TF Serving client, a batch through
:meth:`~binmap_tf.model.BinaryMapper.map_batch`).

Command line::

    python -m binmap_tf.segment IMAGE_OR_FOLDER... --out DIR [--superpixels egs|slic]
        [--hamming N] [--merge adjacent|global|hierarchy [--threshold T | --segments K]]
        [superpixel options]
        [model options | --serving HOST:PORT]

writes, per image, ``<stem>_labels.png`` (16-bit segment labels), ``<stem>_labels.npy``
(int32), ``<stem>_overlay.png`` (segment boundaries on the image), ``<stem>_binary_map.png``
and ``<stem>.json`` (counts, settings and seconds per stage). With ``--serving`` the CNN runs on
a model server (see ``serving/README.md``) and only steps (b)-(d) run here.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

import numpy as np

from binmap_tf.hierarchy import DEFAULT_THRESHOLD, MergeTree, build_hierarchy, check_segment_count
from binmap_tf.images import as_rgb_uint8
from binmap_tf.merge import MERGE_MODES, check_merge_options, group_superpixels, superpixel_codes
from binmap_tf.superpixels import (
    EGS_MIN_SIZE,
    EGS_SCALE,
    EGS_SIGMA,
    SLIC_COMPACTNESS,
    SLIC_N_SEGMENTS,
    SUPERPIXEL_METHODS,
    compute_superpixels,
    superpixel_params,
)

# Step (d): the flat merges of binmap_tf.merge, or a merge hierarchy cut at one level.
MERGES = (*MERGE_MODES, "hierarchy")

if TYPE_CHECKING:
    from binmap_tf.binary_map import BinaryMap
    from binmap_tf.model import BinaryMapper


@dataclass
class SegmentationResult:
    """One image's segmentation and what it was built from.

    Attributes
    ----------
    labels : ndarray of int32, shape (H, W)
        Segment ``0 .. m-1`` of every pixel.
    superpixels : ndarray of int32, shape (H, W)
        Superpixel ``0 .. n-1`` of every pixel (step b).
    superpixel_codes : ndarray of uint8, shape (n, k)
        Code assigned to each superpixel by majority vote on the binary map (step c).
    segment_of : ndarray of int32, shape (n,)
        Segment of each superpixel (step d): ``labels == segment_of[superpixels]``.
    codes : ndarray of uint8, shape (m, k)
        Code of each segment, by majority vote over its pixels; with ``hamming=0`` it is the
        code shared by all of its superpixels.
    binary_map : BinaryMap
        The binary map (step a).
    timings : dict of str to float
        Seconds per stage: ``cnn`` (absent when the map was passed in), ``superpixels``,
        ``assign``, ``merge`` and ``total`` (the whole call).
    options : dict
        The settings used: ``superpixels``, ``superpixel_params`` (defaults filled in),
        ``hamming``, ``merge`` and, for ``merge="hierarchy"``, ``cut`` (``{"threshold": t}`` or
        ``{"segments": K}``).
    hierarchy : MergeTree or None
        The merge tree of ``merge="hierarchy"`` (None otherwise): cut it again at any level with
        :meth:`MergeTree.cut` without recomputing anything.
    """

    labels: np.ndarray
    superpixels: np.ndarray
    superpixel_codes: np.ndarray
    segment_of: np.ndarray
    codes: np.ndarray
    binary_map: BinaryMap
    timings: dict[str, float]
    options: dict[str, Any]
    hierarchy: MergeTree | None = None

    @property
    def n_segments(self) -> int:
        return len(self.codes)

    @property
    def n_superpixels(self) -> int:
        return len(self.superpixel_codes)

    def summary(self) -> dict[str, Any]:
        """Counts, map size, settings and timings as plain JSON-ready values."""
        return {
            "n_segments": self.n_segments,
            "n_superpixels": self.n_superpixels,
            "bits": self.binary_map.n_bits,
            "image_shape": list(self.labels.shape),
            "grid_shape": list(self.binary_map.grid_shape),
            **self.options,
            "timings": {stage: round(seconds, 6) for stage, seconds in self.timings.items()},
        }


@contextlib.contextmanager
def _stage(timings: dict[str, float], name: str) -> Iterator[None]:
    """Record the seconds the block takes as ``timings[name]``."""
    start = time.perf_counter()
    yield
    timings[name] = time.perf_counter() - start


def _hierarchy_cut(merge: str, hamming: int, segments: int | None, threshold: float | None) -> dict[str, Any]:
    """Check the step-(d) options; return the hierarchy's cut (``{}`` for a flat merge)."""
    if merge != "hierarchy":
        if segments is not None or threshold is not None:
            raise ValueError("segments and threshold cut a merge hierarchy; pass merge='hierarchy' with them")
        check_merge_options(hamming, merge)
        return {}
    if hamming != 0:
        raise ValueError("hamming applies to the flat merges; a hierarchy is cut by threshold or segments")
    if segments is not None and threshold is not None:
        raise ValueError("pass one of segments and threshold, not both")
    if segments is not None:
        return {"segments": check_segment_count(segments, "segments")}
    threshold = DEFAULT_THRESHOLD if threshold is None else threshold
    if not 0 <= threshold <= 1:
        raise ValueError(f"threshold is a merge height in [0, 1], got {threshold!r}")
    return {"threshold": float(threshold)}


def resolve_options(superpixels: str, hamming: int, merge: str, params: dict[str, Any],
                    segments: int | None = None, threshold: float | None = None) -> dict[str, Any]:
    """Check the options of :func:`segment` (before any expensive stage); return them with defaults
    filled in, as :attr:`SegmentationResult.options` records them. ``ValueError`` names a bad one."""
    if merge not in MERGES:
        raise ValueError(f"unknown merge mode {merge!r}; choose one of {MERGES}")
    cut = _hierarchy_cut(merge, hamming, segments, threshold)
    options = {"superpixels": superpixels, "superpixel_params": superpixel_params(superpixels, **params),
               "hamming": int(hamming), "merge": merge}
    return {**options, "cut": cut} if cut else options


def segment_with_map(image: np.ndarray, binary_map: BinaryMap, superpixels: str = "egs", hamming: int = 0,
                     merge: str = "adjacent", *, segments: int | None = None, threshold: float | None = None,
                     **superpixel_params: Any) -> SegmentationResult:
    """Steps (b)-(d) on the host: superpixels of ``image``, codes from ``binary_map``, merging.

    Parameters are those of :func:`segment`; ``binary_map`` must have been computed for this
    image (its ``image_shape`` equals the image's height and width) and, for
    ``merge="hierarchy"``, carry the edge map (a mapper built with ``edges=True``).
    """
    start = time.perf_counter()
    options = resolve_options(superpixels, hamming, merge, superpixel_params, segments, threshold)
    image_shape = tuple(np.shape(image)[:2])
    if image_shape != tuple(binary_map.image_shape):
        raise ValueError(f"the binary map was computed for an image of {tuple(binary_map.image_shape)}, "
                         f"not {image_shape}; pass the map of this image")
    timings: dict[str, float] = {}
    with _stage(timings, "superpixels"):  # (b)
        superpixel_labels = compute_superpixels(image, superpixels, **options["superpixel_params"])
    with _stage(timings, "assign"):  # (c)
        cell_index = binary_map.cell_index()
        codes = superpixel_codes(superpixel_labels, binary_map.bits, cell_index)
    tree = None
    with _stage(timings, "merge"):  # (d)
        if merge == "hierarchy":
            tree = build_hierarchy(image, superpixel_labels, binary_map)
            segment_of = tree.segment_of(n_segments=segments, threshold=options["cut"].get("threshold"))
        else:
            segment_of = group_superpixels(superpixel_labels, codes, hamming, merge)
        labels = segment_of[superpixel_labels]
        segment_codes = superpixel_codes(labels, binary_map.bits, cell_index)
    timings["total"] = time.perf_counter() - start
    return SegmentationResult(labels=labels, superpixels=superpixel_labels, superpixel_codes=codes,
                              segment_of=segment_of, codes=segment_codes, binary_map=binary_map,
                              timings=timings, options=options, hierarchy=tree)


@functools.lru_cache(maxsize=2)
def default_mapper(edges: bool = False) -> BinaryMapper:
    """The default :class:`~binmap_tf.model.BinaryMapper` (vgg16-hed, 8 bits), built once; with
    ``edges`` its maps also carry HED's edge map, which ``merge="hierarchy"`` needs."""
    from binmap_tf.model import BinaryMapper

    return BinaryMapper(edges=True) if edges else BinaryMapper()


def segment(image: np.ndarray, mapper: Callable[[np.ndarray], BinaryMap] | None = None, *,
            superpixels: str = "egs", hamming: int = 0, merge: str = "adjacent", segments: int | None = None,
            threshold: float | None = None, binary_map: BinaryMap | None = None,
            **superpixel_params: Any) -> SegmentationResult:
    """Segment ``image`` by merging superpixels with equal codes in its CNN-aware binary map.

    Parameters
    ----------
    image : ndarray
        (H, W) grey or (H, W, 3|4) RGB(A) image, uint8 or floats in [0, 1].
    mapper : callable, optional
        ``image -> BinaryMap``; default :func:`default_mapper` (vgg16-hed, 8 bits, fitted ITQ;
        with HED's edges for ``merge="hierarchy"``). Any callable works, e.g. a client of the
        served model.
    superpixels : {"egs", "slic"}
        Low-level superpixels to start from (default ``"egs"``, the paper's main baseline).
    hamming : int
        Merge superpixels whose codes differ in at most this many bits; 0 (default) is the
        paper's "zero distance in Hamming space".
    merge : {"adjacent", "global", "hierarchy"}
        Merge only touching superpixels (default) or any with close codes; see
        :func:`binmap_tf.merge.merge_superpixels`. ``"hierarchy"`` merges touching regions
        greedily by codes, the network's edges and colour (:func:`binmap_tf.hierarchy.build_hierarchy`)
        and cuts the tree at ``threshold`` or ``segments``; the map must carry edges.
    segments : int, optional
        With ``merge="hierarchy"``: cut the tree at this many segments.
    threshold : float, optional
        With ``merge="hierarchy"``: keep the merges up to this height in [0, 1] (default
        :data:`~binmap_tf.hierarchy.DEFAULT_THRESHOLD`, the best single threshold on BSDS500 val).
    binary_map : BinaryMap, optional
        A map already computed for this image; ``mapper`` is then not used.
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
    >>> result = segment(data.astronaut())  # doctest: +SKIP
    >>> result.n_segments <= result.n_superpixels  # doctest: +SKIP
    True
    """
    start = time.perf_counter()
    resolve_options(superpixels, hamming, merge, superpixel_params, segments, threshold)
    timings: dict[str, float] = {}
    if binary_map is None:
        mapper = mapper if mapper is not None else default_mapper(edges=merge == "hierarchy")
        with _stage(timings, "cnn"):  # (a)
            binary_map = mapper(image)
    result = segment_with_map(image, binary_map, superpixels, hamming, merge, segments=segments,
                              threshold=threshold, **superpixel_params)
    result.timings = {**timings, **result.timings, "total": time.perf_counter() - start}
    return result


def segment_labels(image: np.ndarray, mapper: Callable[[np.ndarray], BinaryMap] | None = None,
                   **options: Any) -> np.ndarray:
    """Segment labels only (scikit-image style ``image -> (H, W) int32``); options as :func:`segment`."""
    return segment(image, mapper, **options).labels


def boundary_overlay(image: np.ndarray, labels: np.ndarray, color: tuple[float, float, float] = (1.0, 1.0, 0.0)
                     ) -> np.ndarray:
    """Segment boundaries drawn on ``image`` in ``color`` (RGB in [0, 1]), as uint8 RGB."""
    from skimage.segmentation import mark_boundaries

    return as_rgb_uint8(mark_boundaries(as_rgb_uint8(image), labels, color=color))


def label_image_uint16(labels: np.ndarray) -> np.ndarray:
    """``labels`` as uint16 for a 16-bit PNG; ``ValueError`` when a label exceeds 65535."""
    if labels.max() > np.iinfo(np.uint16).max:
        raise ValueError(f"{labels.max() + 1} segments do not fit a 16-bit PNG; use the .npy labels")
    return labels.astype(np.uint16)


# Command-line superpixel options: flag -> (method, parameter, type, default shown in --help).
_SUPERPIXEL_FLAGS = {
    "--scale-egs": ("egs", "scale", float, EGS_SCALE),
    "--sigma-egs": ("egs", "sigma", float, EGS_SIGMA),
    "--min-size": ("egs", "min_size", int, EGS_MIN_SIZE),
    "--n-segments": ("slic", "n_segments", int, SLIC_N_SEGMENTS),
    "--compactness": ("slic", "compactness", float, SLIC_COMPACTNESS),
}


def _parse_args(argv: list[str] | None) -> tuple[argparse.Namespace, dict[str, Any]]:
    """Parse the command line; return the arguments and the superpixel parameters given."""
    from binmap_tf import cli

    parser = argparse.ArgumentParser(
        prog="python -m binmap_tf.segment",
        description="Segment images by merging superpixels with equal codes in their CNN-aware binary map "
                    "(Ravanbakhsh et al., ICIP 2016). Writes <stem>_labels.png (16-bit), <stem>_labels.npy, "
                    "<stem>_overlay.png, <stem>_binary_map.png and <stem>.json per image.")
    parser.add_argument("images", nargs="+", help="image files or folders of images")
    parser.add_argument("--out", required=True, type=Path, help="output folder")
    parser.add_argument("--superpixels", choices=SUPERPIXEL_METHODS, default="egs",
                        help="low-level superpixels to merge (default: %(default)s)")
    parser.add_argument("--hamming", type=int, default=0,
                        help="merge codes differing in at most this many bits (default: %(default)s, equal codes)")
    parser.add_argument("--merge", choices=MERGES, default="adjacent",
                        help="merge touching superpixels only, or any with close codes, or build a merge "
                             "hierarchy (codes + the network's edges + colour) and cut it (default: %(default)s)")
    parser.add_argument("--threshold", type=float, default=None,
                        help=f"--merge hierarchy: cut at this merge height in [0, 1] (default: {DEFAULT_THRESHOLD}, "
                             "the best single threshold on BSDS500 val)")
    parser.add_argument("--segments", type=int, default=None,
                        help="--merge hierarchy: cut at this number of segments instead of a threshold")
    group = parser.add_argument_group("superpixel options")
    for flag, (method, name, kind, default) in _SUPERPIXEL_FLAGS.items():
        group.add_argument(flag, dest=f"{method}_{name}", type=kind, default=None,
                           help=f"{method.upper()} {name} (default: {default})")
    cli.add_model_arguments(parser)
    parser.add_argument("--serving", metavar="HOST:PORT", default=None,
                        help="compute binary maps on a model server (TF Serving or python -m serving.server) "
                             "instead of locally; the served model then replaces the model options above")
    args = parser.parse_args(argv)
    given = {flag: (method, name, getattr(args, f"{method}_{name}"))
             for flag, (method, name, _, _) in _SUPERPIXEL_FLAGS.items()
             if getattr(args, f"{method}_{name}") is not None}
    wrong = [f"{flag} is an option of --superpixels {method}"
             for flag, (method, _, _) in given.items() if method != args.superpixels]
    if wrong:
        parser.error(f"{'; '.join(wrong)}, not {args.superpixels}")
    params = {name: value for _, name, value in given.values()}
    try:
        resolve_options(args.superpixels, args.hamming, args.merge, params, args.segments, args.threshold)
    except ValueError as error:
        parser.error(str(error))
    if args.serving and args.merge == "hierarchy":
        parser.error("a served model returns no edge map, which --merge hierarchy needs; run it without --serving")
    return args, params


def main(argv: list[str] | None = None) -> int:
    """Command line: segment images and write labels, overlay, binary map and a JSON record."""
    from binmap_tf import cli
    from binmap_tf.files import write_json, write_npy, write_png
    from binmap_tf.images import load_image

    args, params = _parse_args(argv)
    images = cli.collect_images(args.images)
    edges = {"edges": True} if args.merge == "hierarchy" else {}
    mapper = cli.served_mapper(args.serving) if args.serving else cli.mapper_from_args(args, **edges)

    def process(path: Path) -> None:
        image = load_image(path)
        result = segment(image, mapper, superpixels=args.superpixels, hamming=args.hamming, merge=args.merge,
                         segments=args.segments, threshold=args.threshold, **params)
        stem = args.out / path.stem
        write_npy(f"{stem}_labels.npy", result.labels)
        write_png(f"{stem}_labels.png", label_image_uint16(result.labels))
        write_png(f"{stem}_overlay.png", boundary_overlay(image, result.labels))
        write_png(f"{stem}_binary_map.png", result.binary_map.to_image())
        model = {"serving": args.serving} if args.serving else {"backbone": args.backbone}
        write_json(f"{stem}.json", {"image": str(path), **model, "scale": result.binary_map.scale,
                                    **result.summary()})

    return cli.run_batch(images, process, desc="segmenting")


if __name__ == "__main__":
    raise SystemExit(main())
