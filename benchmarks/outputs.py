"""Milliseconds the optional outputs (issue 24) add to writing one segmented 321x481 image.

``python -m benchmarks.outputs --limit 4 --out benchmarks/results/outputs.json`` segments the first
BSDS500 test images with the default learned hierarchy (one mapper for all), then times, ``--repeats``
times per image, what ``binmap-segment`` writes on top of its usual files: ``--ucm`` (the ucm2 and
its ``.mat`` and 16-bit PNG), ``--regions`` (the region table as CSV) and ``--coco`` (the image's
COCO entry, RLE masks included, and a COCO file of it), each written by the functions every entry
point calls. The usual files (labels, overlay, binary map, record) are timed too, for scale. Per
output it records wall and CPU milliseconds (this process's, ``time.process_time``: what the wall
time is on an idle core, as the writing runs in one thread), each the best and the median over the
repeats, then medians over the images, and the 1-minute load average before and after: on a shared
machine the wall figures grow with the load, the CPU figures much less. The goal: all three
together add at most :data:`GOAL_MS`.

``--large-scale F`` also writes the three outputs of the first image upscaled F times (nearest
neighbour: labels, superpixels and the tree's leaves, so the tree and its cuts are the same) and
records the memory they take: the rise of this process's peak resident set over what it held before
(Linux: ``/proc/self/status``, the peak reset through ``/proc/self/clear_refs``), in MiB and bytes a
pixel, and the seconds.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import gc
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np

GOAL_MS = 50.0
SHAPE = (321, 481)


def timed_ms(action: Callable[[], object], repeats: int) -> dict[str, list[float]]:
    """Wall and CPU milliseconds of each of ``repeats`` calls of ``action``."""
    wall, cpu = [], []
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        action()
        wall.append(1000 * (time.perf_counter() - start))
        cpu.append(1000 * (time.process_time() - start_cpu))
    return {"wall": wall, "cpu": cpu}


def statistics_of(values: list[float]) -> dict[str, float]:
    return {"best_ms": round(min(values), 2), "median_ms": round(statistics.median(values), 2)}


def _status_kib(field: str) -> int:
    """A ``kB`` field of ``/proc/self/status`` (``VmRSS``, ``VmHWM``)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise KeyError(field)


def upscaled(image, result, factor: int):
    """``image`` and ``result`` ``factor`` times larger, nearest neighbour: the same tree and cuts."""
    def up(array):
        return np.repeat(np.repeat(array, factor, axis=0), factor, axis=1)

    tree = dataclasses.replace(result.hierarchy, superpixels=up(result.hierarchy.superpixels))
    return up(image), dataclasses.replace(result, labels=up(result.labels), superpixels=up(result.superpixels),
                                          hierarchy=tree)


def large_outputs(image, result, file_name: str, factor: int, folder: str) -> dict:
    """Memory and seconds of each extra output of ``result`` upscaled ``factor`` times."""
    from binmap_tf.segmentation.outputs import COCO_FILE, write_files

    image, result = upscaled(image, result, factor)
    pixels = result.labels.size
    record = {"image_shape": list(result.labels.shape), "megapixels": round(pixels / 1e6, 2)}
    actions = {"ucm": functools.partial(write_files, folder, "large", image, result, ["ucm"]),
               "regions": functools.partial(write_files, folder, "large", image, result, ["regions"]),
               "coco": functools.partial(write_coco_of, Path(folder) / COCO_FILE, result, file_name)}
    for name, action in actions.items():
        gc.collect()
        Path("/proc/self/clear_refs").write_text("5")  # the peak resident set restarts from the current one
        before, start = _status_kib("VmRSS"), time.perf_counter()
        action()
        seconds, rise = time.perf_counter() - start, (_status_kib("VmHWM") - before) * 1024
        record[name] = {"seconds": round(seconds, 2), "peak_rise_mib": round(rise / 2**20, 1),
                        "peak_rise_bytes_per_pixel": round(rise / pixels, 1)}
    return record


def write_coco_of(path: Path, result, file_name: str) -> None:
    """What ``--coco`` adds for one image: its COCO entry (RLE masks) and a COCO file of it."""
    from binmap_tf.segmentation.interchange import coco_entry
    from binmap_tf.segmentation.outputs import write_coco

    write_coco(path, [coco_entry(result, file_name)])


def main(argv: list[str] | None = None) -> int:
    from binmap_tf.common.files import write_json
    from binmap_tf.evaluation.datasets import load_dataset
    from binmap_tf.segmentation.outputs import BASE_OUTPUTS, COCO_FILE, write_files, write_segmentation
    from binmap_tf.segmentation.pipeline import default_mapper, segment

    parser = argparse.ArgumentParser(prog="python -m benchmarks.outputs", description=__doc__.split("\n\n")[0])
    parser.add_argument("--limit", type=int, default=4, help="first N BSDS500 test images (default: %(default)s)")
    parser.add_argument("--repeats", type=int, default=15, help="timed writes per output and image (default: "
                                                                "%(default)s)")
    parser.add_argument("--large-scale", type=int, default=None,
                        help="also measure the memory of the outputs of the first image upscaled this many times")
    parser.add_argument("--out", type=Path, required=True, help="JSON file to write")
    args = parser.parse_args(argv)
    first = None
    samples = load_dataset("bsds500", "test", limit=args.limit)
    mapper = default_mapper(edges=True)
    load_before = os.getloadavg()[0]
    images = []
    with tempfile.TemporaryDirectory(prefix="binmap_outputs_") as folder:
        for sample in samples:
            image = sample.load_image()
            if image.shape[:2] not in (SHAPE, SHAPE[::-1]):
                continue
            result = segment(image, mapper)
            stem = sample.id
            first = first or (image, result, sample.image_path.name)
            actions = {
                "usual_files": functools.partial(write_segmentation, folder, stem, image, result, {}),
                "ucm": functools.partial(write_files, folder, stem, image, result, ["ucm"]),
                "regions": functools.partial(write_files, folder, stem, image, result, ["regions"]),
                "coco": functools.partial(write_coco_of, Path(folder) / COCO_FILE, result, sample.image_path.name),
            }
            actions["usual_files"]()  # warm-up: imports, first-call costs
            actions["ucm"](), actions["regions"](), actions["coco"]()
            times = {name: timed_ms(action, args.repeats) for name, action in actions.items()}
            times["extra_outputs"] = {clock: [sum(times[name][clock][i] for name in ("ucm", "regions", "coco"))
                                              for i in range(args.repeats)] for clock in ("wall", "cpu")}
            images.append({"id": stem, "n_segments": result.n_segments, "n_superpixels": result.n_superpixels,
                           **{name: {clock: statistics_of(values) for clock, values in clocks.items()}
                              for name, clocks in times.items()}})
        large = large_outputs(*first, args.large_scale, folder) if args.large_scale else None
    names = ("usual_files", "ucm", "regions", "coco", "extra_outputs")
    summary = {name: {clock: {statistic: round(statistics.median(image[name][clock][statistic] for image in images), 2)
                              for statistic in ("best_ms", "median_ms")} for clock in ("wall", "cpu")}
               for name in names}
    record = {
        "command": f"python -m benchmarks.outputs --limit {args.limit} --repeats {args.repeats}"
                   + (f" --large-scale {args.large_scale}" if args.large_scale else "") + f" --out {args.out}",
        "image_shape": list(SHAPE), "images": len(images), "repeats": args.repeats,
        "usual_files": list(BASE_OUTPUTS) + ["record"], "goal_ms": GOAL_MS,
        "extra_outputs_within_goal": {clock: summary["extra_outputs"][clock]["median_ms"] <= GOAL_MS
                                      for clock in ("wall", "cpu")},
        "median_over_images": summary, "per_image": images, **({"large": large} if large else {}),
        "load_average_before": load_before, "load_average_after": os.getloadavg()[0], "cpu_count": os.cpu_count(),
    }
    write_json(args.out, record)
    extra, usual = summary["extra_outputs"], summary["usual_files"]
    print(f"extra outputs, median: {extra['wall']['median_ms']:.1f} ms wall, {extra['cpu']['median_ms']:.1f} ms CPU "
          f"(goal {GOAL_MS:g} ms; the usual files {usual['wall']['median_ms']:.1f} ms wall) at a load average of "
          f"{load_before:.1f} -> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
