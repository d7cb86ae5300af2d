"""``binmap-serve``: the loopback model server (:mod:`serving.server`) on a port, until interrupted.

    binmap-serve --model-dir serving/models/binmap --port 8500
"""

from __future__ import annotations

import argparse
from pathlib import Path

from serving.batching import BatchingOptions
from serving.protocol import ACTIVATION_BYTES_PER_PIXEL, DEFAULT_MAX_PIXELS, DEFAULT_MODEL_NAME


def main(argv: list[str] | None = None) -> int:
    """Command line: serve the latest exported version until interrupted."""
    parser = argparse.ArgumentParser(prog="binmap-serve",
                                     description="Loopback gRPC PredictionService for tests and local development.")
    parser.add_argument("--model-dir", type=Path, default=Path("serving/models/binmap"),
                        help="model base folder with numbered versions (default: %(default)s)")
    parser.add_argument("--model-name", default=DEFAULT_MODEL_NAME, help="served model name (default: %(default)s)")
    parser.add_argument("--port", type=int, default=8500, help="gRPC port (default: %(default)s)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: %(default)s)")
    parser.add_argument("--no-warmup", dest="warmup", action="store_false", help="skip the warm-up requests")
    parser.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS,
                        help="most pixels in one request or merged batch; larger requests get INVALID_ARGUMENT. "
                             f"The CNN needs about {ACTIVATION_BYTES_PER_PIXEL} bytes per pixel "
                             "(default: %(default)s, about 5 GiB)")
    defaults = BatchingOptions()
    parser.add_argument("--max-batch-size", type=int, default=defaults.max_batch_size,
                        help="most images merged into one forward pass (default: %(default)s)")
    parser.add_argument("--batch-timeout-micros", type=int, default=defaults.batch_timeout_micros,
                        help="how long a partial batch waits for more requests (default: %(default)s)")
    parser.add_argument("--max-enqueued-batches", type=int, default=defaults.max_enqueued_batches,
                        help="queue bound in batches; further requests get RESOURCE_EXHAUSTED (default: %(default)s)")
    parser.add_argument("--num-batch-threads", type=int, default=defaults.num_batch_threads,
                        help="batches computed at once; 1 suits a CPU (default: %(default)s)")
    args = parser.parse_args(argv)
    from serving.server import LoopbackServer  # TensorFlow: after the arguments, so --help is quick

    try:
        batching = BatchingOptions(args.max_batch_size, args.batch_timeout_micros, args.max_enqueued_batches,
                                   args.num_batch_threads)
        server = LoopbackServer(args.model_dir, args.model_name, port=args.port, host=args.host, warmup=args.warmup,
                                max_pixels=args.max_pixels, batching=batching)
    except (FileNotFoundError, RuntimeError, ValueError) as error:
        raise SystemExit(f"error: {error}") from None
    with server:
        print(f"serving {server.model.name} version {server.model.version} on {server.target}, at most "
              f"{args.max_pixels} pixels per request, batches of up to {batching.max_batch_size} images, "
              f"queue of {batching.queue_capacity} (Ctrl-C stops)")
        try:
            server.wait()
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
