"""Serving latency and throughput over loopback gRPC, for 1 and for 8 concurrent clients.

``python -m benchmarks.serving --out results_serving.json`` exports the model (real vgg16-hed
and the shipped ITQ by default) to a temporary folder, serves it with the loopback server
(:mod:`serving.server`, default batching options) and, for each ``--clients`` count, starts
that many clients (threads, one ``BinmapClient`` and channel each) that send ``--requests``
requests of one 321x481 BSDS500 test image each, back to back, through
:meth:`BinmapClient.binary_map`: the figures include encoding, the queue, the gRPC round trip,
the CNN and building the ``BinaryMap``. Latencies are measured with a long deadline, so none is
cut off; ``over_default_timeout`` counts those that the client's default deadline would have
failed. With ``--edges`` the clients ask for HED's edge map too (the ``with_edges`` signature,
what the merge hierarchy needs). ``signatures`` records each signature's response size and
median round trip, the signatures taking turns (``--signature-rounds`` requests each). Writes
JSON and prints a table. Server and clients share the machine, as over loopback
they must; the 1-minute load average before each setting is recorded, as other jobs may share it.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

IMAGE_SHAPE = (321, 481)
MEASURE_TIMEOUT = 600.0  # long enough that no request is cut off while measuring


def device_name() -> str:
    """The device TensorFlow computes on: the first GPU's name, else the CPU and its core count."""
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        return tf.config.experimental.get_device_details(gpus[0]).get("device_name", gpus[0].name)
    return f"CPU {platform.processor() or platform.machine()} ({os.cpu_count()} cores)"


def bsds_images(count: int) -> list[np.ndarray]:
    """The first ``count`` BSDS500 test images of exactly 321x481 (landscape), as uint8 RGB."""
    from binmap_tf.common.images import load_image
    from binmap_tf.common.paths import data_root

    folder = data_root() / "bsds500" / "images" / "test"
    images = []
    for path in sorted(folder.glob("*.jpg")):
        image = load_image(path)
        if image.shape[:2] == IMAGE_SHAPE:
            images.append(image)
        if len(images) == count:
            return images
    raise SystemExit(f"error: found {len(images)} of the {count} {IMAGE_SHAPE[0]}x{IMAGE_SHAPE[1]} BSDS500 "
                     f"test images needed in {folder}; set BINMAP_TF_DATA to the data root")


def per_signature(target: str, image: np.ndarray, rounds: int) -> dict[str, dict[str, float]]:
    """Response size (serialized bytes) and median round trip of each served signature for ``image``.

    The signatures take turns, ``rounds`` requests each, so they share whatever load the machine
    has: their difference is the cost of the edge map (or of decoding a PNG in the graph).
    """
    import grpc
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    from serving.client import BinmapClient
    from serving.protocol import DEFAULT_MODEL_NAME, ENCODED_INPUT, IMAGES_INPUT, SIGNATURES

    with BinmapClient(target) as client:
        served = set(client.signatures())
    requests = {}
    for (encoded, _), signature in SIGNATURES.items():
        if signature in served:
            request = requests[signature] = predict_pb2.PredictRequest()
            request.model_spec.name, request.model_spec.signature_name = DEFAULT_MODEL_NAME, signature
            value = np.array([tf.io.encode_png(image).numpy()], dtype=object) if encoded else image[None]
            request.inputs[ENCODED_INPUT if encoded else IMAGES_INPUT].CopyFrom(tf.make_tensor_proto(value))
    sizes, seconds = {}, {signature: [] for signature in requests}
    with grpc.insecure_channel(target) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        for _ in range(rounds):
            for signature, request in requests.items():
                sent = time.perf_counter()
                sizes[signature] = stub.Predict(request, timeout=MEASURE_TIMEOUT).ByteSize()
                seconds[signature].append(time.perf_counter() - sent)
    return {signature: {"response_bytes": sizes[signature], "median_ms": 1000 * float(np.median(seconds[signature]))}
            for signature in requests}


def time_clients(target: str, scheduler, clients: int, requests: int, images: list[np.ndarray],
                 edges: bool = False) -> dict:
    """Latency percentiles and throughput of ``clients`` concurrent clients sending ``requests`` each
    (asking for the edge map with ``edges``)."""
    from serving.client import DEFAULT_TIMEOUT, BinmapClient

    latencies: list[float] = []
    errors: list[BaseException] = []
    lock = threading.Lock()
    start_together = threading.Barrier(clients)

    def one_client(number: int) -> None:
        with BinmapClient(target, timeout=MEASURE_TIMEOUT, edges=edges) as client:
            start_together.wait()
            for request in range(requests):
                sent = time.perf_counter()
                try:
                    client.binary_map(images[(number + request) % len(images)])
                except Exception as error:  # noqa: BLE001 - reported in the results, not hidden
                    with lock:
                        errors.append(error)
                    continue
                with lock:
                    latencies.append(time.perf_counter() - sent)

    load = os.getloadavg()[0]
    batches, batch_images = scheduler.batches_run, scheduler.images_run
    threads = [threading.Thread(target=one_client, args=(number,)) for number in range(clients)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - start
    batches, batch_images = scheduler.batches_run - batches, scheduler.images_run - batch_images
    seconds = np.array(latencies) if latencies else np.array([np.nan])
    return {"clients": clients, "requests": clients * requests, "answered": len(latencies),
            "errors": sorted({f"{type(error).__name__}: {error}" for error in errors}),
            "requests_per_s": len(latencies) / elapsed, "wall_s": elapsed,
            "p50_ms": 1000 * float(np.percentile(seconds, 50)), "p99_ms": 1000 * float(np.percentile(seconds, 99)),
            "max_ms": 1000 * float(seconds.max()),
            "default_timeout_s": DEFAULT_TIMEOUT,
            "over_default_timeout": int((seconds > DEFAULT_TIMEOUT).sum()),
            "mean_batch_size": batch_images / batches if batches else 0.0,
            "load_average_1min_before": load}


def format_table(results: list[dict]) -> str:
    """The results as an aligned text table."""
    lines = [f"{'clients':>7} {'requests':>8} {'req/s':>7} {'p50 ms':>9} {'p99 ms':>9} {'max ms':>9} "
             f"{'batch':>6} {'>default':>8}"]
    for row in results:
        lines.append(f"{row['clients']:>7} {row['requests']:>8} {row['requests_per_s']:>7.2f} {row['p50_ms']:>9.1f} "
                     f"{row['p99_ms']:>9.1f} {row['max_ms']:>9.1f} {row['mean_batch_size']:>6.2f} "
                     f"{row['over_default_timeout']:>8}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Command line: export, serve over loopback, time each client count, write JSON, print a table."""
    from dataclasses import asdict

    from binmap_tf.cli import common as cli
    from binmap_tf.common.files import write_json
    from serving.client import BinmapClient
    from serving.export import edge_options, export_model
    from serving.server import LoopbackServer

    parser = argparse.ArgumentParser(prog="python -m benchmarks.serving",
                                     description="Latency and throughput of the served model over loopback gRPC.")
    parser.add_argument("--out", type=Path, default=Path("results_serving.json"), help="JSON output file")
    parser.add_argument("--requests", type=int, default=20, help="timed requests per client (default: %(default)s)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed requests first (default: %(default)s)")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 8],
                        help="concurrent client counts to time (default: %(default)s)")
    parser.add_argument("--images", type=int, default=8, help="distinct BSDS500 test images sent (default: %(default)s)")
    parser.add_argument("--edges", action="store_true", help="clients ask for the edge map too (with_edges)")
    parser.add_argument("--signature-rounds", type=int, default=5,
                        help="requests per signature, taking turns, for their sizes and latencies "
                             "(default: %(default)s)")
    cli.add_model_arguments(parser)
    args = parser.parse_args(argv)
    images = bsds_images(args.images)
    mapper = cli.mapper_from_args(args, **edge_options(args.backbone))  # exported as serving.export does
    with tempfile.TemporaryDirectory() as folder:
        export_model(mapper, Path(folder) / "binmap", warmup=False)
        with LoopbackServer(Path(folder) / "binmap", warmup=False) as server:
            with BinmapClient(server.target, timeout=MEASURE_TIMEOUT, edges=args.edges) as client:
                for request in range(args.warmup):
                    client.binary_map(images[request % len(images)])
            signatures = per_signature(server.target, images[0], args.signature_rounds)
            results = [time_clients(server.target, server.scheduler, clients, args.requests, images, args.edges)
                       for clients in args.clients]
            batching = asdict(server.scheduler.options)
    record = {"command": " ".join(["python -m benchmarks.serving", *(argv if argv is not None else sys.argv[1:])]),
              "device": device_name(), "server": "serving.server (loopback gRPC, default batching options)",
              "batching": batching, "backbone": args.backbone, "bits": args.bits, "precision": args.precision,
              "image_shape": list(IMAGE_SHAPE),
              "images": "BSDS500 test, first 321x481 ones", "edges": args.edges, "signatures": signatures,
              "results": results}
    write_json(args.out, record)
    print(f"{record['device']}, {args.backbone} {args.bits} bits, {IMAGE_SHAPE[0]}x{IMAGE_SHAPE[1]} images"
          f"{', with the edge map' if args.edges else ''}")
    for signature, row in signatures.items():
        print(f"{signature:>20}: {row['response_bytes']:>8} bytes per response, median {row['median_ms']:.1f} ms")
    print(format_table(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
