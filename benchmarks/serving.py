"""Serving throughput and latency over loopback gRPC.

``python -m benchmarks.serving --out results_serving.json`` exports the model (real vgg16-hed
and the shipped ITQ by default) to a temporary folder, serves it with the loopback server
(:mod:`serving.server`) and sends requests of ``--batch-sizes`` images of 321x481 (BSDS500
size) from one client, one request at a time, through :meth:`BinmapClient.binary_maps`: the
figures include encoding, the gRPC round trip, the CNN and building the ``BinaryMap`` objects.
Writes JSON and prints a table. Server and client share the machine, as over loopback they must.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

IMAGE_SHAPE = (321, 481)


def device_name() -> str:
    """The device TensorFlow computes on: the first GPU's name, else the CPU and its core count."""
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        return tf.config.experimental.get_device_details(gpus[0]).get("device_name", gpus[0].name)
    return f"CPU {platform.processor() or platform.machine()} ({os.cpu_count()} cores)"


def time_setting(client, batch_size: int, requests: int, warmup: int, seed: int = 0) -> dict:
    """Requests/s, images/s and latency percentiles for ``requests`` requests of ``batch_size`` images."""
    rng = np.random.default_rng(seed)
    images = list(rng.integers(0, 256, (batch_size, *IMAGE_SHAPE, 3), dtype=np.uint8))
    for _ in range(warmup):
        client.binary_maps(images)
    latencies = []
    start = time.perf_counter()
    for _ in range(requests):
        sent = time.perf_counter()
        client.binary_maps(images)
        latencies.append(time.perf_counter() - sent)
    elapsed = time.perf_counter() - start
    return {"batch_size": batch_size, "requests": requests,
            "requests_per_s": requests / elapsed, "images_per_s": requests * batch_size / elapsed,
            "p50_ms": 1000 * float(np.percentile(latencies, 50)),
            "p99_ms": 1000 * float(np.percentile(latencies, 99))}


def format_table(results: list[dict]) -> str:
    """The results as an aligned text table."""
    lines = [f"{'batch':>5} {'requests':>8} {'req/s':>8} {'img/s':>8} {'p50 ms':>9} {'p99 ms':>9}"]
    for row in results:
        lines.append(f"{row['batch_size']:>5} {row['requests']:>8} {row['requests_per_s']:>8.2f} "
                     f"{row['images_per_s']:>8.2f} {row['p50_ms']:>9.1f} {row['p99_ms']:>9.1f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Command line: export, serve over loopback, time each batch size, write JSON, print a table."""
    from binmap_tf import cli
    from binmap_tf.files import write_json
    from serving.client import BinmapClient
    from serving.export import export_model
    from serving.server import LoopbackServer

    parser = argparse.ArgumentParser(prog="python -m benchmarks.serving",
                                     description="Requests/s and latency of the served model over loopback gRPC.")
    parser.add_argument("--out", type=Path, default=Path("results_serving.json"), help="JSON output file")
    parser.add_argument("--requests", type=int, default=20, help="timed requests per batch size (default: %(default)s)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed requests first (default: %(default)s)")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8],
                        help="images per request (default: %(default)s)")
    cli.add_model_arguments(parser)
    args = parser.parse_args(argv)
    mapper = cli.mapper_from_args(args)
    with tempfile.TemporaryDirectory() as folder:
        export_model(mapper, Path(folder) / "binmap", warmup=False)
        with LoopbackServer(Path(folder) / "binmap", warmup=False) as server, \
                BinmapClient(server.target, timeout=600.0) as client:
            results = [time_setting(client, batch, args.requests, args.warmup) for batch in args.batch_sizes]
    record = {"device": device_name(), "server": "serving.server (loopback gRPC, one client, sequential)",
              "backbone": args.backbone, "bits": args.bits, "image_shape": list(IMAGE_SHAPE), "results": results}
    write_json(args.out, record)
    print(f"{record['device']}, {args.backbone} {args.bits} bits, {IMAGE_SHAPE[0]}x{IMAGE_SHAPE[1]} images")
    print(format_table(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
