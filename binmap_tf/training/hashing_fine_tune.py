"""Fine-tuning the hashing layer hconv8 with ``model.fit`` (the paper's future work): the backbone's
cached features and the human segments on its grid, the training model, and callbacks that score
the whole pipeline on validation images. The command line is :mod:`binmap_tf.cli.train`."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from tqdm import tqdm

from binmap_tf.binary_map.backbones import Backbone, GridGeometry
from binmap_tf.binary_map.hashing import ITQHashing, ITQParams, export_hashing
from binmap_tf.binary_map.maps import BinaryMap
from binmap_tf.common.files import atomic_path
from binmap_tf.evaluation.datasets import Dataset
from binmap_tf.evaluation.methods import DEFAULT_VALUES, parse_method, run_method
from binmap_tf.evaluation.metrics import DatasetScores, region_scores, summarize
from binmap_tf.segmentation.pipeline import StageCache
from binmap_tf.training.feature_cache import FeatureCache
from binmap_tf.training.options import MONITORS

# The pipeline scored on the validation images: EGS at the paper's k, merged by the binary map.
VALIDATION_METHOD = parse_method("binmap-egs")


def cell_labels(ground_truth: np.ndarray, geometry: GridGeometry, scale: float,
                grid_shape: tuple[int, int]) -> np.ndarray:
    """Ground-truth label of every grid cell: the majority over the pixels that map to it.

    A pixel maps to its nearest cell through :meth:`GridGeometry.cell_index`, the function that ties
    the binary map to pixels (:meth:`BinaryMap.cell_index`). Returns ``(h, w)`` int32; a cell
    no pixel maps to, or whose pixels are mostly label 0 (void), gets 0 and is ignored.
    """
    grid_h, grid_w = grid_shape
    cells = geometry.cell_index(ground_truth.shape, grid_shape, scale).ravel()
    labels = ground_truth.ravel().astype(np.int64)
    n_labels = int(labels.max()) + 1
    counts = np.bincount(cells * n_labels + labels, minlength=grid_h * grid_w * n_labels)
    return counts.reshape(grid_h * grid_w, n_labels).argmax(axis=1).reshape(grid_shape).astype(np.int32)


@dataclass(frozen=True)
class GridExample:
    """One training image on the feature grid: features ``(h, w, d)`` (float16 or float32) and the cell
    labels of each of its annotations ``(annotations, h, w)`` int32."""

    image_id: str
    features: np.ndarray
    labels: np.ndarray


def grid_examples(dataset: Dataset, backbone: Backbone, cache: FeatureCache) -> list[GridExample]:
    """Cached features and grid labels of every image of ``dataset`` (features computed if missing)."""
    examples = []
    for sample in tqdm(dataset, desc=f"{dataset.name}/{dataset.split} features", unit="image"):
        features = cache.get(sample)
        labels = [cell_labels(gt, backbone.geometry, backbone.scale, features.shape[:2])
                  for gt in sample.load_ground_truths()]
        examples.append(GridExample(sample.id, features, np.stack(labels)))
    return examples


def make_dataset(examples: list[GridExample], batch_size: int, seed: int, shuffle: bool = True) -> tf.data.Dataset:
    """Batches ``(features float32 (b, h, w, d), labels int32 (b, h, w))`` padded with label 0.

    With ``shuffle`` the image order and the annotation drawn for each image change every
    epoch (reproducibly from ``seed``); without, every pass yields the same batches.
    """
    dim = examples[0].features.shape[-1]
    signature = (tf.TensorSpec((None, None, dim), tf.as_dtype(examples[0].features.dtype)),
                 tf.TensorSpec((None, None, None), tf.int32))
    data = tf.data.Dataset.from_generator(lambda: ((e.features, e.labels) for e in examples),
                                          output_signature=signature)
    data = data.apply(tf.data.experimental.assert_cardinality(len(examples))).cache()
    if shuffle:
        data = data.shuffle(len(examples), seed=seed, reshuffle_each_iteration=True)
    draws = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=shuffle)
    data = tf.data.Dataset.zip(data, draws).map(_draw_annotation, num_parallel_calls=tf.data.AUTOTUNE)
    return data.padded_batch(batch_size, padding_values=(0.0, 0)).prefetch(tf.data.AUTOTUNE)


def _draw_annotation(example: tuple[tf.Tensor, tf.Tensor], draw: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Features as float32 and the annotation ``draw mod n`` of the image's ``n``."""
    features, labels = example
    index = tf.math.floormod(draw, tf.cast(tf.shape(labels)[0], tf.int64))
    return tf.cast(features, tf.float32), labels[index]


def feature_scale(params: ITQParams, features: list[np.ndarray]) -> float:
    """The scale ``s = sum z^2 / sum |z|`` of the projections ``z`` of every training cell
    (``features``: one ``(..., d)`` array per image).

    Dividing the logits by ``s`` changes no bit. ``s`` is the factor that best fits the scaled
    projections to their signs (``argmin_s ||sign(z) - z / s||^2``), so the unsupervised loss
    starts where ITQ left it (ITQ's rotation minimises it over rotations, ``s`` over scales),
    and typical cells fall in the straight-through window ``|logit| <= 1`` where gradients
    pass (raw conv5_3 projections are ~50 on average).
    """
    projected = np.concatenate([params.project(f.reshape(-1, f.shape[-1]).astype(np.float32)) for f in features])
    return float(np.sum(np.square(projected, dtype=np.float64)) / np.sum(np.abs(projected)))


def build_training_model(params: ITQParams, scale: float) -> keras.Model:
    """``features (b, h, w, d) -> (b, h, w, 2k)``: hconv8's straight-through bits, then its logits.

    The features are divided by ``scale`` first (a fixed ``Rescaling``) and hconv8 starts as
    ``params`` on the rescaled features, so the initial bits are ``params``' bits and the kernel
    keeps the size of ITQ's orthonormal ``W R`` (a step size that suits Adam). hconv8 is the
    only layer with weights. The two outputs are concatenated because a Keras loss sees one
    tensor; :mod:`binmap_tf.training.losses` splits them.
    """
    features = keras.Input((None, None, params.pcs.shape[0]), name="features")
    rescaled = keras.layers.Rescaling(1.0 / scale, name="feature_scale")(features)
    start = ITQParams(mean=params.mean / scale, pcs=params.pcs, rotation=params.rotation)
    bits, logits = ITQHashing.from_itq(start, return_logits=True, name="hconv8")(rescaled)
    outputs = keras.layers.Concatenate(name="bits_logits")([bits, logits])
    return keras.Model(features, outputs, name="hconv8_training")


@dataclass
class ValidationImage:
    """A validation image with what scoring needs; ``stages`` keeps its EGS labels across epochs."""

    features: np.ndarray
    image: np.ndarray
    ground_truths: list[np.ndarray]
    stages: StageCache = field(default_factory=StageCache)


class PipelineValidation(keras.callbacks.Callback):
    """Scores the full segmentation pipeline with the current hconv8 on validation images.

    Every ``every`` epochs (and on the first and last) the validation images are segmented
    as ``binmap-egs`` does (EGS superpixels, computed once and cached, merged where the current
    layer's codes are equal) and ``val_abo``, ``val_covering``, ``val_pri``, ``val_voi`` are
    added to the epoch logs, so callbacks after this one (checkpoint, early stopping, CSV
    logger) see them. ``records`` keeps ``(epochs trained, scores)``, 0 being the start.
    """

    def __init__(self, images: list[ValidationImage], geometry: GridGeometry, scale: float, every: int = 1) -> None:
        super().__init__()
        if every < 1:
            raise ValueError(f"every must be >= 1, got {every}")
        self.images = images
        self.geometry = geometry
        self.scale = scale
        self.every = every
        self.records: list[tuple[int, DatasetScores]] = []
        self.seconds = 0.0

    def evaluate(self, model: keras.Model) -> DatasetScores:
        """Dataset scores of the pipeline with ``model``'s current bits on the validation images."""
        clock = time.perf_counter()
        scores = []
        for item in self.images:
            output = np.asarray(model(item.features[None].astype(np.float32), training=False))[0]
            k = output.shape[-1] // 2
            binary_map = BinaryMap(bits=np.rint(output[..., :k]).astype(np.uint8), logits=output[..., k:],
                                   geometry=self.geometry, scale=self.scale, image_shape=item.image.shape[:2])
            labels = run_method(VALIDATION_METHOD, DEFAULT_VALUES["egs"], item.image, binary_map,
                                item.stages).labels
            scores.append(region_scores(labels, item.ground_truths))
        self.seconds += time.perf_counter() - clock
        return summarize(scores)

    def record_start(self, model: keras.Model) -> DatasetScores:
        """Scores of the starting layer (ITQ), computed once and recorded as 0 epochs trained."""
        if not self.records:
            self.records.append((0, self.evaluate(model)))
        return self.records[0][1]

    def on_train_begin(self, logs: dict | None = None) -> None:
        self.record_start(self.model)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if epoch % self.every and epoch + 1 != self.params.get("epochs"):
            return
        scores = self.evaluate(self.model)
        self.records.append((epoch + 1, scores))
        if logs is not None:
            logs.update(val_abo=scores.abo, val_covering=scores.covering, val_pri=scores.pri, val_voi=scores.voi)


class BestHashingCheckpoint(keras.callbacks.Callback):
    """Writes hconv8 as an ``ITQParams`` ``.npz`` whenever the monitored validation figure improves.

    The starting layer is written first and is the value to beat, so the file always exists and
    holds ITQ itself when no epoch improves on it. ``best_epoch`` counts epochs trained (0: ITQ).
    """

    def __init__(self, path: Path, validation: PipelineValidation, monitor: str = "covering",
                 info: dict | None = None) -> None:
        super().__init__()
        if monitor not in MONITORS:
            raise ValueError(f"monitor must be one of {MONITORS}, got {monitor!r}")
        self.path = Path(path)
        self.validation = validation
        self.monitor = monitor
        self.info = dict(info or {})
        self.best = -np.inf
        self.best_epoch = -1

    def _save(self, epochs: int, value: float) -> None:
        self.best, self.best_epoch = value, epochs
        info = {**self.info, "epochs_trained": epochs, f"val_{self.monitor}": value}
        export_hashing(self.model, info).save(self.path)

    def on_train_begin(self, logs: dict | None = None) -> None:
        self._save(0, getattr(self.validation.record_start(self.model), self.monitor))

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        value = (logs or {}).get(f"val_{self.monitor}")
        if value is not None and value > self.best:
            self._save(epoch + 1, float(value))


class EvaluatedEarlyStopping(keras.callbacks.EarlyStopping):
    """``EarlyStopping`` that skips epochs without the monitored value (validation every few
    epochs), so ``patience`` counts validation runs."""

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if logs and self.monitor in logs:
            super().on_epoch_end(epoch, logs)


def plot_history(history: dict[str, list[float]], records: list[tuple[int, DatasetScores]], best_epoch: int,
                 path: Path) -> None:
    """``training.png``: training/validation loss, and validation Segmentation-IoU and covering
    with the kept epoch marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (loss_axis, score_axis) = plt.subplots(1, 2, figsize=(10, 4), constrained_layout=True)
    epochs = np.arange(1, len(history["loss"]) + 1)
    loss_axis.plot(epochs, history["loss"], "o-", label="train")
    if "val_loss" in history:
        loss_axis.plot(epochs, history["val_loss"], "s--", label="validation")
    loss_axis.set(xlabel="epoch", ylabel="loss", title="hconv8 loss")
    loss_axis.legend()
    evaluated = [epoch for epoch, _ in records]
    for name, label in (("abo", "Segmentation-IoU (ABO)"), ("covering", "covering")):
        score_axis.plot(evaluated, [getattr(scores, name) for _, scores in records], "o-", label=label)
    score_axis.axvline(best_epoch, color="grey", linestyle=":", label=f"kept ({best_epoch})")
    score_axis.set(xlabel="epochs trained (0 = ITQ)", ylabel="score", title="validation, binmap-egs")
    score_axis.legend()
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=100)
    plt.close(figure)


def validation_images(dataset: Dataset, examples: list[GridExample]) -> list[ValidationImage]:
    """Image, annotations and the already loaded features of every validation sample."""
    return [ValidationImage(example.features, sample.load_image(), sample.load_ground_truths())
            for sample, example in zip(dataset, examples)]


def scores_dict(scores: DatasetScores) -> dict:
    return {"abo": scores.abo, "covering": scores.covering, "pri": scores.pri, "voi": scores.voi,
            "n_images": scores.n_images}
