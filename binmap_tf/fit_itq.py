"""Fit the ITQ hashing layer on backbone features of real images.

``python -m binmap_tf.fit_itq --backbone vgg16-hed --bits 8 16 24`` runs the backbone over
BSDS500 train+val (the paper used PASCAL VOC 2007, which is not available here), samples
locations of every feature grid, fits ITQ for each code length and writes
``itq_<backbone>_<bits>bits.npz`` plus a ``.json`` record (data, seed, final loss) into the
package's ``assets/`` folder (or ``--out``).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from binmap_tf.backbones import Backbone, backbone_names, build_backbone
from binmap_tf.files import write_json
from binmap_tf.hashing import ITQParams, fit_itq, itq_filename
from binmap_tf.images import find_images, load_image
from binmap_tf.model import DEFAULT_BACKBONE, hashing_key
from binmap_tf.paths import ASSETS_DIR, data_root


def sample_features(backbone: Backbone, paths: list[Path], per_image: int, seed: int) -> np.ndarray:
    """Run ``backbone`` on each image and keep up to ``per_image`` random grid locations of each."""
    rng = np.random.default_rng(seed)
    rows = []
    for path in tqdm(paths, desc="features", unit="image"):
        grid = np.asarray(backbone.model(load_image(path)[None], training=False))
        if isinstance(grid, (list, tuple)):
            grid = grid[0]
        flat = grid.reshape(-1, grid.shape[-1])
        keep = rng.choice(len(flat), size=min(per_image, len(flat)), replace=False)
        rows.append(flat[np.sort(keep)])
    return np.concatenate(rows).astype(np.float32)


def default_images(data: Path) -> list[Path]:
    """BSDS500 train + val images under ``data``."""
    folders = [data / "bsds500" / "images" / split for split in ("train", "val")]
    missing = [str(folder) for folder in folders if not folder.is_dir()]
    if missing:
        raise SystemExit(f"error: image folders not found: {', '.join(missing)}; pass --images or --data "
                         "(or set BINMAP_TF_DATA)")
    return find_images([str(folder) for folder in folders])


def save_params(params: ITQParams, folder: Path, key: str) -> Path:
    """Write ``params`` and a readable JSON record beside it; return the ``.npz`` path."""
    path = folder / itq_filename(key, params.bits)
    params.save(path)
    write_json(path.with_suffix(".json"), {**params.info, "loss_history": params.loss_history})
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m binmap_tf.fit_itq", description=__doc__.split("\n\n")[0])
    parser.add_argument("--backbone", default=DEFAULT_BACKBONE, choices=backbone_names())
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
