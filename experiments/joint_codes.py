"""Codes learned for the merge: hconv8 and a scorer MLP fitted together with ``model.fit``.

The learned merge reads the codes only as region votes: for each bit, the fraction of a
region's pixels whose grid cell has it set (:func:`binmap_tf.segmentation.merge.bit_votes`), compared
between the two regions of a pair (:func:`binmap_tf.segmentation.merge_features.pair_features`). Those votes
are linear in the cells' bits, ``votes = fractions @ bits`` with ``fractions[node, c]`` the share
of the node's pixels whose nearest cell is ``c``, summed along the merge tree as the merge sums
its own. So the scorer's loss on the pairs the greedy merge meets (:mod:`binmap_tf.training.merge_training`)
reaches hconv8 through the straight-through sign, and the hashing layer is trained for the job
its codes do in the product, not for a proxy (same code inside a segment: :mod:`binmap_tf.training.losses`).

:func:`build_joint_model` is a functional Keras model from one image's cell features, node
fractions, pairs and their other features to the pairs' logits. In the forward pass the bits
are hard, so the trained layer's maps give exactly the votes it was trained on. The layer is
exported as :class:`~binmap_tf.binary_map.hashing.ITQParams` (:func:`binmap_tf.binary_map.hashing.export_hashing`), the
scorer as a :class:`~binmap_tf.segmentation.merge_scorer.MergeScorer`; the product's scorer is then trained
on the new layer's maps with the shipped recipe (``train_merge --hashing``), which is what the
codes ablation compares (README, "Learned merging").
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from binmap_tf.binary_map.hashing import ITQParams
from binmap_tf.segmentation.merge_scorer import MergeScorer
from binmap_tf.training.merge_training import (
    TrainingImage,
    build_model,
    logged_pairs,
    node_pixel_counts,
    pair_labels,
    scorer_from_model,
)


@dataclass
class JointExample:
    """The pairs of one greedy merge of one image, with what their code features are computed from.

    ``cells`` ``(C, d)``: backbone features of the grid cells (row-major, as ``BinaryMap.cell_index``
    numbers them); ``fractions`` ``(N, C)``: share of each logged node's pixels in each cell;
    ``first``, ``second`` ``(P,)``: the pairs' rows of ``fractions``; ``features`` ``(P, F)``:
    every pair feature but the codes; ``labels`` ``(P,)``: soft labels (:func:`~binmap_tf.training.merge_training.pair_labels`).
    """

    cells: np.ndarray
    fractions: np.ndarray
    first: np.ndarray
    second: np.ndarray
    features: np.ndarray
    labels: np.ndarray
    code_features: np.ndarray  # (P, 1 + k) the logged code columns, from the map's own bits


def joint_example(item: TrainingImage, cell_features: np.ndarray, scorer: MergeScorer | None, weights,
                  max_pairs: int, rng: np.random.Generator) -> JointExample:
    """:class:`JointExample` of one greedy merge of ``item`` whose backbone grid is ``cell_features`` ``(h, w, d)``."""
    tree, features, first, second = logged_pairs(item, scorer, weights, max_pairs, rng)
    grid = tuple(item.binary_map.grid_shape)
    if tuple(cell_features.shape[:2]) != grid:
        raise ValueError(f"features of grid {cell_features.shape[:2]} do not match the binary map's grid {grid}")
    n_cells = grid[0] * grid[1]
    counts = node_pixel_counts(tree, item.binary_map.cell_index(), n_cells)
    used, inverse = np.unique(np.concatenate([first, second]), return_inverse=True)
    fractions = counts[used] / counts[used].sum(axis=1, keepdims=True)
    n_code = 1 + item.binary_map.n_bits
    return JointExample(cells=np.asarray(cell_features, np.float32).reshape(n_cells, -1),  # shared, not copied
                        fractions=fractions.astype(np.float32),
                        first=inverse[:len(first)].astype(np.int32), second=inverse[len(first):].astype(np.int32),
                        features=features[:, n_code:].astype(np.float32),
                        labels=pair_labels(tree, item.ground_truths, first, second).astype(np.float32),
                        code_features=features[:, :n_code].astype(np.float32))


# Columns whose spread is below this are left unscaled: the code columns are computed in float32
# inside the model, and dividing a constant column's rounding noise (~1e-7) by a tiny spread
# would turn it into a signal.
CONSTANT_SPREAD = 1e-4


def standardisation(columns: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and spread ``(F,)`` of the training pairs' feature ``columns`` ``(P, F)`` (1 for near-constant ones)."""
    std = columns.std(axis=0)
    return columns.mean(axis=0), np.where(std < CONSTANT_SPREAD, 1.0, std)


def build_joint_model(params: ITQParams, scale: float, n_features: int, mean: np.ndarray, std: np.ndarray,
                      hidden: tuple[int, ...] = (64, 32)):
    """``{cells, fractions, first, second, features} -> logits (P, 1)``: hconv8 on the cells (features
    divided by the fixed ``scale``, as :func:`binmap_tf.training.hashing_fine_tune.build_training_model`), the nodes' votes,
    the pairs' code features (mean and per-bit absolute vote differences), standardised with
    ``mean``, ``std`` beside the ``n_features`` other features, then the scorer's MLP."""
    import keras
    from keras import ops

    from binmap_tf.binary_map.hashing import ITQHashing

    inputs = {"cells": keras.Input((params.pcs.shape[0],), name="cells"),
              "fractions": keras.Input((None,), name="fractions"),
              "first": keras.Input((), dtype="int32", name="first"),
              "second": keras.Input((), dtype="int32", name="second"),
              "features": keras.Input((n_features,), name="features")}
    rescaled = keras.layers.Rescaling(1.0 / scale, name="feature_scale")(inputs["cells"])
    start = ITQParams(mean=params.mean / scale, pcs=params.pcs, rotation=params.rotation)
    bits = ITQHashing.from_itq(start, name="hconv8")(rescaled)
    votes = ops.matmul(inputs["fractions"], bits)
    difference = ops.abs(ops.take(votes, inputs["first"], axis=0) - ops.take(votes, inputs["second"], axis=0))
    pair = ops.concatenate([ops.mean(difference, axis=1, keepdims=True), difference, inputs["features"]], axis=1)
    standardised = keras.layers.Normalization(mean=mean, variance=np.square(std), name="standardise")(pair)
    mlp = build_model(len(mean), hidden)
    return keras.Model(inputs, mlp(standardised), name="joint_merge_scorer")


def _chunks(examples: list[JointExample], size: int, rng: np.random.Generator | None):
    """``(inputs, labels)`` of at most ``size`` pairs at a time, all of one image; with ``rng`` the
    images come in a random order and each image's pairs are shuffled (the log holds them level
    by level, so its slices would be steps of one level each), else both in order."""
    for index in (range(len(examples)) if rng is None else rng.permutation(len(examples))):
        example = examples[index]
        order = np.arange(len(example.labels)) if rng is None else rng.permutation(len(example.labels))
        for start in range(0, len(order), size):
            rows = order[start:start + size]
            yield ({"cells": example.cells, "fractions": example.fractions, "first": example.first[rows],
                    "second": example.second[rows], "features": example.features[rows]},
                   example.labels[rows, None])


def make_joint_dataset(examples: list[JointExample], chunk: int, seed: int | None):
    """A ``tf.data`` pipeline of :func:`_chunks`; with ``seed`` in a new random order every epoch, else in order."""
    import tensorflow as tf

    rng = None if seed is None else np.random.default_rng(seed)
    dim, width = examples[0].cells.shape[1], examples[0].features.shape[1]
    signature = ({"cells": tf.TensorSpec((None, dim), tf.float32), "fractions": tf.TensorSpec((None, None), tf.float32),
                  "first": tf.TensorSpec((None,), tf.int32), "second": tf.TensorSpec((None,), tf.int32),
                  "features": tf.TensorSpec((None, width), tf.float32)},
                 tf.TensorSpec((None, 1), tf.float32))
    steps = sum(-(-len(e.labels) // chunk) for e in examples)
    data = tf.data.Dataset.from_generator(lambda: _chunks(examples, chunk, rng), output_signature=signature)
    return data.apply(tf.data.experimental.assert_cardinality(steps)).prefetch(2)


def fit_joint(train: list[JointExample], val: list[JointExample], params: ITQParams, scale: float,
              hidden: tuple[int, ...] = (64, 32), epochs: int = 30, chunk: int = 1024, learning_rate: float = 1e-3,
              patience: int = 4, seed: int = 0, verbose: int = 2) -> tuple[ITQParams, MergeScorer, dict]:
    """Fit hconv8 (from ``params``) and a scorer MLP together with ``model.fit`` (binary cross-entropy
    on the logit, Adam, early stopping on the val pairs' loss with the best weights restored).

    The standardisation is the training pairs' (code columns as the starting layer gives them).
    Returns the trained layer (acting on raw features), the scorer and the history."""
    import keras

    from binmap_tf.binary_map.hashing import export_hashing

    keras.utils.set_random_seed(seed)
    mean, std = standardisation(np.concatenate([np.concatenate([e.code_features, e.features], axis=1) for e in train]))
    model = build_joint_model(params, scale, train[0].features.shape[1], mean, std, hidden)
    model.compile(optimizer=keras.optimizers.Adam(learning_rate),
                  loss=keras.losses.BinaryCrossentropy(from_logits=True))
    history = model.fit(make_joint_dataset(train, chunk, seed), validation_data=make_joint_dataset(val, chunk, None),
                        epochs=epochs, shuffle=False, verbose=verbose,  # make_joint_dataset shuffles
                        callbacks=[keras.callbacks.EarlyStopping(patience=patience, restore_best_weights=True)])
    scorer = scorer_from_model(model.get_layer("merge_scorer"), mean, std, codes=True, n_bits=params.bits)
    return (export_hashing(model), scorer,
            {key: [float(v) for v in values] for key, values in history.history.items()})
