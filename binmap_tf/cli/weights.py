"""``binmap-weights``: import public ImageNet AlexNet weights once, list what is imported.

    binmap-weights import FILE [--layout caffe|torchvision] [--home DIR]
    binmap-weights list [--home DIR]

The readers live with the backbone, in :mod:`binmap_tf.binary_map.backbones.alexnet.weights`.
"""

from __future__ import annotations

import argparse
import pickle
import sys
from pathlib import Path
from typing import Sequence

from binmap_tf.binary_map.options import ALEXNET_LAYOUTS
from binmap_tf.common.paths import cache_home


def main(argv: Sequence[str] | None = None) -> int:
    """``binmap-weights {import,list}``; returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="binmap-weights",
        description="Import public ImageNet AlexNet weights (bvlc_alexnet.npy, bvlc_alexnet.caffemodel, "
                    "torchvision alexnet-owt-7be5be79.pth or its state_dict as .npz, or a binmap_tf "
                    ".weights.h5) into the cache, once; build_alexnet(weights='imported') loads them.")
    commands = parser.add_subparsers(dest="command", required=True)
    importer = commands.add_parser("import", help="convert a weights file into <home>/alexnet_<layout>.weights.h5")
    importer.add_argument("file", type=Path, help="weights file; the format is detected from its content")
    importer.add_argument("--layout", choices=ALEXNET_LAYOUTS, default=None,
                          help="expected layout (default: detected from the file)")
    lister = commands.add_parser("list", help="show which layouts have imported weights")
    for command in (importer, lister):
        command.add_argument("--home", type=Path, default=None,
                             help="cache folder (default: $BINMAP_TF_HOME, else ~/.cache/binmap_tf)")
    args = parser.parse_args(argv)
    # TensorFlow loads here, after the arguments, so that --help and usage errors answer at once.
    from binmap_tf.binary_map.backbones.alexnet.weights import detect_format, import_weights, imported_weights

    if args.command == "import":
        try:
            target = import_weights(args.file, args.layout, args.home)
        except (OSError, EOFError, ValueError, pickle.UnpicklingError) as error:
            print(f"error: {error}", file=sys.stderr)
            return 1
        print(f"imported {args.file} ({detect_format(args.file)}) -> {target}")
        return 0
    print(f"imported AlexNet weights in {cache_home(args.home)}:")
    found = imported_weights(args.home)
    for layout, path in found.items():
        status = f"{path.name} ({path.stat().st_size / 2**20:.0f} MiB)" if path else "missing"
        print(f"  {layout:12s} {status}")
    if None in found.values():
        print("import a release with: binmap-weights import FILE [--layout caffe|torchvision]")
    return 0


if __name__ == "__main__":
    sys.exit(main())
