"""Reproduce the paper's Table 1 and Fig. 4: segment a benchmark and score every method.

``binmap-evaluate --dataset bsds500 --split test --methods egs slic binmap-egs
binmap-slic --out DIR`` writes

* ``DIR/per_image.csv``: one row per image, method and setting;
* ``DIR/summary.json``: ``{method: {seg_iou, seg_iou_image_mean, covering, pri, voi, n_images,
  mean_segments, mean_superpixels, seconds_per_image, parameter, value}}`` at each method's
  main setting;
* ``DIR/table.md``: the measured figures beside the paper's Table 1;
* with ``--sweep``: ``DIR/sweep.csv`` and ``DIR/sweep.png`` (Fig. 4: Seg-IoU against the number
  of superpixels, plus quality against the number of *output* segments);
* with ``--save-labels``: ``DIR/labels/<method>/<image id>.png`` (16-bit) for independent checks;
* with ``--sweep`` and hierarchical methods (``binmap-hier``, ``hier-*``, their ``-n`` variants):
  ``DIR/hierarchy.json`` and ``DIR/hierarchy.md``, the benchmark's ODS / OIS covering, PRI and
  VoI over the thresholds (or segment counts), with Seg-IoU and segment counts at the ODS
  setting (choose ``--threshold`` on val this way).

Binary maps are cached on disk (``$BINMAP_TF_HOME/binary_maps``), so sweeps and re-runs do not
repeat the CNN; host-side work runs in ``--workers`` processes while the CNN runs.
"""

from __future__ import annotations

import argparse
import os
import time
from concurrent.futures import Future, ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

from tqdm import tqdm

from binmap_tf.common.files import write_json, write_text
from binmap_tf.common.paths import FINE_TUNED
from binmap_tf.evaluation.datasets import load_dataset
from binmap_tf.evaluation.methods import (
    COUNT_SUFFIX,
    DEFAULT_VALUES,
    HIERARCHY_METHODS,
    LEARNED_METHODS,
    SCORER_METHOD,
    Method,
    parse_method,
)
from binmap_tf.evaluation.runner import (
    DEFAULT_METHODS,
    HostOptions,
    ImageResult,
    evaluate_image,
    hierarchy_benchmark,
    hierarchy_markdown,
    main_settings,
    per_image_csv,
    settings_for,
    summarize_settings,
    sweep_csv,
)
from binmap_tf.segmentation.merge_scorer import resolve_scorer
from binmap_tf.segmentation.pipeline import working_image
from binmap_tf.segmentation.resolution import DEFAULT_WORKING_PIXELS
from binmap_tf.segmentation.superpixels import superpixel_params


def build_mappers(args: argparse.Namespace, methods: list[Method]) -> dict:
    """The binary mappers the methods need: ``itq`` (``--hashing``), ``ft`` (``--ft-hashing``) and
    ``edges`` (the default hashing plus HED's edge map, for the hierarchical methods)."""
    from binmap_tf.cli.common import mapper_from_args

    variants = {method.map_variant for method in methods if method.map_variant}
    hashings = {"itq": args.hashing, "ft": args.ft_hashing, "edges": args.hashing}
    return {variant: mapper_from_args(args, hashing=hashings[variant], **({"edges": True} if variant == "edges" else {}))
            for variant in sorted(variants)}


def run(args: argparse.Namespace) -> list[ImageResult]:
    """Compute maps (cached) in this process and score images in ``args.workers`` processes."""
    from binmap_tf.evaluation.map_cache import BinaryMapCache, UncachedMaps

    methods = [parse_method(name, args.scorer) for name in args.methods]
    dataset = load_dataset(args.dataset, split=args.split, root=args.data, limit=args.limit)
    args.split = dataset.split
    settings = settings_for(methods, args.sweep, main_values(args))
    if args.serving and any(m.map_variant == "ft" for m in methods):
        raise SystemExit("error: --serving serves one hashing layer; evaluate the -ft methods locally")
    if args.serving:  # one request per image; its map (with edges if a method needs them) serves every method
        from binmap_tf.cli.common import served_mapper

        variants = {method.map_variant for method in methods if method.map_variant}
        served = UncachedMaps(served_mapper(args.serving, args.verbose, "edges" in variants, args.max_tile_pixels))
        caches = {variant: served for variant in variants}
    else:
        mappers = build_mappers(args, methods) if any(m.map_variant for m in methods) else {}
        caches = {variant: BinaryMapCache(mapper, f"{args.dataset}-{args.split}", root=args.cache)
                  for variant, mapper in mappers.items()}
    working_pixels = None if args.native else DEFAULT_WORKING_PIXELS
    options = HostOptions(args.hamming, args.merge, str(args.out / "labels") if args.save_labels else None,
                          args.scorer, working_pixels)
    results: list[ImageResult] = []
    pool = ProcessPoolExecutor(args.workers, mp_context=get_context("spawn")) if args.workers > 1 else None
    futures: list[Future] = []
    try:
        for sample in tqdm(dataset, desc=f"{args.dataset}/{args.split}", unit="image"):
            maps, cnn_seconds = {}, {}
            if caches:
                image = working_image(sample.load_image(), working_pixels)  # the maps are of what the CNN sees
                computed = {}  # a cache shared by several variants (served maps) is asked once
                for variant, cache in caches.items():
                    if id(cache) not in computed:
                        computed[id(cache)] = cache.get(sample.id, image)
                    maps[variant], cnn_seconds[variant] = computed[id(cache)]
            if pool is None:
                results.extend(evaluate_image(sample, maps, cnn_seconds, settings, options))
            else:
                futures.append(pool.submit(evaluate_image, sample, maps, cnn_seconds, settings, options))
        for future in tqdm(futures, desc="scoring", unit="image", disable=not futures):
            results.extend(future.result())
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    return results


def main_values(args: argparse.Namespace) -> dict[str, float]:
    """Each parameter's main value (the one without ``--sweep``), keyed like ``SWEEP_VALUES``."""
    values = {**DEFAULT_VALUES, "egs": args.egs_scale, "slic": float(args.slic_segments)}
    if args.scorer is not None:
        values[SCORER_METHOD] = resolve_scorer(args.scorer).threshold
    if args.threshold is not None:
        values.update({name: args.threshold for name in (*HIERARCHY_METHODS, *LEARNED_METHODS)})
    return values


def check_scorer(path: str, methods: list[str], bits: int) -> None:
    """Raise ``ValueError`` unless the scorer at ``path`` is used (by :data:`SCORER_METHOD`) and reads
    ``bits``-bit codes (or none)."""
    if SCORER_METHOD not in {name.removesuffix(COUNT_SUFFIX) for name in methods}:
        raise ValueError(f"--scorer is the scorer of {SCORER_METHOD}, which --methods does not name")
    scorer = resolve_scorer(path)
    if scorer.codes and scorer.n_bits != bits:
        hashing = scorer.info.get("hashing", "ITQ")
        raise ValueError(f"the scorer {path} reads {scorer.n_bits}-bit codes of {hashing}; pass --bits "
                         f"{scorer.n_bits} (and --hashing for a layer other than the fitted ITQ), not --bits {bits}")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Parse and check the command line: every mistake is a usage error before any model is built."""
    from binmap_tf.cli import common as cli

    parser = argparse.ArgumentParser(prog="binmap-evaluate", description=__doc__.split("\n\n")[0])
    cli.add_dataset_arguments(parser)
    parser.add_argument("--methods", nargs="+", default=list(DEFAULT_METHODS),
                        help="egs slic binmap-egs binmap-slic binmap-egs-ft binmap-slic-ft, or hierarchical: "
                             "binmap-hier hier-codes hier-edges hier-colour hier-codes-edges hier-edges-colour, "
                             "each also with -n (cut at a number of segments), or learned: binmap-learned "
                             "learned-no-codes")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--workers", type=cli.positive_int, default=min(2, os.cpu_count() or 1),
                        help="processes for superpixels, merging and scoring (default: %(default)s)")
    parser.add_argument("--sweep", action="store_true", help="run each method over its parameter grid (Fig. 4)")
    parser.add_argument("--save-labels", action="store_true", help="write every segmentation as 16-bit PNG")
    parser.add_argument("--egs-scale", type=float, default=DEFAULT_VALUES["egs"], help="EGS k (default: %(default)s)")
    parser.add_argument("--slic-segments", type=cli.positive_int, default=int(DEFAULT_VALUES["slic"]),
                        help="SLIC n_segments (default: %(default)s)")
    parser.add_argument("--threshold", type=float, default=None,
                        help="merge-height threshold of every hierarchical method, learned ones included "
                             "(default: each method's ODS threshold on BSDS500 val)")
    parser.add_argument("--hamming", type=cli.non_negative_int, default=0, help="merge codes within this Hamming distance")
    parser.add_argument("--merge", choices=("adjacent", "global"), default="adjacent")
    parser.add_argument("--native", action="store_true",
                        help="segment every image at its own size, as the paper did, instead of at the working "
                             "size (481x321 pixels, BSDS500's own: MSRC-v2's smaller images are brought up)")
    parser.add_argument("--ft-hashing", type=cli.hashing_source, default=FINE_TUNED,
                        help="fine-tuned hashing of the -ft methods: an .npz written by binmap-train "
                             "(default: %(default)s, the shipped layer)")
    parser.add_argument("--scorer", default=None,
                        help=f"{SCORER_METHOD} with this scorer (.npz written by binmap-train-merge) "
                             "instead of the shipped one, at its recorded threshold; give the hashing layer it was "
                             "trained with by --bits / --hashing (default: the shipped scorer)")
    parser.add_argument("--cache", type=Path, default=None, help="binary-map cache (default: $BINMAP_TF_HOME/binary_maps)")
    cli.add_model_arguments(parser)
    parser.add_argument("--serving", metavar="HOST:PORT", default=None,
                        help="get binary maps from a model server (not cached) instead of the local model")
    args = cli.parse(parser, argv, outputs=("out", "cache"))
    try:
        methods = [parse_method(name, args.scorer) for name in args.methods]
        if args.scorer is not None:
            check_scorer(args.scorer, args.methods, args.bits)
        superpixel_params("egs", scale=args.egs_scale)
        if args.threshold is not None and not 0 <= args.threshold <= 1:
            raise ValueError(f"--threshold is a merge height in [0, 1], got {args.threshold}")
        load_dataset(args.dataset, split=args.split, root=args.data, limit=args.limit)
    except (ValueError, FileNotFoundError) as error:
        parser.error(str(error))
    if not args.serving and any(m.map_variant in ("itq", "ft") for m in methods):
        cli.check_hamming(parser, args.hamming, args.bits)
    return args


def main(argv: list[str] | None = None) -> int:
    from binmap_tf.evaluation.report import sweep_figure, table_markdown

    args = parse_args(argv)
    start = time.perf_counter()
    results = run(args)
    summary = summarize_settings(results)
    main_rows = main_settings(summary, main_values(args))
    write_text(args.out / "per_image.csv", per_image_csv(results))
    write_json(args.out / "summary.json", main_rows)
    write_text(args.out / "table.md", table_markdown(main_rows, args.dataset, args.split, vars(args)))
    if args.sweep:
        write_text(args.out / "sweep.csv", sweep_csv(summary))
        sweep_figure({s: row for s, row in summary.items()}, args.out / "sweep.png", args.dataset)
        hierarchies = hierarchy_benchmark(results)
        if hierarchies:
            hierarchy_table = hierarchy_markdown(hierarchies, args.dataset, args.split)
            write_json(args.out / "hierarchy.json", hierarchies)
            write_text(args.out / "hierarchy.md", hierarchy_table)
            print(hierarchy_table)
    print(table_markdown(main_rows, args.dataset, args.split, vars(args)))
    print(f"wrote {args.out} in {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
