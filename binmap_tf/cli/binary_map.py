"""``binmap-map IMAGE... --out DIR``: write each image's binary map as
``<stem>_binary_map.png`` (upsampled to the image) and ``<stem>_binary_map.npy`` (the
``h x w x k`` bits)."""

from __future__ import annotations

import argparse
from pathlib import Path

from binmap_tf.cli import common as cli
from binmap_tf.common.files import write_npy, write_png
from binmap_tf.common.images import load_image


def main(argv: list[str] | None = None) -> int:
    """Command line: write the binary map of each image as PNG and ``.npy``."""
    parser = argparse.ArgumentParser(
        prog="binmap-map",
        description="Compute the CNN-aware binary map of images (grey levels for <= 8 bits, RGB for 24).")
    parser.add_argument("images", nargs="+", help="image files or folders of images")
    parser.add_argument("--out", required=True, type=Path, help="output folder")
    cli.add_model_arguments(parser)
    args = cli.parse(parser, argv)
    mapper = cli.mapper_from_args(args)

    def process(path: Path) -> None:
        binary_map = mapper(load_image(path))
        write_png(args.out / f"{path.stem}_binary_map.png", binary_map.to_image())
        write_npy(args.out / f"{path.stem}_binary_map.npy", binary_map.bits)

    return cli.run_batch(cli.collect_images(args.images), process, desc="binary maps", debug=args.debug)


if __name__ == "__main__":
    raise SystemExit(main())
