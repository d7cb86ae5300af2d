"""``binmap-export``: export the binary-map model as a SavedModel for TensorFlow Serving
(see :mod:`serving.export`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from binmap_tf.cli import common as cli
from serving.protocol import DEFAULT_MODEL_NAME


def main(argv: list[str] | None = None) -> int:
    """Command line: export the model described by the arguments."""
    parser = argparse.ArgumentParser(prog="binmap-export",
                                     description="Export the binary-map model for TensorFlow Serving.")
    cli.add_model_arguments(parser)
    parser.add_argument("--out", type=Path, default=Path("serving/models/binmap"),
                        help="model base folder; versions go in numbered subfolders (default: %(default)s)")
    parser.add_argument("--version", type=int, default=None, help="version number (default: the next free one)")
    parser.add_argument("--model-name", default=DEFAULT_MODEL_NAME,
                        help="model name written into the warm-up requests (default: %(default)s)")
    parser.add_argument("--no-warmup", dest="warmup", action="store_false", help="write no warm-up requests")
    args = cli.parse(parser, argv)
    from serving.export import edge_options, export_model  # TensorFlow: after the arguments, so --help is quick

    mapper = cli.mapper_from_args(args, **edge_options(args.backbone))
    try:
        path = export_model(mapper, args.out, version=args.version, model_name=args.model_name, warmup=args.warmup)
    except FileExistsError as error:
        raise SystemExit(f"error: {error}") from None
    print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
