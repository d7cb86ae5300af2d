"""Does the bf16 backbone keep the default segmentation's labels?

``python -m benchmarks.precision_labels --split val --out benchmarks/results/precision_labels_bsds500_val.json``
segments every image of a BSDS500 split with the default pipeline twice, once from float32 binary maps
(the map cache ``binmap-evaluate`` fills) and once from maps of the same backbone run in bfloat16
(``--precision bf16``, 2x faster on CPUs with AVX512-BF16 or AMX, docs/performance.md), and records
per image whether the two label images are equal, the fraction of pixels whose segment differs (after
matching each bf16 segment to the fp32 segment it overlaps most) and the covering of each. Issue 23
asks bf16 to keep the labels: pixels equal, covering within 0.002.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm


def differing_pixels(reference: np.ndarray, other: np.ndarray) -> float:
    """Fraction of pixels whose label in ``other``, mapped to the ``reference`` segment it overlaps most,
    is not their ``reference`` label (0 for the same partition under any renumbering)."""
    n_reference = int(reference.max()) + 1
    joint = np.bincount(other.ravel().astype(np.int64) * n_reference + reference.ravel(),
                        minlength=(int(other.max()) + 1) * n_reference).reshape(-1, n_reference)
    return float(1.0 - joint.max(axis=1).sum() / reference.size)


def main(argv: list[str] | None = None) -> int:
    from benchmarks.run import machine
    from binmap_tf.binary_map.model import BinaryMapper
    from binmap_tf.cli.common import add_dataset_arguments
    from binmap_tf.common.files import write_json
    from binmap_tf.evaluation.datasets import load_dataset
    from binmap_tf.evaluation.map_cache import BinaryMapCache
    from binmap_tf.evaluation.metrics import region_scores, summarize
    from binmap_tf.segmentation.pipeline import segment_with_map, working_image

    parser = argparse.ArgumentParser(prog="python -m benchmarks.precision_labels", description=__doc__.split("\n\n")[0])
    add_dataset_arguments(parser, split="val", split_help="bsds500 split (default: %(default)s)")
    parser.add_argument("--cache", type=Path, default=None, help="binary-map cache (default: $BINMAP_TF_HOME/binary_maps)")
    parser.add_argument("--out", type=Path, required=True, help="JSON file to write")
    args = parser.parse_args(argv)
    dataset = load_dataset(args.dataset, split=args.split, root=args.data, limit=args.limit)
    caches = {precision: BinaryMapCache(BinaryMapper(edges=True, precision=precision),
                                        f"{args.dataset}-{dataset.split}", root=args.cache)
              for precision in ("fp32", "bf16")}
    rows, scores = [], {precision: [] for precision in caches}
    start = time.perf_counter()
    for sample in tqdm(dataset, desc=f"{args.dataset}/{dataset.split}", unit="image"):
        image, ground_truths = sample.load_image(), sample.load_ground_truths()
        labels = {}
        for precision, cache in caches.items():
            binary_map, _ = cache.get(sample.id, working_image(image))
            labels[precision] = segment_with_map(image, binary_map).labels
            scores[precision].append(region_scores(labels[precision], ground_truths))
        rows.append({"image": sample.id, "equal": bool(np.array_equal(labels["fp32"], labels["bf16"])),
                     "differing_pixels": differing_pixels(labels["fp32"], labels["bf16"]),
                     "segments": {precision: int(value.max()) + 1 for precision, value in labels.items()},
                     "covering": {precision: scores[precision][-1].covering for precision in caches}})
    summaries = {precision: summarize(values) for precision, values in scores.items()}
    record = {
        "dataset": args.dataset, "split": dataset.split, "n_images": len(rows), "machine": machine(),
        "images_equal": sum(row["equal"] for row in rows),
        "differing_pixels_mean": float(np.mean([row["differing_pixels"] for row in rows])),
        "differing_pixels_max": float(np.max([row["differing_pixels"] for row in rows])),
        "covering": {precision: summary.covering for precision, summary in summaries.items()},
        "pri": {precision: summary.pri for precision, summary in summaries.items()},
        "voi": {precision: summary.voi for precision, summary in summaries.items()},
        "seconds": round(time.perf_counter() - start, 1), "per_image": rows,
    }
    write_json(args.out, record)
    print(f"{record['images_equal']}/{len(rows)} images with equal labels; differing pixels mean "
          f"{record['differing_pixels_mean']:.4f}, max {record['differing_pixels_max']:.4f}; covering fp32 "
          f"{record['covering']['fp32']:.4f}, bf16 {record['covering']['bf16']:.4f}; wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
