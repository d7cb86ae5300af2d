"""Evaluating methods on a data set: one image's segmentations by every setting, the per-setting
summaries and the CSV / Markdown tables the ``binmap-evaluate`` command writes
(:mod:`binmap_tf.cli.evaluate`)."""

from __future__ import annotations

import csv
import hashlib
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from binmap_tf.binary_map.maps import BinaryMap
from binmap_tf.common.files import write_png
from binmap_tf.evaluation.methods import (
    PARAMETER_NAMES,
    SWEEP_VALUES,
    Method,
    parse_method,
    run_method,
)
from binmap_tf.evaluation.metrics import RegionScores, region_benchmark, region_scores, summarize
from binmap_tf.segmentation.pipeline import StageCache
from binmap_tf.segmentation.resolution import DEFAULT_WORKING_PIXELS

DEFAULT_METHODS = ("egs", "slic", "binmap-egs", "binmap-slic")


@dataclass(frozen=True)
class Setting:
    """One method at one parameter value."""

    method: str
    value: float


@dataclass
class ImageResult:
    """Scores of one setting on one image."""

    image_id: str
    setting: Setting
    scores: RegionScores
    n_superpixels: int
    n_segments: int
    seconds: float


@dataclass(frozen=True)
class HostOptions:
    """What the host-side stage needs besides the image: merge options, where to save labels, the
    scorer file of ``binmap-learned`` (None: the shipped one) and the working size (None: every
    image at its own size; the maps must be of :func:`~binmap_tf.segmentation.pipeline.working_image`)."""

    hamming: int
    merge: str
    labels_dir: str | None
    scorer: str | None = None
    working_pixels: int | None = DEFAULT_WORKING_PIXELS


def evaluate_image(sample, maps: dict[str, BinaryMap], cnn_seconds: dict[str, float],
                   settings: list[Setting], options: HostOptions) -> list[ImageResult]:
    """Run every setting on one dataset sample and score it against all its annotations."""
    image = sample.load_image()
    ground_truths = sample.load_ground_truths()
    stages = StageCache()
    results = []
    # A sweep's settings often give the same labels (a hierarchy's thresholds with no merge height
    # between them, say): each distinct segmentation is scored once.
    scored: dict[bytes, RegionScores] = {}
    for setting in settings:
        method = parse_method(setting.method, options.scorer)
        binary_map = maps.get(method.map_variant) if method.map_variant else None
        output = run_method(method, setting.value, image, binary_map, stages, hamming=options.hamming,
                            merge=options.merge, working_pixels=options.working_pixels)
        if options.labels_dir:
            name = setting.method if len(settings) == len({s.method for s in settings}) else \
                f"{setting.method}_{PARAMETER_NAMES[method.parameter_key]}{setting.value:g}"
            write_png(Path(options.labels_dir) / name / f"{sample.id}.png", output.labels.astype(np.uint16))
        seconds = output.seconds + (cnn_seconds.get(method.map_variant, 0.0) if method.map_variant else 0.0)
        key = hashlib.sha1(output.labels.tobytes()).digest() + str(output.labels.shape).encode()
        if key not in scored:
            scored[key] = region_scores(output.labels, ground_truths)
        results.append(ImageResult(sample.id, setting, scored[key], output.n_superpixels,
                                   int(len(np.unique(output.labels))), seconds))
    return results


def settings_for(methods: list[Method], sweep: bool, values: dict[str, float]) -> list[Setting]:
    """Each method at its main value, or over the whole sweep grid plus the main value (so the
    sweep's table still has every method's main row)."""
    settings = []
    for method in methods:
        main_value = float(values[method.parameter_key])
        grid = sorted({*map(float, SWEEP_VALUES[method.parameter_key]), main_value}) if sweep else [main_value]
        settings.extend(Setting(method.name, value) for value in grid)
    return settings


def summarize_settings(results: list[ImageResult]) -> dict[Setting, dict]:
    """Dataset figures for every setting, in first-seen order."""
    grouped: dict[Setting, list[ImageResult]] = {}
    for result in results:
        grouped.setdefault(result.setting, []).append(result)
    summary = {}
    for setting, rows in grouped.items():
        scores = summarize([row.scores for row in rows])
        method = parse_method(setting.method)
        summary[setting] = {
            "seg_iou": scores.abo, "seg_iou_image_mean": scores.abo_image_mean, "covering": scores.covering,
            "pri": scores.pri, "voi": scores.voi, "n_images": scores.n_images,
            "mean_segments": float(np.mean([row.n_segments for row in rows])),
            "mean_superpixels": float(np.mean([row.n_superpixels for row in rows])),
            "seconds_per_image": float(np.mean([row.seconds for row in rows])),
            "parameter": PARAMETER_NAMES[method.parameter_key], "value": setting.value,
        }
    return summary


def per_image_csv(results: list[ImageResult]) -> str:
    """One CSV row per image and setting, with the raw accumulators to recompute dataset figures."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["image_id", "method", "value", "n_superpixels", "n_segments", "abo", "abo_sum",
                     "abo_count", "covering", "pri", "voi", "seconds"])
    for row in results:
        scores = row.scores
        writer.writerow([row.image_id, row.setting.method, f"{row.setting.value:g}", row.n_superpixels,
                         row.n_segments, f"{scores.abo:.6f}", f"{scores.abo_sum:.6f}", scores.abo_count,
                         f"{scores.covering:.6f}", f"{scores.rand_index:.6f}",
                         f"{scores.variation_of_information:.6f}", f"{row.seconds:.4f}"])
    return buffer.getvalue()


def sweep_csv(summary: dict[Setting, dict]) -> str:
    """The sweep as CSV: one row per method and parameter value."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    fields = ["seg_iou", "seg_iou_image_mean", "covering", "pri", "voi", "mean_superpixels", "mean_segments",
              "seconds_per_image", "n_images"]
    writer.writerow(["method", "parameter", "value", *fields])
    for setting, row in summary.items():
        writer.writerow([setting.method, row["parameter"], f"{setting.value:g}",
                         *[f"{row[field]:.6f}" if isinstance(row[field], float) else row[field] for field in fields]])
    return buffer.getvalue()


def main_settings(summary: dict[Setting, dict], values: dict[str, float]) -> dict[str, dict]:
    """Each method's row at its main parameter value (the one without ``--sweep``)."""
    chosen = {}
    for setting, row in summary.items():
        if setting.value == values[parse_method(setting.method).parameter_key]:
            chosen[setting.method] = row
    return chosen


def hierarchy_benchmark(results: list[ImageResult]) -> dict[str, dict]:
    """ODS / OIS figures of every hierarchical method swept over thresholds (or segment counts).

    Each method's per-image scores at every value go through
    :func:`~binmap_tf.evaluation.metrics.region_benchmark`: ODS is one value for the whole dataset (the
    best covering), OIS the best value per image, both chosen on the evaluated split as the BSDS
    benchmark defines them (gPb-owt-ucm's 0.59 is such an ODS on test). Seg-IoU (ABO) and the mean number of
    segments are given at the covering ODS value.
    """
    by_method: dict[str, dict[str, dict[float, ImageResult]]] = {}
    for result in results:
        if parse_method(result.setting.method).hierarchical:
            by_image = by_method.setdefault(result.setting.method, {})
            by_image.setdefault(result.image_id, {})[result.setting.value] = result
    figures = {}
    for method, by_image in by_method.items():
        values = sorted(next(iter(by_image.values())))
        rows = [[by_value[value] for value in values] for by_value in by_image.values()]
        bench = region_benchmark([[row.scores for row in image] for image in rows], values)
        ods = int(np.argmax(bench.covering_per_threshold))
        figures[method] = {
            "parameter": PARAMETER_NAMES[parse_method(method).parameter_key],
            "ods_value": bench.covering_ods_threshold, "covering_ods": bench.covering_ods,
            "covering_ois": bench.covering_ois, "pri_ods": bench.pri_ods, "pri_ois": bench.pri_ois,
            "voi_ods": bench.voi_ods, "voi_ois": bench.voi_ois,
            "seg_iou_ods": float(bench.abo_per_threshold[ods]),
            "mean_segments_ods": float(np.mean([image[ods].n_segments for image in rows])),
            "n_images": len(rows),
        }
    return figures


def hierarchy_markdown(figures: dict[str, dict], dataset: str, split: str) -> str:
    """The figures of :func:`hierarchy_benchmark` as a Markdown table."""
    lines = [
        f"Hierarchies on {dataset} ({split}): ODS = the best single setting for the whole dataset, OIS = the "
        "best setting per image, both chosen on this split as the BSDS benchmark does (on test, an upper bound; "
        "a setting chosen on val and applied to test is the run without --sweep, e.g. --threshold T).",
        "",
        "| method | ODS setting | covering ODS | covering OIS | PRI ODS | PRI OIS | VoI ODS | VoI OIS "
        "| Seg-IoU (ABO) % at ODS | segments at ODS | images |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for method, row in figures.items():
        lines.append(
            f"| {method} | {row['parameter']}={row['ods_value']:g} | {row['covering_ods']:.3f} | "
            f"{row['covering_ois']:.3f} | {row['pri_ods']:.3f} | {row['pri_ois']:.3f} | {row['voi_ods']:.3f} | "
            f"{row['voi_ois']:.3f} | "
            f"{100 * row['seg_iou_ods']:.2f} | {row['mean_segments_ods']:.1f} | {row['n_images']} |")
    return "\n".join(lines) + "\n"
