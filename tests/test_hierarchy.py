"""The merge hierarchy: order of merges, ultrametric heights, cuts, UCM, and its evaluation methods."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from scipy import ndimage
from skimage import data
from skimage.measure import label as connected_labels

from benchmarks.hierarchy_higra import higra_border_sums, higra_segment_of, higra_tree, higra_ucm
from binmap_tf.binary_map.geometry import GridGeometry
from binmap_tf.binary_map.maps import BinaryMap
from binmap_tf.cli.evaluate import main as evaluate_main
from binmap_tf.common import bands
from binmap_tf.evaluation.methods import DEFAULT_VALUES, HIERARCHY_THRESHOLDS, parse_method
from binmap_tf.evaluation.metrics import contingency, ucm_segmentation
from binmap_tf.segmentation.hierarchy import MergeTree, MergeWeights, _border_sums, build_hierarchy
from binmap_tf.segmentation.merge_scorer import shipped_scorer
from binmap_tf.segmentation.superpixels import egs, watershed

# Stride 4, offset 1.5: image column x falls in grid column x // 4, so a 4-pixel-wide stripe is one cell.
STRIPE_GEOMETRY = GridGeometry(stride=4.0, offset=1.5, receptive_field=4.0)


def stripe_map(codes: list[str], edges: np.ndarray | None = None, rows: int = 6) -> BinaryMap:
    """Binary map of an image of 4-pixel-wide vertical stripes, one grid cell (and code) per stripe."""
    bits = np.array([[[int(bit) for bit in code] for code in codes]], np.uint8)
    return BinaryMap(bits=bits, logits=bits.astype(np.float32) - 0.5, geometry=STRIPE_GEOMETRY, scale=1.0,
                     image_shape=(rows, 4 * len(codes)), edges=edges)


def stripes(n: int, rows: int = 6) -> np.ndarray:
    """Superpixel labels of ``n`` vertical stripes, 4 pixels wide."""
    return np.repeat(np.arange(n, dtype=np.int32), 4)[None, :].repeat(rows, axis=0)


def random_map(image: np.ndarray, seed: int = 0) -> BinaryMap:
    """A binary map with random 8-bit codes on a stride-16 grid and a random smooth edge map."""
    rng = np.random.default_rng(seed)
    height, width = image.shape[:2]
    grid = (height // 16 + 1, width // 16 + 1, 8)
    logits = rng.standard_normal(grid).astype(np.float32)
    edges = ndimage.gaussian_filter(rng.random((height, width)), 3).astype(np.float32)
    return BinaryMap(bits=(logits >= 0).astype(np.uint8), logits=logits,
                     geometry=GridGeometry(stride=16.0, offset=7.5, receptive_field=16.0), scale=1.0,
                     image_shape=(height, width), edges=(edges - edges.min()) / np.ptp(edges))


@pytest.fixture(scope="module")
def astronaut_tree() -> tuple[np.ndarray, np.ndarray, BinaryMap, MergeTree]:
    image = data.astronaut()[::2, ::2]
    superpixels = egs(image, scale=50)
    binary_map = random_map(image)
    return image, superpixels, binary_map, build_hierarchy(image, superpixels, binary_map,
                                                           MergeWeights(codes=1, edges=1, colour=1))


def test_merges_follow_the_mean_border_strength():
    # Borders 0|1, 1|2, 2|3 carry edge strength 0.1, 0.9, 0.5 on the pixel column right of them.
    edges = np.zeros((6, 16), np.float32)
    edges[:, 4], edges[:, 8], edges[:, 12] = 0.1, 0.9, 0.5
    tree = build_hierarchy(None, stripes(4), stripe_map(["0"] * 4, edges), MergeWeights(edges=1), size_prior=0)
    assert tree.children.tolist() == [[0, 1], [2, 3], [4, 5]]
    np.testing.assert_allclose(tree.heights, [0.1, 0.5, 0.9])


def test_merges_follow_the_code_distance_and_ties_break_by_node():
    # Soft Hamming distances 0|1: 1/4, 1|2: 3/4, 2|3: 1/4 (a tie, broken by node number); then the
    # merged regions have bit fractions (0, 0, 0, .5) and (1, 1, 1, .5): distance 3/4.
    tree = build_hierarchy(None, stripes(4), stripe_map(["0000", "0001", "1111", "1110"]),
                           MergeWeights(codes=1), size_prior=0)
    assert tree.children.tolist() == [[0, 1], [2, 3], [4, 5]]
    np.testing.assert_allclose(tree.heights, [0.25, 0.25, 0.75])


def test_colour_cue_merges_similar_colours_first():
    image = np.zeros((6, 12, 3), np.uint8)
    image[:, 4:8] = 10  # stripes 0 and 1 are nearly the same black; stripe 2 is white
    image[:, 8:] = 255
    tree = build_hierarchy(image, stripes(3), stripe_map(["0"] * 3), MergeWeights(colour=1), size_prior=0)
    assert tree.children.tolist() == [[0, 1], [2, 3]]
    assert tree.heights[0] < 0.1 and tree.heights[1] == 1.0  # white vs black: clipped at COLOUR_SCALE


def test_small_regions_merge_first():
    # Stripe 1 is 1 pixel wide: with the size prior (regions under the mean area of 18 pixels) it
    # goes first although its borders are stronger: 0.6 * sqrt(6 / 18) < 0.4 * sqrt(18 / 18).
    superpixels = np.repeat(np.array([0, 1, 2, 3], np.int32), [4, 1, 3, 4])[None, :].repeat(6, axis=0)
    edges = np.zeros((6, 12), np.float32)
    edges[:, 4], edges[:, 5], edges[:, 8] = 0.6, 0.6, 0.4
    binary_map = stripe_map(["0"] * 3, edges)
    with_prior = build_hierarchy(None, superpixels, binary_map, MergeWeights(edges=1), size_prior=1.0)
    without = build_hierarchy(None, superpixels, binary_map, MergeWeights(edges=1), size_prior=0)
    assert without.children[0].tolist() == [2, 3]
    assert 1 in with_prior.children[0]


def test_heights_are_an_ultrametric_and_cuts_are_nested(astronaut_tree):
    _, superpixels, _, tree = astronaut_tree
    n = tree.n_superpixels
    assert len(tree.children) == n - 1  # one connected image: merged down to one region
    node_height = np.concatenate([np.zeros(n), tree.heights])
    assert np.all(tree.heights >= node_height[tree.children].max(axis=1))
    assert np.all(np.diff(np.sort(tree.heights)) >= 0) and 0 <= tree.heights.min() <= tree.heights.max() <= 1
    previous, previous_count = None, n + 1
    for threshold in np.quantile(tree.heights, [0.0, 0.5, 0.9, 0.97, 0.995, 1.0]):
        labels = tree.cut(threshold=threshold)
        count = len(np.unique(labels))
        assert count == tree.n_segments_at(threshold) <= previous_count
        if previous is not None:  # a finer segment lies inside exactly one coarser segment
            assert np.all((contingency(previous, labels) > 0).sum(axis=1) == 1)
        previous, previous_count = labels, count
    assert previous_count == 1


def test_cut_at_n_segments_gives_that_many_segments(astronaut_tree):
    _, superpixels, _, tree = astronaut_tree
    n = tree.n_superpixels
    for k in (1, 2, 7, 50, n):
        labels = tree.cut(n_segments=k)
        assert len(np.unique(labels)) == k and labels.max() == k - 1
    np.testing.assert_array_equal(tree.cut(n_segments=n + 10), tree.superpixels)
    # the same partition as the threshold cut with as many segments (at a level without tied heights)
    heights = np.sort(tree.heights)
    k = next(k for k in range(30, n) if heights[n - k - 1] < heights[n - k])
    assert tree.n_segments_at(heights[n - k - 1]) == k
    np.testing.assert_array_equal(tree.cut(n_segments=k), tree.cut(threshold=heights[n - k - 1]))


def test_build_is_deterministic(astronaut_tree):
    image, superpixels, binary_map, tree = astronaut_tree
    again = build_hierarchy(image, superpixels, binary_map, MergeWeights(codes=1, edges=1, colour=1))
    np.testing.assert_array_equal(again.children, tree.children)
    np.testing.assert_array_equal(again.heights, tree.heights)


def test_ucm_cuts_like_the_tree_for_4_connected_superpixels(astronaut_tree):
    image, superpixels, binary_map, _ = astronaut_tree
    pieces = connected_labels(superpixels + 1, connectivity=1, background=0) - 1  # 4-connected superpixels
    tree = build_hierarchy(image, pieces, binary_map, MergeWeights(codes=1, edges=1), connectivity=1)
    ucm2 = tree.ucm()
    assert ucm2.shape == (2 * image.shape[0] + 1, 2 * image.shape[1] + 1)
    assert np.all(ucm2[1::2, 1::2] == 0) and ucm2.max() == tree.heights.max()
    for threshold in np.quantile(tree.heights, [0.5, 0.95, 0.99]):
        from_ucm, from_tree = ucm_segmentation(ucm2, threshold), tree.cut(threshold=threshold)
        table = contingency(from_ucm, from_tree)
        assert table.shape[0] == table.shape[1] == table.nnz  # the same partition


def test_ucm_of_8_connected_superpixels_refines_the_tree_cut(astronaut_tree):
    _, _, _, tree = astronaut_tree
    threshold = np.quantile(tree.heights, 0.97)
    table = contingency(ucm_segmentation(tree.ucm(), threshold), tree.cut(threshold=threshold))
    assert np.all((table > 0).sum(axis=1) == 1)  # only diagonal-only contacts split further


def test_many_superpixels_build_without_pixel_loops():
    image = data.astronaut()
    superpixels = egs(image, scale=20, min_size=5)  # ~3000 superpixels on 512x512
    tree = build_hierarchy(image, superpixels, random_map(image, seed=1))
    assert tree.n_superpixels > 2000 and len(tree.children) == tree.n_superpixels - 1


def test_bad_inputs_are_refused():
    binary_map = stripe_map(["0", "1"])
    with pytest.raises(ValueError, match="edges=True"):
        build_hierarchy(None, stripes(2), binary_map, MergeWeights(edges=1))
    with pytest.raises(ValueError, match="needs the image"):
        build_hierarchy(None, stripes(2), binary_map, MergeWeights(colour=1))
    with pytest.raises(ValueError, match="not all 0"):
        build_hierarchy(None, stripes(2), binary_map, MergeWeights())
    with pytest.raises(ValueError, match="do not match"):
        build_hierarchy(None, stripes(3), binary_map, MergeWeights(codes=1))
    tree = build_hierarchy(None, stripes(2), binary_map, MergeWeights(codes=1))
    with pytest.raises(ValueError, match="exactly one"):
        tree.cut()
    with pytest.raises(ValueError, match=">= 1"):
        tree.cut(n_segments=0)


def test_single_superpixel_has_no_merges():
    tree = build_hierarchy(None, np.zeros((6, 4), np.int32), stripe_map(["1"]), MergeWeights(codes=1))
    assert tree.children.shape == (0, 2)
    np.testing.assert_array_equal(tree.cut(n_segments=3), 0)
    assert tree.ucm().max() == 0


def test_hierarchical_methods_parse():
    method = parse_method("binmap-hier")
    assert method.map_variant == "edges" and method.parameter_key == "binmap-hier" and not method.by_count
    by_count = parse_method("hier-codes-n")
    assert by_count.by_count and by_count.weights == MergeWeights(codes=1.0)
    assert parse_method("egs").parameter_key == "egs"
    with pytest.raises(ValueError, match="unknown method"):
        parse_method("hier-texture")


def test_evaluate_sweeps_a_hierarchy_and_reports_ods_and_ois(tmp_path):
    out = tmp_path / "eval"
    assert evaluate_main(["--dataset", "bsds500", "--split", "val", "--limit", "2", "--workers", "1",
                          "--methods", "hier-codes-edges", "hier-codes-edges-n", "--sweep", "--out", str(out),
                          "--cache", str(tmp_path / "cache")]) == 0
    figures = json.loads((out / "hierarchy.json").read_text())
    row = figures["hier-codes-edges"]
    assert row["n_images"] == 2 and 0 < row["covering_ods"] <= row["covering_ois"] <= 1
    assert row["parameter"] == "threshold" and row["ods_value"] in HIERARCHY_THRESHOLDS
    assert figures["hier-codes-edges-n"]["parameter"] == "n_segments"
    assert "hier-codes-edges-n" in (out / "hierarchy.md").read_text()
    rows = list(csv.DictReader((out / "sweep.csv").open()))
    by_threshold = [r for r in rows if r["method"] == "hier-codes-edges"]
    assert [float(r["value"]) for r in by_threshold] == list(HIERARCHY_THRESHOLDS)
    segments = [float(r["mean_segments"]) for r in by_threshold]
    assert segments == sorted(segments, reverse=True)  # a higher threshold only merges
    by_count = [r for r in rows if r["method"] == "hier-codes-edges-n"]
    assert [float(r["mean_segments"]) for r in by_count] == [float(r["value"]) for r in by_count]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["hier-codes-edges"]["value"] == DEFAULT_VALUES["hier-codes-edges"]
    assert summary["hier-codes-edges-n"]["parameter"] == "n_segments"


# The hand-written cuts, UCM and region adjacency against higra (issue 13, item 4; README, "Hierarchical
# merging"): higra, an independent C++ implementation, must give the same segments at the same cut.


@pytest.fixture(scope="module")
def learned_tree(astronaut_tree) -> MergeTree:
    """The learned scorer's tree on a watershed of the random edge map (heights with many ties)."""
    image, _, binary_map, _ = astronaut_tree
    return build_hierarchy(image, watershed(image, binary_map.edges), binary_map, scorer=shipped_scorer("learned"))


@pytest.fixture(params=["hand-set", "learned"])
def any_tree(request, astronaut_tree, learned_tree) -> MergeTree:
    return astronaut_tree[3] if request.param == "hand-set" else learned_tree


def test_cuts_are_higras_horizontal_cuts(any_tree):
    tree = any_tree
    converted = higra_tree(tree)
    n = tree.n_superpixels
    assert len(np.unique(tree.heights)) < len(tree.heights)  # tied heights: the count cut must break them
    # at the sweep's thresholds and exactly at merge heights, where "<= threshold" decides
    for threshold in (*HIERARCHY_THRESHOLDS, *np.quantile(tree.heights, [0, 0.3, 0.8, 0.99, 1], method="nearest")):
        np.testing.assert_array_equal(tree.segment_of(threshold=threshold),
                                      higra_segment_of(tree, *converted, threshold=threshold))
    for count in (1, 2, 3, 10, n // 2, n - 1, n, n + 5):
        np.testing.assert_array_equal(tree.segment_of(n_segments=count),
                                      higra_segment_of(tree, *converted, n_segments=count))


def test_ucm_is_higras_saliency_map_in_every_band_layout(any_tree, monkeypatch):
    tree = any_tree
    expected = higra_ucm(tree, *higra_tree(tree))
    np.testing.assert_array_equal(tree.ucm(), expected)
    monkeypatch.setattr(bands, "BAND_PIXELS", 3 * tree.superpixels.shape[1] + 1)  # three rows a band
    np.testing.assert_array_equal(tree.ucm(), expected)


def test_region_adjacency_is_higras(any_tree, astronaut_tree):
    edges = astronaut_tree[2].edges
    pairs, sums = _border_sums(any_tree.superpixels, edges, 2)
    higra_pairs, higra_sums = higra_border_sums(any_tree.superpixels, edges)
    np.testing.assert_array_equal(pairs, higra_pairs)
    np.testing.assert_array_equal(pairs, any_tree.pairs)
    np.testing.assert_allclose(sums[:, :2], higra_sums, rtol=1e-12)
