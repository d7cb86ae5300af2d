"""Does a gradient-boosted tree merge scorer beat the shipped MLP? (issue 23, item 4)

``nice -n 19 .venv/bin/python -m experiments.gbt_scorer --pairs-cache runs/gbt/pairs.npz --out benchmarks/results/levels_bsds500_val/gbt_scorer``
(LightGBM is this experiment's own dependency, not the package's: ``.venv/bin/pip install lightgbm``)

The shipped scorer (``binmap_tf/assets/merge_scorer_learned.npz``) is a seed ensemble of MLPs
trained by ``binmap-train-merge`` on the region pairs the greedy merge scores. Here LightGBM is
fitted on the same pairs and both are compared on BSDS500 val:

1. **pairs**: ``binmap-train-merge``'s rounds with the settings the shipped record keeps (first level,
   ``max_pairs``, seed, ``cues_until``), through its own functions (``collect_pairs``): round 1
   merged by the hand-set cues, round 2 by the round-1 scorer. ``--round2-by refit`` (default)
   refits that scorer with ``fit_ensemble`` and the recorded settings (its members' val losses are
   written beside the recorded ones, the check that the pairs are the MLP's); ``shipped`` merges
   round 2 by the shipped scorer instead (no Keras, but not quite the pairs the MLP saw).
2. **GBT**: the soft-label cross-entropy (the MLP's loss; every pair weighted once, as the MLP's
   are), early stopping on the val pairs; ``num_leaves`` and the learning rate are chosen by the
   val pairs' loss (the number of rounds by early stopping).
3. **comparison** on BSDS500 val (never test): pair log loss and AUC on the same val pairs; the
   hierarchy's ODS covering over training's thresholds (``threshold_scores``, as ``validate``; the
   GBT's threshold chosen there as the MLP's was) and its covering at 10-160 segments per image
   (``benchmarks.levels``).

Writes ``OUT/gbt_scorer.json`` (settings, seeds, timings, both models' figures), ``.md`` (the tables,
also printed) and ``.png`` (covering per level).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.levels import LEVELS, HierarchyRows, Rows, table_markdown, write_results
from binmap_tf.evaluation.metrics import region_benchmark
from binmap_tf.segmentation.hierarchy import DEFAULT_WEIGHTS
from binmap_tf.segmentation.merge_scorer import MergeScorer, resolve_scorer
from binmap_tf.training.merge_training import (
    THRESHOLDS,
    PairSet,
    TrainingImage,
    collect_pairs,
    fit_ensemble,
    threshold_scores,
)

LEAVES = (31, 127)
LEARNING_RATES = (0.1, 0.05)
EPSILON = 1e-7  # probabilities clipped as Keras clips them in its cross-entropy
MLP, GBT = "MLP (shipped)", "GBT (LightGBM)"


def soft_log_loss(probabilities: np.ndarray, labels: np.ndarray) -> float:
    """Mean binary cross-entropy of ``probabilities`` against soft ``labels`` in [0, 1] (the training loss)."""
    p = np.clip(np.asarray(probabilities, np.float64), EPSILON, 1 - EPSILON)
    y = np.asarray(labels, np.float64)
    return float(np.mean(-(y * np.log(p) + (1 - y) * np.log(1 - p))))


def weighted_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """AUC of ``scores`` for soft ``labels``: each pair is a positive of weight ``y`` and a negative of weight
    ``1 - y``; the probability that a positive scores above a negative, ties counting one half."""
    scores, labels = np.asarray(scores, np.float64), np.asarray(labels, np.float64)
    values, group = np.unique(scores, return_inverse=True)
    positive = np.bincount(group, weights=labels, minlength=len(values))
    negative = np.bincount(group, weights=1 - labels, minlength=len(values))
    below = np.cumsum(negative) - negative  # negative weight under each distinct score
    total = positive.sum() * negative.sum()
    if total == 0:
        raise ValueError("AUC needs positive and negative weight")
    return float(np.sum(positive * (below + 0.5 * negative)) / total)


def pair_figures(probabilities: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Log loss, soft AUC (:func:`weighted_auc`) and the AUC of the unanimous pairs (labels 0 or 1)."""
    hard = (labels == 0) | (labels == 1)
    return {"log_loss": soft_log_loss(probabilities, labels), "auc": weighted_auc(probabilities, labels),
            "auc_unanimous": weighted_auc(probabilities[hard], labels[hard]), "unanimous_pairs": int(hard.sum()),
            "mean_probability": float(np.mean(probabilities)), "pairs": len(labels)}


@dataclass(frozen=True, eq=False)
class BoosterScorer:
    """A LightGBM booster with the interface the hierarchy reads of a :class:`MergeScorer`: called on a pair
    feature matrix ``(m, F)`` (:func:`~binmap_tf.segmentation.merge_features.feature_names` with ``codes``) it
    gives the probability ``(m,)`` that each pair's regions belong to different segments.

    ``booster`` is anything with ``predict(X, num_iteration=, num_threads=)`` and ``num_feature()``;
    ``iterations`` the trees used (the early-stopped best). ``name``, ``threshold``, ``cues_until`` and
    ``check_map`` are :class:`MergeScorer`'s, read from ``info`` the same way."""

    booster: Any
    iterations: int | None = None
    codes: bool = True
    n_bits: int = 8
    info: dict[str, Any] = field(default_factory=dict)

    name = MergeScorer.name
    threshold = MergeScorer.threshold
    cues_until = MergeScorer.cues_until
    check_map = MergeScorer.check_map

    def __call__(self, features: np.ndarray) -> np.ndarray:
        if features.shape[1] != self.booster.num_feature():
            raise ValueError(f"the scorer takes {self.booster.num_feature()} features, got {features.shape[1]}")
        # One thread: the greedy merge asks for a few rows at a time, where threads only cost.
        return np.asarray(self.booster.predict(features, num_iteration=self.iterations, num_threads=1), np.float64)


def predict_in_chunks(scorer, features: np.ndarray, chunk: int = 100_000) -> np.ndarray:
    """``scorer(features)`` a chunk of rows at a time (the MLP ensemble's hidden layers are wide)."""
    return np.concatenate([scorer(features[start:start + chunk]) for start in range(0, len(features), chunk)])


def collect_rounds(train_items: list[TrainingImage], val_items: list[TrainingImage], record: dict,
                   round2_by: str, shipped: MergeScorer) -> tuple[list[PairSet], list[PairSet], list[list[float]]]:
    """The train and val pairs of each round, as ``binmap-train-merge`` collects them with the settings of
    ``record`` (the shipped scorer's): round ``r`` merged by the scorer fitted on rounds ``1..r-1`` (refitted
    with ``fit_ensemble``, or with ``round2_by`` "shipped" the shipped scorer), round 1 by the hand-set cues.
    Also the refitted members' best val losses per refitted round."""
    settings, n_bits = record["settings"], record["bits"]
    cues_until, max_pairs, seed = settings["cues_until"], settings["max_pairs"], settings["seed"]
    scorer, train_pairs, val_pairs, refit_losses = None, [], [], []
    for round_index in range(settings["rounds"]):
        clock = time.perf_counter()
        train_pairs.append(collect_pairs(train_items, scorer, DEFAULT_WEIGHTS, max_pairs, seed + round_index,
                                         cues_until))
        val_pairs.append(collect_pairs(val_items, scorer, DEFAULT_WEIGHTS, max_pairs, seed + round_index,
                                       cues_until))
        print(f"round {round_index + 1} pairs: {len(train_pairs[-1].labels)} train, {len(val_pairs[-1].labels)} val "
              f"({time.perf_counter() - clock:.0f} s)", flush=True)
        if round_index + 1 == settings["rounds"]:
            break
        if round_index + 1 == settings["rounds"] - 1 and round2_by == "shipped":
            scorer = shipped
            continue
        train, val = (pairs[0].concatenate(pairs) for pairs in (train_pairs, val_pairs))
        scorer, histories = fit_ensemble(train, val, record["codes"], n_bits, settings["members"],
                                         seed + round_index * settings["members"], hidden=tuple(settings["hidden"]),
                                         epochs=settings["epochs"], batch_size=settings["batch_size"],
                                         learning_rate=settings["learning_rate"], patience=settings["patience"],
                                         verbose=0)
        refit_losses.append([min(history["val_loss"]) for history in histories])
        print(f"round {round_index + 1} scorer refitted: members' val loss "
              f"{' '.join(f'{loss:.4f}' for loss in refit_losses[-1])} (recorded "
              f"{' '.join(f'{loss:.4f}' for loss in record['rounds'][round_index]['best_val_loss'])})", flush=True)
    return train_pairs, val_pairs, refit_losses


def cached_rounds(path: Path | None, key: dict, collect) -> tuple[list[PairSet], list[PairSet], list[list[float]]]:
    """``collect()``'s rounds, read from the ``.npz`` at ``path`` when it was written with the same ``key``
    (the settings that decide the pairs), else collected and written there."""
    if path is not None and path.exists():
        with np.load(path) as data:
            if json.loads(str(data["key"])) == key:
                print(f"pairs from {path}")
                rounds = [[PairSet(data[f"{split}{r}_features"], data[f"{split}{r}_labels"],
                                   data[f"{split}{r}_image_index"]) for r in range(int(data["rounds"]))]
                          for split in ("train", "val")]
                return rounds[0], rounds[1], json.loads(str(data["refit_losses"]))
            print(f"{path} holds other pairs; collecting")
    train_pairs, val_pairs, refit_losses = collect()
    if path is not None:
        arrays = {f"{split}{r}_{name}": getattr(pairs, name) for split, rounds in (("train", train_pairs),
                                                                                     ("val", val_pairs))
                  for r, pairs in enumerate(rounds) for name in ("features", "labels", "image_index")}
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(path, key=json.dumps(key), rounds=len(train_pairs), refit_losses=json.dumps(refit_losses), **arrays)
    return train_pairs, val_pairs, refit_losses


def fit_gbt(train_set, val_set, num_leaves: int, learning_rate: float, max_rounds: int, stopping_rounds: int,
            seed: int, threads: int) -> tuple[Any, dict]:
    """LightGBM on soft labels (``cross_entropy``: the MLP's loss), early stopping on the val pairs' loss;
    the booster and its record (best iteration, best val loss, every 10th round's val loss, seconds)."""
    import lightgbm as lgb

    params = {"objective": "cross_entropy", "metric": "cross_entropy", "num_leaves": num_leaves,
              "learning_rate": learning_rate, "seed": seed, "deterministic": True, "force_col_wise": True,
              "num_threads": threads, "verbose": -1}
    curve: dict = {}
    clock = time.perf_counter()
    booster = lgb.train(params, train_set, num_boost_round=max_rounds, valid_sets=[val_set], valid_names=["val"],
                        callbacks=[lgb.early_stopping(stopping_rounds, verbose=False), lgb.record_evaluation(curve),
                                   lgb.log_evaluation(100)])
    seconds = time.perf_counter() - clock
    losses = curve["val"]["cross_entropy"]
    record = {"num_leaves": num_leaves, "learning_rate": learning_rate, "best_iteration": booster.best_iteration,
              "rounds_run": len(losses), "best_val_loss": float(booster.best_score["val"]["cross_entropy"]),
              "val_loss_every_10": [round(float(v), 5) for v in losses[9::10]], "seconds": round(seconds, 1),
              "params": params}
    print(f"GBT leaves {num_leaves} lr {learning_rate:g}: val loss {record['best_val_loss']:.5f} at round "
          f"{booster.best_iteration} ({seconds:.0f} s)", flush=True)
    return booster, record


def hierarchy_figures(scorer, items: list[TrainingImage], cues_until: int, levels: tuple[int, ...] = LEVELS,
                      thresholds: tuple[float, ...] = THRESHOLDS) -> dict:
    """``scorer``'s hierarchies on ``items``: the benchmark over ``thresholds`` (``threshold_scores`` with
    ``region_benchmark``, as ``validate`` gives it) and the covering of each tree cut at ``levels``
    (:class:`benchmarks.levels.HierarchyRows`'s summary). ``seconds_per_image`` covers building the trees and
    scoring them at every threshold."""
    clock = time.perf_counter()
    scored = threshold_scores(scorer, items, thresholds, cues_until)
    seconds = (time.perf_counter() - clock) / len(items)
    rows = HierarchyRows([Rows() for _ in levels])
    for item, (tree, scores) in zip(items, scored):
        rows.add_levels(tree, tree.cut, item.ground_truths, levels, seconds)
        rows.add_thresholds(scores, [tree.n_segments_at(t) for t in thresholds])
    bench = region_benchmark([scores for _, scores in scored], list(thresholds))
    summary = rows.summary(levels, thresholds)
    summary["val_benchmark"] = {
        "threshold": float(bench.covering_ods_threshold), "covering_ods": bench.covering_ods,
        "covering_ois": bench.covering_ois, "pri_ods": bench.pri_ods, "pri_ois": bench.pri_ois,
        "voi_ods": bench.voi_ods, "voi_ois": bench.voi_ois,
        "covering_per_threshold": dict(zip(map(str, thresholds), np.round(bench.covering_per_threshold, 5).tolist()))}
    summary["seconds"] = round(time.perf_counter() - clock, 1)
    return summary


def call_seconds(scorer, features: np.ndarray, rows: int = 16, calls: int = 2000) -> float:
    """Mean seconds of one ``scorer`` call on ``rows`` pairs (the greedy merge's typical call)."""
    batches = [features[i * rows:(i + 1) * rows] for i in range(calls)]
    clock = time.perf_counter()
    for batch in batches:
        scorer(batch)
    return (time.perf_counter() - clock) / calls


def tables(results: dict) -> str:
    """The pair figures of both scorers, then :func:`benchmarks.levels.table_markdown`."""
    lines = ["Pairs of BSDS500 val (the same for both; soft labels; AUC: each pair a positive of weight y and a "
             "negative of weight 1 - y):", "",
             "| scorer | val log loss | val AUC | AUC unanimous pairs | train log loss | ODS threshold | "
             "ODS covering | OIS covering | ms per call (16 pairs) |", "|---|---|---|---|---|---|---|---|---|"]
    for name in (MLP, GBT):
        pairs, row = results["pair_level"][name], results["hierarchies"].get(name)
        bench = row["val_benchmark"] if row else None
        lines.append(f"| {name} | {pairs['val']['log_loss']:.4f} | {pairs['val']['auc']:.4f} | "
                     f"{pairs['val']['auc_unanimous']:.4f} | {pairs['train']['log_loss']:.4f} | "
                     + (f"{bench['threshold']:g} | {bench['covering_ods']:.4f} | {bench['covering_ois']:.4f} | "
                        if bench else "- | - | - | ")
                     + f"{1000 * pairs['seconds_per_call']:.3f} |")
    mlp = results["settings"]["mlp"]
    lines += ["", f"The MLP's record: val covering ODS {mlp['recorded_val_covering_ods']:.4f} at threshold "
              f"{mlp['recorded_threshold']:g} (the check that these are its val hierarchies)."]
    return "\n".join(lines) + "\n\n" + table_markdown(results)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m experiments.gbt_scorer", description=__doc__.split("\n\n")[0])
    parser.add_argument("--scorer", default="learned",
                        help="the MLP to compare with and whose record gives the pair settings: a shipped name or "
                             ".npz (default: %(default)s)")
    parser.add_argument("--round2-by", choices=("refit", "shipped"), default="refit",
                        help="what merges the last round's pairs: the scorer of the rounds before, refitted as "
                             "binmap-train-merge fits it, or the shipped scorer (default: %(default)s)")
    parser.add_argument("--leaves", nargs="+", type=int, default=list(LEAVES),
                        help="num_leaves grid (default: %(default)s)")
    parser.add_argument("--learning-rates", nargs="+", type=float, default=list(LEARNING_RATES),
                        help="learning-rate grid (default: %(default)s)")
    parser.add_argument("--max-rounds", type=int, default=3000, help="at most this many trees (default: %(default)s)")
    parser.add_argument("--stopping-rounds", type=int, default=50,
                        help="rounds without a lower val loss before stopping (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="LightGBM seed (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=2, help="LightGBM threads for fitting (default: %(default)s)")
    parser.add_argument("--no-levels", action="store_true", help="pair figures and the GBT fit only")
    parser.add_argument("--limit", type=int, default=None, help="first N images of each split (a quick check)")
    parser.add_argument("--pairs-cache", type=Path, default=None,
                        help="an .npz for the collected pairs: read when it holds the same settings' pairs, else "
                             "written (default: none)")
    parser.add_argument("--model-out", type=Path, default=None,
                        help="write the chosen booster here (LightGBM's text format; default: not written)")
    parser.add_argument("--cache", type=Path, default=None, help="binary-map cache (default: $BINMAP_TF_HOME/binary_maps)")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    import lightgbm as lgb

    from binmap_tf.binary_map.model import BinaryMapper
    from binmap_tf.evaluation.datasets import load_dataset
    from binmap_tf.evaluation.map_cache import BinaryMapCache
    from binmap_tf.training.merge_training import load_training_images

    args = parse_args(argv)
    start = time.perf_counter()
    shipped = resolve_scorer(args.scorer)
    record = shipped.info
    settings = record["settings"]
    cues_until = record["cues_until"]
    level = dict(record["first_level"])
    superpixels = level.pop("superpixels")
    seconds: dict[str, float] = {}

    clock = time.perf_counter()
    mapper = BinaryMapper(bits=record["bits"], edges=True)
    datasets = [load_dataset(settings["dataset"], split, root=settings["data"], limit=args.limit)
                for split in (settings["split"], settings["val_split"])]
    if datasets[1].split == "test":
        raise SystemExit("error: the comparison is made on val; test is run once with the choice")
    train_items, val_items = (load_training_images(dataset, BinaryMapCache(mapper, f"{settings['dataset']}-"
                                                                                   f"{dataset.split}", root=args.cache),
                                                   superpixels, **level) for dataset in datasets)
    seconds["data"] = time.perf_counter() - clock

    clock = time.perf_counter()
    pair_key = {"scorer": shipped.name, "round2_by": args.round2_by, "first_level": record["first_level"],
                "cues_until": cues_until, "limit": args.limit,
                **{name: settings[name] for name in ("rounds", "max_pairs", "seed", "members", "hidden", "epochs",
                                                     "batch_size", "learning_rate", "patience")}}
    train_pairs, val_pairs, refit_losses = cached_rounds(
        args.pairs_cache, pair_key, lambda: collect_rounds(train_items, val_items, record, args.round2_by, shipped))
    train, val = (pairs[0].concatenate(pairs) for pairs in (train_pairs, val_pairs))
    seconds["pairs"] = time.perf_counter() - clock

    clock = time.perf_counter()
    train_set = lgb.Dataset(train.features, label=train.labels, free_raw_data=False,
                            params={"verbose": -1, "num_threads": args.threads})
    val_set = lgb.Dataset(val.features, label=val.labels, reference=train_set, free_raw_data=False)
    grid, best = [], None
    for num_leaves in args.leaves:
        for learning_rate in args.learning_rates:
            booster, fit = fit_gbt(train_set, val_set, num_leaves, learning_rate, args.max_rounds,
                                   args.stopping_rounds, args.seed, args.threads)
            grid.append(fit)
            if best is None or fit["best_val_loss"] < best[1]["best_val_loss"]:
                best = booster, fit
    booster, chosen = best
    seconds["gbt_fit"] = time.perf_counter() - clock
    if args.model_out is not None:
        args.model_out.parent.mkdir(parents=True, exist_ok=True)
        booster.save_model(str(args.model_out), num_iteration=chosen["best_iteration"])
    gbt_info = {"name": "gbt", "codes": record["codes"], "bits": record["bits"], "features": record["features"],
                "first_level": record["first_level"], "cues_until": cues_until, "lightgbm": lgb.__version__,
                "chosen": {k: chosen[k] for k in ("num_leaves", "learning_rate", "best_iteration")}}
    gbt = BoosterScorer(booster, chosen["best_iteration"], record["codes"], record["bits"] if record["codes"] else 0,
                        gbt_info)

    clock = time.perf_counter()
    pair_level = {}
    for name, scorer in ((MLP, shipped), (GBT, gbt)):
        predict = (lambda x, s=scorer: predict_in_chunks(s, x)) if scorer is shipped else (
            lambda x: booster.predict(x, num_iteration=chosen["best_iteration"], num_threads=args.threads))
        val_p, train_p = predict(val.features), predict(train.features)
        pair_level[name] = {
            "val": pair_figures(val_p, val.labels),
            "val_rounds": [pair_figures(val_p[offset:offset + len(p.labels)], p.labels)
                           for offset, p in zip(np.cumsum([0] + [len(p.labels) for p in val_pairs]), val_pairs)],
            "train": {"log_loss": soft_log_loss(train_p, train.labels)},
            "seconds_per_call": call_seconds(scorer, val.features)}
    seconds["pair_figures"] = time.perf_counter() - clock

    hierarchies = {}
    if not args.no_levels:
        for name, scorer in ((MLP, shipped), (GBT, gbt)):
            hierarchies[name] = hierarchy_figures(scorer, val_items, cues_until)
            bench = hierarchies[name]["val_benchmark"]
            print(f"{name}: val covering ODS {bench['covering_ods']:.4f} at {bench['threshold']:g}, level mean "
                  f"{hierarchies[name]['level_mean_covering']:.4f} ({hierarchies[name]['seconds']:.0f} s)", flush=True)
        gbt = dataclasses.replace(gbt, info={**gbt.info, "threshold": hierarchies[GBT]["val_benchmark"]["threshold"]})
        seconds["hierarchies"] = sum(row["seconds"] for row in hierarchies.values())

    seconds["total"] = time.perf_counter() - start
    results = {
        "command": "python -m experiments.gbt_scorer " + " ".join(sys.argv[1:] if argv is None else argv),
        "settings": {"dataset": settings["dataset"], "split": datasets[1].split, "train_split": datasets[0].split,
                     "limit": args.limit, "n_images": len(val_items), "train_images": len(train_items),
                     "levels": list(LEVELS), "egs_scales": [], "thresholds": list(THRESHOLDS),
                     "mlp": {"scorer": args.scorer, "recorded_threshold": shipped.threshold,
                             "recorded_val_covering_ods": record["val"]["covering_ods"]},
                     "pairs": {**pair_key, "weights": "none (every pair once, as the MLP's)"},
                     "gbt": {"leaves": args.leaves, "learning_rates": args.learning_rates,
                             "max_rounds": args.max_rounds, "stopping_rounds": args.stopping_rounds,
                             "seed": args.seed, "threads": args.threads, "lightgbm": lgb.__version__,
                             "chosen_by": "lowest val pair loss"}},
        "pairs": {"train": len(train.labels), "val": len(val.labels),
                  "train_rounds": [len(p.labels) for p in train_pairs],
                  "val_rounds": [len(p.labels) for p in val_pairs],
                  "recorded_rounds": [{k: r[k] for k in ("train_pairs", "val_pairs", "best_val_loss")}
                                      for r in record["rounds"]],
                  "refit_best_val_loss": refit_losses, "mean_label": float(train.labels.mean())},
        "gbt": {"grid": grid, "chosen": chosen, "info": gbt.info},
        "pair_level": pair_level,
        "hierarchies": hierarchies,
        "egs": {},
        "seconds": {stage: round(value, 1) for stage, value in seconds.items()},
    }
    args.out.mkdir(parents=True, exist_ok=True)
    if hierarchies:
        write_results(results, args.out, "gbt_scorer", start, table=tables,
                      title="MLP vs GBT merge scorer: covering per level (stars: ODS)")
    else:
        from binmap_tf.common.files import write_json

        write_json(args.out / "gbt_scorer.json", results)
        print(json.dumps(pair_level, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
