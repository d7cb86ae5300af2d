"""Large images in bounded memory: ``python -m benchmarks.tiling --out results.json``.

Two sections, both written to one JSON file:

* ``agreement``: BSDS500 val images mapped whole and forced through small tiles
  (``--tile-pixels``; the default 336x336 budget keeps a 321-pixel side whole and cuts the long
  side into 5 tiles, 4 seams), with ``vgg16-hed`` + HED edges: the fraction of
  identical bits, the largest logit difference, the mean absolute edge difference and the
  fraction of pixels with the same binmap-egs segment label;
* ``large``: ``binmap-segment`` in a fresh process on synthetic photos of each
  ``--sizes`` (a mosaic of BSDS500 test images, each upscaled 2x, saved as JPEG), with the
  process's peak resident memory (``ru_maxrss`` of a wrapper's children, so only that run is
  counted), wall seconds, exit status and the seconds per stage from its JSON record.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

# Runs a command and prints its wall seconds and its children's peak RSS as JSON: the wrapper
# itself is a bare interpreter, so ru_maxrss of its children is the segment run's own peak.
_MEASURE = """
import json, resource, subprocess, sys, time
start = time.perf_counter()
status = subprocess.run(sys.argv[1:]).returncode
print(json.dumps({"rc": status, "seconds": time.perf_counter() - start,
                  "peak_rss_mib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}))
"""


def agreement(split: str, limit: int, tile_pixels: int) -> dict[str, Any]:
    """Tiled against untiled maps (and binmap-egs labels) of the first ``limit`` BSDS500 images of ``split``."""
    from binmap_tf.binary_map.model import BinaryMapper
    from binmap_tf.common.images import load_image
    from binmap_tf.common.paths import data_root
    from binmap_tf.segmentation.pipeline import segment_with_map

    mapper = BinaryMapper(edges=True)
    rows = []
    for path in sorted((data_root() / "bsds500" / "images" / split).glob("*.jpg"))[:limit]:
        image = load_image(path)
        plan = mapper.tile_plan(image.shape[:2], tile_pixels)
        start = time.perf_counter()
        whole = mapper(image)
        whole_seconds = time.perf_counter() - start
        start = time.perf_counter()
        tiled = mapper.map_tiled(image, plan)
        tiled_seconds = time.perf_counter() - start
        labels = [segment_with_map(image, binary_map, "egs", merge="adjacent").labels for binary_map in (whole, tiled)]
        rows.append({"image": path.name, "shape": list(image.shape[:2]), "tiles": [len(plan.rows), len(plan.cols)],
                     "identical_bits": float(np.mean(whole.bits == tiled.bits)),
                     "max_logit_difference": float(np.abs(whole.logits - tiled.logits).max()),
                     "mean_edge_difference": float(np.mean(np.abs(whole.edges - tiled.edges))),
                     "identical_labels": float(np.mean(labels[0] == labels[1])),
                     "seconds_whole": round(whole_seconds, 3), "seconds_tiled": round(tiled_seconds, 3)})
        print(json.dumps(rows[-1]), flush=True)
    bits = [row["identical_bits"] for row in rows]
    return {"split": split, "images": len(rows), "tile_pixels": tile_pixels, "margin": plan.margin,
            "identical_bits_mean": float(np.mean(bits)), "identical_bits_min": float(np.min(bits)),
            "identical_labels_mean": float(np.mean([row["identical_labels"] for row in rows])),
            "mean_edge_difference_mean": float(np.mean([row["mean_edge_difference"] for row in rows])),
            "per_image": rows}


def mosaic(height: int, width: int) -> np.ndarray:
    """A natural-looking photo of ``height`` x ``width``: BSDS500 test images, upscaled 2x, side by side."""
    from PIL import Image

    from binmap_tf.common.paths import data_root

    paths = sorted((data_root() / "bsds500" / "images" / "test").glob("*.jpg"))
    canvas = np.zeros((height, width, 3), np.uint8)
    index = 0
    for top in range(0, height, 642):
        for left in range(0, width, 962):
            with Image.open(paths[index % len(paths)]) as pil:
                tile = pil.convert("RGB")
                if tile.height > tile.width:
                    tile = tile.transpose(Image.Transpose.ROTATE_90)
                tile = np.asarray(tile.resize((962, 642), Image.Resampling.BICUBIC))
            part = canvas[top:top + 642, left:left + 962]
            part[:] = tile[:part.shape[0], :part.shape[1]]
            index += 1
    return canvas


def large(sizes: list[tuple[int, int]], merges: list[str], folder: Path) -> list[dict[str, Any]]:
    """Peak RSS and seconds of ``binmap-segment`` on a synthetic photo of each size."""
    from PIL import Image

    rows = []
    for width, height in sizes:
        path = folder / f"mosaic_{width}x{height}.jpg"
        if not path.exists():
            Image.fromarray(mosaic(height, width)).save(path, quality=90)
        for merge in merges:
            out = folder / f"out_{width}x{height}_{merge}"
            command = [sys.executable, "-m", "binmap_tf.cli.segment", str(path), "--out", str(out), "--merge", merge]
            measured = json.loads(subprocess.run([sys.executable, "-c", _MEASURE, *command], check=True,
                                                 capture_output=True, text=True).stdout.strip().splitlines()[-1])
            record = out / f"{path.stem}.json"
            summary = json.loads(record.read_text()) if record.exists() else {}
            rows.append({"width": width, "height": height, "megapixels": round(width * height / 1e6, 2),
                         "merge": merge, **measured, "seconds": round(measured["seconds"], 1),
                         "peak_rss_mib": round(measured["peak_rss_mib"], 1),
                         "timings": summary.get("timings"), "n_segments": summary.get("n_segments"),
                         "n_superpixels": summary.get("n_superpixels"), "grid_shape": summary.get("grid_shape"),
                         "working_shape": summary.get("working_shape"),
                         "superpixel_working_shape": summary.get("superpixel_working_shape")})
            print(json.dumps(rows[-1]), flush=True)
    return rows


def _size(text: str) -> tuple[int, int]:
    width, height = text.lower().split("x")
    return int(width), int(height)


def main(argv: list[str] | None = None) -> int:
    from binmap_tf.binary_map.tiling import DEFAULT_MAX_TILE_PIXELS
    from binmap_tf.common.files import write_json

    parser = argparse.ArgumentParser(prog="python -m benchmarks.tiling", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="JSON file to write")
    parser.add_argument("--sections", nargs="+", choices=("agreement", "large"), default=["agreement", "large"])
    parser.add_argument("--split", default="val")
    parser.add_argument("--limit", type=int, default=10, help="images of the agreement section")
    parser.add_argument("--tile-pixels", type=int, default=336 * 336,
                        help="tile budget forced on the agreement images (default: %(default)s: 5 tiles along "
                             "the long side of a 321x481 image; below 321x321 both sides are cut)")
    parser.add_argument("--sizes", nargs="+", type=_size, default=[(4000, 3000), (8660, 5773)],
                        help="WIDTHxHEIGHT of the synthetic photos (default: 12 MP and 50 MP)")
    parser.add_argument("--merges", nargs="+", default=["adjacent"], help="--merge modes to run on each")
    parser.add_argument("--work", type=Path, default=None, help="folder for the photos and outputs (default: a temporary one)")
    args = parser.parse_args(argv)
    result: dict[str, Any] = {"max_tile_pixels": DEFAULT_MAX_TILE_PIXELS}
    if "agreement" in args.sections:
        result["agreement"] = agreement(args.split, args.limit, args.tile_pixels)
        write_json(args.out, result)
    if "large" in args.sections:
        with tempfile.TemporaryDirectory() as temporary:
            folder = args.work or Path(temporary)
            folder.mkdir(parents=True, exist_ok=True)
            result["large"] = large(args.sizes, args.merges, folder)
    write_json(args.out, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
