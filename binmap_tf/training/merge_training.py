"""Training data, training and validation of the learned merge scorer (:mod:`binmap_tf.segmentation.merge_scorer`).

Pairs come from the greedy merge itself (:func:`binmap_tf.segmentation.hierarchy.build_hierarchy` with the
:class:`LoggingCriterion` here): every pair of regions it scores, at every level of the hierarchy, as regions
grow. Round 1 orders the merges by the hand-set cues, later rounds by the scorer of the round
before, so the scorer also sees the pairs its own merges produce.

A pair's label is soft: for each human annotation, whether the two regions' majority segments
differ, averaged over the image's annotators (4-9 on BSDS500). Region-by-segment pixel counts
are added up along the merge tree, as the merge adds its own sums.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from binmap_tf.binary_map.maps import BinaryMap
from binmap_tf.evaluation.levels import scores_at_thresholds
from binmap_tf.evaluation.metrics import BenchmarkResult, region_benchmark
from binmap_tf.segmentation.hierarchy import (
    CueCriterion,
    MergeTree,
    MergeWeights,
    PairFeatures,
    build_hierarchy,
    scorer_criterion,
)
from binmap_tf.segmentation.merge_features import feature_names
from binmap_tf.segmentation.merge_scorer import MergeScorer, average_scorers

# Cut thresholds scanned on val to choose the scorer's threshold (heights are probabilities).
THRESHOLDS = tuple(float(t) for t in np.round(np.arange(0.05, 0.951, 0.025), 3))


@dataclass
class TrainingImage:
    """What the merge needs of one image, with its human annotations."""

    image: np.ndarray
    superpixels: np.ndarray
    binary_map: BinaryMap
    ground_truths: list[np.ndarray]


@dataclass
class PairSet:
    """Features ``(m, F)`` (every column of :func:`feature_names`), soft labels ``(m,)``, and the image of each pair."""

    features: np.ndarray
    labels: np.ndarray
    image_index: np.ndarray

    @staticmethod
    def concatenate(sets: list[PairSet]) -> PairSet:
        return PairSet(np.concatenate([s.features for s in sets]), np.concatenate([s.labels for s in sets]),
                       np.concatenate([s.image_index for s in sets]))


def node_pixel_counts(tree: MergeTree, categories: np.ndarray, width: int) -> np.ndarray:
    """Pixels of every category (``categories``: ``(H, W)`` ints in ``0 .. width-1``) in every node of
    ``tree``, ``(nodes, width)``: counted per superpixel, then added up along the merge tree."""
    n = tree.n_superpixels
    counts = np.zeros((n + len(tree.children), width))
    counts[:n] = np.bincount(tree.superpixels.ravel().astype(np.int64) * width + categories.ravel(),
                             minlength=n * width).reshape(n, width)
    for index, (a, b) in enumerate(tree.children):
        counts[n + index] = counts[a] + counts[b]
    return counts


def node_segment_counts(tree: MergeTree, ground_truth: np.ndarray) -> np.ndarray:
    """Pixels of every ground-truth segment in every node of ``tree``, ``(nodes, segments)``."""
    segments = np.unique(ground_truth, return_inverse=True)[1].reshape(ground_truth.shape)
    return node_pixel_counts(tree, segments, int(segments.max()) + 1)


def pair_labels(tree: MergeTree, ground_truths: list[np.ndarray], first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """Soft label of each node pair: the fraction of annotations whose majority segments of the two differ."""
    differ = np.zeros(len(first))
    for ground_truth in ground_truths:
        majority = np.argmax(node_segment_counts(tree, ground_truth), axis=1)
        differ += majority[first] != majority[second]
    return differ / len(ground_truths)


@dataclass
class LoggingCriterion:
    """Orders the merges as ``inner`` does (the learned scorer's criterion, or the hand-set cues) and
    keeps every scored pair's full features (codes included) and node ids, at every level of the
    merge: the pairs training learns from."""

    inner: Callable
    features: PairFeatures
    log: list = field(default_factory=list)

    @property
    def depends_on_count(self) -> bool:
        return self.inner.depends_on_count

    @property
    def refresh_at(self) -> int:
        return self.inner.refresh_at

    def __call__(self, regions, first: np.ndarray, second: np.ndarray, border: np.ndarray, n_regions: int
                 ) -> np.ndarray:
        self.log.append((self.features(regions, first, second, border, n_regions), first.copy(), second.copy()))
        return self.inner(regions, first, second, border, n_regions)


def logged_pairs(item: TrainingImage, scorer: MergeScorer | None, weights: MergeWeights | None,
                 max_pairs: int, rng: np.random.Generator, cues_until: int = 0
                 ) -> tuple[MergeTree, np.ndarray, np.ndarray, np.ndarray]:
    """The merge tree of one greedy merge of ``item`` (ordered by ``scorer`` below ``cues_until``
    regions, else by the hand-set ``weights``) and the features and node ids ``first``, ``second`` of
    the pairs it scores (at most ``max_pairs``, drawn at random)."""
    logger: LoggingCriterion | None = None

    def criterion(features: PairFeatures, cues: CueCriterion) -> LoggingCriterion:
        nonlocal logger
        inner = cues if scorer is None else scorer_criterion(scorer, features, cues, cues_until)
        logger = LoggingCriterion(inner, features)
        return logger

    tree = build_hierarchy(item.image, item.superpixels, item.binary_map, weights, scorer=scorer, criterion=criterion)
    log = logger.log
    features = np.concatenate([entry[0] for entry in log])
    first, second = (np.concatenate([entry[i] for entry in log]) for i in (1, 2))
    if len(features) > max_pairs:
        keep = np.sort(rng.choice(len(features), max_pairs, replace=False))
        features, first, second = features[keep], first[keep], second[keep]
    return tree, features, first, second


def image_pairs(item: TrainingImage, scorer: MergeScorer | None, weights: MergeWeights | None,
                max_pairs: int, rng: np.random.Generator, cues_until: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Features and soft labels of the pairs one greedy merge of ``item`` scores (:func:`logged_pairs`)."""
    tree, features, first, second = logged_pairs(item, scorer, weights, max_pairs, rng, cues_until)
    return features, pair_labels(tree, item.ground_truths, first, second)


def collect_pairs(items: list[TrainingImage], scorer: MergeScorer | None = None, weights: MergeWeights | None = None,
                  max_pairs: int = 4000, seed: int = 0, cues_until: int = 0) -> PairSet:
    """:func:`image_pairs` of every image, merges ordered by ``scorer`` below ``cues_until`` regions
    (or the hand-set ``weights``)."""
    rng = np.random.default_rng(seed)
    sets = []
    for index, item in enumerate(items):
        features, labels = image_pairs(item, scorer, weights, max_pairs, rng, cues_until)
        sets.append(PairSet(features.astype(np.float32), labels.astype(np.float32), np.full(len(labels), index)))
    return PairSet.concatenate(sets)


def feature_columns(n_bits: int, codes: bool) -> np.ndarray:
    """Indices of the columns a scorer with or without code features reads from a :class:`PairSet`."""
    names = feature_names(n_bits, codes=True)
    chosen = set(feature_names(n_bits, codes=codes))
    return np.array([i for i, name in enumerate(names) if name in chosen])


def build_model(n_features: int, hidden: tuple[int, ...]):
    """The Keras MLP: standardised features -> ReLU dense layers -> one logit."""
    import keras

    inputs = keras.Input((n_features,), name="features")
    x = inputs
    for i, units in enumerate(hidden):
        x = keras.layers.Dense(units, activation="relu", name=f"dense{i}")(x)
    return keras.Model(inputs, keras.layers.Dense(1, name="logit")(x), name="merge_scorer")


def fit_scorer(train: PairSet, val: PairSet, codes: bool, n_bits: int, hidden: tuple[int, ...] = (64, 32),
               epochs: int = 30, batch_size: int = 512, learning_rate: float = 1e-3, patience: int = 4,
               seed: int = 0, verbose: int = 2) -> tuple[MergeScorer, dict]:
    """Train the MLP with ``model.fit`` on soft labels (binary cross-entropy on the logit, every
    pair counted once), early stopping on the val pairs' loss; return it as a numpy :class:`MergeScorer` and the history.
    (:func:`fit_ensemble` averages several.)"""
    import keras

    keras.utils.set_random_seed(seed)
    columns = feature_columns(n_bits, codes)
    x_train, x_val = train.features[:, columns], val.features[:, columns]
    mean = x_train.mean(axis=0)
    std = np.maximum(x_train.std(axis=0), 1e-6)
    model = build_model(len(columns), hidden)
    model.compile(optimizer=keras.optimizers.Adam(learning_rate),
                  loss=keras.losses.BinaryCrossentropy(from_logits=True))
    history = model.fit((x_train - mean) / std, train.labels[:, None], batch_size=batch_size, epochs=epochs,
                        validation_data=((x_val - mean) / std, val.labels[:, None]),
                        shuffle=True, verbose=verbose,
                        callbacks=[keras.callbacks.EarlyStopping(patience=patience, restore_best_weights=True)])
    scorer = scorer_from_model(model, mean, std, codes, n_bits)
    return scorer, {key: [float(v) for v in values] for key, values in history.history.items()}


def scorer_from_model(model, mean: np.ndarray, std: np.ndarray, codes: bool, n_bits: int) -> MergeScorer:
    """The numpy :class:`MergeScorer` of a trained Keras scorer: its Dense layers, in order, after the
    standardisation ``mean``, ``std`` of its inputs."""
    import keras

    dense = [layer for layer in model.layers if isinstance(layer, keras.layers.Dense)]
    kernels = [np.asarray(layer.kernel, np.float64) for layer in dense]
    biases = [np.asarray(layer.bias, np.float64) for layer in dense]
    return MergeScorer(np.asarray(mean, np.float64), np.asarray(std, np.float64), kernels, biases, codes=codes,
                       n_bits=n_bits if codes else 0)


def fit_ensemble(train: PairSet, val: PairSet, codes: bool, n_bits: int, members: int, seed: int = 0,
                 **options) -> tuple[MergeScorer, list[dict]]:
    """:func:`fit_scorer` with seeds ``seed, seed + 1, ...`` for each of ``members`` MLPs, averaged into
    one scorer (:func:`~binmap_tf.segmentation.merge_scorer.average_scorers`), and the members' histories.

    The training pairs of 200 images are many but correlated: a member's val loss is lowest
    within its first two epochs, and members differ by seed alone. Their average ranked merges better
    on BSDS500 val than any one (README, "Learned merging")."""
    fitted = [fit_scorer(train, val, codes, n_bits, seed=seed + index, **options) for index in range(members)]
    return average_scorers([scorer for scorer, _ in fitted]), [history for _, history in fitted]


def threshold_scores(scorer: MergeScorer, items: list[TrainingImage], thresholds: tuple[float, ...] = THRESHOLDS,
                     cues_until: int | None = None) -> list[tuple[MergeTree, list]]:
    """Each item's hierarchy under ``scorer`` (the cues ordering merges down to ``cues_until`` regions,
    by default the scorer's recorded value) and its :class:`~binmap_tf.evaluation.metrics.RegionScores`
    at every threshold."""
    scored = []
    for item in items:
        tree = build_hierarchy(item.image, item.superpixels, item.binary_map, scorer=scorer, cues_until=cues_until)
        scored.append((tree, scores_at_thresholds(tree, item.ground_truths, thresholds)[0]))
    return scored


def validate(scorer: MergeScorer, items: list[TrainingImage], thresholds: tuple[float, ...] = THRESHOLDS,
             cues_until: int | None = None) -> BenchmarkResult:
    """The benchmark's ODS / OIS figures of ``scorer``'s hierarchies on ``items`` over ``thresholds``."""
    scored = threshold_scores(scorer, items, thresholds, cues_until)
    return region_benchmark([scores for _, scores in scored], list(thresholds))


def load_training_images(dataset, cache, superpixels: str = "egs", **params) -> list[TrainingImage]:
    """Image, superpixels, binary map (from ``cache``, a :class:`~binmap_tf.evaluation.map_cache.BinaryMapCache`
    whose mapper gives edges) and annotations of every sample of ``dataset``."""
    from tqdm import tqdm

    from binmap_tf.segmentation.superpixels import compute_superpixels

    items = []
    for sample in tqdm(dataset, desc=f"maps and superpixels ({dataset.split})", unit="image"):
        image = sample.load_image()
        binary_map, _ = cache.get(sample.id, image)
        labels = compute_superpixels(image, superpixels, edges=binary_map.edges, **params)
        items.append(TrainingImage(image, labels, binary_map, sample.load_ground_truths()))
    return items
