"""Pieces shared by the command-line tools: model options, argument checks made before any model
is loaded, quiet TensorFlow start-up, image batches and per-file errors."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import traceback
from pathlib import Path
from typing import Any, Callable, Iterator

from tqdm import tqdm

from binmap_tf.binary_map.options import BUILT_IN_BACKBONES, DEFAULT_BACKBONE, DEFAULT_BITS, EXECUTIONS, PRECISIONS
from binmap_tf.binary_map.tiling import DEFAULT_MAX_TILE_PIXELS
from binmap_tf.common.errors import expected_failure, failure_message
from binmap_tf.common.images import find_images


def add_dataset_arguments(parser: argparse.ArgumentParser, split: str | None = None,
                          split_help: str = "bsds500: train/val/test (default test); msrc: all (the default)") -> None:
    """Add ``--dataset``, ``--split`` (default ``split``), ``--data`` and ``--limit``."""
    parser.add_argument("--dataset", choices=("bsds500", "msrc"), default="bsds500")
    parser.add_argument("--split", default=split, help=split_help)
    parser.add_argument("--data", type=Path, default=None, help="data root (default: $BINMAP_TF_DATA or ../shared/data)")
    parser.add_argument("--limit", type=positive_int, default=None, help="use only the first N images (N >= 1)")


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    return _bounded_int(text, low=1)


def non_negative_int(text: str) -> int:
    """argparse type: an integer >= 0."""
    return _bounded_int(text, low=0)


def code_length(text: str) -> int:
    """argparse type: a code length in bits, 1 .. 62 (codes are packed into 64-bit integers)."""
    return _bounded_int(text, low=1, high=62)


def _bounded_int(text: str, low: int, high: int | None = None) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < low or (high is not None and value > high):
        bounds = f">= {low}" if high is None else f"in {low} .. {high}"
        raise argparse.ArgumentTypeError(f"expected an integer {bounds}, got {value}")
    return value


def hashing_source(text: str) -> str:
    """argparse type: ``fine-tuned`` or an existing ``.npz`` written by fit_itq or train."""
    from binmap_tf.common.paths import FINE_TUNED

    if text == FINE_TUNED:
        return text
    path = Path(text)
    if path.suffix != ".npz":
        raise argparse.ArgumentTypeError(f"{text} is not a hashing layer: pass an .npz written by "
                                         f"binmap-fit-itq or binmap_tf.cli.train, or {FINE_TUNED!r}")
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"hashing file not found: {text}")
    return text


def check_training_splits(parser: argparse.ArgumentParser, args: argparse.Namespace, chosen: str) -> None:
    """Refuse a training run whose ``--split`` or ``--val-split`` is test, or both the same split:
    ``chosen`` (e.g. ``"the epoch"``) is chosen on the val split, so it must be held out and not test."""
    if "test" in (args.split, args.val_split):
        parser.error(f"training on the test split, or choosing {chosen} on it, would tune on it; use train and val")
    if args.split == args.val_split:
        parser.error(f"--val-split must differ from --split: {chosen} must be chosen on held-out images")


def recorded_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The options of a training run as its record keeps them: without folders, and ``--hashing``
    as its file name, so a record names no machine's paths."""
    settings = {key: value for key, value in vars(args).items() if not isinstance(value, Path)}
    if settings.get("hashing"):
        settings["hashing"] = Path(settings["hashing"]).name
    return settings


def check_output_folder(parser: argparse.ArgumentParser, folder: Path, flag: str = "--out") -> None:
    """Exit with a usage error (status 2) unless ``folder`` is, or can be created as, a writable folder:
    found before any model is loaded, not after the CNN ran on every image."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        parser.error(f"{flag} {folder} is a file; pass a folder")
    existing = folder
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        parser.error(f"{flag} {folder} cannot be created: {existing} is a file")
    if not os.access(existing, os.W_OK | os.X_OK):
        parser.error(f"{flag} {folder} cannot be written: no write permission in {existing}")


def check_hamming(parser: argparse.ArgumentParser, hamming: int, bits: int) -> None:
    """Usage error when ``--hamming`` reaches the code length: every pair of codes is then within it,
    so the flat merge joins all touching superpixels (one segment), surely not what was meant."""
    if hamming >= bits:
        parser.error(f"--hamming {hamming} with {bits}-bit codes merges every pair of touching superpixels "
                     f"(no two codes differ in more than {bits} bits); use a value below {bits}")


def parse(parser: argparse.ArgumentParser, argv: list[str] | None, outputs: tuple[str, ...] = ("out",)
          ) -> argparse.Namespace:
    """Add ``--verbose`` and ``--debug``, parse ``argv``, check the output folders named in
    ``outputs`` and gather the retry options into ``args.retry``: a user's mistakes are found here,
    as usage errors, before any model is built (commands check the rest of their options with
    ``parser.error`` before building one)."""
    parser.add_argument("--verbose", action="store_true", help="show TensorFlow's log, its start-up lines included")
    parser.add_argument("--debug", action="store_true", help="print a traceback for every failure")
    args = parser.parse_args(argv)
    for name in outputs:
        if getattr(args, name, None) is not None:
            check_output_folder(parser, getattr(args, name), f"--{name.replace('_', '-')}")
    if hasattr(args, "backbone"):  # add_model_arguments': a model will be built, quietly unless --verbose
        start_tensorflow(verbose=args.verbose)
    if hasattr(args, "retry_attempts"):  # add_server_argument's options, as one policy
        from serving.retry import retry_policy

        args.retry = retry_policy(parser, args)
    return args


@contextlib.contextmanager
def _native_stderr_silenced() -> Iterator[None]:
    """Send what C++ code writes to file descriptor 2 to /dev/null inside the block."""
    sys.stderr.flush()
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def start_tensorflow(verbose: bool = False) -> None:
    """Import TensorFlow and look for devices; unless ``verbose``, without its C++ start-up lines
    ("failed call to cuInit" on every machine without a GPU reads like a failure but is none).
    ``TF_CPP_MIN_LOG_LEVEL`` cannot hide them: they are written before TensorFlow's logging starts.
    The first call decides: :func:`parse` makes it for every command with model options, after the
    arguments, so that ``--help`` and usage errors answer without loading TensorFlow."""
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "0" if verbose else os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2")
    if "tensorflow" in sys.modules:
        return
    with contextlib.nullcontext() if verbose else _native_stderr_silenced():
        import tensorflow as tf

        tf.config.list_physical_devices()


def add_model_arguments(parser: argparse.ArgumentParser, runtime: bool = True) -> None:
    """Add ``--backbone``, ``--features``, ``--bits``, ``--hashing``, ``--scale`` and, with ``runtime``,
    how the model runs: ``--precision`` and ``--execution``."""
    parser.add_argument("--backbone", default=DEFAULT_BACKBONE, choices=BUILT_IN_BACKBONES,
                        help="CNN backbone (default: %(default)s; alexnet needs imported weights)")
    parser.add_argument("--features", default=None,
                        help="vgg16-hed feature layers: conv5_3 (default, stride 16) or conv4_3+conv5_3 (stride 8, "
                             "a 4x denser map at the same CNN cost)")
    parser.add_argument("--bits", type=code_length, default=DEFAULT_BITS, help="code length k (default: %(default)s)")
    parser.add_argument("--hashing", type=hashing_source, default=None,
                        help="hashing parameters: an .npz from fit_itq or train, or 'fine-tuned' for the "
                             "shipped fine-tuned layer (default: the fitted ITQ)")
    parser.add_argument("--scale", type=float, default=None,
                        help="resize factor applied before the CNN (default: the backbone's, 3.4 for alexnet)")
    if not runtime:
        return
    parser.add_argument("--precision", choices=tuple(PRECISIONS), default="fp32",
                        help="backbone arithmetic; bf16 is about 2x faster on CPUs with AVX512_BF16 "
                             "(default: %(default)s)")
    parser.add_argument("--execution", choices=EXECUTIONS, default="graph",
                        help="run the model as one traced graph, eagerly, or XLA-compiled per input size "
                             "(default: %(default)s)")
    parser.add_argument("--max-tile-pixels", type=positive_int, default=DEFAULT_MAX_TILE_PIXELS,
                        help="larger images run through the CNN on overlapping tiles of at most this many pixels, "
                             "stitched to the untiled map; bounds the CNN's memory (default: %(default)s, "
                             "about 1.3 GB peak)")


def add_server_argument(parser: argparse.ArgumentParser, flag: str = "--serving", instead: str = "locally") -> None:
    """Add ``flag`` (``HOST:PORT``): binary maps from a model server instead of the model options, and
    the client's retry options (:func:`serving.retry.add_retry_arguments`)."""
    from serving.retry import add_retry_arguments

    parser.add_argument(flag, metavar="HOST:PORT", default=None,
                        help="compute binary maps on a model server (TF Serving or binmap-serve) "
                             f"instead of {instead}, with its edge map when the options need it and in tiles of "
                             "--max-tile-pixels; the served model then replaces the other model options")
    add_retry_arguments(parser)


def feature_options(args: argparse.Namespace) -> dict:
    """Backbone keyword options given on the command line (``--features``)."""
    return {"features": args.features} if args.features else {}


def mapper_options(args: argparse.Namespace, **overrides) -> dict[str, Any]:
    """Keyword arguments of :class:`~binmap_tf.binary_map.model.BinaryMapper` the model arguments give (plain
    values, so a worker process can build the same mapper); ``overrides`` replace or add some
    (e.g. ``edges=True``, or another ``hashing``)."""
    return {"backbone": args.backbone, "bits": args.bits, "hashing": args.hashing, "scale": args.scale,
            "precision": args.precision, "execution": args.execution,
            "max_tile_pixels": getattr(args, "max_tile_pixels", DEFAULT_MAX_TILE_PIXELS),
            **feature_options(args), **overrides}


def mapper_from_args(args: argparse.Namespace, **overrides):
    """Build the :class:`~binmap_tf.binary_map.model.BinaryMapper` the arguments describe (with ``overrides``, as
    :func:`mapper_options`); exit with a message on error."""
    start_tensorflow(verbose=getattr(args, "verbose", False))
    from binmap_tf.binary_map.model import BinaryMapper

    try:
        return BinaryMapper(**mapper_options(args, **overrides))
    except (FileNotFoundError, ValueError) as error:
        raise SystemExit(f"error: {error}") from None


def _superpixel_flags() -> dict[str, tuple[str, str, type, Any]]:
    """Command-line superpixel options: flag -> (method, parameter, type, default shown in --help)."""
    from binmap_tf.segmentation.superpixels import (
        EGS_MIN_SIZE,
        EGS_SCALE,
        EGS_SIGMA,
        SLIC_COMPACTNESS,
        SLIC_N_SEGMENTS,
    )

    return {
        "--scale-egs": ("egs", "scale", float, EGS_SCALE),
        "--sigma-egs": ("egs", "sigma", float, EGS_SIGMA),
        "--min-size": ("egs", "min_size", int, EGS_MIN_SIZE),
        "--n-segments": ("slic", "n_segments", int, SLIC_N_SEGMENTS),
        "--compactness": ("slic", "compactness", float, SLIC_COMPACTNESS),
    }


def add_segment_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the options of :func:`binmap_tf.segmentation.pipeline.segment`: ``--superpixels``, ``--hamming``, ``--merge``,
    ``--threshold``, ``--segments`` and the superpixel options (``--scale-egs``, ``--n-segments``, ...)."""
    from binmap_tf.segmentation.hierarchy import DEFAULT_THRESHOLD
    from binmap_tf.segmentation.pipeline import DEFAULT_MERGE, DEFAULT_SCORER, HAND_SET, MERGES
    from binmap_tf.segmentation.resolution import DEFAULT_WORKING_PIXELS
    from binmap_tf.segmentation.superpixels import SUPERPIXEL_METHODS

    parser.add_argument("--superpixels", choices=SUPERPIXEL_METHODS, default=None,
                        help="low-level superpixels to merge (default: with a learned scorer the first level it was "
                             "trained on, watershed of the network's edges; else egs)")
    parser.add_argument("--hamming", type=non_negative_int, default=0,
                        help="--merge adjacent|global: merge codes differing in at most this many bits (default: "
                             "%(default)s, equal codes)")
    parser.add_argument("--merge", choices=MERGES, default=None,
                        help=f"build a merge hierarchy ordered by a learned scorer of codes, edges, colour and "
                             f"texture and cut it, or merge touching superpixels with close codes (adjacent: the "
                             f"paper's method), or any (global), or none (default: {DEFAULT_MERGE} for backbones "
                             f"with an edge map, vgg16-hed; adjacent for the others)")
    parser.add_argument("--threshold", type=float, default=None,
                        help=f"--merge hierarchy: cut at this merge height in [0, 1] (default: the scorer's own, "
                             f"chosen on BSDS500 val; {DEFAULT_THRESHOLD} for the hand-set cues)")
    parser.add_argument("--segments", type=positive_int, default=None,
                        help="--merge hierarchy: cut at this number of segments instead of a threshold")
    parser.add_argument("--scorer", default=None,
                        help=f"--merge hierarchy: what orders the merges: a learned scorer, {DEFAULT_SCORER} "
                             f"(default) or learned-no-codes (shipped) or an .npz from "
                             f"binmap-train-merge; or {HAND_SET} for the hand-set mix of codes, edges and colour")
    resolution = parser.add_mutually_exclusive_group()
    resolution.add_argument("--working-pixels", type=positive_int, default=DEFAULT_WORKING_PIXELS,
                            help="images are segmented resized to about this many pixels (larger ones down, smaller "
                                 "ones up) and their labels brought back to their size (default: %(default)s, "
                                 "BSDS500's 481x321, the scale every learned part was trained at)")
    resolution.add_argument("--native", action="store_true",
                            help="segment every image at its own size (the CNN on tiles; slower, and coarser on "
                                 "large photos)")
    group = parser.add_argument_group("superpixel options")
    for flag, (method, name, kind, default) in _superpixel_flags().items():
        group.add_argument(flag, dest=f"{method}_{name}", type=kind, default=None,
                           help=f"{method.upper()} {name} (default: {default})")


def segment_options(parser: argparse.ArgumentParser, args: argparse.Namespace, served: bool = False
                    ) -> dict[str, Any]:
    """The keyword options of :func:`~binmap_tf.segmentation.pipeline.segment` that :func:`add_segment_arguments`'s
    arguments give, checked before any model is built (``parser.error`` names a wrong one). The
    Hamming threshold and a learned scorer's code length are checked against ``--bits`` unless the
    maps are ``served`` (the server's model fixes the code length). Without ``--merge``, the
    default is :data:`~binmap_tf.segmentation.pipeline.DEFAULT_MERGE` for a backbone with an edge map (and a
    served model) and the paper's adjacent merge for the others."""
    from binmap_tf.segmentation.pipeline import choose_scorer, first_level, resolve_options
    from binmap_tf.segmentation.resolution import check_working_pixels

    if args.merge is None:
        args.merge = default_merge(None if served else getattr(args, "backbone", None))
        if args.merge == "hierarchy" and args.hamming:
            parser.error("--hamming belongs to the flat merges: add --merge adjacent (the paper's) or --merge "
                         "global; the default merge hierarchy is cut by --threshold or --segments")
    try:
        scorer = choose_scorer(args.merge, args.scorer)
    except ValueError as error:
        parser.error(str(error))
    if scorer is not None and scorer.codes and not served and getattr(args, "hashing", None) is None \
            and getattr(args, "bits", scorer.n_bits) != scorer.n_bits:
        parser.error(f"the learned merge scorer {scorer.name!r} reads {scorer.n_bits}-bit codes, not --bits "
                     f"{args.bits}; pass --scorer hand-set, a scorer trained on {args.bits}-bit codes, or "
                     "--merge adjacent")
    args.superpixels, recorded = first_level(args.superpixels, {}, scorer)  # a scorer's own first level
    given = {flag: (method, name, getattr(args, f"{method}_{name}"))
             for flag, (method, name, _, _) in _superpixel_flags().items()
             if getattr(args, f"{method}_{name}") is not None}
    wrong = [f"{flag} is an option of --superpixels {method}"
             for flag, (method, _, _) in given.items() if method != args.superpixels]
    if wrong:
        parser.error(f"{'; '.join(wrong)}, not {args.superpixels}")
    params = {**recorded, **{name: value for _, name, value in given.values()}}
    try:
        resolve_options(args.superpixels, args.hamming, args.merge, params, args.segments, args.threshold,
                        scorer=scorer)
    except ValueError as error:
        parser.error(str(error))
    if not served and args.merge in ("adjacent", "global"):
        check_hamming(parser, args.hamming, args.bits)
    if not args.native:
        try:
            check_working_pixels(args.working_pixels)
        except ValueError as error:
            parser.error(f"--working-pixels: {error}")
    return {"superpixels": args.superpixels, "hamming": args.hamming, "merge": args.merge,
            "segments": args.segments, "threshold": args.threshold, "scorer": args.scorer,
            "working_pixels": None if args.native else args.working_pixels, **params}


def add_output_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the optional outputs (README, "Outputs"): ``--ucm``, ``--coco`` and ``--regions``."""
    from binmap_tf.segmentation.interchange import UCM_PNG_SCALE
    from binmap_tf.segmentation.outputs import COCO_FILE

    group = parser.add_argument_group("more outputs")
    group.add_argument("--ucm", action="store_true",
                       help="also write the merge hierarchy as a BSDS ucm2 contour map: <stem>_ucm2.mat (variable "
                            f"ucm2, float64 heights in [0, 1]) and <stem>_ucm2.png (16-bit, height x {UCM_PNG_SCALE}); "
                            "needs --merge hierarchy")
    group.add_argument("--coco", action="store_true",
                       help=f"also write one COCO file for the run, {COCO_FILE}: each segment's mask as RLE, its area "
                            "and box, and as score the merge height at which it appears")
    group.add_argument("--regions", action="store_true",
                       help="also write <stem>_regions.csv: area, box, centroid and mean CIELAB colour of each "
                            "segment (scikit-image's regionprops) and, with the hierarchy, its node, height and parent")


def output_extras(parser: argparse.ArgumentParser, args: argparse.Namespace) -> tuple[str, ...]:
    """The per-image extra outputs the arguments ask for (``"ucm"``, ``"regions"``), checked against the
    merge :func:`segment_options` resolved (call it first): a usage error, before any model is built,
    names the fix for a UCM without a hierarchy."""
    from binmap_tf.segmentation.outputs import EXTRA_OUTPUTS, check_extras

    extras = tuple(name for name in EXTRA_OUTPUTS if getattr(args, name))
    try:
        return check_extras(extras, args.merge)
    except ValueError:
        parser.error(f"--ucm writes the merge hierarchy, which --merge {args.merge} does not build: use --merge "
                     "hierarchy (the default with vgg16-hed) or leave out --ucm; --coco and --regions work with "
                     "any merge")


def check_coco_stems(parser: argparse.ArgumentParser, paths: list[Path]) -> None:
    """Usage error when an image's JSON record would have the name of the run's COCO file."""
    from binmap_tf.segmentation.outputs import COCO_FILE

    clashing = [str(path) for path in paths if f"{path.stem}.json" == COCO_FILE]
    if clashing:
        parser.error(f"the record of {', '.join(clashing)} would be the run's COCO file {COCO_FILE}: rename the image "
                     "or segment it into another --out")


def default_merge(backbone: str | None) -> str:
    """The merge a command line runs without ``--merge``: the learned hierarchy where the maps carry
    an edge map (``backbone`` None: a served model, whose maps carry one), else the paper's adjacent
    merge (``alexnet`` has no edge map)."""
    from binmap_tf.binary_map.backbones import get_backbone
    from binmap_tf.segmentation.pipeline import DEFAULT_MERGE

    return DEFAULT_MERGE if backbone is None or get_backbone(backbone).has_edges else "adjacent"


def collect_images(inputs: list[str]) -> list[Path]:
    """Expand files and folders; exit with a message when nothing is found."""
    paths = find_images(inputs)
    if not paths:
        raise SystemExit(f"error: no images found in {' '.join(inputs)}")
    return paths


def run_batch(paths: list[Path], process: Callable[[Path], None], desc: str, debug: bool = False) -> int:
    """Run ``process`` on every path with a progress bar; a failing file does not stop the batch.

    Returns the exit status: 0 when every file succeeded, 1 otherwise (after a summary of failures,
    one line each; with ``debug`` also the traceback of every unexpected error).
    """
    failures: list[tuple[Path, str]] = []
    for path in tqdm(paths, desc=desc, unit="image", disable=len(paths) < 2):
        try:
            process(path)
        except Exception as error:  # noqa: BLE001  (report and keep going)
            failures.append((path, failure_message(error)))
            if debug and not expected_failure(error):  # a bug, not a bad input: show where
                traceback.print_exc(file=sys.stderr)
    if failures:
        print(f"{len(failures)} of {len(paths)} images failed:", file=sys.stderr)
        for path, message in failures:
            print(f"  {path}: {message}", file=sys.stderr)
        return 1
    return 0


def served_mapper(target: str, verbose: bool = False, edges: bool = False,
                  max_tile_pixels: int | None = DEFAULT_MAX_TILE_PIXELS, retry: Any = None) -> Callable:
    """A connected client of the model server at ``target`` (:func:`serving.client.connect`), whose maps
    carry the edge map when ``edges`` (the merge hierarchy needs it), which sends images over
    ``max_tile_pixels`` in tiles, as the local mapper runs them, and retries as ``retry`` says (a
    :class:`serving.retry.RetryPolicy`; None: its defaults); exit with its message when the server
    cannot be reached or serves no edge map. Only command lines call this: the library itself never
    imports ``serving``."""
    start_tensorflow(verbose)
    from serving.client import ServingError, connect
    from serving.retry import RetryPolicy

    try:
        return connect(target, edges=edges, max_tile_pixels=max_tile_pixels, retry=retry or RetryPolicy())
    except ServingError as error:
        raise SystemExit(f"error: {error}") from None
