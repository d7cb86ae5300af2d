"""Does the hand-set hierarchy's size prior give the learned merge order good fine levels?

``python -m experiments.size_prior --split val --out benchmarks/results/levels_bsds500_val/size_prior``
(the runs recorded in docs/research/levels.md add ``--priors --large-first ...`` and ``--first-level``)

On BSDS500 val the learned hierarchy has the best coarse cuts and the hand-set one the best fine
cuts (``benchmarks.levels``, docs/research/levels.md). The hand-set cues scale a pair's
dissimilarity down when its smaller region is under ``size_prior`` of the current mean region
area (:class:`~binmap_tf.segmentation.hierarchy.CueCriterion`), so specks merge before large regions
at every level; the learned scorer has no such term (its area features are relative to the
image, not to the current mean). Here the shipped scorer's probability gets that same factor at
inference (no retraining), on the scorer's own first level, for each ``--priors`` value (0 is the
shipped order, a check that the wrapper changes nothing), and every tree is scored as
``benchmarks.levels`` scores hierarchies: covering at 10-160 segments, their mean, ODS.
Choose on val only.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from benchmarks.levels import LEVELS, HierarchyRows, Rows, first_level_options, write_results
from binmap_tf.evaluation.methods import HIERARCHY_THRESHOLDS
from binmap_tf.segmentation.hierarchy import (
    CueCriterion,
    LearnedCriterion,
    PairFeatures,
    build_hierarchy,
)
from binmap_tf.segmentation.merge_scorer import MergeScorer, resolve_scorer

PRIORS = (0.0, 0.05, 0.2)


@dataclass(frozen=True)
class SizePriorCriterion:
    """The learned probability, scaled down as the hand-set cues are for a pair whose smaller region
    (``a`` pixels) is under ``size_prior`` of the current mean region area ``m`` (by
    ``sqrt(a / (size_prior * m))``), or with ``large_first`` for one over it (by ``sqrt(size_prior * m / a)``)."""

    inner: LearnedCriterion
    size_prior: float
    image_area: float
    large_first: bool = False  # instead scale down pairs whose smaller region is over the fraction

    depends_on_count = True  # the mean region area follows the number of regions: queued values are refreshed
    refresh_at = 0

    def __call__(self, regions, first: np.ndarray, second: np.ndarray, border: np.ndarray, n_regions: int
                 ) -> np.ndarray:
        probability = self.inner(regions, first, second, border, n_regions)
        if self.size_prior == 0:
            return probability
        size = self.size_prior * self.image_area / n_regions
        area = np.minimum(regions.area[first], regions.area[second])
        ratio = size / area if self.large_first else area / size
        return probability * np.sqrt(np.minimum(ratio, 1.0))


def variant_tree(image: np.ndarray, superpixels: np.ndarray, binary_map, scorer: MergeScorer, prior: float,
                 kind: str = "size"):
    """The greedy merge tree of ``scorer`` with a size prior (``kind`` "size" or "large-first",
    :class:`SizePriorCriterion`), or ordered by the hand-set cues down to ``prior`` regions ("switch",
    :class:`~binmap_tf.segmentation.hierarchy.SwitchedCriterion`)."""
    if kind == "switch":
        return build_hierarchy(image, superpixels, binary_map, scorer=scorer, cues_until=int(prior))

    def criterion(features: PairFeatures, cues: CueCriterion) -> SizePriorCriterion:
        learned = LearnedCriterion(scorer, PairFeatures(features.image_area, codes=scorer.codes))
        return SizePriorCriterion(learned, prior, features.image_area, kind == "large-first")

    return build_hierarchy(image, superpixels, binary_map, scorer=scorer, criterion=criterion)


def main(argv: list[str] | None = None) -> int:
    from binmap_tf.binary_map.model import BinaryMapper
    from binmap_tf.evaluation.datasets import load_dataset
    from binmap_tf.evaluation.map_cache import BinaryMapCache
    from binmap_tf.segmentation.superpixels import compute_superpixels

    parser = argparse.ArgumentParser(prog="python -m experiments.size_prior", description=__doc__.split("\n\n")[0])
    parser.add_argument("--split", default="val", help="BSDS500 split (default: %(default)s; never test)")
    parser.add_argument("--limit", type=int, default=None, help="first N images")
    parser.add_argument("--scorer", default="learned", help="shipped scorer name or .npz (default: %(default)s)")
    parser.add_argument("--priors", nargs="*", type=float, default=list(PRIORS),
                        help="small-first size priors (default: %(default)s)")
    parser.add_argument("--large-first", nargs="*", type=float, default=[],
                        help="large-first priors: pairs whose smaller region is over this fraction of the mean "
                             "region area merge earlier (default: none)")
    parser.add_argument("--switch-at", nargs="*", type=int, default=[],
                        help="hand-set cues down to this many regions, the learned order above (default: none)")
    parser.add_argument("--first-level", default=None, metavar="SUPERPIXELS[:KEY=VALUE,...]",
                        help="first level, e.g. watershed:h=0.02 (default: the scorer's own)")
    parser.add_argument("--cache", type=Path, default=None, help="binary-map cache (default: $BINMAP_TF_HOME/binary_maps)")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    args = parser.parse_args(argv)
    if args.split == "test":
        parser.error("choose on val; test is run once with the chosen setting")
    start = time.perf_counter()
    scorer = resolve_scorer(args.scorer)
    level = first_level_options(args.first_level) if args.first_level else dict(scorer.info["first_level"])
    method = level.pop("superpixels")
    dataset = load_dataset("bsds500", split=args.split, limit=args.limit)
    cache = BinaryMapCache(BinaryMapper(edges=True), f"bsds500-{dataset.split}", root=args.cache)
    variants = ([(prior, "size") for prior in args.priors] + [(prior, "large-first") for prior in args.large_first]
                + [(count, "switch") for count in args.switch_at])
    names = {(value, kind): f"hand-set cues to {value:g} regions, then {scorer.name}" if kind == "switch"
             else f"{scorer.name} {kind} prior {value:g}" for value, kind in variants}
    rows = {variant: HierarchyRows([Rows() for _ in LEVELS]) for variant in variants}
    for sample in tqdm(dataset, desc=f"bsds500/{dataset.split}", unit="image"):
        image, ground_truths = sample.load_image(), sample.load_ground_truths()
        binary_map, _ = cache.get(sample.id, image)
        superpixels = compute_superpixels(image, method, edges=binary_map.edges, **level)
        for prior, kind in variants:
            began = time.perf_counter()
            tree = variant_tree(image, superpixels, binary_map, scorer, prior, kind)
            if tree.superpixels.shape != image.shape[:2]:
                raise ValueError("images over the working size need SegmentationResult.cut; BSDS500 has none")
            rows[prior, kind].add(tree, tree.cut, ground_truths, LEVELS, HIERARCHY_THRESHOLDS,
                                   time.perf_counter() - began)
    results = {
        "settings": {"dataset": "bsds500", "split": dataset.split, "limit": args.limit, "n_images": len(dataset),
                     "levels": list(LEVELS), "egs_scales": [], "thresholds": list(HIERARCHY_THRESHOLDS),
                     "scorer": scorer.name, "first_level": {"superpixels": method, **level}, "priors": args.priors,
                     "large_first": args.large_first, "switch_at": args.switch_at},
        "hierarchies": {names[variant]: row.summary(LEVELS, HIERARCHY_THRESHOLDS) for variant, row in rows.items()},
        "egs": {},
    }
    write_results(results, args.out, "size_prior", start)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
