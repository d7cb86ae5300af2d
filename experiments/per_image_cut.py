"""Can a cut chosen per image from the hierarchy itself beat the learned hierarchy's one threshold?

``python -m experiments.per_image_cut --split val --out benchmarks/results/learned/v3_joint/per_image_cut_bsds500_val.json``

MSRC-v2's annotations are coarser than BSDS500's, and the threshold chosen on BSDS500 val cuts
MSRC too finely (README, "Learned merging"). A rule that reads each image's own hierarchy could
cut simple images higher without looking at MSRC. For the shipped scorer on the images of
``--split``, every rule below is scored leave-one-out (whatever it chooses, it chooses on the
other images), as pooled covering (the benchmark's covering ODS pools images the same way):

* ``global``: the others' ODS threshold (what ships, held out);
* ``neighbours k``: the threshold best for the ``k`` images whose hierarchies have the most similar
  segment counts at every threshold (log counts, standardised);
* ``widest gap w``: within ``w`` of the others' ODS threshold, the middle of the widest gap
  between the image's merge heights (the cut that survives the largest change of threshold).

Choose on val only; a rule that does not beat ``global`` there is not run elsewhere.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from binmap_tf.common.files import write_json

NEIGHBOURS = (5, 10, 20, 40, 60)
WINDOWS = (0.05, 0.1, 0.15, 0.2)


def pooled_covering(covering_sums: np.ndarray, areas: np.ndarray, choice: np.ndarray) -> float:
    """Covering of all images when image ``i`` is cut at threshold index ``choice[i]``."""
    return float(covering_sums[np.arange(len(choice)), choice].sum() / areas.sum())


def global_choice(covering_sums: np.ndarray) -> np.ndarray:
    """For each image, the ODS threshold index of the other images."""
    total = covering_sums.sum(axis=0)
    return np.array([np.argmax(total - row) for row in covering_sums])


def neighbour_choice(covering_sums: np.ndarray, counts: np.ndarray, k: int) -> np.ndarray:
    """For each image, the best threshold index of its ``k`` nearest others by standardised log segment counts."""
    x = np.log(counts)
    x = (x - x.mean(axis=0)) / np.maximum(x.std(axis=0), 1e-9)
    distances = ((x[:, None] - x[None]) ** 2).sum(axis=2)
    np.fill_diagonal(distances, np.inf)
    nearest = np.argsort(distances, axis=1)[:, :k]
    return np.array([np.argmax(covering_sums[rows].sum(axis=0)) for rows in nearest])


def widest_gap_choice(heights: list[np.ndarray], thresholds: np.ndarray, centre: np.ndarray, window: float) -> np.ndarray:
    """For each image, the threshold index nearest the middle of the widest gap between its merge heights
    within ``centre[i] ± window`` (``centre``: threshold indices)."""
    choice = []
    for merge_heights, index in zip(heights, centre):
        low, high = thresholds[index] - window, thresholds[index] + window
        inside = merge_heights[(merge_heights > low) & (merge_heights < high)]
        edges = np.unique(np.concatenate([[low, high], inside]))
        gap = int(np.argmax(np.diff(edges)))
        choice.append(int(np.argmin(np.abs(thresholds - (edges[gap] + edges[gap + 1]) / 2))))
    return np.array(choice)


def compare(covering_sums: np.ndarray, areas: np.ndarray, counts: np.ndarray, heights: list[np.ndarray],
            thresholds: np.ndarray) -> dict[str, float]:
    """Leave-one-out pooled covering of every rule, and the per-image best (OIS, a bound)."""
    centre = global_choice(covering_sums)
    rules = {"global": centre}
    rules |= {f"neighbours {k}": neighbour_choice(covering_sums, counts, k) for k in NEIGHBOURS if k < len(areas)}
    rules |= {f"widest gap {w:g}": widest_gap_choice(heights, thresholds, centre, w) for w in WINDOWS}
    rules["per-image best (OIS)"] = np.argmax(covering_sums, axis=1)
    return {name: pooled_covering(covering_sums, areas, choice) for name, choice in rules.items()}


def main(argv: list[str] | None = None) -> int:
    from binmap_tf.binary_map.model import BinaryMapper
    from binmap_tf.cli.common import add_dataset_arguments
    from binmap_tf.evaluation.datasets import load_dataset
    from binmap_tf.evaluation.map_cache import BinaryMapCache
    from binmap_tf.segmentation.merge_scorer import shipped_scorer
    from binmap_tf.training.merge_training import THRESHOLDS, load_training_images, threshold_scores

    parser = argparse.ArgumentParser(prog="python -m experiments.per_image_cut", description=__doc__.split("\n\n")[0])
    add_dataset_arguments(parser, split="val")
    parser.add_argument("--scorer", default="learned", help="shipped scorer (default: %(default)s)")
    parser.add_argument("--out", type=Path, required=True, help="the JSON record")
    args = parser.parse_args(argv)
    if args.split == "test":
        parser.error("rules are compared on val; test is run once with the chosen one")
    scorer = shipped_scorer(args.scorer)
    dataset = load_dataset(args.dataset, args.split, root=args.data, limit=args.limit)
    mapper = BinaryMapper(bits=scorer.n_bits or 8, edges=True)
    level = dict(scorer.info["first_level"])
    items = load_training_images(dataset, BinaryMapCache(mapper, f"{args.dataset}-{dataset.split}"),
                                 level.pop("superpixels"), **level)
    scored = threshold_scores(scorer, items)
    covering_sums = np.array([[s.covering_sum for s in scores] for _, scores in scored])
    areas = np.array([scores[0].gt_area for _, scores in scored])
    counts = np.array([[tree.n_segments_at(t) for t in THRESHOLDS] for tree, _ in scored])
    results = compare(covering_sums, areas, counts, [tree.heights for tree, _ in scored], np.array(THRESHOLDS))
    write_json(args.out, {"dataset": args.dataset, "split": dataset.split, "images": len(items),
                          "scorer": scorer.name, "thresholds": list(THRESHOLDS),
                          "leave_one_out_covering": results})
    for name, value in results.items():
        print(f"{name:>22}: {value:.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
