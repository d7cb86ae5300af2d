"""``binmap-demo``: the Gradio demo (:mod:`demo.app`) on a port, until interrupted.

    binmap-demo [--serving HOST:PORT | --hashing PATH|fine-tuned] [--host 127.0.0.1] [--port 7860]
"""

from __future__ import annotations

import argparse

from demo.pipeline import DEMO_MAX_PIXELS
from serving.retry import add_retry_arguments, retry_policy


def main(argv: list[str] | None = None) -> int:
    """Command line: build the page and serve it until interrupted."""
    parser = argparse.ArgumentParser(prog="binmap-demo", description="Gradio web demo: upload a photo, see its CNN-aware "
                                     "binary map, superpixels and merged segments.")
    parser.add_argument("--serving", metavar="HOST:PORT", default=None,
                        help="get binary maps from this TF Serving / serving.server gRPC endpoint "
                             "(default: run the CNN in this process)")
    parser.add_argument("--hashing", default=None,
                        help="hashing layer of the local CNN: an .npz from fit_itq or train, or 'fine-tuned' for "
                             "the shipped fine-tuned layer (default: the fitted ITQ, 8 or 24 bits)")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default: %(default)s; 0.0.0.0 for every interface)")
    parser.add_argument("--port", type=int, default=7860, help="port to listen on (default: %(default)s)")
    parser.add_argument("--max-pixels", type=int, default=DEMO_MAX_PIXELS,
                        help="the page draws its views at most this many pixels large; uploads of any size are "
                             "segmented and their label download is full-size (default: %(default)s)")
    add_retry_arguments(parser)
    args = parser.parse_args(argv)
    retry = retry_policy(parser, args)
    if args.max_pixels < 1:
        parser.error(f"--max-pixels must be positive, got {args.max_pixels}")
    if args.serving and args.hashing:
        parser.error("--hashing applies to the local CNN; the served model has its own hashing layer")
    from demo.app import build_app, launch, make_source  # Gradio and TensorFlow: after the arguments

    launch(build_app(make_source(args.serving, args.hashing, retry), max_pixels=args.max_pixels), args.host, args.port)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
