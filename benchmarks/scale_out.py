"""Scale-out, measured: ``binmap-batch`` on a local two-node Ray cluster against the single-process
``binmap-segment``, on the same images in the same run, per busy core.

``python -m benchmarks.scale_out --out benchmarks/results/scale_out_bsds500_test.json`` starts a
cluster of ``--nodes`` nodes on this machine (each a ``ray start --block`` process with
``--node-cpus`` CPUs: :mod:`benchmarks.local_cluster`; by default two nodes sharing the cores),
then times ``binmap-segment`` on the BSDS500 test images (``--limit`` fewer) and
``binmap-batch --address auto`` on the cluster, each from start to exit (models loaded, Ray Data's
workers started; the cluster itself is up before, as a job finds it). For each it records images/s,
the CPU seconds of all its processes (for the batch: the driver, both nodes' services and
workers), the cores they kept busy (CPU seconds / wall seconds) and images/s per busy core, which is
images per CPU-second; ``per_core_efficiency`` is the batch's figure over the single process's
(the goal: at least 0.9). CPU seconds are little changed by other jobs on the machine, wall seconds
are: run it on an idle machine (the load average before and after each run is recorded).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

from benchmarks.batch import bsds_inputs, machine, segment_and_batch
from benchmarks.local_cluster import LocalCluster

GOAL = 0.9  # the cluster's images/s per busy core, as a fraction of the single process's


def default_workers(nodes: int, node_cpus: int) -> list[str]:
    """``binmap-batch`` workers filling the cluster's CPUs: one CNN worker per node (one TensorFlow
    thread each, the cheapest per core) and host workers on the other CPUs, at least one."""
    cnn = nodes if node_cpus > 1 else max(1, nodes - 1)
    return ["--cnn-workers", str(cnn), "--cnn-threads", "1", "--host-workers", str(max(1, nodes * node_cpus - cnn))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.scale_out", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="JSON file to write")
    parser.add_argument("--split", default="test", help="BSDS500 split (default: %(default)s)")
    parser.add_argument("--limit", type=int, default=None, help="use only the first N images")
    parser.add_argument("--nodes", type=int, default=2, help="Ray nodes (default: %(default)s)")
    parser.add_argument("--node-cpus", type=int, default=max(1, (os.cpu_count() or 2) // 2),
                        help="CPUs each node offers (default: the cores shared out, %(default)s)")
    parser.add_argument("--batch-args", default=None,
                        help="binmap-batch's worker options (default: one CNN worker per node with one thread, "
                             "host workers on the other CPUs)")
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="fp32",
                        help="the model's precision in both commands (default: %(default)s)")
    parser.add_argument("--work", type=Path, default=None, help="keep both runs' outputs and the cluster's logs here")
    args = parser.parse_args(argv)
    batch_args = default_workers(args.nodes, args.node_cpus) if args.batch_args is None else args.batch_args.split()

    with tempfile.TemporaryDirectory() as scratch:
        work = args.work or Path(scratch)
        images = bsds_inputs(args.split, args.limit, work / "inputs")
        (work / "cluster_logs").mkdir(parents=True, exist_ok=True)
        with LocalCluster(args.nodes, args.node_cpus, work / "cluster_logs") as cluster:
            runs = segment_and_batch(images, work / "inputs", work, ["--address", "auto", *batch_args],
                                     ["--precision", args.precision], env=cluster.env, cluster=True)
    single, batch = runs["segment_cli"], runs["batch"]
    efficiency = round(batch["images_per_s_per_busy_core"] / single["images_per_s_per_busy_core"], 3)
    result = {"command": " ".join(["python -m benchmarks.scale_out", *(argv if argv is not None else sys.argv[1:])]),
              "machine": machine(), "precision": args.precision, "images": len(images), "data": f"bsds500/{args.split}",
              "cluster": {"nodes": args.nodes, "cpus_per_node": args.node_cpus}, **runs,
              "per_core_efficiency": efficiency, "goal": GOAL, "meets_goal": efficiency >= GOAL}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"segment {single['images_per_s_per_busy_core']} images/s per busy core ({single['cores_busy']} busy), "
          f"{args.nodes}-node batch {batch['images_per_s_per_busy_core']} ({batch['cores_busy']} busy): "
          f"efficiency {efficiency} (goal {GOAL}); identical labels {result['identical_labels']}/{len(images)} "
          f"-> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
