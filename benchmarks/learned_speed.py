"""End-to-end seconds of ``segment(merge="hierarchy")`` with the learned scorer beside the hand-set cues.

``python -m benchmarks.learned_speed --limit 10 --out benchmarks/results/learned_speed.json`` runs
:func:`binmap_tf.segment.segment` (CNN with edges, EGS, codes, merge tree, cut) on the first
BSDS500 val images, after one warm-up call, and records per-stage seconds (median over the
images) and the machine's 1-minute load average before and after: on a shared machine the load
says how far the figures are from an idle one.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np

SETTINGS = {"binmap-learned": {"scorer": "learned"}, "binmap-hier": {}}


def main(argv: list[str] | None = None) -> int:
    from binmap_tf.datasets import load_dataset
    from binmap_tf.files import write_json
    from binmap_tf.segment import segment

    parser = argparse.ArgumentParser(prog="python -m benchmarks.learned_speed", description=__doc__.split("\n\n")[0])
    parser.add_argument("--limit", type=int, default=10, help="first N BSDS500 val images (default: %(default)s)")
    parser.add_argument("--out", type=Path, required=True, help="JSON file to write")
    args = parser.parse_args(argv)
    images = [sample.load_image() for sample in load_dataset("bsds500", "val", limit=args.limit)]
    load_before = os.getloadavg()[0]
    segment(images[0], merge="hierarchy", scorer="learned")  # builds the model and traces the graph
    results = {}
    for name, options in SETTINGS.items():
        timings = []
        for image in images:
            start = time.perf_counter()
            result = segment(image, merge="hierarchy", **options)
            timings.append({**result.timings, "wall": time.perf_counter() - start})
        results[name] = {stage: float(np.median([t[stage] for t in timings])) for stage in timings[0]}
    record = {"images": len(images), "image_shape": list(images[0].shape[:2]), "cpu_count": os.cpu_count(),
              "load_average_before": load_before, "load_average_after": os.getloadavg()[0],
              "median_seconds": results}
    write_json(args.out, record)
    for name, row in results.items():
        print(f"{name:16s} " + " ".join(f"{stage} {seconds:.3f}" for stage, seconds in row.items()))
    print(f"load average {load_before:.1f} -> {record['load_average_after']:.1f}; wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
