"""Pieces shared by the command-line tools: model options, image batches, per-file errors."""

from __future__ import annotations

import argparse
import sys
import traceback
from pathlib import Path
from typing import Callable

from tqdm import tqdm

from binmap_tf.images import ImageError, find_images


def add_dataset_arguments(parser: argparse.ArgumentParser, split: str | None = None,
                          split_help: str = "bsds500: train/val/test (default test); msrc: all (the default)") -> None:
    """Add ``--dataset``, ``--split`` (default ``split``), ``--data`` and ``--limit``."""
    parser.add_argument("--dataset", choices=("bsds500", "msrc"), default="bsds500")
    parser.add_argument("--split", default=split, help=split_help)
    parser.add_argument("--data", type=Path, default=None, help="data root (default: $BINMAP_TF_DATA or ../shared/data)")
    parser.add_argument("--limit", type=int, default=None, help="use only the first N images")


def add_model_arguments(parser: argparse.ArgumentParser, runtime: bool = True) -> None:
    """Add ``--backbone``, ``--features``, ``--bits``, ``--hashing``, ``--scale`` and, with ``runtime``,
    how the model runs: ``--precision`` and ``--execution``."""
    from binmap_tf.backbones import backbone_names
    from binmap_tf.model import DEFAULT_BACKBONE, DEFAULT_BITS, EXECUTIONS, PRECISIONS
    from binmap_tf.tiling import DEFAULT_MAX_TILE_PIXELS

    parser.add_argument("--backbone", default=DEFAULT_BACKBONE, choices=backbone_names(),
                        help="CNN backbone (default: %(default)s; alexnet needs imported weights)")
    parser.add_argument("--features", default=None,
                        help="vgg16-hed feature layers: conv5_3 (default, stride 16) or conv4_3+conv5_3 (stride 8, "
                             "a 4x denser map at the same CNN cost)")
    parser.add_argument("--bits", type=int, default=DEFAULT_BITS, help="code length k (default: %(default)s)")
    parser.add_argument("--hashing", default=None,
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
    parser.add_argument("--max-tile-pixels", type=int, default=DEFAULT_MAX_TILE_PIXELS,
                        help="larger images run through the CNN on overlapping tiles of at most this many pixels, "
                             "stitched to the untiled map; bounds the CNN's memory (default: %(default)s, "
                             "about 1.3 GB peak)")


def feature_options(args: argparse.Namespace) -> dict:
    """Backbone keyword options given on the command line (``--features``)."""
    return {"features": args.features} if args.features else {}


def mapper_from_args(args: argparse.Namespace, **backbone_options):
    """Build the :class:`~binmap_tf.model.BinaryMapper` the arguments describe; exit with a message on error."""
    from binmap_tf.model import BinaryMapper

    try:
        return BinaryMapper(backbone=args.backbone, bits=args.bits, hashing=args.hashing, scale=args.scale,
                            precision=args.precision, execution=args.execution,
                            max_tile_pixels=args.max_tile_pixels, **feature_options(args), **backbone_options)
    except (FileNotFoundError, ValueError) as error:
        raise SystemExit(f"error: {error}") from None


def collect_images(inputs: list[str]) -> list[Path]:
    """Expand files and folders; exit with a message when nothing is found."""
    paths = find_images(inputs)
    if not paths:
        raise SystemExit(f"error: no images found in {' '.join(inputs)}")
    return paths


def run_batch(paths: list[Path], process: Callable[[Path], None], desc: str) -> int:
    """Run ``process`` on every path with a progress bar; a failing file does not stop the batch.

    Returns the exit status: 0 when every file succeeded, 1 otherwise (after a summary of failures).
    """
    failures: list[tuple[Path, str]] = []
    for path in tqdm(paths, desc=desc, unit="image", disable=len(paths) < 2):
        try:
            process(path)
        except (ImageError, FileNotFoundError, ValueError) as error:
            failures.append((path, str(error)))
        except Exception as error:  # noqa: BLE001  (report and keep going, with the trace)
            failures.append((path, f"{type(error).__name__}: {error}"))
            traceback.print_exc(file=sys.stderr)
    if failures:
        print(f"{len(failures)} of {len(paths)} images failed:", file=sys.stderr)
        for path, message in failures:
            print(f"  {path}: {message}", file=sys.stderr)
        return 1
    return 0


def served_mapper(target: str) -> Callable:
    """A connected client of the model server at ``target`` (:func:`serving.client.connect`); exit with
    its message when the server cannot be reached. Only command lines call this: the library itself
    never imports ``serving``."""
    from serving.client import ServingError, connect

    try:
        return connect(target)
    except ServingError as error:
        raise SystemExit(f"error: {error}") from None
