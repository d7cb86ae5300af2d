"""Train the learned merge scorer of the hierarchy with ``model.fit`` (see :mod:`binmap_tf.training.merge_training`).

``binmap-train-merge --out binmap_tf/assets/merge_scorer_learned.npz`` trains on
BSDS500 train, chooses the epoch (val pairs' loss) and the cut threshold (ODS covering) on
BSDS500 val, and writes the scorer (``.npz``) with its record (``.json``: data, seed, settings,
val figures, threshold, timings). The defaults reproduce the shipped scorer: a watershed of the
HED edges as first level (``--first-level``, chosen on val with ``benchmarks/first_level.py``;
``--watershed-h`` and ``--cues-until``, the hand-set cues ordering the fine merges, with
``benchmarks/levels.py``) and two rounds of pairs (the second merged by the first round's scorer), each round's scorer the
average of ``--members`` MLPs that differ by seed (5, chosen on val). ``--no-codes`` trains
the ablation without code features (``--name learned-no-codes``, ``merge_scorer_no_codes.npz``).
Binary maps (with HED edges) come from the same cache as ``evaluate``'s, so the CNN runs once
per image.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import numpy as np

from binmap_tf.evaluation.levels import covering_per_level
from binmap_tf.evaluation.metrics import region_benchmark
from binmap_tf.segmentation.hierarchy import DEFAULT_WEIGHTS
from binmap_tf.segmentation.merge_features import feature_names
from binmap_tf.segmentation.superpixels import superpixel_params
from binmap_tf.training.merge_training import (
    THRESHOLDS,
    collect_pairs,
    fit_ensemble,
    load_training_images,
    threshold_scores,
)

# Val images whose covering the record keeps, so a test can check the shipped scorer cheaply.
CHECK_IMAGES = 5
# The shipped hierarchy, chosen on BSDS500 val by the covering at 10-160 segments per image and at ODS
# (benchmarks/levels.py; docs/research/levels.md): a watershed first level fine enough for 160
# segments, ordered by the hand-set cues down to 80 regions and by the scorer above.
WATERSHED_H = 0.01
CUES_UNTIL = 80


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    from binmap_tf.cli.common import add_dataset_arguments, add_model_arguments, check_training_splits

    parser = argparse.ArgumentParser(prog="binmap-train-merge", description=__doc__.split("\n\n")[0])
    add_dataset_arguments(parser, split="train", split_help="training split (default: %(default)s)")
    parser.add_argument("--val-split", default="val", help="split that chooses epoch and threshold (default: %(default)s)")
    parser.add_argument("--val-limit", type=int, default=None, help="use only the first N val images")
    parser.add_argument("--name", default="learned", help="name recorded with the scorer (default: %(default)s)")
    parser.add_argument("--no-codes", action="store_true", help="ablation: no binary-code features")
    parser.add_argument("--rounds", type=int, default=2,
                        help="pair collections: round 1 merges by the hand-set cues, each later round by the "
                             "scorer of the round before (default: %(default)s)")
    parser.add_argument("--max-pairs", type=int, default=4000, help="pairs kept per image and round (default: %(default)s)")
    parser.add_argument("--hidden", type=int, nargs="+", default=[64, 32], help="hidden layer widths (default: 64 32)")
    parser.add_argument("--epochs", type=int, default=30, help="at most this many epochs (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--patience", type=int, default=4, help="epochs without a lower val loss before stopping")
    parser.add_argument("--members", type=int, default=5,
                        help="MLPs fitted with different seeds and averaged (chosen on val; default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--first-level", choices=("watershed", "egs"), default="watershed",
                        help="superpixels the hierarchy starts from: watershed of the HED edges (chosen on val, "
                             "benchmarks/first_level.py) or EGS (default: %(default)s)")
    parser.add_argument("--watershed-h", type=float, default=WATERSHED_H,
                        help="watershed h: fine enough for 160 segments per image (default: %(default)s)")
    parser.add_argument("--cues-until", type=int, default=CUES_UNTIL,
                        help="the hand-set cues order the merges down to this many regions, the scorer the "
                             "rest, in training's later rounds, its validation and the recorded hierarchy; "
                             "0: the scorer throughout (default: %(default)s)")
    parser.add_argument("--scale-egs", type=float, default=None, help="EGS k (default: 100)")
    parser.add_argument("--cache", type=Path, default=None, help="binary-map cache (default: $BINMAP_TF_HOME/binary_maps)")
    parser.add_argument("--out", type=Path, required=True, help="the scorer's .npz (its .json record goes beside it)")
    add_model_arguments(parser)
    args = parser.parse_args(argv)
    check_training_splits(parser, args, "the epoch and the cut threshold")
    if args.out.suffix != ".npz":
        parser.error("--out names the scorer's .npz file")
    return args


def main(argv: list[str] | None = None) -> int:
    from binmap_tf.cli.common import mapper_from_args, recorded_settings
    from binmap_tf.evaluation.datasets import load_dataset
    from binmap_tf.evaluation.map_cache import BinaryMapCache

    args = parse_args(argv)
    codes = not args.no_codes
    given = {"watershed": {"h": args.watershed_h}, "egs": {"scale": args.scale_egs}}[args.first_level]
    params = superpixel_params(args.first_level, **{key: value for key, value in given.items() if value is not None})
    mapper = mapper_from_args(args, edges=True)
    try:
        train_set = load_dataset(args.dataset, args.split, root=args.data, limit=args.limit)
        val_set = load_dataset(args.dataset, args.val_split, root=args.data, limit=args.val_limit)
    except (FileNotFoundError, ValueError) as error:
        raise SystemExit(f"error: {error}") from None
    clock = time.perf_counter()
    train_items, val_items = (load_training_images(dataset, BinaryMapCache(mapper, f"{args.dataset}-{dataset.split}",
                                                                           root=args.cache), args.first_level,
                                                   **params)
                              for dataset in (train_set, val_set))
    data_seconds = time.perf_counter() - clock

    clock = time.perf_counter()
    scorer, rounds, train_pairs, val_pairs = None, [], [], []
    for round_index in range(args.rounds):
        seed = args.seed + round_index
        # Round 1 orders merges by the hand-set cues; later rounds by the scorer being trained.
        train_pairs.append(collect_pairs(train_items, scorer, DEFAULT_WEIGHTS, args.max_pairs, seed, args.cues_until))
        val_pairs.append(collect_pairs(val_items, scorer, DEFAULT_WEIGHTS, args.max_pairs, seed, args.cues_until))
        train, val = (pairs[0].concatenate(pairs) for pairs in (train_pairs, val_pairs))
        # Members of round r take seeds args.seed + r * members + 0, 1, ...
        scorer, histories = fit_ensemble(train, val, codes, mapper.bits, args.members,
                                         args.seed + round_index * args.members, hidden=tuple(args.hidden),
                                         epochs=args.epochs, batch_size=args.batch_size,
                                         learning_rate=args.learning_rate, patience=args.patience)
        val_losses = [min(history["val_loss"]) for history in histories]
        rounds.append({"train_pairs": len(train.labels), "val_pairs": len(val.labels),
                       "mean_label": float(train.labels.mean()),
                       "epochs_run": [len(history["loss"]) for history in histories],
                       "best_val_loss": val_losses, "history": histories})
        print(f"round {round_index + 1}: {len(train.labels)} train pairs, members' val loss "
              f"{' '.join(f'{loss:.4f}' for loss in val_losses)}")
    fit_seconds = time.perf_counter() - clock

    clock = time.perf_counter()
    scored = threshold_scores(scorer, val_items, THRESHOLDS, args.cues_until)
    bench = region_benchmark([scores for _, scores in scored], list(THRESHOLDS))
    levels = covering_per_level([tree for tree, _ in scored], [item.ground_truths for item in val_items])
    threshold = float(bench.covering_ods_threshold)
    at = list(THRESHOLDS).index(threshold)  # the check images' trees are the first ones scored above
    check = region_benchmark([scores[at:at + 1] for _, scores in scored[:CHECK_IMAGES]], [threshold])
    validation_seconds = time.perf_counter() - clock
    settings = recorded_settings(args)
    info = {
        "name": args.name, "codes": codes, "bits": mapper.bits, "backbone": mapper.backbone.name,
        # The layer the codes come from: a file name (pass it as --hashing), or the fitted ITQ of --bits.
        "hashing": Path(args.hashing).name if args.hashing else "ITQ",
        "features": feature_names(mapper.bits, codes), "first_level": {"superpixels": args.first_level, **params},
        "cues_until": args.cues_until,
        "data": {"dataset": args.dataset, "train_split": train_set.split, "train_images": len(train_set),
                 "val_split": val_set.split, "val_images": len(val_set)},
        "seed": args.seed, "settings": settings, "threshold": threshold,
        "val": {"covering_ods": bench.covering_ods, "covering_ois": bench.covering_ois, "pri_ods": bench.pri_ods,
                "pri_ois": bench.pri_ois, "voi_ods": bench.voi_ods, "voi_ois": bench.voi_ois,
                "covering_per_threshold": dict(zip(map(str, THRESHOLDS), np.round(bench.covering_per_threshold, 5).tolist())),
                # the level-aware criterion: covering with each image cut at these segment counts, and their mean
                "covering_per_level": levels, "level_mean_covering": float(np.mean(list(levels.values())))},
        "check": {"images": [sample.id for sample in val_set[:CHECK_IMAGES]], "threshold": threshold,
                  "covering": float(check.covering_per_threshold[0])},
        "rounds": rounds,
        "seconds": {"data": round(data_seconds, 1), "fit": round(fit_seconds, 1),
                    "validation": round(validation_seconds, 1)},
    }
    dataclasses.replace(scorer, info=info).save(args.out)
    print(f"val ({len(val_set)} images): covering ODS {bench.covering_ods:.4f} at threshold {threshold:g}, OIS "
          f"{bench.covering_ois:.4f}; covering at {', '.join(levels)} segments "
          f"{' '.join(f'{value:.4f}' for value in levels.values())}; PRI {bench.pri_ods:.4f} / {bench.pri_ois:.4f}; "
          f"VoI {bench.voi_ods:.4f} / "
          f"{bench.voi_ois:.4f}; wrote {args.out} (data {data_seconds:.0f} s, pairs + fit {fit_seconds:.0f} s, "
          f"validation {validation_seconds:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
