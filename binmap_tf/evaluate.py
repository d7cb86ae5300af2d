"""Reproduce the paper's Table 1 and Fig. 4: segment a benchmark and score every method.

``python -m binmap_tf.evaluate --dataset bsds500 --split test --methods egs slic binmap-egs
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
import csv
import hashlib
import io
import os
import time
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

import numpy as np
from tqdm import tqdm

from binmap_tf.binary_map import BinaryMap
from binmap_tf.datasets import load_dataset
from binmap_tf.files import write_json, write_png, write_text
from binmap_tf.merge_scorer import resolve_scorer
from binmap_tf.methods import (
    COUNT_SUFFIX,
    DEFAULT_VALUES,
    HIERARCHY_METHODS,
    LEARNED_METHODS,
    PARAMETER_NAMES,
    SCORER_METHOD,
    SWEEP_VALUES,
    Method,
    parse_method,
    run_method,
)
from binmap_tf.metrics import RegionScores, region_benchmark, region_scores, summarize
from binmap_tf.paths import FINE_TUNED
from binmap_tf.segment import StageCache
from binmap_tf.superpixels import superpixel_params

DEFAULT_METHODS = ("egs", "slic", "binmap-egs", "binmap-slic")


@dataclass(frozen=True)
class Setting:
    """One method at one parameter value."""

    method: str
    value: float


@dataclass
class ImageResult:
    """Scores of one setting on one image."""

    image_id: str
    setting: Setting
    scores: RegionScores
    n_superpixels: int
    n_segments: int
    seconds: float


@dataclass(frozen=True)
class HostOptions:
    """What the host-side stage needs besides the image: merge options, where to save labels, and
    the scorer file of ``binmap-learned`` (None: the shipped one)."""

    hamming: int
    merge: str
    labels_dir: str | None
    scorer: str | None = None


def evaluate_image(sample, maps: dict[str, BinaryMap], cnn_seconds: dict[str, float],
                   settings: list[Setting], options: HostOptions) -> list[ImageResult]:
    """Run every setting on one dataset sample and score it against all its annotations."""
    image = sample.load_image()
    ground_truths = sample.load_ground_truths()
    stages = StageCache()
    results = []
    # A sweep's settings often give the same labels (a hierarchy's thresholds with no merge height
    # between them, say): each distinct segmentation is scored once.
    scored: dict[bytes, RegionScores] = {}
    for setting in settings:
        method = parse_method(setting.method, options.scorer)
        binary_map = maps.get(method.map_variant) if method.map_variant else None
        output = run_method(method, setting.value, image, binary_map, stages,
                            hamming=options.hamming, merge=options.merge)
        if options.labels_dir:
            name = setting.method if len(settings) == len({s.method for s in settings}) else \
                f"{setting.method}_{PARAMETER_NAMES[method.parameter_key]}{setting.value:g}"
            write_png(Path(options.labels_dir) / name / f"{sample.id}.png", output.labels.astype(np.uint16))
        seconds = output.seconds + (cnn_seconds.get(method.map_variant, 0.0) if method.map_variant else 0.0)
        key = hashlib.sha1(output.labels.tobytes()).digest() + str(output.labels.shape).encode()
        if key not in scored:
            scored[key] = region_scores(output.labels, ground_truths)
        results.append(ImageResult(sample.id, setting, scored[key], output.n_superpixels,
                                   int(len(np.unique(output.labels))), seconds))
    return results


def settings_for(methods: list[Method], sweep: bool, values: dict[str, float]) -> list[Setting]:
    """Each method at its main value, or over the whole sweep grid plus the main value (so the
    sweep's table still has every method's main row)."""
    settings = []
    for method in methods:
        main_value = float(values[method.parameter_key])
        grid = sorted({*map(float, SWEEP_VALUES[method.parameter_key]), main_value}) if sweep else [main_value]
        settings.extend(Setting(method.name, value) for value in grid)
    return settings


def build_mappers(args: argparse.Namespace, methods: list[Method]) -> dict:
    """The binary mappers the methods need: ``itq`` (``--hashing``), ``ft`` (``--ft-hashing``) and
    ``edges`` (the default hashing plus HED's edge map, for the hierarchical methods)."""
    from binmap_tf.cli import mapper_from_args

    variants = {method.map_variant for method in methods if method.map_variant}
    hashings = {"itq": args.hashing, "ft": args.ft_hashing, "edges": args.hashing}
    return {variant: mapper_from_args(args, hashing=hashings[variant], **({"edges": True} if variant == "edges" else {}))
            for variant in sorted(variants)}


def run(args: argparse.Namespace) -> list[ImageResult]:
    """Compute maps (cached) in this process and score images in ``args.workers`` processes."""
    from binmap_tf.map_cache import BinaryMapCache, UncachedMaps

    methods = [parse_method(name, args.scorer) for name in args.methods]
    dataset = load_dataset(args.dataset, split=args.split, root=args.data, limit=args.limit)
    args.split = dataset.split
    settings = settings_for(methods, args.sweep, main_values(args))
    if args.serving and any(m.map_variant == "ft" for m in methods):
        raise SystemExit("error: --serving serves one hashing layer; evaluate the -ft methods locally")
    if args.serving:  # one request per image; its map (with edges if a method needs them) serves every method
        from binmap_tf.cli import served_mapper

        variants = {method.map_variant for method in methods if method.map_variant}
        served = UncachedMaps(served_mapper(args.serving, args.verbose, "edges" in variants, args.max_tile_pixels))
        caches = {variant: served for variant in variants}
    else:
        mappers = build_mappers(args, methods) if any(m.map_variant for m in methods) else {}
        caches = {variant: BinaryMapCache(mapper, f"{args.dataset}-{args.split}", root=args.cache)
                  for variant, mapper in mappers.items()}
    options = HostOptions(args.hamming, args.merge, str(args.out / "labels") if args.save_labels else None,
                          args.scorer)
    results: list[ImageResult] = []
    pool = ProcessPoolExecutor(args.workers, mp_context=get_context("spawn")) if args.workers > 1 else None
    futures: list[Future] = []
    try:
        for sample in tqdm(dataset, desc=f"{args.dataset}/{args.split}", unit="image"):
            maps, cnn_seconds = {}, {}
            if caches:
                image = sample.load_image()
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


def summarize_settings(results: list[ImageResult]) -> dict[Setting, dict]:
    """Dataset figures for every setting, in first-seen order."""
    grouped: dict[Setting, list[ImageResult]] = {}
    for result in results:
        grouped.setdefault(result.setting, []).append(result)
    summary = {}
    for setting, rows in grouped.items():
        scores = summarize([row.scores for row in rows])
        method = parse_method(setting.method)
        summary[setting] = {
            "seg_iou": scores.abo, "seg_iou_image_mean": scores.abo_image_mean, "covering": scores.covering,
            "pri": scores.pri, "voi": scores.voi, "n_images": scores.n_images,
            "mean_segments": float(np.mean([row.n_segments for row in rows])),
            "mean_superpixels": float(np.mean([row.n_superpixels for row in rows])),
            "seconds_per_image": float(np.mean([row.seconds for row in rows])),
            "parameter": PARAMETER_NAMES[method.parameter_key], "value": setting.value,
        }
    return summary


def per_image_csv(results: list[ImageResult]) -> str:
    """One CSV row per image and setting, with the raw accumulators to recompute dataset figures."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["image_id", "method", "value", "n_superpixels", "n_segments", "abo", "abo_sum",
                     "abo_count", "covering", "pri", "voi", "seconds"])
    for row in results:
        scores = row.scores
        writer.writerow([row.image_id, row.setting.method, f"{row.setting.value:g}", row.n_superpixels,
                         row.n_segments, f"{scores.abo:.6f}", f"{scores.abo_sum:.6f}", scores.abo_count,
                         f"{scores.covering:.6f}", f"{scores.rand_index:.6f}",
                         f"{scores.variation_of_information:.6f}", f"{row.seconds:.4f}"])
    return buffer.getvalue()


def sweep_csv(summary: dict[Setting, dict]) -> str:
    """The sweep as CSV: one row per method and parameter value."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    fields = ["seg_iou", "seg_iou_image_mean", "covering", "pri", "voi", "mean_superpixels", "mean_segments",
              "seconds_per_image", "n_images"]
    writer.writerow(["method", "parameter", "value", *fields])
    for setting, row in summary.items():
        writer.writerow([setting.method, row["parameter"], f"{setting.value:g}",
                         *[f"{row[field]:.6f}" if isinstance(row[field], float) else row[field] for field in fields]])
    return buffer.getvalue()


def main_settings(summary: dict[Setting, dict], values: dict[str, float]) -> dict[str, dict]:
    """Each method's row at its main parameter value (the one without ``--sweep``)."""
    chosen = {}
    for setting, row in summary.items():
        if setting.value == values[parse_method(setting.method).parameter_key]:
            chosen[setting.method] = row
    return chosen


def main_values(args: argparse.Namespace) -> dict[str, float]:
    """Each parameter's main value (the one without ``--sweep``), keyed like ``SWEEP_VALUES``."""
    values = {**DEFAULT_VALUES, "egs": args.egs_scale, "slic": float(args.slic_segments)}
    if args.scorer is not None:
        values[SCORER_METHOD] = resolve_scorer(args.scorer).threshold
    if args.threshold is not None:
        values.update({name: args.threshold for name in (*HIERARCHY_METHODS, *LEARNED_METHODS)})
    return values


# --- Hierarchical methods: the benchmark's ODS / OIS over a sweep ------------------------------


def hierarchy_benchmark(results: list[ImageResult]) -> dict[str, dict]:
    """ODS / OIS figures of every hierarchical method swept over thresholds (or segment counts).

    Each method's per-image scores at every value go through
    :func:`~binmap_tf.metrics.region_benchmark`: ODS is one value for the whole dataset (the
    best covering), OIS the best value per image, both chosen on the evaluated split as the BSDS
    benchmark defines them (gPb-owt-ucm's 0.59 is such an ODS on test). Seg-IoU (ABO) and the mean number of
    segments are given at the covering ODS value.
    """
    by_method: dict[str, dict[str, dict[float, ImageResult]]] = {}
    for result in results:
        if parse_method(result.setting.method).hierarchical:
            by_image = by_method.setdefault(result.setting.method, {})
            by_image.setdefault(result.image_id, {})[result.setting.value] = result
    figures = {}
    for method, by_image in by_method.items():
        values = sorted(next(iter(by_image.values())))
        rows = [[by_value[value] for value in values] for by_value in by_image.values()]
        bench = region_benchmark([[row.scores for row in image] for image in rows], values)
        ods = int(np.argmax(bench.covering_per_threshold))
        figures[method] = {
            "parameter": PARAMETER_NAMES[parse_method(method).parameter_key],
            "ods_value": bench.covering_ods_threshold, "covering_ods": bench.covering_ods,
            "covering_ois": bench.covering_ois, "pri_ods": bench.pri_ods, "pri_ois": bench.pri_ois,
            "voi_ods": bench.voi_ods, "voi_ois": bench.voi_ois,
            "seg_iou_ods": float(bench.abo_per_threshold[ods]),
            "mean_segments_ods": float(np.mean([image[ods].n_segments for image in rows])),
            "n_images": len(rows),
        }
    return figures


def hierarchy_markdown(figures: dict[str, dict], dataset: str, split: str) -> str:
    """The figures of :func:`hierarchy_benchmark` as a Markdown table."""
    lines = [
        f"Hierarchies on {dataset} ({split}): ODS = the best single setting for the whole dataset, OIS = the "
        "best setting per image, both chosen on this split as the BSDS benchmark does (on test, an upper bound; "
        "a setting chosen on val and applied to test is the run without --sweep, e.g. --threshold T).",
        "",
        "| method | ODS setting | covering ODS | covering OIS | PRI ODS | PRI OIS | VoI ODS | VoI OIS "
        "| Seg-IoU (ABO) % at ODS | segments at ODS | images |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for method, row in figures.items():
        lines.append(
            f"| {method} | {row['parameter']}={row['ods_value']:g} | {row['covering_ods']:.3f} | "
            f"{row['covering_ois']:.3f} | {row['pri_ods']:.3f} | {row['pri_ois']:.3f} | {row['voi_ods']:.3f} | "
            f"{row['voi_ois']:.3f} | "
            f"{100 * row['seg_iou_ods']:.2f} | {row['mean_segments_ods']:.1f} | {row['n_images']} |")
    return "\n".join(lines) + "\n"


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
    from binmap_tf import cli

    parser = argparse.ArgumentParser(prog="python -m binmap_tf.evaluate", description=__doc__.split("\n\n")[0])
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
    parser.add_argument("--ft-hashing", type=cli.hashing_source, default=FINE_TUNED,
                        help="fine-tuned hashing of the -ft methods: an .npz written by python -m binmap_tf.train "
                             "(default: %(default)s, the shipped layer)")
    parser.add_argument("--scorer", default=None,
                        help=f"{SCORER_METHOD} with this scorer (.npz written by python -m binmap_tf.train_merge) "
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
    from binmap_tf.report import sweep_figure, table_markdown

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
