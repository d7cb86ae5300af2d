"""Do HED edges averaged over several input scales (and a mirrored pass) make a better hierarchy?

Issue 23, item 2. For every image of a BSDS500 split this writes, into another binary-map cache
(``--out-cache``), the map of the default cache with its edges replaced by the mean of the edge maps at
``--scales`` of the image (1 is the cached single-scale map; ``--flip`` adds a mirrored pass at scale 1),
each brought back to the image's size. Codes are unchanged. The cache has the default mapper's key, so
the shipped commands read it with ``--cache``:

```bash
python -m experiments.multiscale_edges --split train --out-cache runs/multiscale/maps
python -m experiments.multiscale_edges --split val --out-cache runs/multiscale/maps
binmap-train-merge --cache runs/multiscale/maps --out runs/multiscale/merge_scorer_learned.npz
python -m benchmarks.levels --split val --cache runs/multiscale/maps --egs-scales --methods binmap-hier \
    --candidates runs/multiscale/merge_scorer_learned.npz --out benchmarks/results/levels_bsds500_val/multiscale_edges
```

and compare with the shipped hierarchy on single-scale edges (``levels_bsds500_val/shipped``). Choose on
val; test is run once only if it ships. Records the CNN seconds the extra passes cost per image.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

SCALES = (0.5, 1.0, 1.5)


def resized(image: np.ndarray, scale: float) -> np.ndarray:
    """``image`` (uint8 RGB) resized by ``scale`` (bilinear)."""
    from PIL import Image

    height, width = image.shape[:2]
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return np.asarray(Image.fromarray(image).resize(size, Image.Resampling.BILINEAR))


def edges_of(mapper, image: np.ndarray, scale: float, flip: bool = False) -> np.ndarray:
    """HED edge probability of ``image`` seen at ``scale`` (mirrored if ``flip``), at the image's size."""
    from binmap_tf.binary_map.maps import edges_at

    seen = resized(image, scale) if scale != 1.0 else image
    if flip:
        seen = np.ascontiguousarray(seen[:, ::-1])
    edges = mapper.forward(mapper.prepare(seen)[None])["edges"][0, ..., 0]
    edges = edges_at(edges, seen.shape[:2])
    return edges_at(edges[:, ::-1] if flip else edges, image.shape[:2])


def multiscale_edges(mapper, image: np.ndarray, single: np.ndarray, scales: tuple[float, ...],
                     flip: bool) -> np.ndarray:
    """Mean of the edge maps at ``scales`` (``single``, the cached map's, stands for scale 1) and, with
    ``flip``, of a mirrored pass at scale 1."""
    maps = [single if scale == 1.0 else edges_of(mapper, image, scale) for scale in scales]
    if flip:
        maps.append(edges_of(mapper, image, 1.0, flip=True))
    return np.mean(maps, axis=0).astype(np.float32)


def main(argv: list[str] | None = None) -> int:
    from binmap_tf.binary_map.model import BinaryMapper
    from binmap_tf.common.files import write_json
    from binmap_tf.evaluation.datasets import load_dataset
    from binmap_tf.evaluation.map_cache import BinaryMapCache
    from binmap_tf.segmentation.pipeline import working_image

    parser = argparse.ArgumentParser(prog="python -m experiments.multiscale_edges", description=__doc__.split("\n\n")[0])
    parser.add_argument("--split", default="val", help="BSDS500 split (default: %(default)s)")
    parser.add_argument("--limit", type=int, default=None, help="only the first N images")
    parser.add_argument("--scales", type=float, nargs="+", default=list(SCALES), help="default: %(default)s")
    parser.add_argument("--flip", action="store_true", help="also a mirrored pass at scale 1")
    parser.add_argument("--cache", type=Path, default=None, help="single-scale cache (default: the default one)")
    parser.add_argument("--out-cache", type=Path, required=True, help="cache to write the multi-scale maps to")
    args = parser.parse_args(argv)
    if args.split == "test":
        parser.error("choose on train/val; test is run once with the chosen setting")
    mapper = BinaryMapper(edges=True)
    dataset = load_dataset("bsds500", split=args.split, limit=args.limit)
    namespace = f"bsds500-{dataset.split}"
    source, target = BinaryMapCache(mapper, namespace, root=args.cache), BinaryMapCache(mapper, namespace, root=args.out_cache)
    extra_seconds = []
    for sample in tqdm(dataset, desc=f"bsds500/{dataset.split}", unit="image"):
        image = working_image(sample.load_image())
        binary_map, cnn_seconds = source.get(sample.id, image)
        start = time.perf_counter()
        edges = multiscale_edges(mapper, mapper.prepare(image), binary_map.edges, tuple(args.scales), args.flip)
        extra_seconds.append(time.perf_counter() - start)
        target.put(sample.id, dataclasses.replace(binary_map, edges=edges), cnn_seconds + extra_seconds[-1])
    record = {"split": dataset.split, "n_images": len(dataset), "scales": args.scales, "flip": args.flip,
              "extra_cnn_seconds_per_image": float(np.mean(extra_seconds)), "precision": "fp32"}
    write_json(target.folder / "multiscale.json", record)
    print(record)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
