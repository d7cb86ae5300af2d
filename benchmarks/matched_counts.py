"""At matched segment counts, is the merge hierarchy better than a tuned EGS?

``python -m benchmarks.matched_counts --dataset bsds500 --split test --out DIR`` segments every
image of a split with EGS at a tuned scale (``--egs-scale``, default 500: the best covering on
BSDS500 val), which gives ``n_i`` segments on image ``i``, and cuts each hierarchical method's
merge tree (the hand-set ones built once per image on EGS superpixels at the default scale, as
``binmap-hier`` in :mod:`binmap_tf.cli.evaluate`; the learned ones, ``binmap-learned`` first, on their
scorer's first level) at exactly ``n_i`` segments. Both then have the same number of
segments on every image, so their covering, ABO (Seg-IoU), PRI and VoI compare the quality of
the regions alone, not a choice of granularity.

Writes ``DIR/matched_counts.json`` (settings and each segmentation's dataset figures) and
``DIR/matched_counts.md`` (the table, also printed). Binary maps with HED edges come from the
cache ``binmap-evaluate`` fills for the hierarchical methods (same mapper and
namespace), so maps it computed are reused; the CNN runs for the others. Seconds per image are
host seconds (superpixels, tree, cut) plus, for the hierarchies, the CNN seconds recorded when
the map was computed, as the evaluation counts them.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from binmap_tf.cli.common import add_dataset_arguments
from binmap_tf.evaluation.methods import COUNT_SUFFIX, COUNTS, DEFAULT_VALUES, parse_method, run_method
from binmap_tf.evaluation.metrics import RegionScores, region_scores, summarize
from binmap_tf.segmentation.pipeline import StageCache, working_image

EGS = "egs"
TUNED_EGS_SCALE = 500.0  # best covering of EGS alone on BSDS500 val


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
        """Dataset figures, and on how many images the count equals ``target``'s (here EGS's;
        :mod:`benchmarks.levels` passes the level asked for)."""
        scores = summarize(self.scores)
        return {"mean_segments": float(np.mean(self.segments)), "covering": scores.covering,
                "seg_iou": scores.abo, "seg_iou_image_mean": scores.abo_image_mean, "pri": scores.pri,
                "voi": scores.voi, "seconds_per_image": float(np.mean(self.seconds)),
                "n_images": scores.n_images,
                "matched_images": int(np.sum(np.array(self.segments) == np.array(target)))}


def run(args: argparse.Namespace) -> dict[str, Rows]:
    """Segment and score every image: tuned EGS, then each hierarchy cut at EGS's count."""
    from binmap_tf.binary_map.model import BinaryMapper
    from binmap_tf.evaluation.datasets import load_dataset
    from binmap_tf.evaluation.map_cache import BinaryMapCache

    dataset = load_dataset(args.dataset, split=args.split, root=args.data, limit=args.limit)
    args.split = dataset.split
    cache = BinaryMapCache(BinaryMapper(edges=True), f"{args.dataset}-{args.split}", root=args.cache)
    egs, hierarchies = parse_method(EGS), [parse_method(name + COUNT_SUFFIX) for name in args.methods]
    rows = {name: Rows() for name in [EGS, *args.methods]}
    for sample in tqdm(dataset, desc=f"{args.dataset}/{args.split}", unit="image"):
        image, ground_truths = sample.load_image(), sample.load_ground_truths()
        binary_map, cnn_seconds = cache.get(sample.id, working_image(image))
        stages = StageCache()  # the hierarchies share one EGS at the default scale
        output = run_method(egs, args.egs_scale, image, None, stages)
        n_segments = rows[EGS].add(output.labels, ground_truths, output.seconds)
        for name, method in zip(args.methods, hierarchies):
            output = run_method(method, n_segments, image, binary_map, stages)
            rows[name].add(output.labels, ground_truths, output.seconds + cnn_seconds)
    return rows


def table_markdown(results: dict) -> str:
    """The results as a Markdown table with a heading line."""
    settings = results["settings"]
    lines = [
        f"Matched segment counts on {settings['dataset']} {settings['split']} ({settings['n_images']} images): "
        f"EGS at scale {settings['egs_scale']:g}; each hierarchy (hand-set: on EGS superpixels at scale "
        f"{settings['hierarchy_superpixel_scale']:g}; learned: on its scorer's first level) cut per image at "
        f"EGS's number of segments.",
        "",
        "| segmentation | mean segments | covering | ABO % | PRI | VoI | s/image |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, row in results["methods"].items():
        label = f"{name} (scale {settings['egs_scale']:g})" if name == EGS else name
        lines.append(f"| {label} | {row['mean_segments']:.1f} | {row['covering']:.3f} | {100 * row['seg_iou']:.2f} "
                     f"| {row['pri']:.3f} | {row['voi']:.3f} | {row['seconds_per_image']:.2f} |")
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.matched_counts", description=__doc__.split("\n\n")[0])
    add_dataset_arguments(parser)
    parser.add_argument("--egs-scale", type=float, default=TUNED_EGS_SCALE,
                        help="scale of the tuned EGS that sets each image's segment count (default: %(default)g)")
    parser.add_argument("--methods", nargs="+", choices=tuple(COUNTS), default=list(COUNTS), metavar="METHOD",
                        help=f"hierarchical methods (default: all: {' '.join(COUNTS)})")
    parser.add_argument("--cache", type=Path, default=None, help="binary-map cache (default: $BINMAP_TF_HOME/binary_maps)")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    from binmap_tf.common.files import write_json, write_text

    args = parse_args(argv)
    start = time.perf_counter()
    rows = run(args)
    target = rows[EGS].segments
    results = {
        "settings": {"dataset": args.dataset, "split": args.split, "limit": args.limit,
                     "n_images": len(target), "egs_scale": args.egs_scale,
                     "hierarchy_superpixel_scale": DEFAULT_VALUES[EGS], "methods": list(args.methods)},
        "methods": {name: row.summary(target) for name, row in rows.items()},
    }
    table = table_markdown(results)
    write_json(args.out / "matched_counts.json", results)
    write_text(args.out / "matched_counts.md", table)
    print(table)
    print(f"wrote {args.out} in {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
