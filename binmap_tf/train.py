"""Fine-tune the hashing layer ``hconv8`` with ``model.fit``: the paper's future work.

``python -m binmap_tf.train --dataset bsds500 --split train --val-split val --bits 8 --epochs 20
--loss segment --out DIR`` keeps the backbone frozen and trains only hconv8, starting from ITQ:

1. the backbone's features of every train and validation image are computed once and cached
   on disk as float16 (or float32, ``--feature-dtype``; :mod:`binmap_tf.feature_cache`), so an
   epoch takes seconds on a CPU;
2. every human annotation is brought onto the feature grid: each cell gets the majority label
   of the pixels it codes for, i.e. the pixels :meth:`GridGeometry.pixel_to_cell` assigns to
   it, the same pixels whose superpixel votes it joins in segmentation; each epoch draws one
   of an image's annotations (BSDS500 has ~5) at random;
3. a ``tf.data`` pipeline batches features and cell labels (padding labelled 0, ignored);
4. the training model is ``features / s -> hconv8``, with ``s`` fixed (see
   :func:`feature_scale`) and only hconv8's kernel and bias trainable; :mod:`binmap_tf.losses`
   gives its loss (``segment``: same code inside a segment, different codes across its
   boundary; ``regions``: adjacent segments with different mean codes, as the learned merge
   compares regions; ``unsupervised``: ITQ quantization + bit balance + decorrelation);
5. ``model.fit`` runs with callbacks that score the *whole* pipeline (EGS superpixels merged by
   the current layer's bits) on the validation images, keep the best layer by validation
   covering (ITQ itself, "epoch 0", is the first candidate), stop early and log the history.

Outputs in ``DIR``: ``hashing_ft.npz`` (the best layer as :class:`~binmap_tf.hashing.ITQParams`,
usable wherever ``hashing=`` or ``--hashing``/``--ft-hashing`` is accepted), ``history.csv``
(Keras' ``CSVLogger``: ``epoch`` is 0-based, row ``e`` is after ``e + 1`` epochs),
``training.png`` (loss and validation Segmentation-IoU / covering per epoch) and
``train.json`` (settings, scale, ITQ and best validation figures, timings).
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass, field
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from tqdm import tqdm

from binmap_tf.backbones import Backbone, GridGeometry
from binmap_tf.binary_map import BinaryMap
from binmap_tf.datasets import Dataset
from binmap_tf.feature_cache import FEATURE_DTYPES, FeatureCache
from binmap_tf.files import atomic_path, write_json
from binmap_tf.hashing import ITQHashing, ITQParams, export_hashing
from binmap_tf.losses import LOSS_NAMES, make_loss
from binmap_tf.methods import DEFAULT_VALUES, parse_method, run_method
from binmap_tf.metrics import DatasetScores, region_scores, summarize
from binmap_tf.segment import StageCache

# The pipeline scored on the validation images: EGS at the paper's k, merged by the binary map.
VALIDATION_METHOD = parse_method("binmap-egs")
MONITORS = ("covering", "abo")


# ---------------------------------------------------------------------------------------------
# Data: cached features and ground truth on the feature grid
# ---------------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------------
# The training model and its export
# ---------------------------------------------------------------------------------------------


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
    tensor; :mod:`binmap_tf.losses` splits them.
    """
    features = keras.Input((None, None, params.pcs.shape[0]), name="features")
    rescaled = keras.layers.Rescaling(1.0 / scale, name="feature_scale")(features)
    start = ITQParams(mean=params.mean / scale, pcs=params.pcs, rotation=params.rotation)
    bits, logits = ITQHashing.from_itq(start, return_logits=True, name="hconv8")(rescaled)
    outputs = keras.layers.Concatenate(name="bits_logits")([bits, logits])
    return keras.Model(features, outputs, name="hconv8_training")


# ---------------------------------------------------------------------------------------------
# Validation of the full pipeline and the callbacks around it
# ---------------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    from binmap_tf.cli import add_dataset_arguments, add_model_arguments, check_training_splits

    parser = argparse.ArgumentParser(prog="python -m binmap_tf.train", description=__doc__.split("\n\n")[0])
    add_dataset_arguments(parser, split="train", split_help="training split (default: %(default)s)")
    parser.add_argument("--val-split", default="val", help="split that selects the epoch (default: %(default)s)")
    parser.add_argument("--val-limit", type=int, default=50,
                        help="validation images scored with the full pipeline (default: %(default)s)")
    parser.add_argument("--loss", choices=LOSS_NAMES, default="segment")
    parser.add_argument("--epochs", type=int, default=20, help="at most this many epochs (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=8, help="images per step (default: %(default)s)")
    parser.add_argument("--learning-rate", type=float, default=1e-3, help="Adam step (default: %(default)s)")
    parser.add_argument("--eval-every", type=int, default=1, help="epochs between validation runs (default: 1)")
    parser.add_argument("--patience", type=int, default=5, help="validation runs without improvement before stopping")
    parser.add_argument("--monitor", choices=MONITORS, default="covering",
                        help="validation figure that picks the epoch (default: %(default)s)")
    parser.add_argument("--margin", type=float, default=1.0,
                        help="segment: bits kept apart across boundaries; regions: bits between the mean codes of "
                             "adjacent segments (default: %(default)s)")
    parser.add_argument("--push-weight", type=float, default=1.0, help="segment, regions: weight of the hinge")
    parser.add_argument("--temperature", type=float, default=0.2, help="segment, regions: codes are tanh(logits / T)")
    parser.add_argument("--neighbours", type=int, choices=(4, 8), default=8, help="segment: grid neighbourhood")
    parser.add_argument("--balance-weight", type=float, default=0.1, help="weight of the bit-balance term")
    parser.add_argument("--decorrelation-weight", type=float, default=0.1, help="unsupervised: decorrelation weight")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cache", type=Path, default=None, help="feature cache (default: $BINMAP_TF_HOME/features)")
    parser.add_argument("--feature-dtype", choices=FEATURE_DTYPES, default="float16",
                        help="features cached as float16 (half the memory) or float32 (the cache "
                             "binmap_tf.feature_maps fills; default: %(default)s)")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    add_model_arguments(parser, runtime=False)
    args = parser.parse_args(argv)
    check_training_splits(parser, args, "the epoch")
    return args


def loss_options(args: argparse.Namespace) -> dict:
    """Keyword arguments of the chosen loss."""
    if args.loss in ("segment", "regions"):
        options = {"margin": args.margin, "push_weight": args.push_weight, "temperature": args.temperature,
                   "balance_weight": args.balance_weight}
        return {**options, "neighbours": args.neighbours} if args.loss == "segment" else options
    return {"balance_weight": args.balance_weight, "decorrelation_weight": args.decorrelation_weight}


def validation_images(dataset: Dataset, examples: list[GridExample]) -> list[ValidationImage]:
    """Image, annotations and the already loaded features of every validation sample."""
    return [ValidationImage(example.features, sample.load_image(), sample.load_ground_truths())
            for sample, example in zip(dataset, examples)]


def scores_dict(scores: DatasetScores) -> dict:
    return {"abo": scores.abo, "covering": scores.covering, "pri": scores.pri, "voi": scores.voi,
            "n_images": scores.n_images}


def main(argv: list[str] | None = None) -> int:
    from binmap_tf.backbones import build_backbone
    from binmap_tf.cli import feature_options, recorded_settings
    from binmap_tf.datasets import load_dataset
    from binmap_tf.model import resolve_hashing

    args = parse_args(argv)
    keras.utils.set_random_seed(args.seed)
    try:
        backbone = build_backbone(args.backbone, scale=args.scale, **feature_options(args))
        start = resolve_hashing(args.hashing, backbone, args.bits)
        train_set = load_dataset(args.dataset, args.split, root=args.data, limit=args.limit)
        val_set = load_dataset(args.dataset, args.val_split, root=args.data, limit=args.val_limit)
    except (FileNotFoundError, ValueError) as error:
        raise SystemExit(f"error: {error}") from None
    if start.bits != args.bits:
        raise SystemExit(f"error: the starting hashing has {start.bits} bits, not --bits {args.bits}")

    clock = time.perf_counter()
    train_examples, val_examples = (
        grid_examples(dataset, backbone, FeatureCache(backbone, f"{args.dataset}-{dataset.split}", args.cache,
                                                  args.feature_dtype))
        for dataset in (train_set, val_set))
    validation = PipelineValidation(validation_images(val_set, val_examples), backbone.geometry, backbone.scale,
                                    every=args.eval_every)
    feature_seconds = time.perf_counter() - clock

    scale = feature_scale(start, [e.features for e in train_examples])
    model = build_training_model(start, scale)
    model.compile(optimizer=keras.optimizers.Adam(args.learning_rate), loss=make_loss(args.loss, **loss_options(args)),
                  jit_compile=False)
    settings = recorded_settings(args)
    info = {"fine_tuned": True, "backbone": backbone.name, "options": backbone.options, "scale": backbone.scale,
            "start": Path(args.hashing).name if args.hashing else "fitted ITQ", "feature_scale": scale, "settings": settings,
            "train_images": len(train_set), "val_images": len(val_set)}
    checkpoint = BestHashingCheckpoint(args.out / "hashing_ft.npz", validation, args.monitor, info)

    clock = time.perf_counter()
    initial = validation.record_start(model)
    print(f"start ({info['start']}) on {len(val_set)} {args.val_split} images: covering {initial.covering:.4f}, "
          f"Segmentation-IoU {initial.abo:.4f}")
    history = model.fit(
        make_dataset(train_examples, args.batch_size, args.seed),
        validation_data=make_dataset(val_examples, args.batch_size, args.seed, shuffle=False),
        epochs=args.epochs, shuffle=False, verbose=2,  # make_dataset shuffles
        callbacks=[validation, checkpoint,
                   EvaluatedEarlyStopping(monitor=f"val_{args.monitor}", mode="max", patience=args.patience,
                                          baseline=getattr(initial, args.monitor)),
                   keras.callbacks.CSVLogger(str(args.out / "history.csv"))],
    )
    fit_seconds = time.perf_counter() - clock

    plot_history(history.history, validation.records, checkpoint.best_epoch, args.out / "training.png")
    best = dict(validation.records)[checkpoint.best_epoch]
    write_json(args.out / "train.json", {
        **info, "start_val": scores_dict(initial), "best_epoch": checkpoint.best_epoch,
        "best_val": scores_dict(best), "epochs_run": len(history.history["loss"]),
        "feature_seconds": round(feature_seconds, 1), "fit_seconds": round(fit_seconds, 1),
        "validation_seconds": round(validation.seconds, 1),
        "validation": [{"epochs_trained": epochs, **scores_dict(scores)} for epochs, scores in validation.records],
    })
    print(f"best: {checkpoint.best_epoch} epochs (0 = start), val covering {best.covering:.4f}, "
          f"Segmentation-IoU {best.abo:.4f}; wrote {args.out / 'hashing_ft.npz'} (features "
          f"{feature_seconds:.0f} s, fit {fit_seconds:.0f} s of which validation {validation.seconds:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
