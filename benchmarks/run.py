"""Speed of the whole method on this machine: ``python -m benchmarks.run --out results.json``.

Measures, in one run, on BSDS500 test image 100007 (321x481) unless noted:

* ``matmul_peak``: GFLOP/s of large ``tf.linalg.matmul`` (float32 and bfloat16), the yardstick;
* ``cnn``: the binary-map model's forward pass for each backbone configuration (random
  weights) and each performance lever (``execution`` eager/graph/xla, ``precision``, batch):
  seconds per image, FLOPs counted from the layer shapes (:mod:`benchmarks.flops`), GFLOP/s
  and their fraction of the matmul peak; eager float32 at batch 1 is the "before";
* ``profile`` (``--profile``): the same per counted layer, each layer run alone;
* ``host``: superpixels (EGS, SLIC), code assignment and merging, as ``segment_with_map`` times them;
* ``end_to_end``: :func:`binmap_tf.segmentation.pipeline.segment` (the paper's adjacent merge) per image and the
  peak resident memory of a fresh process that builds the model and segments the image;
* ``evaluate``: ``binmap_tf.cli.evaluate`` images/s on 20 BSDS500 test images with a cold and a
  warm binary-map cache (temporary folders), with 1 and 2 ``--workers``, and the CPU cores used;
* ``agreement``: fraction of binary-map bits equal to float32's for bf16 and the other execution
  modes on 20 BSDS500 val images (real ``vgg16-hed`` weights, shipped ITQ).

Every timing is the best of ``--repeats`` runs after one warm-up, as wall seconds and as CPU
seconds of this process (summed over its threads; less disturbed by other load on a shared
machine). ``--quick`` runs every section on tiny inputs in about a minute (for tests).
"""

from __future__ import annotations

import argparse
import functools
import gc
import os
import resource
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from multiprocessing import get_context
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from binmap_tf.binary_map.hardware import cpu_info

# TensorFlow is imported inside the functions only: the processes spawned by the evaluation's
# --workers re-import this module as their __main__, and must stay as light as the CLI's.
if TYPE_CHECKING:
    from binmap_tf.binary_map.hashing import ITQParams

IMAGE = "bsds500/images/test/100007.jpg"
BITS = 8


@dataclass(frozen=True)
class CnnConfig:
    """A backbone configuration to time: a label, the backbone name, its feature size and options."""

    label: str
    backbone: str
    feature_dim: int
    options: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Lever:
    """How the forward pass runs: :class:`~binmap_tf.binary_map.model.BinaryMapper` options and the batch size."""

    execution: str
    precision: str
    batch: int

    @property
    def label(self) -> str:
        return f"{self.execution} {self.precision} b{self.batch}"

    def fields(self) -> dict:
        """The lever as JSON fields: its label and options."""
        return {"lever": self.label, **asdict(self)}


CNN_CONFIGS = (
    CnnConfig("vgg16-hed", "vgg16-hed", 512),
    CnnConfig("vgg16-hed conv4_3+conv5_3", "vgg16-hed", 1024, {"features": "conv4_3+conv5_3"}),
    CnnConfig("alexnet x3.4 (paper)", "alexnet", 4096, {"scale": 3.4}),
    CnnConfig("alexnet native", "alexnet", 4096, {"scale": 1.0}),
    CnnConfig("alexnet dilated native", "alexnet", 4096, {"scale": 1.0, "dilated": True}),
)
BASELINE = Lever("eager", "fp32", 1)  # BinaryMapper before the performance options
DEFAULT = Lever("graph", "fp32", 1)  # BinaryMapper's defaults now
XLA, BF16 = Lever("xla", "fp32", 1), Lever("graph", "bf16", 1)
LEVERS = (BASELINE, DEFAULT, Lever("graph", "fp32", 4), XLA, BF16, Lever("graph", "bf16", 4), Lever("xla", "bf16", 1))
PROFILE_LEVERS = (DEFAULT, XLA, BF16)
AGREEMENT_LEVERS = (BASELINE, XLA, BF16, Lever("xla", "bf16", 1))
END_TO_END_LEVERS = (BASELINE, DEFAULT, BF16)


@dataclass(frozen=True)
class Settings:
    """Sizes of every section: the full run, or :data:`QUICK` for tests."""

    repeats: int = 5
    crop: tuple[int, int] | None = None  # (H, W) top-left crop of the test image; None: whole
    matmul_sizes: tuple[int, ...] = (2048, 4096)
    cnn_configs: tuple[CnnConfig, ...] = CNN_CONFIGS
    levers: tuple[Lever, ...] = LEVERS
    agreement_levers: tuple[Lever, ...] = AGREEMENT_LEVERS
    end_to_end_levers: tuple[Lever, ...] = END_TO_END_LEVERS
    evaluate_images: int = 20
    evaluate_workers: tuple[int, ...] = (1, 2)
    agreement_images: int = 20


QUICK = Settings(repeats=1, crop=(240, 320), matmul_sizes=(256,),
                 cnn_configs=(CNN_CONFIGS[0], CNN_CONFIGS[-1]), levers=(BASELINE, DEFAULT, BF16),
                 agreement_levers=(BF16,), end_to_end_levers=(DEFAULT,),
                 evaluate_images=2, evaluate_workers=(1,), agreement_images=2)
MATMUL_DTYPES = {"fp32": "float32", "bf16": "bfloat16"}  # precision -> the matmul that is its yardstick
SECTIONS = ("matmul_peak", "cnn", "profile", "host", "end_to_end", "evaluate", "agreement")


@dataclass(frozen=True)
class Timing:
    """Best wall and best CPU seconds of repeated runs, and the wall seconds of the first call
    (tracing, XLA compilation and warm-up included)."""

    seconds: float
    cpu_seconds: float
    first_seconds: float = 0.0


def best_of_each(fns: dict[Any, Callable[[], Any]], repeats: int) -> dict[Any, Timing]:
    """Time every function ``repeats`` times after one untimed call; keep each one's fastest.

    The functions take turns (round-robin), so a burst of load from other processes slows all
    of them alike instead of whichever happened to run at the time.
    """
    first = {}
    for key, fn in fns.items():
        start = time.perf_counter()
        fn()
        first[key] = time.perf_counter() - start
    walls: dict[Any, list[float]] = {key: [] for key in fns}
    cpus: dict[Any, list[float]] = {key: [] for key in fns}
    for _ in range(repeats):
        for key, fn in fns.items():
            wall, cpu = time.perf_counter(), time.process_time()
            fn()
            walls[key].append(time.perf_counter() - wall)
            cpus[key].append(time.process_time() - cpu)
    return {key: Timing(min(walls[key]), min(cpus[key]), first[key]) for key in fns}


def best_of(fn: Callable[[], Any], repeats: int) -> Timing:
    """Time ``fn`` ``repeats`` times after one untimed call; keep the fastest."""
    return best_of_each({0: fn}, repeats)[0]


def random_hashing(dim: int, bits: int = BITS, seed: int = 0) -> ITQParams:
    """ITQ-shaped parameters with a random orthonormal projection (timing with random weights)."""
    from binmap_tf.binary_map.hashing import ITQParams

    rng = np.random.default_rng(seed)
    pcs, _ = np.linalg.qr(rng.standard_normal((dim, bits)))
    rotation, _ = np.linalg.qr(rng.standard_normal((bits, bits)))
    return ITQParams(mean=np.zeros(dim, np.float32), pcs=pcs, rotation=rotation)


def benchmark_image(settings: Settings) -> np.ndarray:
    """The benchmark image (BSDS500 test 100007, 321x481), cropped in quick mode."""
    from binmap_tf.common.images import load_image
    from binmap_tf.common.paths import data_root

    image = load_image(data_root() / IMAGE)
    return image if settings.crop is None else image[:settings.crop[0], :settings.crop[1]]


def machine() -> dict:
    """CPU model, cores, vector extensions, library versions and the load average now."""
    import keras
    import tensorflow as tf

    model, flags = cpu_info()
    wanted = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_int8")
    return {"cpu": model, "cores": os.cpu_count(), "isa": [flag for flag in wanted if flag in flags],
            "tensorflow": tf.__version__, "keras": keras.__version__, "numpy": np.__version__,
            "tf_intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads() or os.cpu_count(),
            "onednn": os.environ.get("TF_ENABLE_ONEDNN_OPTS", "1 (default)"),
            "alexnet_weights": _alexnet_weights(), "load_average": {"start": os.getloadavg()[0]}}


def _alexnet_weights() -> str:
    """Whether imported ImageNet AlexNet weights exist (the benchmarks time random weights anyway)."""
    from binmap_tf.binary_map.backbones.alexnet.weights import resolve_weights

    try:
        return f"imported: {resolve_weights('imported', 'caffe').name}"
    except FileNotFoundError:
        return "absent: alexnet is timed with random weights; its Seg-IoU cannot be evaluated here"


def _matmul(dtype: str, n: int) -> Callable[[], Any]:
    """A call of ``tf.linalg.matmul`` on two random ``n x n`` matrices of ``dtype``."""
    import tensorflow as tf

    a, b = (tf.cast(tf.random.normal((n, n), seed=seed), dtype) for seed in (1, 2))
    product = tf.function(lambda x, y: tf.linalg.matmul(x, y)[0, 0])
    return lambda: product(a, b).numpy()


def _record_peak(peaks: dict, dtype: str, n: int, timing: Timing) -> None:
    """Raise ``peaks[dtype]`` (wall and per-CPU-second GFLOP/s) to this ``n x n`` matmul's if higher."""
    peak = peaks.setdefault(dtype, {"gflops": 0.0, "gflops_per_cpu_second": 0.0, "sizes": []})
    flops = 2 * n**3
    if n not in peak["sizes"]:
        peak["sizes"].append(n)
    peak["gflops"] = max(peak["gflops"], flops / timing.seconds / 1e9)
    peak["gflops_per_cpu_second"] = max(peak["gflops_per_cpu_second"], flops / timing.cpu_seconds / 1e9)


def matmul_peak(settings: Settings) -> dict:
    """Best GFLOP/s of square ``tf.linalg.matmul`` per dtype over ``settings.matmul_sizes``.

    :func:`cnn` measures the largest size again between its forward passes and raises these
    figures when it finds more (the peak is the best seen, as every other figure is).
    """
    peaks: dict = {}
    for dtype in MATMUL_DTYPES.values():
        for n in settings.matmul_sizes:
            _record_peak(peaks, dtype, n, best_of(_matmul(dtype, n), max(settings.repeats, 3)))
    return peaks


def build_mapper(config: CnnConfig, lever: Lever, **options):
    """A :class:`~binmap_tf.binary_map.model.BinaryMapper` for ``config`` run as ``lever`` (random weights
    and hashing unless ``options`` say otherwise)."""
    from binmap_tf.binary_map.model import BinaryMapper

    options = {"weights": None, "hashing": random_hashing(config.feature_dim), **config.options, **options}
    return BinaryMapper(config.backbone, bits=BITS, precision=lever.precision, execution=lever.execution,
                        **options)


def _release() -> None:
    """Free the models of the previous measurement (they hold hundreds of MB)."""
    import keras

    keras.backend.clear_session()
    gc.collect()


def _rates(gflop: float, timing: Timing, precision: str, peaks: dict) -> dict:
    """GFLOP/s of ``gflop`` done in ``timing`` and their fraction of the matmul peak of ``precision``'s
    dtype, per wall second and per CPU second (and of the float32 peak per wall second)."""
    peak = peaks[MATMUL_DTYPES[precision]]
    gflops, cpu_gflops = gflop / timing.seconds, gflop / timing.cpu_seconds
    return {"gflops": gflops, "gflops_per_cpu_second": cpu_gflops,
            "fraction_of_peak": gflops / peak["gflops"],
            "cpu_fraction_of_peak": cpu_gflops / peak["gflops_per_cpu_second"],
            "fraction_of_fp32_peak": gflops / peaks["float32"]["gflops"]}


def cnn(settings: Settings, image: np.ndarray, peaks: dict) -> list[dict]:
    """Forward-pass speed of every backbone configuration under every lever.

    The levers of a configuration and the matmuls of :func:`matmul_peak` take turns, so all of
    them see the same load; ``peaks`` is raised to the best matmul seen.
    """
    from benchmarks.flops import count_flops

    size = max(settings.matmul_sizes)
    matmuls = {dtype: _matmul(dtype, size) for dtype in MATMUL_DTYPES.values()}
    measured = []
    for config in settings.cnn_configs:
        mappers = {lever: build_mapper(config, lever) for lever in settings.levers}
        layers = count_flops(mappers[BASELINE].model, image.shape[:2])
        batches = {lever: np.repeat(image[None], lever.batch, axis=0) for lever in settings.levers}
        timings = best_of_each({**{lever: functools.partial(mapper.forward, batches[lever])
                                   for lever, mapper in mappers.items()}, **matmuls}, settings.repeats)
        for dtype in matmuls:
            _record_peak(peaks, dtype, size, timings.pop(dtype))
        grid = next(layer.output_shape[1:3] for layer in layers if layer.name == "hconv8")
        gflop = sum(layer.flops for layer in layers) / 1e9
        measured.extend((config, grid, gflop, lever, timing, timings[BASELINE]) for lever, timing in timings.items())
        print(f"  {config.label}: " + ", ".join(f"{lever.label} {timing.seconds / lever.batch:.3f}"
                                                  for lever, timing in timings.items()) + " s/image", flush=True)
        del mappers
        _release()
    rows = []
    for config, grid, gflop, lever, timing, before in measured:
        per_image = Timing(timing.seconds / lever.batch, timing.cpu_seconds / lever.batch)
        rows.append({"config": config.label, **lever.fields(), "grid": list(grid), "gflop_per_image": gflop,
                     "seconds_per_image": per_image.seconds, "cpu_seconds_per_image": per_image.cpu_seconds,
                     "first_call_seconds": timing.first_seconds, **_rates(gflop, per_image, lever.precision, peaks),
                     "speedup": before.seconds / per_image.seconds,
                     "cpu_speedup": before.cpu_seconds / per_image.cpu_seconds})
    return rows


def profile(settings: Settings, image: np.ndarray, peaks: dict) -> list[dict]:
    """Per counted layer of every configuration: its seconds and GFLOP/s when run alone (batch 1)."""
    import keras
    import tensorflow as tf

    from benchmarks.flops import count_flops

    rows = []
    for config in settings.cnn_configs:
        for lever in PROFILE_LEVERS:
            mapper = build_mapper(config, lever)
            layers = count_flops(mapper.model, image.shape[:2])
            probe = keras.Model(mapper.model.input, [mapper.model.get_layer(layer.name).input for layer in layers])
            inputs = probe(image[None], training=False)
            for layer, layer_input in zip(layers, inputs):
                run = tf.function(mapper.model.get_layer(layer.name), jit_compile=lever.execution == "xla")
                timing = best_of(lambda: tf.nest.flatten(run(layer_input))[0].numpy(), settings.repeats)
                rows.append({"config": config.label, **lever.fields(), "layer": layer.name,
                             "output_shape": list(layer.output_shape), "gflop": layer.flops / 1e9,
                             "seconds": timing.seconds, **_rates(layer.flops / 1e9, timing, lever.precision, peaks)})
            del mapper, probe, inputs
            _release()
    return rows


def host(settings: Settings, image: np.ndarray) -> dict:
    """Seconds of superpixels, code assignment and merging (stages of ``segment_with_map``) per method."""
    from binmap_tf.binary_map.model import BinaryMapper
    from binmap_tf.segmentation.pipeline import segment_with_map

    binary_map = BinaryMapper()(image)  # the real vgg16-hed map, so merging sees realistic codes (at its size)
    results = {}
    for method in ("egs", "slic"):
        runs: list[dict[str, float]] = []
        timing = best_of(lambda: runs.append(segment_with_map(image, binary_map, method, merge="adjacent",
                                                              working_pixels=None).timings),
                         max(settings.repeats, 5))
        stages = {stage: min(run[stage] for run in runs) for stage in ("superpixels", "assign", "merge", "total")}
        results[method] = {**stages, "host_seconds": stages["superpixels"] + stages["assign"] + stages["merge"],
                           "cpu_seconds": timing.cpu_seconds}
    return results


def _segment_in_fresh_process(lever: Lever, settings: Settings) -> dict:
    """Build the default model as ``lever``, segment the image, return timings and peak RSS."""
    from binmap_tf.binary_map.model import BinaryMapper
    from binmap_tf.segmentation.pipeline import segment

    image = benchmark_image(settings)
    mapper = BinaryMapper(precision=lever.precision, execution=lever.execution)
    runs: list[dict[str, float]] = []
    best_of(lambda: runs.append(segment(image, mapper, merge="adjacent").timings), settings.repeats)
    best = min(runs, key=lambda run: run["total"])
    return {**lever.fields(), "timings": best, "peak_rss_mib": _peak_rss_mib()}


def _peak_rss_mib() -> float:
    """Peak resident memory of this process in MiB.

    Linux's ``VmHWM`` when available: ``ru_maxrss`` of a spawned child also counts the parent's
    memory at the fork that preceded its ``exec``.
    """
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def end_to_end(settings: Settings) -> list[dict]:
    """``segment`` per image (real vgg16-hed, EGS) under each lever, each in a fresh process."""
    rows = []
    for lever in settings.end_to_end_levers:
        with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as pool:
            rows.append(pool.submit(_segment_in_fresh_process, lever, settings).result())
    return rows


def _cpu_seconds() -> float:
    """CPU seconds used so far by this process and its finished children."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def evaluate(settings: Settings) -> list[dict]:
    """``binmap_tf.cli.evaluate`` throughput on BSDS500 test images, cold then warm cache, per worker count."""
    from binmap_tf.cli import evaluate as evaluation

    rows = []
    for workers in settings.evaluate_workers:
        with tempfile.TemporaryDirectory() as cache:
            for state in ("cold", "warm"):
                args = evaluation.parse_args(["--split", "test", "--limit", str(settings.evaluate_images),
                                              "--workers", str(workers), "--cache", cache, "--out", cache])
                wall, cpu = time.perf_counter(), _cpu_seconds()
                results = evaluation.run(args)
                wall, cpu = time.perf_counter() - wall, _cpu_seconds() - cpu
                n_images = len({result.image_id for result in results})
                rows.append({"cache": state, "workers": workers, "images": n_images, "seconds": wall,
                             "images_per_s": n_images / wall, "cores_used": cpu / wall})
                print(f"  evaluate {state} cache, {workers} workers: {n_images / wall:.2f} images/s", flush=True)
                _release()
    return rows


def agreement(settings: Settings) -> dict:
    """Bits of each lever's binary maps equal to the float32 graph's, on BSDS500 val images."""
    from binmap_tf.evaluation.datasets import load_dataset

    images = [sample.load_image() for sample in load_dataset("bsds500", "val", limit=settings.agreement_images)]
    config = CNN_CONFIGS[0]

    def maps(lever: Lever) -> tuple[list[np.ndarray], float]:
        mapper = build_mapper(config, lever, weights="hed", hashing=None)
        mapper(images[0])  # warm-up (XLA compiles here)
        start = time.perf_counter()
        bits = [mapper(image).bits for image in images]
        seconds = (time.perf_counter() - start) / len(images)
        del mapper
        _release()
        return bits, seconds

    reference, reference_seconds = maps(DEFAULT)
    rows = {"reference": {**DEFAULT.fields(), "seconds_per_image": reference_seconds},
            "images": len(images), "levers": []}
    for lever in settings.agreement_levers:
        bits, seconds = maps(lever)
        equal = [np.mean(ours == theirs) for ours, theirs in zip(bits, reference)]
        same_code = [np.mean(np.all(ours == theirs, axis=-1)) for ours, theirs in zip(bits, reference)]
        total = sum(int(np.sum(ours == theirs)) for ours, theirs in zip(bits, reference))
        rows["levers"].append({**lever.fields(), "bits_equal": total / sum(b.size for b in bits),
                               "worst_image_bits_equal": float(min(equal)),
                               "cells_with_equal_code": float(np.mean(same_code)), "seconds_per_image": seconds})
    return rows


def format_report(results: dict) -> str:
    """The results as aligned text tables."""
    machine = results["machine"]
    lines = [f"{machine['cpu']}, {machine['cores']} cores ({', '.join(machine['isa'])}), TensorFlow "
             f"{machine['tensorflow']}; 1-minute load before each section: "
             + ", ".join(f"{name} {value:.1f}" for name, value in machine["load_average"].items())]
    if "matmul_peak" in results:
        lines.append("matmul peak: " + ", ".join(
            f"{dtype} {row['gflops']:.1f} GFLOP/s ({row['gflops_per_cpu_second']:.1f} per CPU second)"
            for dtype, row in results["matmul_peak"].items()))
    if "cnn" in results:
        lines += ["", "CNN forward; 1st s: first call (trace/compile); peak% = GFLOP/s over the matmul's of the "
                      "same dtype, per wall second and per CPU second; speed-up over eager fp32 b1, wall and CPU",
                  f"{'config':28s} {'lever':15s} {'grid':>7s} {'GFLOP':>7s} {'s/image':>8s} {'cpu s':>7s} "
                  f"{'1st s':>6s} {'GFLOP/s':>8s} {'peak%':>6s} {'cpu%':>5s} {'speedup':>7s} {'cpu':>6s}"]
        for row in results["cnn"]:
            lines.append(f"{row['config']:28s} {row['lever']:15s} {'x'.join(map(str, row['grid'])):>7s} "
                         f"{row['gflop_per_image']:7.1f} {row['seconds_per_image']:8.3f} "
                         f"{row['cpu_seconds_per_image']:7.3f} {row['first_call_seconds']:6.2f} {row['gflops']:8.1f} "
                         f"{100 * row['fraction_of_peak']:5.0f}% {100 * row['cpu_fraction_of_peak']:4.0f}% "
                         f"{row['speedup']:6.2f}x {row['cpu_speedup']:5.2f}x")
    if "profile" in results:
        lines += ["", f"{'profile (layer alone, b1)':28s} {'lever':15s} {'layer':8s} {'GFLOP':>7s} {'s':>7s} "
                      f"{'GFLOP/s':>8s} {'peak%':>6s}"]
        for row in results["profile"]:
            lines.append(f"{row['config']:28s} {row['lever']:15s} {row['layer']:8s} {row['gflop']:7.2f} "
                         f"{row['seconds']:7.3f} {row['gflops']:8.1f} {100 * row['fraction_of_peak']:5.0f}%")
    if "host" in results:
        lines += ["", f"{'host (321x481)':10s} {'superpixels':>11s} {'assign':>7s} {'merge':>7s} {'sum':>7s} {'cpu':>7s}"]
        for method, row in results["host"].items():
            lines.append(f"{method:10s} {row['superpixels']:11.3f} {row['assign']:7.3f} {row['merge']:7.3f} "
                         f"{row['host_seconds']:7.3f} {row['cpu_seconds']:7.3f}")
    if "end_to_end" in results:
        lines += ["", f"{'segment() per image':20s} {'cnn':>7s} {'total':>7s} {'peak RSS MiB':>12s}"]
        for row in results["end_to_end"]:
            lines.append(f"{row['lever']:20s} {row['timings']['cnn']:7.3f} {row['timings']['total']:7.3f} "
                         f"{row['peak_rss_mib']:12.0f}")
    if "evaluate" in results:
        lines += ["", f"{'evaluate':8s} {'cache':6s} {'workers':>7s} {'images':>6s} {'images/s':>9s} {'cores':>6s}"]
        for row in results["evaluate"]:
            lines.append(f"{'':8s} {row['cache']:6s} {row['workers']:7d} {row['images']:6d} "
                         f"{row['images_per_s']:9.2f} {row['cores_used']:6.2f}")
    if "agreement" in results:
        agree = results["agreement"]
        lines += ["", f"agreement with graph fp32 on {agree['images']} BSDS500 val images "
                      f"({agree['reference']['seconds_per_image']:.3f} s/image)"]
        for row in agree["levers"]:
            lines.append(f"  {row['lever']:15s} bits {100 * row['bits_equal']:7.3f}%  worst image "
                         f"{100 * row['worst_image_bits_equal']:7.3f}%  codes {100 * row['cells_with_equal_code']:7.3f}%"
                         f"  {row['seconds_per_image']:.3f} s/image")
    return "\n".join(lines)


def run(settings: Settings, sections: tuple[str, ...]) -> dict:
    """Run the chosen ``sections`` and return their results (with the machine description)."""
    results: dict[str, Any] = {"machine": machine(), "settings": asdict(settings)}
    image = benchmark_image(settings)
    results["image_shape"] = list(image.shape[:2])
    needs_peak = {"cnn", "profile"} & set(sections)
    if "matmul_peak" in sections or needs_peak:
        results["matmul_peak"] = matmul_peak(settings)
    steps: dict[str, Callable[[], Any]] = {
        "cnn": lambda: cnn(settings, image, results["matmul_peak"]),
        "profile": lambda: profile(settings, image, results["matmul_peak"]),
        "host": lambda: host(settings, image),
        "end_to_end": lambda: end_to_end(settings),
        "evaluate": lambda: evaluate(settings),
        "agreement": lambda: agreement(settings),
    }
    load = results["machine"]["load_average"]  # 1-minute load before each section: other users' share
    for name, step in steps.items():
        if name in sections:
            print(f"{name} ...", flush=True)
            load[name] = os.getloadavg()[0]
            results[name] = step()
    load["end"] = os.getloadavg()[0]
    return results


def main(argv: list[str] | None = None) -> int:
    from binmap_tf.common.files import write_json

    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="JSON file to write")
    parser.add_argument("--quick", action="store_true", help="tiny inputs and one repeat (a smoke test)")
    parser.add_argument("--repeats", type=int, default=None, help="timed runs per measurement (default: 5)")
    parser.add_argument("--sections", nargs="+", choices=SECTIONS, default=[s for s in SECTIONS if s != "profile"],
                        help="what to measure (default: all but profile)")
    parser.add_argument("--profile", action="store_true", help="also time every counted layer alone")
    args = parser.parse_args(argv)
    settings = QUICK if args.quick else Settings()
    if args.repeats is not None:
        settings = replace(settings, repeats=args.repeats)
    sections = tuple(args.sections) + (("profile",) if args.profile else ())
    results = run(settings, sections)
    write_json(args.out, results)
    print(format_report(results))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
