"""``binmap-segment``: segment images and write labels, overlay, binary map and a
JSON record per image (see :mod:`binmap_tf.segmentation.pipeline` for the method, :mod:`binmap_tf.segmentation.outputs`
for the files)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from binmap_tf.cli import common as cli
from binmap_tf.segmentation.pipeline import needs_edges, segment


def _parse_args(argv: list[str] | None) -> tuple[argparse.Namespace, dict[str, Any]]:
    """Parse the command line; return the arguments and the keyword options of :func:`segment`."""
    parser = argparse.ArgumentParser(
        prog="binmap-segment",
        description="Segment images by merging superpixels with equal codes in their CNN-aware binary map "
                    "(Ravanbakhsh et al., ICIP 2016). Writes <stem>_labels.png (16-bit), <stem>_labels.npy, "
                    "<stem>_overlay.png, <stem>_binary_map.png and <stem>.json per image.")
    parser.add_argument("images", nargs="+", help="image files or folders of images")
    parser.add_argument("--out", required=True, type=Path, help="output folder")
    cli.add_segment_arguments(parser)
    cli.add_model_arguments(parser)
    cli.add_server_argument(parser)
    args = cli.parse(parser, argv)
    options = cli.segment_options(parser, args, served=bool(args.serving))
    return args, options


def main(argv: list[str] | None = None) -> int:
    """Command line: segment images and write labels, overlay, binary map and a JSON record."""
    from binmap_tf.common.images import load_image
    from binmap_tf.segmentation.outputs import write_segmentation

    args, options = _parse_args(argv)
    images = cli.collect_images(args.images)
    edges = needs_edges(options["superpixels"], options["merge"])  # asked of the server only when needed
    mapper = cli.served_mapper(args.serving, args.verbose, edges, args.max_tile_pixels, args.retry) if args.serving \
        else cli.mapper_from_args(args, **({"edges": True} if edges else {}))
    model = {"serving": args.serving} if args.serving else {"backbone": args.backbone}

    def process(path: Path) -> None:
        image = load_image(path)
        result = segment(image, mapper, **options)
        write_segmentation(args.out, path.stem, image, result, {"image": str(path), **model})

    return cli.run_batch(images, process, desc="segmenting", debug=args.debug)


if __name__ == "__main__":
    raise SystemExit(main())
