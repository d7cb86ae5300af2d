"""Segmentation at every photo size: the working resolution, measured.

``python -m benchmarks.working_resolution choose --out benchmarks/results/working_resolution_val.json``
chooses the working size and the refinement on BSDS500 **val**: each image upscaled ``--scale``
times (Lanczos; its annotations by nearest neighbour) and segmented with the defaults at each
``--working-pixels`` candidate; its working-size labels are brought back to full size by nearest
neighbour and by the band watershed of :func:`~binmap_tf.segmentation.resolution.refine_labels` at
each ``--bands`` width. Per setting: covering, PRI, VoI (the BSDS region benchmark), boundary F
(:func:`~binmap_tf.evaluation.metrics.boundary_counts`), mean segments and seconds per image.

``python -m benchmarks.working_resolution scales --split test --scales 1 2 4 8 --out FILE`` runs the
shipped defaults on **test** images upscaled by each factor (1 = native) and reports the same figures
for the refined labels and for plain nearest-neighbour upsampling of the same working-size labels,
beside the native figures (``--dataset msrc`` for MSRC-v2).

``python -m benchmarks.working_resolution small --out benchmarks/results/working_resolution_small_val.json``
asks, on BSDS500 **val**, whether images smaller than the working size should be brought up to it:
each image downscaled ``--shrink`` times (Lanczos; annotations by nearest neighbour; 0.665 makes
481x321 MSRC-v2's 320x213) is segmented at its own size (``native``, the shipped behaviour) and
resized up to the working size (``working``, labels brought back by nearest neighbour), with the
per-image covering difference (working - native: mean and standard error).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from binmap_tf.common.files import write_json


def upscale(image: np.ndarray, factor: int) -> np.ndarray:
    """``image`` enlarged ``factor`` times with Lanczos, as a photo of that size would be."""
    if factor == 1:
        return image
    from PIL import Image

    height, width = image.shape[:2]
    return np.asarray(Image.fromarray(image).resize((width * factor, height * factor), Image.Resampling.LANCZOS))


class Tally:
    """Region and boundary figures of one setting over a dataset."""

    def __init__(self) -> None:
        from binmap_tf.evaluation.metrics import BoundaryCounts

        self.regions: list = []
        self.boundaries = BoundaryCounts(0, 0, 0, 0)
        self.segments: list[int] = []
        self.seconds: list[float] = []

    def add(self, labels: np.ndarray, truths: list[np.ndarray], seconds: float) -> None:
        from binmap_tf.evaluation.metrics import boundary_counts, region_scores

        self.regions.append(region_scores(labels, truths))
        self.boundaries = self.boundaries + boundary_counts(labels, truths)
        self.segments.append(int(labels.max()) + 1)
        self.seconds.append(seconds)

    def summary(self) -> dict[str, Any]:
        from binmap_tf.evaluation.metrics import summarize

        scores = summarize(self.regions)
        return {"covering": scores.covering, "pri": scores.pri, "voi": scores.voi,
                "boundary_f": self.boundaries.f_measure, "boundary_precision": self.boundaries.precision,
                "boundary_recall": self.boundaries.recall, "mean_segments": float(np.mean(self.segments)),
                "seconds_per_image": float(np.mean(self.seconds)), "n_images": len(self.segments)}


def segment_scaled(sample, factor: int, mapper, working_pixels: int | None, bands: list[int]
                   ) -> tuple[dict[str, tuple[np.ndarray, float]], list[np.ndarray]]:
    """One image upscaled by ``factor`` and segmented: labels and seconds per refinement
    (``nearest`` and ``band B``), and the annotations at the upscaled size."""
    from binmap_tf.segmentation.pipeline import segment
    from binmap_tf.segmentation.resolution import refine_labels, upsample_labels

    image = upscale(sample.load_image(), factor)
    truths = [upsample_labels(truth, image.shape[:2]) for truth in sample.load_ground_truths()]
    start = time.perf_counter()
    result = segment(image, mapper, working_pixels=working_pixels)
    seconds = time.perf_counter() - start - result.timings.get("refine", 0.0)  # everything but the refinement
    working_labels = result.segment_of[result.superpixels]
    variants = {}
    for name, options in [("nearest", {"refine": False}), *((f"band {band}", {"band": band}) for band in bands)]:
        start = time.perf_counter()
        labels = refine_labels(working_labels, image, **options)
        variants[name] = (labels, seconds + time.perf_counter() - start)
    return variants, truths


def shrunk(image: np.ndarray, truths: list[np.ndarray], factor: float) -> tuple[np.ndarray, list[np.ndarray]]:
    """``image`` downscaled by ``factor`` (Lanczos) and its annotations at that size (nearest neighbour): a
    benchmark image as a smaller photo (0.665 makes BSDS500's 481x321 MSRC-v2's 320x213)."""
    from PIL import Image

    from binmap_tf.segmentation.resolution import upsample_labels

    shape = tuple(round(side * factor) for side in image.shape[:2])
    small = np.asarray(Image.fromarray(image).resize(shape[::-1], Image.Resampling.LANCZOS))
    return small, [upsample_labels(truth, shape) for truth in truths]


def segment_small(sample, factor: float, mapper, working_pixels: int, bands: list[int]
                  ) -> tuple[dict[str, tuple[np.ndarray, float]], list[np.ndarray]]:
    """One image downscaled by ``factor`` and segmented at its own size (``native``) and brought up to
    ``working_pixels`` (``working``: labels back at its size by nearest neighbour), with the
    annotations at its size (``bands`` unused: nothing is refined)."""
    from binmap_tf.segmentation.pipeline import segment
    from binmap_tf.segmentation.resolution import (
        resize_image,
        shape_of_pixels,
        upsample_labels,
    )

    image, truths = shrunk(sample.load_image(), sample.load_ground_truths(), factor)
    shape = image.shape[:2]
    variants = {}
    for name, size in [("native", shape), ("working", shape_of_pixels(shape, working_pixels))]:
        start = time.perf_counter()
        labels = segment(resize_image(image, size), mapper, working_pixels=None).labels  # at exactly ``size``
        variants[name] = (upsample_labels(labels, shape), time.perf_counter() - start)
    return variants, truths


def evaluate(dataset, factors: list[float], working_pixels: list[int | None], bands: list[int],
             report: Callable[[dict[str, Any]], None], run: Callable = segment_scaled) -> dict[tuple, Tally]:
    """Figures per (factor, working size, variant) over ``dataset``, each image segmented by ``run``
    (:func:`segment_scaled` or :func:`segment_small`); ``report`` gets the tallies so far after each
    factor and working size (a long run keeps what it finished)."""
    from tqdm import tqdm

    from binmap_tf.segmentation.pipeline import default_mapper

    mapper = default_mapper(edges=True)
    tallies: dict[tuple, Tally] = {}
    for factor in factors:
        for pixels in working_pixels:
            for sample in tqdm(dataset, desc=f"x{factor}, working {pixels} px", unit="image"):
                variants, truths = run(sample, factor, mapper, pixels, bands)
                for name, (labels, seconds) in variants.items():
                    tallies.setdefault((factor, pixels, name), Tally()).add(labels, truths, seconds)
            report(tallies)
    return tallies


def summaries(tallies: dict[tuple, Tally]) -> dict[str, Any]:
    return {f"x{factor} working {pixels} {name}": tally.summary() for (factor, pixels, name), tally in tallies.items()}


def paired_covering(tallies: dict[tuple, Tally]) -> dict[str, Any]:
    """Per (factor, working size) of :func:`segment_small`: the per-image covering difference working -
    native, its mean, standard error and the images on each side."""
    paired = {}
    for (factor, pixels, name), working in tallies.items():
        if name == "working":
            native = tallies[(factor, pixels, "native")]
            difference = np.array([w.covering - n.covering for w, n in zip(working.regions, native.regions)])
            error = difference.std(ddof=1) / np.sqrt(difference.size)
            paired[f"x{factor} working {pixels}"] = {
                "mean": float(difference.mean()), "standard_error": float(error),
                "working_better": int((difference > 0).sum()), "native_better": int((difference < 0).sum())}
    return paired


def main(argv: list[str] | None = None) -> int:
    from binmap_tf.evaluation.datasets import load_dataset
    from binmap_tf.segmentation.resolution import DEFAULT_REFINE_BAND, DEFAULT_WORKING_PIXELS

    parser = argparse.ArgumentParser(prog="python -m benchmarks.working_resolution", description=__doc__.split("\n\n")[0])
    parser.add_argument("mode", choices=["choose", "scales", "small"])
    parser.add_argument("--dataset", default="bsds500", choices=["bsds500", "msrc"])
    parser.add_argument("--split", default=None, help="default: test for scales, else val (msrc: all)")
    parser.add_argument("--limit", type=int, default=None, help="first N images (default: 50 to choose, all for scales)")
    parser.add_argument("--scale", type=int, default=4, help="choose: the upscaling factor (default: 4)")
    parser.add_argument("--scales", type=int, nargs="+", default=[1, 2, 4, 8], help="scales: the factors")
    parser.add_argument("--shrink", type=float, nargs="+", default=[0.665, 0.5], help="small: the downscaling factors")
    parser.add_argument("--working-pixels", type=int, nargs="+", default=None,
                        help=f"choose: candidates (default: {DEFAULT_WORKING_PIXELS} 307200 786432)")
    parser.add_argument("--bands", type=int, nargs="+", default=None,
                        help=f"refinement band widths in working pixels (default: choose 1 2, scales {DEFAULT_REFINE_BAND})")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    choosing, small = args.mode == "choose", args.mode == "small"
    split = args.split or ("all" if args.dataset == "msrc" else "test" if args.mode == "scales" else "val")
    limit = args.limit if args.limit is not None else (50 if choosing else None)
    dataset = load_dataset(args.dataset, split, limit=limit)
    factors = [args.scale] if choosing else args.shrink if small else args.scales
    pixels = args.working_pixels or ([DEFAULT_WORKING_PIXELS, 307_200, 786_432] if choosing else [DEFAULT_WORKING_PIXELS])
    bands = args.bands or ([1, 2] if choosing else [DEFAULT_REFINE_BAND])
    start = time.perf_counter()

    def report(tallies: dict[tuple, Tally]) -> None:
        paired = {"paired_covering": paired_covering(tallies)} if small else {}
        write_json(args.out, {"mode": args.mode, "dataset": args.dataset, "split": split, "n_images": len(dataset),
                              "factors": factors, "working_pixels": pixels, "bands": bands,
                              "seconds": time.perf_counter() - start, "results": summaries(tallies), **paired})

    tallies = evaluate(dataset, factors, pixels, bands, report, segment_small if small else segment_scaled)
    for name, figures in summaries(tallies).items():
        print(f"{name:40s} covering {figures['covering']:.4f} boundary F {figures['boundary_f']:.4f} "
              f"segments {figures['mean_segments']:.1f} {figures['seconds_per_image']:.2f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
