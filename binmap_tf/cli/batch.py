"""``binmap-batch``: segment a whole image collection on Ray Data (see
:mod:`binmap_tf.batch.collection` for the pipeline). Needs the ``batch`` extra: ``pip install -e ".[batch]"``."""

from __future__ import annotations

import argparse
import functools
import logging
import os
import sys
from pathlib import Path
from typing import Any

from binmap_tf.cli import common as cli
from binmap_tf.segmentation.pipeline import needs_edges


def _parse_args(argv: list[str] | None) -> tuple[argparse.Namespace, dict[str, Any], tuple[str, ...]]:
    """Parse the command line; return the arguments, the keyword options of ``segment`` and the extra
    per-image outputs (see :func:`~binmap_tf.cli.common.output_extras`)."""
    parser = argparse.ArgumentParser(
        prog="binmap-batch",
        description="Segment every image that --input matches, as `binmap-segment` does (the same "
                    "files per image), on Ray Data: decoding, the CNN in a pool of model workers (batches of "
                    "equal-sized images) and the host-side merging in parallel workers. Images whose outputs "
                    "exist are skipped; failed inputs go to batch_failed.jsonl, counts and throughput to "
                    "batch_summary.json in --out.")
    parser.add_argument("--input", required=True, nargs="+", action="extend", metavar="PATTERN",
                        help="glob patterns ('photos/**/*.jpg', quoted), folders, files, or s3://, gs://, "
                             "hdfs:// URIs (read through pyarrow.fs)")
    parser.add_argument("--out", required=True, type=Path,
                        help="output folder (on a cluster: a folder every worker can write, e.g. a shared mount)")
    parser.add_argument("--overwrite", action="store_true", help="segment again images whose outputs exist")
    cli.add_segment_arguments(parser)
    cli.add_model_arguments(parser)
    cli.add_server_argument(parser, "--model-server", instead="in the workers")
    cli.add_output_arguments(parser)
    engine = parser.add_argument_group("workers (Ray)")
    cores = os.cpu_count() or 1
    engine.add_argument("--address", default=None,
                        help="a Ray cluster to run on ('auto' inside `ray job submit`, or ray://HOST:10001); "
                             "default: start Ray on this machine")
    engine.add_argument("--cnn-workers", type=cli.positive_int, default=1,
                        help="processes holding a model, each running the CNN (default: %(default)s)")
    engine.add_argument("--cnn-threads", type=cli.positive_int, default=None,
                        help="TensorFlow threads per CNN worker (default: all cores)")
    engine.add_argument("--host-workers", type=cli.positive_int, default=cores,
                        help="processes computing superpixels, merging and writing (default: the cores, %(default)s)")
    engine.add_argument("--batch-size", type=cli.positive_int, default=4,
                        help="images per CNN call; only images of equal size share a forward pass (default: "
                             "%(default)s)")
    args = cli.parse(parser, argv)
    options = cli.segment_options(parser, args, served=bool(args.model_server))
    return args, options, cli.output_extras(parser, args)


def main(argv: list[str] | None = None) -> int:
    """Command line: segment a collection; exit status 1 when an input failed."""
    args, options, extras = _parse_args(argv)
    try:
        import ray  # noqa: F401  (the optional dependency: fail here with the install line)

        from binmap_tf.batch.collection import (
            FAILED_FILE,
            ModelSpec,
            RecordsNotWritten,
            Workers,
            segment_collection,
        )
    except ImportError as error:
        raise SystemExit(f"error: {error}; install the batch extra: pip install -e \".[batch]\"") from None
    from tqdm import tqdm

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.model_server:
        # Fail now, with the client's message, if unreachable or without the edge map the options need.
        edges = needs_edges(options["superpixels"], options["merge"])
        cli.served_mapper(args.model_server, args.verbose, edges, args.max_tile_pixels, args.retry).close()
        from serving.client import connect

        model = ModelSpec(server=args.model_server, connect=functools.partial(
            connect, args.model_server, edges=edges, max_tile_pixels=args.max_tile_pixels, retry=args.retry))
    else:
        model = ModelSpec(cli.mapper_options(args))
    workers = Workers(cnn=args.cnn_workers, host=args.host_workers, cnn_threads=args.cnn_threads,
                      batch_size=args.batch_size, address=args.address)
    try:
        with tqdm(desc="segmenting", unit="image", disable=not sys.stderr.isatty()) as bar:
            summary = segment_collection(args.input, args.out, options, model, workers, args.overwrite,
                                         progress=lambda record: bar.update(), extras=extras,
                                         coco=args.coco)
    except RecordsNotWritten as error:  # the failures can only be told here
        for failure in error.failures:
            print(f"failed: {failure.input}: {failure.error}", file=sys.stderr)
        print(f"{error.summary['written']} written, {error.summary['failed']} failed; error: {error}", file=sys.stderr)
        return 1
    print(f"{summary['written']} written, {summary['skipped']} already done, {summary['failed']} failed "
          f"in {summary['seconds']:.1f} s ({summary['images_per_second']:.2f} images/s) -> {args.out}",
          file=sys.stderr)
    if summary["failed"]:
        print(f"failed inputs and why: {args.out / FAILED_FILE}; once the causes are fixed, run the same command "
              "again: it segments only the images not yet written", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
