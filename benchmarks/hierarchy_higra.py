"""The hand-written parts of ``binmap_tf.segmentation.hierarchy`` and ``superpixels.watershed`` against higra.

``python -m benchmarks.hierarchy_higra --out benchmarks/results/hierarchy_higra.json`` builds, on the
first BSDS500 test images (binary maps from the map cache; nothing is chosen on these images), the
trees of ``binmap-hier`` (EGS, hand-set cues) and ``binmap-learned`` (watershed, learned scorer),
and compares each piece with its higra counterpart (issue 13, item 4):

* **cuts**: :meth:`MergeTree.segment_of` at the 37 sweep thresholds and at segment counts, against
  ``labelisation_horizontal_cut_from_threshold`` on the same tree;
* **UCM**: :meth:`MergeTree.ucm` against higra's saliency (the altitude of the lowest common
  ancestor of the two superpixels of every 4-neighbour pixel pair) on the Khalimsky grid, and the
  peak memory of both on one large image (a fresh process each);
* **region adjacency**: the touching pairs and border sums of ``hierarchy._border_sums`` against
  higra's region adjacency graph of the 8-adjacency pixel graph;
* **greedy merge**: the hand-set loop with edges only and no size prior (the one setting a fixed
  linkage can express) against ``binary_partition_tree_average_linkage``;
* **watershed**: ``superpixels.watershed`` (scikit-image, markers at h-minima) against higra's
  watershed hierarchy by dynamics cut at ``h``;
* the seconds ``import higra`` adds to a process that has imported ``binmap_tf.segmentation.pipeline``.

Per image, old and new run interleaved and the median of the repeats is kept; the record holds
the median over images, so load from other jobs hits both sides alike.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import higra as hg
import numpy as np

from binmap_tf.evaluation.methods import HIERARCHY_THRESHOLDS
from binmap_tf.evaluation.metrics import contingency
from binmap_tf.segmentation.hierarchy import MergeTree, MergeWeights, _border_sums, build_hierarchy

COUNTS = (1, 2, 5, 10, 20, 50, 100, 200)


def higra_tree(tree: MergeTree) -> tuple[hg.Tree, np.ndarray]:
    """``tree`` as a higra tree (same node numbers) and the altitudes of all its nodes (leaves at 0)."""
    n = tree.n_superpixels
    parents = np.arange(n + len(tree.children), dtype=np.int64)
    parents[tree.children.ravel()] = np.repeat(n + np.arange(len(tree.children)), 2)
    return hg.Tree(parents), np.concatenate([np.zeros(n), tree.heights])


def by_smallest_member(labels: np.ndarray) -> np.ndarray:
    """``labels`` renumbered ``0 .. K-1`` in order of each label's first position (MergeTree's numbering)."""
    _, first, inverse = np.unique(labels, return_index=True, return_inverse=True)
    rank = np.empty(len(first), np.int32)
    rank[np.argsort(first)] = np.arange(len(first), dtype=np.int32)
    return rank[inverse]


def higra_segment_of(tree: MergeTree, hg_tree: hg.Tree, altitudes: np.ndarray,
                     n_segments: int | None = None, threshold: float | None = None) -> np.ndarray:
    """:meth:`MergeTree.segment_of` by higra's horizontal cut.

    A count is cut at the rank of the merges (heights, ties in merge order), which increases up
    the tree because heights do and a merge comes after its children."""
    if threshold is None:
        order = np.lexsort((np.arange(len(tree.heights)), tree.heights))
        rank = np.empty(len(order))
        rank[order] = np.arange(len(order))
        altitudes = np.concatenate([np.full(tree.n_superpixels, -1.0), rank])
        threshold = tree.n_superpixels - n_segments - 0.5
    return by_smallest_member(hg.labelisation_horizontal_cut_from_threshold(hg_tree, altitudes, threshold))


def higra_ucm(tree: MergeTree, hg_tree: hg.Tree, altitudes: np.ndarray) -> np.ndarray:
    """:meth:`MergeTree.ucm` from higra: lowest-common-ancestor altitudes on the 4-adjacency pixel graph,
    written on the Khalimsky grid with its outer border."""
    graph = hg.get_4_adjacency_graph(tree.superpixels.shape)
    source, target = graph.edge_list()
    labels = tree.superpixels.ravel()
    saliency = altitudes[hg.make_lca_fast(hg_tree).lca(labels[source], labels[target])]
    return hg.graph_4_adjacency_2_khalimsky(graph, saliency, add_extra_border=True)


def higra_border_sums(labels: np.ndarray, edges: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Touching pairs ``(e, 2)`` (sorted) with summed edge strength and pixel pairs, from higra's region
    adjacency graph of the 8-adjacency graph (regions are connected pieces of a label, so labels are
    mapped back through the pieces)."""
    graph = hg.get_8_adjacency_graph(labels.shape)
    rag = hg.make_region_adjacency_graph_from_labelisation(graph, labels)
    strength = hg.weight_graph(graph, edges.astype(np.float64), hg.WeightFunction.max)
    sums = hg.rag_accumulate_on_edges(rag, hg.Accumulators.sum, strength)
    counts = hg.rag_accumulate_on_edges(rag, hg.Accumulators.counter, strength)
    label_of_piece = np.zeros(rag.num_vertices(), np.int64)
    label_of_piece[hg.CptRegionAdjacencyGraph.get_vertex_map(rag).ravel()] = labels.ravel()
    source, target = rag.edge_list()
    a, b = label_of_piece[source], label_of_piece[target]
    n = int(labels.max()) + 1
    keys, inverse = np.unique(np.minimum(a, b) * n + np.maximum(a, b), return_inverse=True)
    pairs = np.stack([keys // n, keys % n], axis=1)
    return pairs, np.stack([np.bincount(inverse, sums, len(keys)), np.bincount(inverse, counts, len(keys))], 1)


def higra_average_linkage(labels: np.ndarray, edges: np.ndarray) -> tuple[hg.Tree, np.ndarray]:
    """The edges-only hierarchy without size prior as higra's average-linkage binary partition tree of the
    superpixels (edge weight: mean border strength, weighted by the border's pixel pairs), heights
    made monotone as :func:`build_hierarchy` does."""
    pairs, sums = _border_sums(labels, edges, 2)
    graph = hg.UndirectedGraph(int(labels.max()) + 1)
    graph.add_edges(pairs[:, 0], pairs[:, 1])
    tree, altitudes = hg.binary_partition_tree_average_linkage(graph, sums[:, 0] / sums[:, 1], sums[:, 1])
    altitudes = altitudes.copy()
    for node in tree.leaves_to_root_iterator(include_leaves=False):
        altitudes[node] = max(altitudes[node], altitudes[tree.children(node)].max())
    return tree, altitudes


def higra_watershed(edges: np.ndarray, h: float) -> np.ndarray:
    """Superpixels from higra's watershed hierarchy by dynamics of the edge map (4-adjacency, pair weight
    the larger edge value) cut at ``h``."""
    graph = hg.get_4_adjacency_graph(edges.shape)
    weights = hg.weight_graph(graph, edges.astype(np.float64), hg.WeightFunction.max)
    tree, altitudes = hg.watershed_hierarchy_by_dynamics(graph, weights)
    return by_smallest_member(hg.labelisation_horizontal_cut_from_threshold(tree, altitudes, h)).reshape(edges.shape)


def same_partition(first: np.ndarray, second: np.ndarray) -> bool:
    """Whether two label images split the pixels alike, whatever the numbering."""
    table = contingency(first, second)
    return table.shape[0] == table.shape[1] == table.nnz


def interleaved(old: Callable[[], object], new: Callable[[], object], repeats: int) -> tuple[float, float]:
    """Median seconds of ``old`` and of ``new``, run alternately ``repeats`` times each."""
    times: tuple[list[float], list[float]] = ([], [])
    for _ in range(repeats):
        for function, record in ((old, times[0]), (new, times[1])):
            start = time.perf_counter()
            function()
            record.append(time.perf_counter() - start)
    return float(np.median(times[0])), float(np.median(times[1]))


def compare_tree(tree: MergeTree, repeats: int) -> dict[str, dict]:
    """Equality and median seconds of the cuts and the UCM of one tree, hand-written against higra."""
    hg_tree, altitudes = higra_tree(tree)
    counts = [count for count in COUNTS if count <= tree.n_superpixels]
    thresholds_equal = sum(np.array_equal(tree.segment_of(threshold=t), higra_segment_of(tree, hg_tree, altitudes,
                                                                                         threshold=t))
                           for t in HIERARCHY_THRESHOLDS)
    counts_equal = sum(np.array_equal(tree.segment_of(n_segments=k), higra_segment_of(tree, hg_tree, altitudes,
                                                                                      n_segments=k))
                       for k in counts)

    def higra_sweep() -> None:  # the tree is converted once per sweep, as a higra path would have to
        converted, heights = higra_tree(tree)
        for t in HIERARCHY_THRESHOLDS:
            higra_segment_of(tree, converted, heights, threshold=t)

    sweep = interleaved(lambda: [tree.segment_of(threshold=t) for t in HIERARCHY_THRESHOLDS], higra_sweep, repeats)
    ucm = interleaved(tree.ucm, lambda: higra_ucm(tree, *higra_tree(tree)), repeats)
    return {"cut_threshold": {"equal": int(thresholds_equal), "of": len(HIERARCHY_THRESHOLDS),
                              "seconds_37_cuts": sweep},
            "cut_count": {"equal": int(counts_equal), "of": len(counts)},
            "ucm": {"equal": bool(np.array_equal(tree.ucm(), higra_ucm(tree, hg_tree, altitudes))), "seconds": ucm}}


def compare_image(image: np.ndarray, binary_map, scorer, repeats: int) -> dict[str, dict]:
    """Every comparison on one image."""
    from binmap_tf.segmentation.superpixels import WATERSHED_H, egs, watershed

    edges = binary_map.edges
    record: dict[str, dict] = {}
    first_levels = {"binmap-hier": egs(image), "binmap-learned": watershed(image, edges)}
    trees = {"binmap-hier": build_hierarchy(image, first_levels["binmap-hier"], binary_map),
             "binmap-learned": build_hierarchy(image, first_levels["binmap-learned"], binary_map, scorer=scorer)}
    for name, tree in trees.items():
        for part, row in compare_tree(tree, repeats).items():
            record[f"{name} {part}"] = row
        labels = tree.superpixels
        (pairs, sums), (hg_pairs, hg_sums) = _border_sums(labels, edges, 2), higra_border_sums(labels, edges)
        same_pairs = np.array_equal(pairs, hg_pairs)
        record[f"{name} region adjacency"] = {
            "equal_pairs": bool(same_pairs),
            "sums_max_abs_difference": float(np.abs(sums[:, :2] - hg_sums).max()) if same_pairs else None,
            "seconds": interleaved(lambda: _border_sums(labels, edges, 2), lambda: higra_border_sums(labels, edges),
                                   repeats)}
    labels = first_levels["binmap-learned"]
    tree = build_hierarchy(None, labels, binary_map, MergeWeights(edges=1), size_prior=0)
    hg_tree, altitudes = higra_average_linkage(labels, edges)
    equal = sum(np.array_equal(tree.segment_of(threshold=t),
                               by_smallest_member(hg.labelisation_horizontal_cut_from_threshold(hg_tree, altitudes, t)))
                for t in HIERARCHY_THRESHOLDS)
    record["edges-only greedy merge, no size prior"] = {
        "equal_cuts": int(equal), "of": len(HIERARCHY_THRESHOLDS),
        "seconds": interleaved(lambda: build_hierarchy(None, labels, binary_map, MergeWeights(edges=1), size_prior=0),
                               lambda: higra_average_linkage(labels, edges), repeats)}
    ours, theirs = watershed(image, edges), higra_watershed(edges, WATERSHED_H)
    record["watershed h=0.05"] = {
        "same_partition": same_partition(ours, theirs), "superpixels": [int(ours.max()) + 1, int(theirs.max()) + 1],
        "pixels_in_matching_segments": float(contingency(ours, theirs).max(axis=1).sum() / ours.size),
        "seconds": interleaved(lambda: watershed(image, edges), lambda: higra_watershed(edges, WATERSHED_H), repeats)}
    return record


def _status_mib(field: str) -> float:
    """A memory figure of this process from ``/proc/self/status`` (Linux), in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    raise KeyError(field)


def ucm_peak(tree_file: Path, implementation: str, megapixels: float) -> dict[str, float]:
    """Peak memory (MiB above the resident set before the call) of the UCM of the saved tree, its labels
    upsampled to ``megapixels``: the high-water mark is reset first (``/proc/self/clear_refs``, Linux)."""
    from binmap_tf.segmentation.resolution import upsample_labels

    with np.load(tree_file) as data:
        small = data["superpixels"]
        height = int(round((megapixels * 1e6 * small.shape[0] / small.shape[1]) ** 0.5))
        width = int(round(megapixels * 1e6 / height))
        tree = MergeTree(upsample_labels(small, (height, width)), data["children"], data["heights"],
                         data["pairs"], data["pair_heights"])
    hg_tree, altitudes = higra_tree(tree)
    Path("/proc/self/clear_refs").write_text("5")
    before = _status_mib("VmRSS")
    start = time.perf_counter()
    ucm2 = tree.ucm() if implementation == "hand-written" else higra_ucm(tree, hg_tree, altitudes)
    seconds = time.perf_counter() - start
    return {"shape": [height, width], "peak_mib_over_start": _status_mib("VmHWM") - before,
            "output_mib": ucm2.nbytes / 2**20, "seconds": seconds}


def in_fresh_process(code: str) -> str:
    """stdout of ``python -c code`` run from the repository (so it imports this checkout)."""
    root = Path(__file__).resolve().parents[1]
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")]))}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=root,
                          env=environment).stdout


def main(argv: list[str] | None = None) -> int:
    import json

    from binmap_tf.binary_map.model import BinaryMapper
    from binmap_tf.common.files import write_json
    from binmap_tf.evaluation.datasets import load_dataset
    from binmap_tf.evaluation.map_cache import BinaryMapCache
    from binmap_tf.segmentation.merge_scorer import shipped_scorer

    parser = argparse.ArgumentParser(prog="python -m benchmarks.hierarchy_higra", description=__doc__.split("\n\n")[0])
    parser.add_argument("--limit", type=int, default=10, help="first N BSDS500 test images (default: %(default)s)")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs of each side per image (default: %(default)s)")
    parser.add_argument("--megapixels", type=float, default=12.0,
                        help="size of the image the UCM's peak memory is measured on (default: %(default)s)")
    parser.add_argument("--cache", type=Path, default=None, help="binary-map cache (default: $BINMAP_TF_HOME/binary_maps)")
    parser.add_argument("--out", type=Path, required=True, help="JSON file to write")
    args = parser.parse_args(argv)
    dataset = load_dataset("bsds500", split="test", limit=args.limit)
    cache = BinaryMapCache(BinaryMapper(edges=True), "bsds500-test", root=args.cache)
    scorer = shipped_scorer("learned")
    load_before = os.getloadavg()[0]
    per_image = []
    for sample in dataset:
        image = sample.load_image()
        per_image.append(compare_image(image, cache.get(sample.id, image)[0], scorer, args.repeats))
        print(f"{sample.id}: done", flush=True)
    summary: dict[str, dict] = {}
    for part in per_image[0]:
        rows = [record[part] for record in per_image]
        summary[part] = {}
        for key, value in rows[0].items():
            values = [row[key] for row in rows]
            if key.startswith("seconds"):  # median over images of (hand-written, higra)
                summary[part][key] = {"hand_written": float(np.median([v[0] for v in values])),
                                      "higra": float(np.median([v[1] for v in values]))}
            elif isinstance(value, bool):
                summary[part][key] = f"{sum(values)} of {len(values)} images"
            elif key in ("equal", "equal_cuts"):
                summary[part][key] = f"{sum(values)} of {sum(row['of'] for row in rows)} cuts"
            elif key != "of":
                summary[part][key] = values
    with tempfile.TemporaryDirectory() as folder:  # the first learned tree, for the UCM's memory
        tree_file = Path(folder) / "tree.npz"
        image = dataset[0].load_image()
        binary_map = cache.get(dataset[0].id, image)[0]
        from binmap_tf.segmentation.superpixels import watershed

        tree = build_hierarchy(image, watershed(image, binary_map.edges), binary_map, scorer=scorer)
        np.savez(tree_file, superpixels=tree.superpixels, children=tree.children, heights=tree.heights,
                 pairs=tree.pairs, pair_heights=tree.pair_heights)
        memory = {implementation: json.loads(in_fresh_process(
            "import json; from benchmarks.hierarchy_higra import ucm_peak; "
            f"print(json.dumps(ucm_peak({str(tree_file)!r}, {implementation!r}, {args.megapixels})))"))
            for implementation in ("hand-written", "higra")}
    import_seconds = float(in_fresh_process(
        "import time, binmap_tf.segmentation.pipeline; start = time.perf_counter(); import higra; print(time.perf_counter() - start)"))
    record = {"dataset": "bsds500", "split": "test", "images": len(dataset), "repeats": args.repeats,
              "cpu_count": os.cpu_count(), "load_average_before": load_before, "load_average_after": os.getloadavg()[0],
              "median_over_images": summary, "ucm_memory": memory, "import_higra_seconds": import_seconds}
    write_json(args.out, record)
    print(json.dumps({"median_over_images": summary, "ucm_memory": memory, "import_higra_seconds": import_seconds},
                     indent=1))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
