"""The learned merge scorer: training labels, features, the learned hierarchy, the shipped scorer, train_merge."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from skimage import data

from binmap_tf.evaluation.levels import LEVELS
from binmap_tf.evaluation.methods import DEFAULT_VALUES, parse_method, run_method
from binmap_tf.segmentation.hierarchy import (
    CUE_HEIGHT_SCALE,
    DEFAULT_WEIGHTS,
    MergeTree,
    MergeWeights,
    build_hierarchy,
)
from binmap_tf.segmentation.merge_features import (
    BORDER_WIDTH,
    EDGE_BINS,
    feature_names,
    histogram_quantiles,
    pair_features,
    region_histograms,
)
from binmap_tf.segmentation.merge_scorer import (
    MergeScorer,
    average_scorers,
    load_scorer,
    resolve_scorer,
    shipped_scorer,
)
from binmap_tf.segmentation.pipeline import StageCache, first_level, segment_with_map
from binmap_tf.segmentation.superpixels import compute_superpixels, egs
from binmap_tf.training.merge_training import (
    TrainingImage,
    collect_pairs,
    logged_pairs,
    node_segment_counts,
    pair_labels,
)
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


# The scene's map is of the image at its own size (segment brings a 256x256 image up to the working size).
NATIVE = {"working_pixels": None}


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


def test_cues_order_the_fine_merges_and_the_scorer_the_coarse_ones(scene):
    """With ``cues_until=N`` the merges down to N regions are the hand-set hierarchy's (heights scaled
    under the scorer's), and the coarser ones are the scorer's own hierarchy of that N-region cut."""
    image, superpixels, binary_map = scene
    scorer = random_scorer(len(feature_names(8)))
    switch = 12
    tree = build_hierarchy(image, superpixels, binary_map, scorer=scorer, cues_until=switch)
    cues = build_hierarchy(image, superpixels, binary_map)
    fine = tree.n_superpixels - switch
    np.testing.assert_array_equal(tree.children[:fine], cues.children[:fine])
    np.testing.assert_allclose(tree.heights[:fine], CUE_HEIGHT_SCALE * cues.heights[:fine])
    assert tree.heights[fine:].min() >= tree.heights[:fine].max()
    coarse = build_hierarchy(image, tree.cut(n_segments=switch), binary_map, scorer=scorer)
    for count in (switch, 7, 3, 1):
        np.testing.assert_array_equal(tree.cut(n_segments=count), coarse.cut(n_segments=count))
    for threshold in (0.3, 0.5, 0.7):  # above the cue merges' heights, thresholds cut the scorer's levels
        np.testing.assert_array_equal(tree.cut(threshold=threshold), coarse.cut(threshold=threshold))


def test_a_scorer_records_where_its_cues_stop(scene):
    image, superpixels, binary_map = scene
    plain = random_scorer(len(feature_names(8)))
    switched = dataclasses.replace(plain, info={**plain.info, "cues_until": 12})
    assert plain.cues_until == 0 and switched.cues_until == 12
    recorded = build_hierarchy(image, superpixels, binary_map, scorer=switched)
    given = build_hierarchy(image, superpixels, binary_map, scorer=plain, cues_until=12)
    np.testing.assert_array_equal(recorded.children, given.children)
    alone = build_hierarchy(image, superpixels, binary_map, scorer=switched, cues_until=0)
    assert not np.array_equal(alone.children, recorded.children)
    for bad in (-1, 2.5, True):
        with pytest.raises(ValueError, match="cues_until"):
            build_hierarchy(image, superpixels, binary_map, scorer=plain, cues_until=bad)


def test_naming_the_scorers_first_level_keeps_its_recorded_settings():
    """The demo's default and ``--superpixels watershed`` name the method the shipped scorer starts from:
    they get its recorded parameters (unless given), another method gets its own defaults."""
    scorer = random_scorer(len(feature_names(8)))
    scorer = dataclasses.replace(scorer, info={**scorer.info, "first_level": {"superpixels": "watershed", "h": 0.01}})
    assert first_level(None, {}, scorer) == ("watershed", {"h": 0.01})
    assert first_level("watershed", {}, scorer) == ("watershed", {"h": 0.01})
    assert first_level("watershed", {"h": 0.05}, scorer) == ("watershed", {"h": 0.05})
    assert first_level("egs", {"scale": 50}, scorer) == ("egs", {"scale": 50})
    assert first_level("watershed", {}, None) == ("watershed", {})


def test_segment_with_map_takes_a_scorer(scene):
    image, _, binary_map = scene
    scorer = random_scorer(len(feature_names(8)))
    result = segment_with_map(image, binary_map, merge="hierarchy", scorer=scorer, scale=50, **NATIVE)
    assert result.options["scorer"] == "random" and result.options["cut"] == {"threshold": 0.5}
    np.testing.assert_array_equal(result.labels, result.hierarchy.cut(threshold=0.5))
    with pytest.raises(ValueError, match="not both"):
        segment_with_map(image, binary_map, merge="hierarchy", scorer=scorer, weights=MergeWeights(edges=1), **NATIVE)
    with pytest.raises(ValueError, match="belongs to a merge hierarchy"):
        segment_with_map(image, binary_map, merge="adjacent", scorer=scorer, **NATIVE)


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
    item = TrainingImage(image, superpixels, binary_map, [])
    logged, features, _, _ = logged_pairs(item, None, DEFAULT_WEIGHTS, 10**9, np.random.default_rng(0))
    plain = build_hierarchy(image, superpixels, binary_map, DEFAULT_WEIGHTS)
    np.testing.assert_array_equal(logged.children, plain.children)
    np.testing.assert_allclose(logged.heights, plain.heights)
    assert len(features) > len(plain.children)  # refreshes log the live pairs again


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


@pytest.mark.parametrize("name", ["binmap-learned", "learned-no-codes"])
def test_learned_methods_at_their_default_cut_where_segment_does(scene, name):
    """evaluate's learned methods, at their default value, give the labels ``segment`` gives with
    the shipped scorer and its own default cut (same first level, same threshold)."""
    image, _, binary_map = scene
    method = parse_method(name)
    evaluated = run_method(method, DEFAULT_VALUES[name], image, binary_map, StageCache(), **NATIVE)
    segmented = segment_with_map(image, binary_map, scorer=method.scorer, **NATIVE)
    assert segmented.options["scorer"] == method.scorer and shipped_scorer(method.scorer).codes == (name == "binmap-learned")
    assert 1 < segmented.n_segments < segmented.n_superpixels
    np.testing.assert_array_equal(evaluated.labels, segmented.labels)


@pytest.mark.slow
def test_shipped_scorer_gives_its_recorded_val_figure():
    from binmap_tf.binary_map.model import BinaryMapper
    from binmap_tf.evaluation.datasets import load_dataset
    from binmap_tf.training.merge_training import validate

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
def test_shipped_training_recipe_runs_end_to_end(tmp_path, scene):
    """``binmap-train-merge`` with every recipe default (rounds, pairs, MLP widths, epochs, members), on
    2 train and 2 val images: the scorer it writes loads, matches its record and orders a hierarchy."""
    from binmap_tf.cli.train_merge import main, parse_args

    defaults = parse_args(["--out", "unused.npz"])
    out = tmp_path / "scorer.npz"
    assert main(["--limit", "2", "--val-limit", "2", "--cache", str(tmp_path / "maps"), "--out", str(out)]) == 0
    record = json.loads(out.with_suffix(".json").read_text())
    assert record["data"]["train_images"] == 2 and len(record["rounds"]) == defaults.rounds
    assert list(record["val"]["covering_per_level"]) == [str(level) for level in LEVELS]
    assert 0 < record["val"]["level_mean_covering"] <= 1
    scorer = load_scorer(out)
    assert scorer.threshold == record["threshold"] and 1 <= len(scorer.kernels) == len(defaults.hidden) + 1
    assert scorer.kernels[0].shape[1] == defaults.members * defaults.hidden[0]  # the members side by side
    image, _, binary_map = scene
    result = segment_with_map(image, binary_map, scorer=scorer, **NATIVE)
    assert 1 <= result.n_segments <= result.n_superpixels and result.options["scorer"] == scorer.name


def test_a_scorer_of_other_features_says_to_retrain(scene):
    image, superpixels, binary_map = scene
    scorer = random_scorer(len(feature_names(8)))
    older = dataclasses.replace(scorer, info={**scorer.info, "features": [*feature_names(8)[:-1], "log_regions"]})
    with pytest.raises(ValueError, match="other pair features.*retrain it with binmap-train-merge"):
        build_hierarchy(image, superpixels, binary_map, scorer=older)
    build_hierarchy(image, superpixels, binary_map,
                    scorer=dataclasses.replace(scorer, info={**scorer.info, "features": feature_names(8)}))


def test_a_scorer_refuses_maps_of_another_code_length(scene):
    image, superpixels, binary_map = scene
    scorer = random_scorer(len(feature_names(24)))
    scorer = MergeScorer(scorer.mean, scorer.std, scorer.kernels, scorer.biases, n_bits=24, info=scorer.info)
    with pytest.raises(ValueError, match="trained on 24-bit codes and the binary map has 8"):
        segment_with_map(image, binary_map, merge="hierarchy", scorer=scorer, scale=50, **NATIVE)
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
