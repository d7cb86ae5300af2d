"""Collection throughput: ``binmap-batch`` (Ray Data) against the ``segment`` command.

``python -m benchmarks.batch --out benchmarks/results/batch_bsds500_test.json`` segments the
BSDS500 test images (200; ``--limit`` fewer) twice, each command as its own process timed from
start to exit (model loading and Ray's start-up included): first the single-process
``binmap-segment``, then ``binmap-batch`` with the given workers. It
writes images/s of both, their ratio, how many images have identical labels in both runs, and
the load average around each run, and the CPU seconds each command's process tree used (Ray's
workers included): other jobs on the machine change the wall-clock figures, much less the CPU
seconds per image, from which ``cores / cpu_seconds_per_image`` bounds the throughput of a
command that keeps every core busy.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from benchmarks.processes import tree_cpu
from binmap_tf.binary_map.hardware import cpu_info
from binmap_tf.common.paths import data_root


def timed(command: list[str], poll: float = 0.5, env: dict[str, str] | None = None, cluster: bool = False) -> dict:
    """Run ``command`` (quietly, in ``env``); return its wall seconds, the CPU seconds of its whole
    process tree (Ray's workers included: polled every ``poll`` s, so a process's last fraction of a
    poll is missed) and the 1-minute load average before and after. With ``cluster``, the CPU seconds
    of every process this one started meanwhile are counted too: a local cluster's nodes and their
    workers (less what the nodes had used before the command)."""
    before = os.getloadavg()[0]
    already = tree_cpu(os.getpid(), include_root=False) if cluster else {}
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    cpu: dict[int, float] = {}
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(poll):
            cpu.update(tree_cpu(os.getpid(), include_root=False) if cluster else tree_cpu(process.pid))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    _, stderr = process.communicate()
    seconds = time.perf_counter() - start
    stop.set()
    sampler.join()
    if process.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed ({process.returncode}):\n{stderr[-3000:]}")
    used = sum(total - already.get(pid, 0.0) for pid, total in cpu.items())
    return {"seconds": round(seconds, 2), "cpu_seconds": round(used, 1),
            "load_before": before, "load_after": os.getloadavg()[0]}


def bsds_inputs(split: str, limit: int | None, folder: Path) -> list[Path]:
    """Link the first ``limit`` BSDS500 ``split`` images into ``folder`` (the batch reads a pattern:
    exactly these images); return them."""
    images = sorted((data_root() / "bsds500" / "images" / split).glob("*.jpg"))[:limit]
    if not images:
        raise SystemExit(f"no images in {data_root() / 'bsds500' / 'images' / split}")
    folder.mkdir(parents=True, exist_ok=True)
    for image in images:
        link = folder / image.name
        if not link.exists():
            link.symlink_to(image.resolve())
    return images


def machine() -> dict:
    """The machine a benchmark ran on: cores, processor, Python, TensorFlow and Ray versions."""
    from importlib.metadata import version

    return {"cpus": os.cpu_count(), "processor": cpu_info()[0] or platform.machine(),
            "python": platform.python_version(), "tensorflow": version("tensorflow"), "ray": version("ray")}


def compare_labels(stems: list[str], first: Path, second: Path) -> list[str]:
    """Stems whose ``_labels.npy`` differ (or are missing) between two output folders."""
    differing = []
    for stem in stems:
        paths = [folder / f"{stem}_labels.npy" for folder in (first, second)]
        if not all(path.exists() for path in paths) or not np.array_equal(*(np.load(path) for path in paths)):
            differing.append(stem)
    return differing


def segment_and_batch(images: list[Path], inputs: Path, work: Path, batch_args: list[str], model_args: list[str],
                      env: dict[str, str] | None = None, cluster: bool = False) -> dict:
    """Time ``binmap-segment`` (one process) on the ``images`` linked in ``inputs``, then ``binmap-batch``
    with ``batch_args`` (``env`` and ``cluster``: see :func:`timed`), both with ``model_args``, writing
    into ``work``. Return both runs (seconds, CPU seconds, images/s, CPU seconds per image, images per
    CPU-second: images/s per busy core), the batch's own figures and the images whose labels differ."""
    cli_out, batch_out = work / "segment", work / "batch"
    python = [sys.executable, "-m"]
    print(f"segment: {len(images)} images, one process ...", flush=True)
    cli = timed(python + ["binmap_tf.cli.segment", str(inputs), "--out", str(cli_out), *model_args])
    print(f"  {cli['seconds']} s; batch ...", flush=True)
    batch_argv = ["--input", str(inputs / "*.jpg"), "--out", str(batch_out), "--overwrite", *batch_args, *model_args]
    batch = timed(python + ["binmap_tf.cli.batch", *batch_argv], env=env, cluster=cluster)
    summary = json.loads((batch_out / "batch_summary.json").read_text())
    differing = compare_labels([image.stem for image in images], cli_out, batch_out)
    n = len(images)
    for run in (cli, batch):
        run["images_per_s"] = round(n / run["seconds"], 3)
        run["cpu_seconds_per_image"] = round(run["cpu_seconds"] / n, 3)
        run["cores_busy"] = round(run["cpu_seconds"] / run["seconds"], 2)
        run["images_per_s_per_busy_core"] = round(n / run["cpu_seconds"], 4)
    return {
        "segment_cli": {"command": " ".join(["binmap-segment INPUTS --out DIR", *model_args]), **cli},
        "batch": {"command": "binmap-batch " + " ".join(["--input", "'INPUTS/*.jpg'", "--out", "DIR", "--overwrite",
                                                         *batch_args, *model_args]),
                  **batch, "workers": summary["workers"], "written": summary["written"], "failed": summary["failed"],
                  "pipeline_images_per_s": summary["images_per_second"], "mean_seconds": summary["mean_seconds"],
                  "images_per_node": summary["images_per_node"]},
        "identical_labels": n - len(differing), "differing_labels": differing,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="JSON file to write")
    parser.add_argument("--split", default="test", help="BSDS500 split (default: %(default)s)")
    parser.add_argument("--limit", type=int, default=None, help="use only the first N images")
    parser.add_argument("--work", type=Path, default=None, help="keep both runs' outputs here (default: a temporary folder)")
    parser.add_argument("--batch-args", default="", help="extra arguments of binmap-batch, e.g. "
                                                         "'--cnn-workers 2 --cnn-threads 1'")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as scratch:
        work = args.work or Path(scratch)
        images = bsds_inputs(args.split, args.limit, work / "inputs")
        runs = segment_and_batch(images, work / "inputs", work, args.batch_args.split(), [])
    cli, batch = runs["segment_cli"], runs["batch"]
    result = {"images": len(images), "data": f"bsds500/{args.split}", "machine": machine(), **runs,
              "speedup": round(batch["images_per_s"] / cli["images_per_s"], 3)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"segment {cli['images_per_s']} images/s, batch {batch['images_per_s']} images/s "
          f"(x{result['speedup']}), identical labels {result['identical_labels']}/{len(images)} -> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
