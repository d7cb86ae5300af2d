"""Seconds and memory per photo at the sizes users send: ``python -m benchmarks.large_photos --out FILE``.

For each ``--sizes`` (default 12 MP and 50 MP) a JPEG photo is made from a BSDS500 test image
(Lanczos, quality 92) and segmented in a fresh process, so each size's peak memory is its own. The
process builds the default model and warms it up on a small image first (a long-running service or
``binmap-batch`` pays that once), then times, per ``--repeats``:

* ``segment``: decoding the file (PIL, full resolution: the refinement and the overlay need every
  pixel, so JPEG draft decoding is not used) and :func:`~binmap_tf.segmentation.pipeline.segment`
  with the defaults, to full-resolution labels; the figure the issue's goals are about;
* ``write``: the per-image files of ``binmap-segment`` (:func:`~binmap_tf.segmentation.outputs.write_segmentation`).

Peak RSS is the process's (the TensorFlow runtime and the model included: ``baseline_rss_bytes`` is
its RSS after the warm-up), per stage: Linux's high-water mark ``VmHWM``, reset before each stage
(``/proc/self/clear_refs``), the most over the repeats; ``peak_rss_bytes_segment`` is that of
decoding and segmenting, ``peak_rss_bytes`` with the files written too (MiB beside them). The JSON
names the CPU, its ISA flags and the precision (fp32).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

_CHILD = """
import json, sys, time
from pathlib import Path
import numpy as np
path, out, repeats = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
from binmap_tf.common.images import load_image
from binmap_tf.segmentation.outputs import write_segmentation
from binmap_tf.segmentation.pipeline import segment

def status(field):
    return int(Path("/proc/self/status").read_text().split(field + ":")[1].split()[0]) * 1024

def stage_peak():
    peak = status("VmHWM")
    Path("/proc/self/clear_refs").write_text("5")  # the high-water mark starts again from the RSS now
    return peak

segment(np.zeros((96, 128, 3), np.uint8))  # builds and warms the default model
baseline = status("VmRSS")
rows = []
for _ in range(repeats):
    stage_peak()
    start = time.perf_counter()
    image = load_image(path)
    decoded, decode_peak = time.perf_counter(), stage_peak()
    result = segment(image)
    segmented, segment_peak = time.perf_counter(), stage_peak()
    write_segmentation(out, path.stem, image, result, {"image": str(path)})
    rows.append({"decode": decoded - start, "segment": segmented - start, "write": time.perf_counter() - segmented,
                 "stages": result.timings, "n_segments": result.n_segments,
                 "peaks": {"decode": decode_peak, "segment": segment_peak, "write": stage_peak()}})
    del image, result
print(json.dumps({"runs": rows, "baseline": baseline}))
"""
MIB = 1 << 20
STAGES = ("decode", "segment", "write")


def make_photo(folder: Path, width: int, height: int) -> Path:
    """A ``width`` x ``height`` JPEG from the first BSDS500 test image."""
    from PIL import Image

    from binmap_tf.common.paths import data_root

    source = sorted((data_root() / "bsds500" / "images" / "test").glob("*.jpg"))[0]
    path = folder / f"photo_{width}x{height}.jpg"
    with Image.open(source) as image:
        image.convert("RGB").resize((width, height), Image.Resampling.LANCZOS).save(path, quality=92)
    return path


def cpu_description() -> dict[str, object]:
    """The CPU model, core count and the ISA flags that matter to TensorFlow's kernels."""
    flags: list[str] = []
    model = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
            if line.startswith("flags"):
                flags = [flag for flag in line.split(":", 1)[1].split() if flag.startswith(("avx", "amx", "fma"))]
                break
    except OSError:
        pass
    return {"model": model, "cores": os.cpu_count(), "isa": sorted(set(flags)), "precision": "fp32"}


def main(argv: list[str] | None = None) -> int:
    from binmap_tf.common.files import write_json

    parser = argparse.ArgumentParser(prog="python -m benchmarks.large_photos", description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", nargs="+", default=["4000x3000", "8160x6120"], help="WIDTHxHEIGHT (default: 12, 50 MP)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for size in args.sizes:
            width, height = (int(value) for value in size.lower().split("x"))
            path = make_photo(Path(folder), width, height)
            load_before = os.getloadavg()[0]
            child = subprocess.run([sys.executable, "-c", _CHILD, str(path), str(Path(folder) / "out"),
                                    str(args.repeats)], capture_output=True, text=True, check=True)
            measured = json.loads(child.stdout.strip().splitlines()[-1])
            best = min(measured["runs"], key=lambda run: run["segment"])
            peaks = {stage: max(run["peaks"][stage] for run in measured["runs"]) for stage in STAGES}
            segment_peak, peak = max(peaks["decode"], peaks["segment"]), max(peaks.values())
            rows.append({"width": width, "height": height, "megapixels": round(width * height / 1e6, 1),
                         "segment_seconds": round(best["segment"], 3), "decode_seconds": round(best["decode"], 3),
                         "write_seconds": round(best["write"], 3),
                         "stages": {stage: round(value, 3) for stage, value in best["stages"].items()},
                         "n_segments": best["n_segments"], "baseline_rss_bytes": measured["baseline"],
                         "peak_rss_bytes_by_stage": peaks, "peak_rss_bytes_segment": segment_peak,
                         "peak_rss_bytes": peak, "peak_rss_mib_segment": round(segment_peak / MIB, 1),
                         "peak_rss_mib": round(peak / MIB, 1), "load_average_before": round(load_before, 2)})
            print(json.dumps(rows[-1]), flush=True)
    write_json(args.out, {"command": "python -m benchmarks.large_photos " + " ".join(argv or sys.argv[1:]),
                          "cpu": cpu_description(), "repeats": args.repeats, "results": rows})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
