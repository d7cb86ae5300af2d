"""The learned merge scorer: training labels, features, the learned hierarchy, the shipped scorer, train_merge."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from skimage import data

from binmap_tf.hierarchy import DEFAULT_WEIGHTS, MergeTree, MergeWeights, build_hierarchy
from binmap_tf.merge_features import (
    BORDER_WIDTH,
    EDGE_BINS,
    feature_names,
    histogram_quantiles,
    pair_features,
    region_histograms,
)
from binmap_tf.merge_scorer import MergeScorer, average_scorers, load_scorer, resolve_scorer, shipped_scorer
from binmap_tf.merge_training import TrainingImage, collect_pairs, node_segment_counts, pair_labels
from binmap_tf.methods import DEFAULT_VALUES, parse_method
from binmap_tf.segment import segment_with_map
from binmap_tf.superpixels import compute_superpixels, egs
from tests.test_hierarchy import random_map


def random_scorer(n_features: int, codes: bool = True, seed: int = 0) -> MergeScorer:
    """An MLP with random weights (structure of a trained one)."""
    rng = np.random.default_rng(seed)
    shapes = [(n_features, 16), (16, 1)]
    return MergeScorer(np.zeros(n_features), np.ones(n_features), [rng.standard_normal(s) * 0.3 for s in shapes],
                       [np.zeros(s[1]) for s in shapes], codes=codes, n_bits=8 if codes else 0,
                       info={"name": "random", "threshold": 0.5})


def test_pair_labels_average_the_annotators_majorities():
    # Four stripes of widths 3, 2, 2, 2. Annotator A: {0, 1} | {2, 3}; annotator B: {0} | {1, 2, 3}.
    widths = [3, 2, 2, 2]
    superpixels = np.repeat(np.arange(4), widths)[None, :].repeat(2, axis=0).astype(np.int32)
    annotator_a = np.repeat([1, 1, 2, 2], widths)[None, :].repeat(2, axis=0)
    annotator_b = np.repeat([1, 2, 2, 2], widths)[None, :].repeat(2, axis=0)
    # Merge 0 joins superpixels 0 and 1 into node 4 (majority: A's segment 1, B's segment 1, 6 pixels of 10).
    tree = MergeTree(superpixels, np.array([[0, 1], [2, 3], [4, 5]]), np.array([0.1, 0.2, 0.3]),
                     np.array([[0, 1], [1, 2], [2, 3]]), np.array([0.1, 0.3, 0.2]))
    assert node_segment_counts(tree, annotator_b)[4].tolist() == [6, 4]
    first, second = np.array([0, 1, 2, 4, 0]), np.array([1, 2, 3, 2, 5])
    labels = pair_labels(tree, [annotator_a, annotator_b], first, second)
    # (0,1): A same, B differ; (1,2): A differ, B same; (2,3): both same; (4,2): both differ; (0,5): both differ.
    np.testing.assert_allclose(labels, [0.5, 0.5, 0.0, 1.0, 1.0])


def test_features_are_symmetric_and_named():
    rng = np.random.default_rng(1)
    m, k = 5, 8
    area = rng.uniform(10, 100, (2, m))
    votes = rng.uniform(0, 1, (2, m, k)) * area[..., None]
    lab = rng.uniform(0, 50, (2, m, 3)) * area[..., None]
    histogram = rng.integers(0, 5, (2, m, 40)).astype(float)
    border = np.column_stack([rng.uniform(1, 5, m), np.full(m, 10.0), rng.integers(0, 3, (m, EDGE_BINS))])
    assert border.shape[1] == BORDER_WIDTH
    features = pair_features(area, votes, lab, histogram, border, 1e4)
    swapped = pair_features(area[::-1], votes[::-1], lab[::-1], histogram[::-1], border, 1e4)
    assert features.shape == (m, len(feature_names(k)))
    np.testing.assert_allclose(features, swapped)
    without = pair_features(area, votes, lab, histogram, border, 1e4, codes=False)
    np.testing.assert_allclose(without, features[:, 1 + k:])


def test_features_do_not_change_with_image_size():
    """The same pair in an image twice as wide and high: areas x4, border pixel pairs x2."""
    rng = np.random.default_rng(2)
    m = 4
    area = rng.uniform(10, 100, (2, m))
    votes = rng.uniform(0, 1, (2, m, 8)) * area[..., None]
    lab = rng.uniform(0, 50, (2, m, 3)) * area[..., None]
    histogram = rng.integers(1, 5, (2, m, 40)).astype(float)
    border = np.column_stack([rng.uniform(1, 5, m), np.full(m, 10.0), rng.integers(0, 3, (m, EDGE_BINS))])
    small = pair_features(area, votes, lab, histogram, border, 1e4)
    large = pair_features(4 * area, 4 * votes, 4 * lab, 4 * histogram, 2 * border, 4e4)
    np.testing.assert_allclose(large, small, atol=1e-12)


def test_averaged_scorers_give_the_mean_logit():
    rng = np.random.default_rng(3)
    mean, std = rng.standard_normal(12), rng.uniform(0.5, 2, 12)  # shared: fitted on the same pairs
    members = [dataclasses.replace(random_scorer(12, codes=False, seed=seed), mean=mean, std=std) for seed in range(3)]
    features = rng.standard_normal((9, 12))
    np.testing.assert_allclose(average_scorers(members).logits(features),
                               np.mean([member.logits(features) for member in members], axis=0), atol=1e-12)
    with pytest.raises(ValueError, match="share standardisation"):
        average_scorers([members[0], random_scorer(12, codes=False)])


def test_histogram_quantiles_of_a_uniform_histogram():
    np.testing.assert_allclose(histogram_quantiles(np.ones((1, 4)), (0.25, 0.5, 1.0)), [[0.25, 0.5, 1.0]])


@pytest.fixture(scope="module")
def scene():
    image = data.astronaut()[::2, ::2]
    return image, egs(image, scale=50), random_map(image)


def test_region_histograms_in_row_bands_equal_one_pass(scene):
    """Bands of 7 rows (each with rows of context for the texture codes) give the sums of one pass."""
    image, superpixels, _ = scene
    n = int(superpixels.max()) + 1
    (lab, histogram), (lab_banded, histogram_banded) = (
        region_histograms(image, superpixels, n, band_pixels=pixels) for pixels in (image.size, 7 * image.shape[1]))
    np.testing.assert_array_equal(histogram_banded, histogram)
    np.testing.assert_allclose(lab_banded, lab, rtol=1e-12)
    assert histogram.sum() == 4 * superpixels.size  # 3 colour channels + 1 texture code per pixel


@pytest.mark.parametrize("codes", [True, False])
def test_learned_hierarchy_is_an_ultrametric_with_nested_cuts(scene, codes):
    image, superpixels, binary_map = scene
    scorer = random_scorer(len(feature_names(8, codes)), codes)
    tree = build_hierarchy(image, superpixels, binary_map, scorer=scorer)
    n = tree.n_superpixels
    assert len(tree.children) == n - 1
    node_height = np.concatenate([np.zeros(n), tree.heights])
    for index, (a, b) in enumerate(tree.children):
        assert tree.heights[index] >= max(node_height[a], node_height[b])
    assert ((tree.heights >= 0) & (tree.heights <= 1)).all()
    previous = None
    for threshold in (0.1, 0.3, 0.5, 0.7, 0.9):
        labels = tree.cut(threshold=threshold)
        if previous is not None:  # every region of the finer cut lies inside one region of the coarser
            pairs = np.unique(np.stack([previous.ravel(), labels.ravel()], axis=1), axis=0)
            assert len(np.unique(pairs[:, 0])) == len(pairs)
        previous = labels


def test_segment_with_map_takes_a_scorer(scene):
    image, _, binary_map = scene
    scorer = random_scorer(len(feature_names(8)))
    result = segment_with_map(image, binary_map, merge="hierarchy", scorer=scorer, scale=50)
    assert result.options["scorer"] == "random" and result.options["cut"] == {"threshold": 0.5}
    np.testing.assert_array_equal(result.labels, result.hierarchy.cut(threshold=0.5))
    with pytest.raises(ValueError, match="not both"):
        segment_with_map(image, binary_map, merge="hierarchy", scorer=scorer, weights=MergeWeights(edges=1))
    with pytest.raises(ValueError, match="belongs to a merge hierarchy"):
        segment_with_map(image, binary_map, merge="adjacent", scorer=scorer)


def test_scorer_round_trips_through_npz(tmp_path):
    scorer = random_scorer(12, codes=False)
    scorer.save(tmp_path / "s.npz")
    loaded = load_scorer(tmp_path / "s.npz")
    features = np.random.default_rng(0).standard_normal((7, 12))
    np.testing.assert_allclose(loaded(features), scorer(features))
    assert loaded.info == scorer.info and not loaded.codes


def test_logging_pairs_keeps_the_hand_set_merge_order(scene):
    """Round 1 of training logs pairs while the hand-set cues (with their size prior) order the merges:
    the tree must be the hand-set hierarchy's own."""
    image, superpixels, binary_map = scene
    log: list = []
    logged = build_hierarchy(image, superpixels, binary_map, DEFAULT_WEIGHTS, pair_log=log)
    plain = build_hierarchy(image, superpixels, binary_map, DEFAULT_WEIGHTS)
    np.testing.assert_array_equal(logged.children, plain.children)
    np.testing.assert_allclose(logged.heights, plain.heights)
    assert sum(len(entry[0]) for entry in log) > len(plain.children)  # refreshes log the live pairs again


def test_collected_pairs_cover_every_level(scene):
    image, superpixels, binary_map = scene
    annotation = (np.arange(image.shape[1])[None, :] >= image.shape[1] // 2).repeat(image.shape[0], 0).astype(int) + 1
    pairs = collect_pairs([TrainingImage(image, superpixels, binary_map, [annotation])],
                          weights=MergeWeights(edges=1, colour=1), max_pairs=100000)
    # From the first level (superpixels) to the last merge (a region of at least half the image).
    names = feature_names(8)
    smaller, larger = (np.exp(pairs.features[:, names.index(name)]) for name in ("log_area_min", "log_area_max"))
    assert smaller.min() * superpixels.size == pytest.approx(np.bincount(superpixels.ravel()).min())
    assert larger.max() >= 0.5
    assert set(np.unique(pairs.labels)) <= {0.0, 1.0} and 0 < pairs.labels.mean() < 1


def test_learned_methods_use_the_shipped_scorers():
    for name, codes in (("binmap-learned", True), ("learned-no-codes", False)):
        method = parse_method(name)
        assert method.hierarchical and method.parameter_key == name
        scorer = shipped_scorer(method.scorer)
        assert scorer.codes == codes and DEFAULT_VALUES[name] == scorer.threshold
        assert 0 < scorer.threshold < 1


@pytest.mark.slow
def test_shipped_scorer_gives_its_recorded_val_figure():
    from binmap_tf.datasets import load_dataset
    from binmap_tf.merge_training import validate
    from binmap_tf.model import BinaryMapper

    scorer = shipped_scorer("learned")
    check = scorer.info["check"]
    dataset = load_dataset("bsds500", "val", limit=len(check["images"]))
    assert [sample.id for sample in dataset] == check["images"]
    mapper = BinaryMapper(edges=True)
    level = dict(scorer.info["first_level"])
    method = level.pop("superpixels")
    items = []
    for sample in dataset:
        image = sample.load_image()
        binary_map = mapper(image)
        superpixels = compute_superpixels(image, method, edges=binary_map.edges, **level)
        items.append(TrainingImage(image, superpixels, binary_map, sample.load_ground_truths()))
    bench = validate(scorer, items, (check["threshold"],))
    assert bench.covering_per_threshold[0] == pytest.approx(check["covering"], abs=0.01)


@pytest.mark.slow
def test_train_merge_runs_end_to_end(tmp_path):
    from binmap_tf.train_merge import main

    out = tmp_path / "scorer.npz"
    assert main(["--limit", "3", "--val-limit", "2", "--epochs", "1", "--rounds", "2", "--max-pairs", "500",
                 "--hidden", "8", "--members", "2", "--pair-weight", "sqrt-area", "--cache", str(tmp_path / "maps"),
                 "--out", str(out)]) == 0
    record = json.loads(out.with_suffix(".json").read_text())
    assert record["data"]["train_images"] == 3 and len(record["rounds"]) == 2
    assert record["settings"]["pair_weight"] == "sqrt-area"
    assert all(len(round_["best_val_loss"]) == 2 for round_ in record["rounds"])
    scorer = load_scorer(out)
    assert scorer.threshold == record["threshold"] and len(scorer.kernels) == 2
    assert scorer.kernels[0].shape[1] == 2 * 8  # two members side by side


def test_a_scorer_of_other_features_says_to_retrain(scene):
    image, superpixels, binary_map = scene
    scorer = random_scorer(len(feature_names(8)))
    older = dataclasses.replace(scorer, info={**scorer.info, "features": [*feature_names(8)[:-1], "log_regions"]})
    with pytest.raises(ValueError, match="other pair features.*retrain it with python -m binmap_tf.train_merge"):
        build_hierarchy(image, superpixels, binary_map, scorer=older)
    build_hierarchy(image, superpixels, binary_map,
                    scorer=dataclasses.replace(scorer, info={**scorer.info, "features": feature_names(8)}))


def test_a_scorer_refuses_maps_of_another_code_length(scene):
    image, superpixels, binary_map = scene
    scorer = random_scorer(len(feature_names(24)))
    scorer = MergeScorer(scorer.mean, scorer.std, scorer.kernels, scorer.biases, n_bits=24, info=scorer.info)
    with pytest.raises(ValueError, match="trained on 24-bit codes and the binary map has 8"):
        segment_with_map(image, binary_map, merge="hierarchy", scorer=scorer, scale=50)
    with pytest.raises(ValueError, match="trained on 24-bit codes and the binary map has 8"):
        build_hierarchy(image, superpixels, binary_map, scorer=scorer)  # the same check, called directly


def test_binmap_learned_takes_a_scorer_file(tmp_path):
    scorer = random_scorer(len(feature_names(8)))
    path = tmp_path / "scorer.npz"
    MergeScorer(scorer.mean, scorer.std, scorer.kernels, scorer.biases,
                info={**scorer.info, "first_level": {"superpixels": "egs", "scale": 100.0}}).save(path)
    method = parse_method("binmap-learned", scorer=str(path))
    assert method.scorer == str(path) and method.superpixels == "egs"
    assert resolve_scorer(str(path)) is resolve_scorer(str(path))  # one object: merge trees are cached by it
    assert parse_method("learned-no-codes", scorer=str(path)).scorer == "learned-no-codes"


def test_codes_ablation_gathers_val_test_and_msrc_figures(tmp_path):
    from benchmarks.codes_ablation import main as codes_ablation

    arguments = []
    for name, codes, bits, covering in (("no codes", False, 0, 0.60), ("ITQ 8", True, 8, 0.61), ("ITQ 24", True, 24, 0.59)):
        scorer = random_scorer(len(feature_names(bits, codes)), codes)
        figures = {key: covering for key in ("covering_ods", "covering_ois", "pri_ods", "pri_ois", "voi_ods", "voi_ois")}
        path = tmp_path / name / "scorer.npz"
        MergeScorer(scorer.mean, scorer.std, scorer.kernels, scorer.biases, codes=codes, n_bits=bits,
                    info={"threshold": 0.5, "val": figures}).save(path)
        method = "binmap-learned" if codes else "learned-no-codes"
        row = {"covering": covering, "seg_iou": 0.3, "pri": 0.8, "voi": 1.5, "mean_segments": 9.0}
        (tmp_path / name / "summary.json").write_text(json.dumps({method: row}))
        (tmp_path / name / "hierarchy.json").write_text(json.dumps({method: {**figures, "ods_value": 0.5}}))
        arguments += ["--variant", name, str(path), method, str(tmp_path / name), str(tmp_path / name)]
    assert codes_ablation(arguments + ["--out", str(tmp_path / "out")]) == 0
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["gain_over_no_codes"]["ITQ 8"]["test_covering_ods"] == pytest.approx(0.01)
    assert summary["gain_over_no_codes"]["ITQ 24"]["msrc_covering"] == pytest.approx(-0.01)
    assert summary["variants"]["ITQ 24"]["bits"] == 24 and summary["variants"]["ITQ 24"]["hashing"] == "ITQ"
    assert (tmp_path / "out" / "codes_ablation.png").stat().st_size > 10_000


def test_sqrt_area_pair_weights_grow_with_the_smaller_region():
    from binmap_tf.merge_training import PairSet, pair_weights

    names = feature_names(8)
    features = np.zeros((3, len(names)), np.float32)
    features[:, names.index("log_area_min")] = np.log([0.01, 0.04, 0.16])
    features[:, names.index("log_area_max")] = np.log(0.5)  # the larger region does not count
    pairs = PairSet(features, np.zeros(3, np.float32), np.zeros(3, int))
    weights = pair_weights(pairs, 8, "sqrt-area")
    np.testing.assert_allclose(weights, np.array([1, 2, 4]) / (7 / 3), rtol=1e-6)
    assert pair_weights(pairs, 8, "none") is None
    with pytest.raises(ValueError, match="pair weighting must be one of"):
        pair_weights(pairs, 8, "area")
