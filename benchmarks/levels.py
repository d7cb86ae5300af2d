"""Is one hierarchy good at every level? Covering at fixed segment counts, their mean, and ODS.

``python -m benchmarks.levels --split val --out benchmarks/results/levels_bsds500_val`` builds each
hierarchical method's merge tree once per image (the default learned hierarchy ``binmap-learned``
and the hand-set ``binmap-hier`` by default; ``--candidates`` adds others) and scores it

* at every **level** of ``--levels`` (10, 20, 40, 80, 160 segments per image): each image's tree is
  cut at ``min(level, its superpixels)`` segments; covering, ABO (Seg-IoU), PRI and VoI are the
  dataset figures of that one segmentation per image (:func:`~binmap_tf.evaluation.metrics.summarize`);
* by the **level mean**: the mean covering over those levels, the level-aware criterion (a
  hierarchy whose every cut is good scores high; one good only near its own cut does not);
* at its **ODS**: the best covering with one threshold on the merge heights for the whole split
  (:func:`~binmap_tf.evaluation.metrics.region_benchmark` over the thresholds ``evaluate --sweep`` uses).

EGS, flat, gives its curve at ``--egs-scales``. Writes ``DIR/levels.json`` (settings, every figure),
``DIR/levels.md`` (the table, also printed) and ``DIR/levels.png`` (covering against the mean number
of segments per image, one line per method). Choose on train/val; run test once with the choice.

A candidate is ``METHOD[@SUPERPIXELS[:KEY=VALUE,...]]``: a hierarchical method of
:data:`~binmap_tf.evaluation.methods.COUNTS` or a scorer ``.npz`` (learned merging ordered by it),
optionally on another first level, e.g. ``binmap-learned@egs:scale=500`` or
``binmap-learned@watershed:h=0.02``.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from benchmarks.working_resolution import shrunk
from binmap_tf.cli.common import add_dataset_arguments
from binmap_tf.evaluation.levels import LEVELS, level_counts, scores_at_thresholds
from binmap_tf.evaluation.methods import COUNTS, DEFAULT_VALUES, HIERARCHY_THRESHOLDS, parse_method, run_method
from binmap_tf.evaluation.metrics import RegionScores, region_benchmark, region_scores, summarize
from binmap_tf.segmentation.hierarchy import MergeTree
from binmap_tf.segmentation.pipeline import StageCache, segment_with_map, working_image
from binmap_tf.segmentation.superpixels import superpixel_params

EGS = "egs"
EGS_SCALES = (100.0, 200.0, 500.0, 1000.0, 2000.0)  # EGS alone, from ~700 down to ~30 segments
DEFAULT_METHODS = ("binmap-learned", "binmap-hier")


@dataclass
class Rows:
    """Per-image results of one segmentation: scores, segment counts and seconds."""

    scores: list[RegionScores] = field(default_factory=list)
    segments: list[int] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)

    def add(self, labels: np.ndarray, ground_truths: list[np.ndarray], seconds: float) -> int:
        """Score ``labels``, record it and return its number of segments."""
        n_segments = len(np.unique(labels))
        self.scores.append(region_scores(labels, ground_truths))
        self.segments.append(n_segments)
        self.seconds.append(seconds)
        return n_segments

    def summary(self, target: list[int]) -> dict:
        """Dataset figures, and on how many images the count equals ``target`` (the count asked for)."""
        scores = summarize(self.scores)
        return {"mean_segments": float(np.mean(self.segments)), "covering": scores.covering,
                "seg_iou": scores.abo, "seg_iou_image_mean": scores.abo_image_mean, "pri": scores.pri,
                "voi": scores.voi, "seconds_per_image": float(np.mean(self.seconds)),
                "n_images": scores.n_images,
                "matched_images": int(np.sum(np.array(self.segments) == np.array(target)))}


@dataclass(frozen=True)
class Hierarchy:
    """A hierarchy to score: its name and the :func:`segment_with_map` options that build its tree."""

    name: str
    options: dict[str, Any]


def parse_candidate(spec: str) -> Hierarchy:
    """``METHOD[@SUPERPIXELS[:KEY=VALUE,...]]`` (see the module docstring) as a :class:`Hierarchy`."""
    method_name, _, level = spec.partition("@")
    if method_name.endswith(".npz"):
        method = parse_method("binmap-learned", scorer=method_name)
    elif method_name in COUNTS:
        method = parse_method(method_name)
    else:
        raise ValueError(f"unknown hierarchy {method_name!r}; use one of {', '.join(COUNTS)} or a scorer .npz")
    options = method.segment_options(DEFAULT_VALUES.get(method_name, 0.5))
    options.pop("threshold", None)  # every cut is asked for later
    if level:
        options = {key: value for key, value in options.items() if key in ("merge", "scorer", "weights")}
        options.update(first_level_options(level))
    return Hierarchy(spec, options)


def first_level_options(spec: str) -> dict[str, Any]:
    """``SUPERPIXELS[:KEY=VALUE,...]`` (e.g. ``watershed:h=0.02``) as ``{"superpixels": ..., KEY: VALUE}``,
    each value of its parameter's type; ``ValueError`` for an unknown method or parameter."""
    superpixels, _, params = spec.partition(":")
    options: dict[str, Any] = {"superpixels": superpixels}
    defaults = superpixel_params(superpixels)  # ValueError for an unknown method
    for item in filter(None, params.split(",")):
        key, _, value = item.partition("=")
        if key not in defaults:
            raise ValueError(f"{superpixels} superpixels take {sorted(defaults)}, not {key!r}")
        options[key] = type(defaults[key])(float(value))  # the parameter's own type
    return options


@dataclass(frozen=True)
class Level:
    """Where each image's tree is cut: at ``count`` segments, or (``egs_scale``) at the number of segments EGS
    gives that image at that scale (:mod:`benchmarks.matched_counts`)."""

    count: int | None = None
    egs_scale: float | None = None

    @property
    def name(self) -> str:
        """The level's key in the results: ``"40"`` or ``"egs500"``."""
        return str(self.count) if self.egs_scale is None else f"{EGS}{self.egs_scale:g}"

    def target(self, egs_counts: dict[float, int]) -> int:
        """This image's number of segments, given EGS's count at each scale on it."""
        return int(self.count) if self.egs_scale is None else egs_counts[self.egs_scale]


@dataclass
class HierarchyRows:
    """One hierarchy's per-image results: a :class:`Rows` per level (with the count each level asked for) and
    the scores at every threshold; the seconds are those of building the tree (superpixels, codes, merge), not
    of the cuts."""

    levels: list[Rows]
    asked: list[list[int]] = field(default_factory=list)  # [image][level]: the count asked for
    thresholds: list[list[RegionScores]] = field(default_factory=list)  # [image][threshold]
    threshold_segments: list[list[int]] = field(default_factory=list)

    def add(self, tree: MergeTree, cut: Callable[..., np.ndarray], ground_truths: list[np.ndarray],
            counts: Sequence[int], thresholds: Sequence[float], seconds: float) -> None:
        """Score ``tree`` cut at each of ``counts`` (this image's count per level) and at every threshold;
        ``cut(n_segments=, threshold=)`` gives a cut's labels at the image's size
        (:meth:`SegmentationResult.cut`, or the tree's own for an image segmented at its size)."""
        self.add_levels(tree, cut, ground_truths, counts, seconds)
        self.add_thresholds(*scores_at_thresholds(tree, ground_truths, thresholds, cut))

    def add_levels(self, tree: MergeTree, cut: Callable[..., np.ndarray], ground_truths: list[np.ndarray],
                   counts: Sequence[int], seconds: float) -> None:
        """Score ``tree`` cut at each of ``counts`` (this image's count per level)."""
        for rows, count in zip(self.levels, level_counts(tree.n_superpixels, counts)):
            rows.add(cut(n_segments=count), ground_truths, seconds)
        self.asked.append([int(count) for count in counts])

    def add_thresholds(self, scores: list[RegionScores], counts: list[int]) -> None:
        """Record one image's scores and segment counts at every threshold (:func:`scores_at_thresholds`)."""
        self.thresholds.append(scores)
        self.threshold_segments.append(counts)

    def summary(self, names: Sequence, thresholds: Sequence[float]) -> dict:
        """Figures per level (keyed by ``str`` of ``names``), the level mean of covering and, where
        ``thresholds`` are given, the ODS / OIS figures."""
        levels = {str(name): rows.summary([asked[index] for asked in self.asked])
                  for index, (name, rows) in enumerate(zip(names, self.levels))}
        summary = {
            "levels": levels,
            "level_mean_covering": float(np.mean([row["covering"] for row in levels.values()])),
            "level_mean_seg_iou": float(np.mean([row["seg_iou"] for row in levels.values()])),
            "seconds_per_image": float(np.mean(self.levels[0].seconds)),
        }
        if thresholds:
            bench = region_benchmark(self.thresholds, thresholds)
            ods = int(np.argmax(bench.covering_per_threshold))
            summary["ods"] = {
                "threshold": bench.covering_ods_threshold, "covering": bench.covering_ods,
                "covering_ois": bench.covering_ois, "pri": bench.pri_ods, "voi": bench.voi_ods,
                "seg_iou": float(bench.abo_per_threshold[ods]),
                "mean_segments": float(np.mean([image[ods] for image in self.threshold_segments]))}
        return summary


def run(args: argparse.Namespace, hierarchies: list[Hierarchy], levels: Sequence[Level],
        thresholds: Sequence[float] = HIERARCHY_THRESHOLDS) -> tuple[dict[str, HierarchyRows], dict[float, Rows]]:
    """Segment every image with EGS at every scale of ``args.egs_scales``, then build every hierarchy's tree
    once and score it at every level (and threshold)."""
    from binmap_tf.binary_map.model import BinaryMapper
    from binmap_tf.evaluation.datasets import load_dataset
    from binmap_tf.evaluation.map_cache import BinaryMapCache

    missing = {level.egs_scale for level in levels if level.egs_scale is not None} - set(args.egs_scales)
    if missing:
        raise ValueError(f"levels at EGS scales {sorted(missing)} need those scales in egs_scales")
    dataset = load_dataset(args.dataset, split=args.split, root=args.data, limit=args.limit)
    args.split = dataset.split
    namespace = f"{args.dataset}-{args.split}" + (f"-shrunk{args.shrink:g}" if args.shrink else "")
    cache = BinaryMapCache(BinaryMapper(edges=True), namespace, root=args.cache)
    rows = {hierarchy.name: HierarchyRows([Rows() for _ in levels]) for hierarchy in hierarchies}
    egs_rows = {scale: Rows() for scale in args.egs_scales}
    egs = parse_method(EGS)
    for sample in tqdm(dataset, desc=f"{args.dataset}/{args.split}", unit="image"):
        image, ground_truths = sample.load_image(), sample.load_ground_truths()
        if args.shrink:
            image, ground_truths = shrunk(image, ground_truths, args.shrink)
        binary_map, _ = cache.get(sample.id, working_image(image))  # the map of what the CNN sees (MSRC: brought up)
        stages = StageCache()  # hierarchies on the same first level share its superpixels
        egs_counts = {}
        for scale in args.egs_scales:
            output = run_method(egs, scale, image, None, stages)
            egs_counts[scale] = egs_rows[scale].add(output.labels, ground_truths, output.seconds)
        counts = [level.target(egs_counts) for level in levels]
        for hierarchy in hierarchies:
            result = segment_with_map(image, binary_map, stages=stages, **hierarchy.options)
            seconds = result.timings["superpixels"] + result.timings["assign"] + result.timings["merge"]
            rows[hierarchy.name].add(result.hierarchy, result.cut, ground_truths, counts, thresholds, seconds)
    return rows, egs_rows


def table_markdown(results: dict) -> str:
    """Covering per level, the level mean and ODS of every hierarchy; EGS's curve below."""
    settings = results["settings"]
    levels = [str(level) for level in settings["levels"]]
    lines = [
        f"Levels on {settings['dataset']} {settings['split']} ({settings['n_images']} images"
        + (f", downscaled x{settings['shrink']:g}" if settings.get("shrink") else "") + "): covering of each "
        f"hierarchy cut per image at {', '.join(levels)} segments (mean segments in brackets where a first level "
        "has fewer), their mean, and the covering at ODS (one threshold for the split).",
        "",
        f"| hierarchy | {' | '.join(f'covering @{level}' for level in levels)} | level mean | ODS covering "
        "(segments) | s/image |",
        f"|---|{'---|' * len(levels)}---|---|---|",
    ]
    for name, row in results["hierarchies"].items():
        cells = []
        for level in levels:
            figures = row["levels"][level]
            short = figures["matched_images"] < settings["n_images"]
            cells.append(f"{figures['covering']:.3f}" + (f" ({figures['mean_segments']:.0f})" if short else ""))
        lines.append(f"| {name} | {' | '.join(cells)} | **{row['level_mean_covering']:.3f}** | "
                     f"{row['ods']['covering']:.3f} ({row['ods']['mean_segments']:.1f}) | "
                     f"{row['seconds_per_image']:.2f} |")
    if results["egs"]:
        lines += ["", "| EGS scale | mean segments | covering | ABO % | PRI | VoI |", "|---|---|---|---|---|---|"]
    for scale, row in results["egs"].items():
        lines.append(f"| {scale} | {row['mean_segments']:.1f} | {row['covering']:.3f} | {100 * row['seg_iou']:.2f} "
                     f"| {row['pri']:.3f} | {row['voi']:.3f} |")
    return "\n".join(lines) + "\n"


def levels_figure(results: dict, path: Path, title: str) -> None:
    """Covering against the mean number of segments per image: one line per method (log x), a star at each
    hierarchy's ODS where it was measured."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from binmap_tf.common.files import atomic_path

    figure, axis = plt.subplots(figsize=(7.5, 4.8))
    for name, row in results["hierarchies"].items():
        points = sorted(row["levels"].values(), key=lambda point: point["mean_segments"])
        line, = axis.plot([p["mean_segments"] for p in points], [p["covering"] for p in points], "-o",
                          markersize=4, label=f"{name} (level mean {row['level_mean_covering']:.3f})")
        if "ods" in row:
            axis.plot(row["ods"]["mean_segments"], row["ods"]["covering"], "*", color=line.get_color(),
                      markersize=11)
    egs = list(results["egs"].values())
    if egs:
        axis.plot([p["mean_segments"] for p in egs], [p["covering"] for p in egs], "--s", color="grey",
                  markersize=4, label="EGS (flat; scales " + ", ".join(results["egs"]) + ")")
    axis.set_xscale("log")
    axis.set_xlabel("mean segments per image")
    axis.set_ylabel("covering")
    settings = results["settings"]
    axis.set_title(f"{settings['dataset']} {settings['split']}: {title}", fontsize=10)
    axis.grid(True, alpha=0.3)
    axis.legend(fontsize=8)
    figure.tight_layout()
    with atomic_path(path) as tmp:
        figure.savefig(tmp, dpi=110, format="png")
    plt.close(figure)


def write_results(results: dict, folder: Path, stem: str, start: float,
                  table: Callable[[dict], str] | None = None,
                  title: str = "covering per level (stars: each hierarchy's ODS)") -> None:
    """``folder/stem.json``, ``.md`` (``table(results)``, also printed; the levels table by default) and
    ``.png`` (:func:`levels_figure` with ``title``) of ``results``."""
    from binmap_tf.common.files import write_json, write_text

    text = (table or table_markdown)(results)
    write_json(folder / f"{stem}.json", results)
    write_text(folder / f"{stem}.md", text)
    levels_figure(results, folder / f"{stem}.png", title)
    print(text)
    print(f"wrote {folder} in {time.perf_counter() - start:.0f} s")


def hierarchy_parser(prog: str, description: str, split: str | None = None) -> argparse.ArgumentParser:
    """The arguments every hierarchy benchmark takes: dataset (``split``: BSDS500's default split; None: the
    dataset's own), hierarchies, cache, output folder."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    if split is None:
        add_dataset_arguments(parser)
    else:
        add_dataset_arguments(parser, split=split, split_help=f"bsds500: train/val/test (default {split}); msrc: all")
    parser.add_argument("--methods", nargs="*", choices=tuple(COUNTS), default=list(DEFAULT_METHODS),
                        metavar="METHOD", help=f"hierarchical methods (default: {' '.join(DEFAULT_METHODS)})")
    parser.add_argument("--candidates", nargs="*", default=[], metavar="SPEC",
                        help="more hierarchies: METHOD[@SUPERPIXELS[:KEY=VALUE,...]], METHOD a hierarchical "
                             "method or a scorer .npz (e.g. binmap-learned@egs:scale=500)")
    parser.add_argument("--shrink", type=float, default=None, metavar="F",
                        help="downscale every image and its annotations by F first: a benchmark image as a smaller "
                             "photo, brought up to the working size as MSRC-v2's are (0.665: MSRC's 320x213)")
    parser.add_argument("--cache", type=Path, default=None, help="binary-map cache (default: $BINMAP_TF_HOME/binary_maps)")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    return parser


def parse_hierarchies(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """Parse ``argv`` with ``parser`` (from :func:`hierarchy_parser`); ``args.hierarchies`` holds the parsed
    ``--methods`` and ``--candidates``."""
    args = parser.parse_args(argv)
    try:
        args.hierarchies = [parse_candidate(spec) for spec in [*args.methods, *args.candidates]]
    except ValueError as error:
        parser.error(str(error))
    if not args.hierarchies:
        parser.error("give at least one hierarchy (--methods or --candidates)")
    return args


def run_and_summarize(args: argparse.Namespace, levels: Sequence[Level], thresholds: Sequence[float]) -> dict:
    """:func:`run`, and the results: settings, each hierarchy's figures per level, EGS's per scale."""
    rows, egs_rows = run(args, args.hierarchies, levels, thresholds)
    return {
        "settings": {"dataset": args.dataset, "split": args.split, "limit": args.limit, "shrink": args.shrink,
                     "n_images": len(next(iter(rows.values())).asked),
                     "levels": [level.name for level in levels], "egs_scales": list(args.egs_scales),
                     "thresholds": list(thresholds),
                     "hierarchies": {h.name: {k: str(v) for k, v in h.options.items()} for h in args.hierarchies}},
        "hierarchies": {name: row.summary([level.name for level in levels], thresholds)
                        for name, row in rows.items()},
        "egs": {f"{scale:g}": row.summary(row.segments) for scale, row in egs_rows.items()},
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = hierarchy_parser("python -m benchmarks.levels", __doc__.split("\n\n")[0], split="val")
    parser.add_argument("--levels", nargs="+", type=int, default=list(LEVELS), metavar="N",
                        help="segments per image to cut at (default: %(default)s)")
    parser.add_argument("--egs-scales", nargs="*", type=float, default=list(EGS_SCALES), metavar="K",
                        help="EGS scales for the flat curve (default: %(default)s)")
    return parse_hierarchies(parser, argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    start = time.perf_counter()
    results = run_and_summarize(args, [Level(count=level) for level in args.levels], HIERARCHY_THRESHOLDS)
    write_results(results, args.out, "levels", start)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
