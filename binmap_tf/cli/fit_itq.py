"""Fit the ITQ hashing layer on backbone features of real images.

``binmap-fit-itq --backbone vgg16-hed --bits 8 16 24`` runs the backbone over
BSDS500 train+val (the paper used PASCAL VOC 2007, which is not available here), samples
locations of every feature grid, fits ITQ for each code length and writes
``itq_<backbone>_<bits>bits.npz`` plus a ``.json`` record (data, seed, final loss) into the
package's ``assets/`` folder (or ``--out``).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from binmap_tf.binary_map.options import BUILT_IN_BACKBONES, DEFAULT_BACKBONE
from binmap_tf.common.images import find_images
from binmap_tf.common.paths import ASSETS_DIR, data_root


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="binmap-fit-itq", description=__doc__.split("\n\n")[0])
    parser.add_argument("--backbone", default=DEFAULT_BACKBONE, choices=BUILT_IN_BACKBONES)
    parser.add_argument("--bits", type=int, nargs="+", default=[8, 16, 24], help="code lengths to fit")
    parser.add_argument("--images", nargs="+", default=None,
                        help="image files/folders (default: BSDS500 train+val under --data)")
    parser.add_argument("--data", type=Path, default=None, help="data root (default: $BINMAP_TF_DATA or ../shared/data)")
    parser.add_argument("--scale", type=float, default=None, help="input resize factor (default: the backbone's)")
    parser.add_argument("--features", default=None, help="vgg16-hed feature variant (conv5_3 or conv4_3+conv5_3)")
    parser.add_argument("--per-image", type=int, default=256, help="grid locations sampled per image")
    parser.add_argument("--iterations", type=int, default=50, help="ITQ iterations")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=ASSETS_DIR, help="output folder (default: the package's assets)")
    args = parser.parse_args(argv)
    # TensorFlow loads here, after the arguments, so that --help and usage errors answer at once.
    from binmap_tf.binary_map.backbones import build_backbone
    from binmap_tf.binary_map.hashing import fit_itq
    from binmap_tf.binary_map.model import hashing_key
    from binmap_tf.training.itq_fitting import default_images, sample_features, save_params

    options = {"features": args.features} if args.features else {}
    try:
        backbone = build_backbone(args.backbone, scale=args.scale, **options)
    except (FileNotFoundError, ValueError) as error:
        raise SystemExit(f"error: {error}") from None
    paths = find_images(args.images) if args.images else default_images(data_root(args.data))
    start = time.perf_counter()
    features = sample_features(backbone, paths, args.per_image, args.seed)
    key = hashing_key(backbone)
    for bits in args.bits:
        params = fit_itq(features, bits=bits, iterations=args.iterations, seed=args.seed)
        params.info.update(backbone=backbone.name, key=key, options=backbone.options, scale=backbone.scale,
                           n_images=len(paths), per_image=args.per_image,
                           images=sorted({str(p.parent.name) for p in paths}),
                           data="BSDS500 train+val" if not args.images else "user images",
                           seconds=round(time.perf_counter() - start, 1))
        path = save_params(params, args.out, key)
        print(f"{bits:2d} bits: quantization loss {params.loss_history[0]:.4f} -> {params.loss_history[-1]:.4f}, "
              f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
