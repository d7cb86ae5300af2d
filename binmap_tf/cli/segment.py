"""``binmap-segment``: segment images and write labels, overlay, binary map and a JSON record per
image, and on request the UCM, the region table and one COCO file for the run (see
:mod:`binmap_tf.segmentation.pipeline` for the method, :mod:`binmap_tf.segmentation.outputs` for the files)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from binmap_tf.cli import common as cli
from binmap_tf.segmentation.pipeline import needs_edges, segment


def _parse_args(argv: list[str] | None) -> tuple[argparse.Namespace, list[Path], dict[str, Any], tuple[str, ...]]:
    """Parse the command line; return the arguments, the images, the keyword options of :func:`segment`
    and the extra per-image outputs (see :func:`~binmap_tf.cli.common.output_extras`)."""
    parser = argparse.ArgumentParser(
        prog="binmap-segment",
        description="Segment images by merging superpixels with equal codes in their CNN-aware binary map "
                    "(Ravanbakhsh et al., ICIP 2016). Writes <stem>_labels.png (16-bit), <stem>_labels.npy, "
                    "<stem>_overlay.png, <stem>_binary_map.png and <stem>.json per image; --ucm, --regions and "
                    "--coco add the hierarchy, a region table and a COCO file.")
    parser.add_argument("images", nargs="+", help="image files or folders of images")
    parser.add_argument("--out", required=True, type=Path, help="output folder")
    cli.add_segment_arguments(parser)
    cli.add_model_arguments(parser)
    cli.add_server_argument(parser)
    cli.add_output_arguments(parser)
    args = cli.parse(parser, argv)
    options = cli.segment_options(parser, args, served=bool(args.serving))
    extras = cli.output_extras(parser, args)
    images = cli.collect_images(args.images)
    if args.coco:
        cli.check_coco_stems(parser, images)
    return args, images, options, extras


def main(argv: list[str] | None = None) -> int:
    """Command line: segment images and write labels, overlay, binary map, a JSON record and the
    outputs asked for."""
    from binmap_tf.common.images import load_image
    from binmap_tf.segmentation.interchange import coco_entry
    from binmap_tf.segmentation.outputs import COCO_FILE, write_coco, write_segmentation

    args, images, options, extras = _parse_args(argv)
    edges = needs_edges(options["superpixels"], options["merge"])  # asked of the server only when needed
    mapper = cli.served_mapper(args.serving, args.verbose, edges, args.max_tile_pixels, args.retry) if args.serving \
        else cli.mapper_from_args(args, **({"edges": True} if edges else {}))
    model = {"serving": args.serving} if args.serving else {"backbone": args.backbone}
    coco: list[dict[str, Any]] = []

    def process(path: Path) -> None:
        image = load_image(path)
        result = segment(image, mapper, **options)
        write_segmentation(args.out, path.stem, image, result, {"image": str(path), **model}, extras)
        if args.coco:
            coco.append(coco_entry(result, path.name))

    status = cli.run_batch(images, process, desc="segmenting", debug=args.debug)
    if args.coco:  # the images that were segmented, whatever failed
        write_coco(args.out / COCO_FILE, coco)
    return status


if __name__ == "__main__":
    raise SystemExit(main())
