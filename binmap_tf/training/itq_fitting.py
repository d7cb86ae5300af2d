"""Fitting the ITQ hashing layer on a backbone's features: sampled feature vectors of the train
images and the saved parameters (the fit itself is :func:`binmap_tf.binary_map.hashing.fit_itq`).
The command line is :mod:`binmap_tf.cli.fit_itq`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from tqdm import tqdm

from binmap_tf.binary_map.backbones import Backbone
from binmap_tf.binary_map.hashing import ITQParams, itq_filename
from binmap_tf.common.files import write_json
from binmap_tf.common.images import find_images, load_image


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
