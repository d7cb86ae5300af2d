"""Which first level for the merge hierarchy: the upper bound and speed of candidate superpixels.

``python -m benchmarks.first_level --split val --out benchmarks/results/first_level_bsds500_val.json``
computes, for each candidate (EGS, SLIC, a watershed of the HED edge map with markers at its
h-minima), on BSDS500 images:

* the **upper bound** of any merge of those superpixels: for each human annotation, every
  superpixel takes its majority segment of that annotation, and the result is scored against
  that annotation; covering, PRI and VoI are then pooled over annotators and images as the
  benchmark pools annotations (:func:`binmap_tf.evaluation.metrics.summarize`);
* the mean number of superpixels and the seconds per image (the superpixels alone; the edge
  map comes with the binary map the hierarchy needs anyway).

No merge can beat the bound; a first level that loses little to it with few superpixels leaves
the scorer an easier job. Choose on val only.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Callable

import numpy as np

from binmap_tf.evaluation.metrics import region_scores, summarize
from binmap_tf.segmentation.superpixels import egs, slic, watershed


def candidates() -> dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]]:
    """Name -> ``(image, edges) -> superpixel labels`` of every first level compared."""
    return {
        "egs k=100 (default)": lambda image, edges: egs(image, scale=100),
        "egs k=200": lambda image, edges: egs(image, scale=200),
        "slic 500": lambda image, edges: slic(image, n_segments=500),
        **{f"watershed hed h={h:g}": (lambda image, edges, h=h: watershed(image, edges, h))
           for h in (0.005, 0.02, 0.05)},
    }


def oracle_scores(superpixels: np.ndarray, ground_truth: np.ndarray):
    """Scores of the best merge of ``superpixels`` for one annotation: each takes its majority segment."""
    segments = np.unique(ground_truth, return_inverse=True)[1].reshape(ground_truth.shape)
    width = int(segments.max()) + 1
    n = int(superpixels.max()) + 1
    counts = np.bincount(superpixels.ravel().astype(np.int64) * width + segments.ravel(),
                         minlength=n * width).reshape(n, width)
    return region_scores(np.argmax(counts, axis=1)[superpixels], [ground_truth])


def main(argv: list[str] | None = None) -> int:
    from binmap_tf.binary_map.model import BinaryMapper
    from binmap_tf.common.files import write_json
    from binmap_tf.evaluation.datasets import load_dataset
    from binmap_tf.evaluation.map_cache import BinaryMapCache

    parser = argparse.ArgumentParser(prog="python -m benchmarks.first_level", description=__doc__.split("\n\n")[0])
    parser.add_argument("--split", default="val", help="BSDS500 split (default: %(default)s; never test)")
    parser.add_argument("--limit", type=int, default=None, help="first N images")
    parser.add_argument("--cache", type=Path, default=None, help="binary-map cache (default: $BINMAP_TF_HOME/binary_maps)")
    parser.add_argument("--out", type=Path, required=True, help="JSON file to write")
    args = parser.parse_args(argv)
    if args.split == "test":
        parser.error("the first level is chosen on val; test is run once with the chosen setting")
    dataset = load_dataset("bsds500", split=args.split, limit=args.limit)
    cache = BinaryMapCache(BinaryMapper(edges=True), f"bsds500-{dataset.split}", root=args.cache)
    methods = candidates()
    scores: dict[str, list] = {name: [] for name in methods}
    counts: dict[str, list[int]] = {name: [] for name in methods}
    seconds: dict[str, list[float]] = {name: [] for name in methods}
    for sample in dataset:
        image, annotations = sample.load_image(), sample.load_ground_truths()
        edges = cache.get(sample.id, image)[0].edges
        for name, method in methods.items():
            start = time.perf_counter()
            labels = method(image, edges)
            seconds[name].append(time.perf_counter() - start)
            counts[name].append(int(labels.max()) + 1)
            scores[name].extend(oracle_scores(labels, annotation) for annotation in annotations)
    results = {}
    for name in methods:
        pooled = summarize(scores[name])
        results[name] = {"upper_bound_covering": pooled.covering, "upper_bound_pri": pooled.pri,
                         "upper_bound_voi": pooled.voi, "mean_superpixels": float(np.mean(counts[name])),
                         "seconds_per_image": float(np.mean(seconds[name]))}
    write_json(args.out, {"dataset": "bsds500", "split": dataset.split, "images": len(dataset), "results": results})
    print(f"{'first level':24s} {'covering':>8s} {'PRI':>6s} {'VoI':>6s} {'superpixels':>11s} {'s/image':>7s}")
    for name, row in results.items():
        print(f"{name:24s} {row['upper_bound_covering']:8.4f} {row['upper_bound_pri']:6.4f} {row['upper_bound_voi']:6.3f} "
              f"{row['mean_superpixels']:11.1f} {row['seconds_per_image']:7.3f}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
