"""``python -m binmap_tf.segment``: segment images and write labels, overlay, binary map and a
JSON record per image (see :mod:`binmap_tf.segment` for the method, :mod:`binmap_tf.outputs`
for the files)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from binmap_tf import cli
from binmap_tf.hierarchy import DEFAULT_THRESHOLD
from binmap_tf.segment import MERGES, resolve_options, segment
from binmap_tf.superpixels import (
    EGS_MIN_SIZE,
    EGS_SCALE,
    EGS_SIGMA,
    SLIC_COMPACTNESS,
    SLIC_N_SEGMENTS,
    SUPERPIXEL_METHODS,
)

# Command-line superpixel options: flag -> (method, parameter, type, default shown in --help).
_SUPERPIXEL_FLAGS = {
    "--scale-egs": ("egs", "scale", float, EGS_SCALE),
    "--sigma-egs": ("egs", "sigma", float, EGS_SIGMA),
    "--min-size": ("egs", "min_size", int, EGS_MIN_SIZE),
    "--n-segments": ("slic", "n_segments", int, SLIC_N_SEGMENTS),
    "--compactness": ("slic", "compactness", float, SLIC_COMPACTNESS),
}


def _parse_args(argv: list[str] | None) -> tuple[argparse.Namespace, dict[str, Any]]:
    """Parse the command line; return the arguments and the superpixel parameters given."""
    parser = argparse.ArgumentParser(
        prog="python -m binmap_tf.segment",
        description="Segment images by merging superpixels with equal codes in their CNN-aware binary map "
                    "(Ravanbakhsh et al., ICIP 2016). Writes <stem>_labels.png (16-bit), <stem>_labels.npy, "
                    "<stem>_overlay.png, <stem>_binary_map.png and <stem>.json per image.")
    parser.add_argument("images", nargs="+", help="image files or folders of images")
    parser.add_argument("--out", required=True, type=Path, help="output folder")
    parser.add_argument("--superpixels", choices=SUPERPIXEL_METHODS, default="egs",
                        help="low-level superpixels to merge (default: %(default)s)")
    parser.add_argument("--hamming", type=cli.non_negative_int, default=0,
                        help="merge codes differing in at most this many bits (default: %(default)s, equal codes)")
    parser.add_argument("--merge", choices=MERGES, default="adjacent",
                        help="merge touching superpixels only, or any with close codes, or build a merge "
                             "hierarchy (codes + the network's edges + colour) and cut it (default: %(default)s)")
    parser.add_argument("--threshold", type=float, default=None,
                        help=f"--merge hierarchy: cut at this merge height in [0, 1] (default: {DEFAULT_THRESHOLD}, "
                             "the best single threshold on BSDS500 val)")
    parser.add_argument("--segments", type=cli.positive_int, default=None,
                        help="--merge hierarchy: cut at this number of segments instead of a threshold")
    group = parser.add_argument_group("superpixel options")
    for flag, (method, name, kind, default) in _SUPERPIXEL_FLAGS.items():
        group.add_argument(flag, dest=f"{method}_{name}", type=kind, default=None,
                           help=f"{method.upper()} {name} (default: {default})")
    cli.add_model_arguments(parser)
    parser.add_argument("--serving", metavar="HOST:PORT", default=None,
                        help="compute binary maps on a model server (TF Serving or python -m serving.server) "
                             "instead of locally; the served model then replaces the model options above")
    args = cli.parse(parser, argv)
    given = {flag: (method, name, getattr(args, f"{method}_{name}"))
             for flag, (method, name, _, _) in _SUPERPIXEL_FLAGS.items()
             if getattr(args, f"{method}_{name}") is not None}
    wrong = [f"{flag} is an option of --superpixels {method}"
             for flag, (method, _, _) in given.items() if method != args.superpixels]
    if wrong:
        parser.error(f"{'; '.join(wrong)}, not {args.superpixels}")
    params = {name: value for _, name, value in given.values()}
    try:
        resolve_options(args.superpixels, args.hamming, args.merge, params, args.segments, args.threshold)
    except ValueError as error:
        parser.error(str(error))
    if args.serving and args.merge == "hierarchy":
        parser.error("a served model returns no edge map, which --merge hierarchy needs; run it without --serving")
    if not args.serving and args.merge in ("adjacent", "global"):
        cli.check_hamming(parser, args.hamming, args.bits)
    return args, params


def main(argv: list[str] | None = None) -> int:
    """Command line: segment images and write labels, overlay, binary map and a JSON record."""
    from binmap_tf.images import load_image
    from binmap_tf.outputs import write_segmentation

    args, params = _parse_args(argv)
    images = cli.collect_images(args.images)
    edges = {"edges": True} if args.merge == "hierarchy" else {}
    mapper = cli.served_mapper(args.serving, args.verbose) if args.serving else cli.mapper_from_args(args, **edges)
    model = {"serving": args.serving} if args.serving else {"backbone": args.backbone}

    def process(path: Path) -> None:
        image = load_image(path)
        result = segment(image, mapper, superpixels=args.superpixels, hamming=args.hamming, merge=args.merge,
                         segments=args.segments, threshold=args.threshold, **params)
        write_segmentation(args.out, path.stem, image, result, {"image": str(path), **model})

    return cli.run_batch(images, process, desc="segmenting", debug=args.debug)


if __name__ == "__main__":
    raise SystemExit(main())
