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

from binmap_tf.common.paths import data_root


def _process_tree_cpu(root: int) -> dict[int, float]:
    """CPU seconds (user + system) so far of ``root`` and every process descended from it, by pid (Linux /proc)."""
    parents, cpu = {}, {}
    tick = os.sysconf("SC_CLK_TCK")
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # gone meanwhile
            continue
        parents[int(entry)] = int(fields[1])
        cpu[int(entry)] = (int(fields[11]) + int(fields[12])) / tick
    tree, grown = {root}, True
    while grown:
        new = {pid for pid, parent in parents.items() if parent in tree and pid not in tree}
        tree |= new
        grown = bool(new)
    return {pid: cpu[pid] for pid in tree if pid in cpu}


def timed(command: list[str], poll: float = 0.5) -> dict:
    """Run ``command`` (quietly); return its wall seconds, the CPU seconds of its whole process tree
    (Ray's workers included: polled every ``poll`` s, so a process's last fraction of a poll is missed)
    and the 1-minute load average before and after."""
    before = os.getloadavg()[0]
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    cpu: dict[int, float] = {}
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(poll):
            cpu.update(_process_tree_cpu(process.pid))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    _, stderr = process.communicate()
    seconds = time.perf_counter() - start
    stop.set()
    sampler.join()
    if process.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed ({process.returncode}):\n{stderr[-3000:]}")
    return {"seconds": round(seconds, 2), "cpu_seconds": round(sum(cpu.values()), 1),
            "load_before": before, "load_after": os.getloadavg()[0]}


def compare_labels(stems: list[str], first: Path, second: Path) -> list[str]:
    """Stems whose ``_labels.npy`` differ (or are missing) between two output folders."""
    differing = []
    for stem in stems:
        paths = [folder / f"{stem}_labels.npy" for folder in (first, second)]
        if not all(path.exists() for path in paths) or not np.array_equal(*(np.load(path) for path in paths)):
            differing.append(stem)
    return differing


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="JSON file to write")
    parser.add_argument("--split", default="test", help="BSDS500 split (default: %(default)s)")
    parser.add_argument("--limit", type=int, default=None, help="use only the first N images")
    parser.add_argument("--work", type=Path, default=None, help="keep both runs' outputs here (default: a temporary folder)")
    parser.add_argument("--batch-args", default="", help="extra arguments of binmap-batch, e.g. "
                                                         "'--cnn-workers 2 --cnn-threads 1'")
    args = parser.parse_args(argv)

    images = sorted((data_root() / "bsds500" / "images" / args.split).glob("*.jpg"))[:args.limit]
    if not images:
        raise SystemExit(f"no images in {data_root() / 'bsds500' / 'images' / args.split}")
    with tempfile.TemporaryDirectory() as scratch:
        work = args.work or Path(scratch)
        inputs = work / "inputs"  # the batch reads a pattern: link exactly these images into one folder
        inputs.mkdir(parents=True, exist_ok=True)
        for image in images:
            link = inputs / image.name
            if not link.exists():
                link.symlink_to(image.resolve())
        cli_out, batch_out = work / "segment", work / "batch"
        python = [sys.executable, "-m"]
        print(f"segment: {len(images)} images, one process ...", flush=True)
        cli = timed(python + ["binmap_tf.cli.segment", str(inputs), "--out", str(cli_out)])
        print(f"  {cli['seconds']} s; batch ...", flush=True)
        batch_argv = ["--input", str(inputs / "*.jpg"), "--out", str(batch_out), "--overwrite", *args.batch_args.split()]
        batch = timed(python + ["binmap_tf.cli.batch", *batch_argv])
        summary = json.loads((batch_out / "batch_summary.json").read_text())
        differing = compare_labels([image.stem for image in images], cli_out, batch_out)

    n = len(images)
    for run in (cli, batch):
        run["images_per_s"] = round(n / run["seconds"], 3)
        run["cpu_seconds_per_image"] = round(run["cpu_seconds"] / n, 3)
    result = {
        "images": n, "data": f"bsds500/{args.split}",
        "machine": {"cpus": os.cpu_count(), "processor": platform.processor() or platform.machine(),
                    "python": platform.python_version()},
        "segment_cli": {"command": "binmap-segment INPUTS --out DIR", **cli},
        "batch": {"command": "binmap-batch " + " ".join(["--input", "'INPUTS/*.jpg'", "--out", "DIR",
                                                                       "--overwrite", *args.batch_args.split()]),
                  **batch, "workers": summary["workers"], "written": summary["written"], "failed": summary["failed"],
                  "pipeline_images_per_s": summary["images_per_second"], "mean_seconds": summary["mean_seconds"]},
        "speedup": round(batch["images_per_s"] / cli["images_per_s"], 3),
        "identical_labels": n - len(differing), "differing_labels": differing,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"segment {cli['images_per_s']} images/s, batch {batch['images_per_s']} images/s "
          f"(x{result['speedup']}), identical labels {result['identical_labels']}/{n} -> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
