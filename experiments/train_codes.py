"""Train the hashing layer through the learned merge scorer (:mod:`experiments.joint_codes`).

``python -m experiments.train_codes --bits 8 --out DIR`` logs the pairs two greedy merges of
every BSDS500 train and val image meet (one ordered by the hand-set cues, one by the shipped
``--order`` scorer, which reads no codes), then fits hconv8 (starting from the ITQ of
``--bits``, or ``--hashing``) and a scorer MLP together with ``model.fit`` on those pairs,
early stopping on the val pairs' loss. It writes ``DIR/hashing_joint.npz`` (the layer, usable
wherever ``--hashing`` is), ``DIR/scorer_joint.npz`` (the jointly trained scorer, one member,
for the record) and ``DIR/train_codes.json`` (data, seed, settings, history, how many val bits
changed, timings). The product's scorer for the layer then comes from the shipped recipe:
``python -m experiments.feature_maps --split S --hashing DIR/hashing_joint.npz`` for each split,
then ``binmap-train-merge --hashing DIR/hashing_joint.npz``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from binmap_tf.segmentation.hierarchy import DEFAULT_WEIGHTS
from binmap_tf.segmentation.merge_features import feature_names
from binmap_tf.segmentation.merge_scorer import SHIPPED_SCORERS


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    from binmap_tf.cli.common import add_dataset_arguments, add_model_arguments, check_training_splits

    parser = argparse.ArgumentParser(prog="python -m experiments.train_codes", description=__doc__.split("\n\n")[0])
    add_dataset_arguments(parser, split="train", split_help="training split (default: %(default)s)")
    parser.add_argument("--val-split", default="val", help="split whose pairs stop the training (default: %(default)s)")
    parser.add_argument("--val-limit", type=int, default=None, help="use only the first N val images")
    parser.add_argument("--order", default="learned-no-codes", choices=sorted(SHIPPED_SCORERS),
                        help="shipped scorer ordering the second merge of each image (default: %(default)s, "
                             "which reads no codes and so suits any code length)")
    parser.add_argument("--max-pairs", type=int, default=4000, help="pairs kept per image and merge (default: %(default)s)")
    parser.add_argument("--hidden", type=int, nargs="+", default=[64, 32], help="scorer hidden widths (default: 64 32)")
    parser.add_argument("--epochs", type=int, default=30, help="at most this many epochs (default: %(default)s)")
    parser.add_argument("--chunk", type=int, default=1024, help="pairs per step, all of one image (default: %(default)s)")
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--patience", type=int, default=4, help="epochs without a lower val loss before stopping")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--watershed-h", type=float, default=None, help="first level: watershed h (default: 0.05)")
    parser.add_argument("--cache", type=Path, default=None, help="binary-map cache (default: $BINMAP_TF_HOME/binary_maps)")
    parser.add_argument("--feature-cache", type=Path, default=None,
                        help="float32 feature cache (default: $BINMAP_TF_HOME/features)")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    add_model_arguments(parser)
    args = parser.parse_args(argv)
    check_training_splits(parser, args, "when to stop")
    return args


def main(argv: list[str] | None = None) -> int:
    from tqdm import tqdm

    from binmap_tf.binary_map.model import build_backbone_at, resolve_hashing
    from binmap_tf.cli.common import feature_options, mapper_from_args, recorded_settings
    from binmap_tf.common.files import write_json
    from binmap_tf.evaluation.datasets import load_dataset
    from binmap_tf.evaluation.map_cache import BinaryMapCache
    from binmap_tf.segmentation.merge_scorer import shipped_scorer
    from binmap_tf.segmentation.superpixels import superpixel_params
    from binmap_tf.training.feature_cache import FeatureCache
    from binmap_tf.training.hashing_fine_tune import feature_scale
    from binmap_tf.training.merge_training import load_training_images
    from experiments.joint_codes import fit_joint, joint_example

    args = parse_args(argv)
    params = superpixel_params("watershed", **({} if args.watershed_h is None else {"h": args.watershed_h}))
    try:
        mapper = mapper_from_args(args, edges=True)
        train_set = load_dataset(args.dataset, args.split, root=args.data, limit=args.limit)
        val_set = load_dataset(args.dataset, args.val_split, root=args.data, limit=args.val_limit)
    except (FileNotFoundError, ValueError) as error:
        raise SystemExit(f"error: {error}") from None
    start = resolve_hashing(args.hashing, mapper.backbone, mapper.bits)
    backbone = build_backbone_at(args.backbone, args.precision, scale=args.scale, **feature_options(args))
    order = shipped_scorer(args.order)
    rng = np.random.default_rng(args.seed)

    clock = time.perf_counter()
    examples: dict[str, list] = {}
    grids: dict[str, list[np.ndarray]] = {}  # each image's cell features, once (its examples share them)
    for dataset in (train_set, val_set):
        namespace = f"{args.dataset}-{dataset.split}"
        items = load_training_images(dataset, BinaryMapCache(mapper, namespace, root=args.cache), "watershed", **params)
        features = FeatureCache(backbone, namespace, args.feature_cache, "float32")
        examples[dataset.split], grids[dataset.split] = [], []
        for sample, item in zip(tqdm(dataset, desc=f"pairs ({dataset.split})", unit="image"), items):
            cells = features.get(sample)
            grids[dataset.split].append(cells)
            examples[dataset.split] += [joint_example(item, cells, scorer, DEFAULT_WEIGHTS, args.max_pairs, rng)
                                        for scorer in (None, order)]
    data_seconds = time.perf_counter() - clock
    train, val = examples[train_set.split], examples[val_set.split]

    clock = time.perf_counter()
    scale = feature_scale(start, grids[train_set.split])
    layer, scorer, history = fit_joint(train, val, start, scale, hidden=tuple(args.hidden), epochs=args.epochs,
                                       chunk=args.chunk, learning_rate=args.learning_rate, patience=args.patience,
                                       seed=args.seed)
    fit_seconds = time.perf_counter() - clock

    val_cells = np.concatenate([cells.reshape(-1, cells.shape[-1]) for cells in grids[val_set.split]])
    changed = float(np.mean(layer.encode(val_cells) != start.encode(val_cells)))
    settings = recorded_settings(args)
    record = {"joint": True, "backbone": mapper.backbone.name, "bits": start.bits,
              "start": Path(args.hashing).name if args.hashing else "fitted ITQ", "feature_scale": scale,
              "order": ["hand-set", args.order], "first_level": {"superpixels": "watershed", **params},
              "data": {"dataset": args.dataset, "train_split": train_set.split, "train_images": len(train_set),
                       "val_split": val_set.split, "val_images": len(val_set),
                       "train_pairs": int(sum(len(e.labels) for e in train)),
                       "val_pairs": int(sum(len(e.labels) for e in val))},
              "seed": args.seed, "settings": settings, "epochs_run": len(history["loss"]),
              "best_val_loss": min(history["val_loss"]), "history": history,
              "val_bits_changed": changed,
              "seconds": {"data": round(data_seconds, 1), "fit": round(fit_seconds, 1)}}
    args.out.mkdir(parents=True, exist_ok=True)
    layer.info = record
    layer.save(args.out / "hashing_joint.npz")
    scorer.info.update(name="joint", features=feature_names(start.bits), hashing="hashing_joint.npz",
                       **{key: record[key] for key in ("bits", "first_level", "data", "seed")})
    scorer.save(args.out / "scorer_joint.npz")
    write_json(args.out / "train_codes.json", record)
    print(f"{record['data']['train_pairs']} train pairs; best val loss {record['best_val_loss']:.4f} after "
          f"{record['epochs_run']} epochs; {100 * changed:.1f} % of val bits changed; wrote {args.out} "
          f"(data {data_seconds:.0f} s, fit {fit_seconds:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
