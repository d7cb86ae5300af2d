"""Binary maps for another hashing layer without the CNN: hconv8 on cached backbone features.

The backbone is frozen, so every hashing layer (ITQ at any code length, a fine-tuned one) sees
the same feature grids, and the HED edge map does not depend on the hashing at all. ``python -m
experiments.feature_maps --dataset bsds500 --split train --bits 24 [--hashing X.npz]`` fills the
binary-map cache of that layer's mapper (:class:`~binmap_tf.evaluation.map_cache.BinaryMapCache`, the one
``evaluate`` and ``train_merge`` read) from float32 features (:class:`FeatureCache`, computed
once per image) and the edges of the default 8-bit maps' cache, so a new layer costs a matrix
product per image instead of a CNN pass. ``--verify N`` runs the real mapper on the first N
images and records how many bits differ (``verify.json`` under ``--out``): the cached maps
must be the mapper's maps, or ``evaluate`` would score something else.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from binmap_tf.binary_map.maps import BinaryMap
from binmap_tf.binary_map.tiling import over_tile_budget
from binmap_tf.common.files import write_json
from binmap_tf.evaluation.map_cache import BinaryMapCache
from binmap_tf.training.feature_cache import FeatureCache


def map_from_features(mapper, features: np.ndarray, edges: np.ndarray | None,
                      image_shape: tuple[int, int]) -> BinaryMap:
    """The map ``mapper`` (a :class:`~binmap_tf.binary_map.model.BinaryMapper`) gives an untiled image of
    ``image_shape`` whose backbone features are ``features`` ``(h, w, d)`` and edge map ``edges``."""
    if over_tile_budget(image_shape, mapper.scale, mapper.max_tile_pixels):
        raise ValueError(f"an image of {image_shape} runs on tiles; its features are not one grid")
    bits, logits = mapper.model.get_layer("hconv8")(features[None].astype(np.float32))
    return BinaryMap(bits=np.asarray(bits)[0].astype(np.uint8), logits=np.asarray(logits)[0],
                     geometry=mapper.backbone.geometry, scale=mapper.scale, image_shape=tuple(image_shape),
                     edges=edges)


def fill_cache(dataset, target: BinaryMapCache, features: FeatureCache, edge_maps: BinaryMapCache) -> int:
    """Write the map of every sample of ``dataset`` missing from ``target`` from ``features`` and
    the edges of ``edge_maps`` (computed by its mapper where not cached); returns how many were written.

    A written map records the CNN seconds of its edge map: what the mapper would have spent.
    """
    from tqdm import tqdm

    written = 0
    for sample in tqdm(dataset, desc=f"maps of {target.folder.parent.name}", unit="image"):
        image = sample.load_image()
        if target.path(sample.id, image.shape).exists():
            continue
        edge_map, seconds = edge_maps.get(sample.id, image)
        binary_map = map_from_features(target.mapper, features.get(sample), edge_map.edges, image.shape[:2])
        target.put(sample.id, binary_map, seconds)
        written += 1
    return written


def verify(dataset, target: BinaryMapCache, limit: int) -> dict:
    """Bits and logits of the cached maps of the first ``limit`` samples against the mapper's own."""
    differing = total = 0
    worst = 0.0
    for sample in dataset[:limit]:
        image = sample.load_image()
        cached, _ = target.get(sample.id, image)
        fresh = target.mapper(image)
        differing += int(np.count_nonzero(cached.bits != fresh.bits))
        total += cached.bits.size
        worst = max(worst, float(np.max(np.abs(cached.logits - fresh.logits))))
        np.testing.assert_array_equal(cached.edges, fresh.edges.astype(cached.edges.dtype))
    return {"images": limit, "bits": total, "differing_bits": differing, "fraction": differing / total,
            "max_abs_logit_difference": worst}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    from binmap_tf.cli import common as cli

    parser = argparse.ArgumentParser(prog="python -m experiments.feature_maps", description=__doc__.split("\n\n")[0])
    cli.add_dataset_arguments(parser)
    parser.add_argument("--cache", type=Path, default=None, help="binary-map cache (default: $BINMAP_TF_HOME/binary_maps)")
    parser.add_argument("--feature-cache", type=Path, default=None,
                        help="feature cache (default: $BINMAP_TF_HOME/features)")
    parser.add_argument("--verify", type=cli.non_negative_int, default=0,
                        help="run the mapper on the first N images and compare (default: %(default)s)")
    parser.add_argument("--out", type=Path, default=None, help="folder for verify.json (with --verify)")
    cli.add_model_arguments(parser)
    args = parser.parse_args(argv)
    if args.verify and args.out is None:
        parser.error("--verify writes verify.json under --out")
    return args


def main(argv: list[str] | None = None) -> int:
    from binmap_tf.binary_map.model import DEFAULT_BITS, build_backbone_at
    from binmap_tf.cli.common import feature_options, mapper_from_args
    from binmap_tf.evaluation.datasets import load_dataset

    args = parse_args(argv)
    dataset = load_dataset(args.dataset, args.split, root=args.data, limit=args.limit)
    namespace = f"{args.dataset}-{dataset.split}"
    target = BinaryMapCache(mapper_from_args(args, edges=True), namespace, root=args.cache)
    edge_mapper = mapper_from_args(args, hashing=None, bits=DEFAULT_BITS, edges=True)
    backbone = build_backbone_at(args.backbone, args.precision, scale=args.scale, **feature_options(args))
    clock = time.perf_counter()
    written = fill_cache(dataset, target, FeatureCache(backbone, namespace, args.feature_cache, "float32"),
                         BinaryMapCache(edge_mapper, namespace, root=args.cache))
    print(f"{written} maps written to {target.folder} in {time.perf_counter() - clock:.0f} s")
    if args.verify:
        record = {"dataset": args.dataset, "split": dataset.split, "cache": target.folder.parent.name,
                  **verify(dataset, target, args.verify)}
        write_json(args.out / "verify.json", record)
        print(record)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
