"""End-to-end seconds of ``segment(merge="hierarchy")`` with the learned scorer beside the hand-set cues.

``python -m benchmarks.learned_speed --limit 10 --out benchmarks/results/learned_speed.json`` runs
:func:`binmap_tf.segmentation.pipeline.segment` (CNN with edges, superpixels, codes, merge tree, cut) on the first
BSDS500 val images, after one warm-up call, and records per-stage seconds (median over the
images) and the machine's 1-minute load average before and after: on a shared machine the load
says how far the figures are from an idle one.

``--cold-evaluation`` also times the whole evaluation of ``binmap-learned`` on BSDS500 test
(``binmap-evaluate --dataset bsds500 --split test --methods binmap-learned``) in a
fresh process with an empty cache (a temporary ``BINMAP_TF_HOME``), so the CNN runs on every
image, and records its wall seconds and figures.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SETTINGS = {"binmap-learned": {"scorer": "learned"}, "binmap-hier": {"scorer": "hand-set"}}
COLD_METHOD = "binmap-learned"


def cold_evaluation(split: str = "test") -> dict:
    """Wall seconds and figures of ``evaluate --methods binmap-learned`` on BSDS500 ``split`` from an
    empty binary-map cache, in a fresh process."""
    with tempfile.TemporaryDirectory(prefix="binmap_cold_") as home:
        out = Path(home) / "evaluation"
        command = [sys.executable, "-m", "binmap_tf.cli.evaluate", "--dataset", "bsds500", "--split", split,
                   "--methods", COLD_METHOD, "--out", str(out)]
        load_before, start = os.getloadavg()[0], time.perf_counter()
        subprocess.run(command, check=True, env={**os.environ, "BINMAP_TF_HOME": home}, capture_output=True)
        seconds = time.perf_counter() - start
        summary = json.loads((out / "summary.json").read_text())[COLD_METHOD]
    recorded = [*command[1:-1], "<empty temporary folder>"]  # no machine-specific path in the record
    return {"command": " ".join(recorded), "wall_seconds": round(seconds, 1), "load_average_before": load_before,
            "load_average_after": os.getloadavg()[0], "summary": summary}


def main(argv: list[str] | None = None) -> int:
    from benchmarks.run import machine
    from binmap_tf.common.files import write_json
    from binmap_tf.evaluation.datasets import load_dataset
    from binmap_tf.segmentation.pipeline import segment

    parser = argparse.ArgumentParser(prog="python -m benchmarks.learned_speed", description=__doc__.split("\n\n")[0])
    parser.add_argument("--limit", type=int, default=10, help="first N BSDS500 val images (default: %(default)s)")
    parser.add_argument("--cold-evaluation", action="store_true",
                        help=f"also time the whole BSDS500 test evaluation of {COLD_METHOD} from an empty cache")
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
              "machine": machine(), "precision": "fp32 (the default backbone)",
              "load_average_before": load_before, "load_average_after": os.getloadavg()[0],
              "median_seconds": results}
    if args.cold_evaluation:
        record["cold_evaluation"] = cold_evaluation()
        print(f"cold-cache evaluation of {COLD_METHOD}: {record['cold_evaluation']['wall_seconds']:.0f} s")
    write_json(args.out, record)
    for name, row in results.items():
        print(f"{name:16s} " + " ".join(f"{stage} {seconds:.3f}" for stage, seconds in row.items()))
    print(f"load average {load_before:.1f} -> {record['load_average_after']:.1f}; wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
