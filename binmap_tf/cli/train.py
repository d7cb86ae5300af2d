"""Fine-tune the hashing layer ``hconv8`` with ``model.fit``: the paper's future work.

``binmap-train --dataset bsds500 --split train --val-split val --bits 8 --epochs 20
--loss segment --out DIR`` keeps the backbone frozen and trains only hconv8, starting from ITQ:

1. the backbone's features of every train and validation image are computed once and cached
   on disk as float16 (or float32, ``--feature-dtype``; :mod:`binmap_tf.training.feature_cache`), so an
   epoch takes seconds on a CPU;
2. every human annotation is brought onto the feature grid: each cell gets the majority label
   of the pixels it codes for, i.e. the pixels :meth:`GridGeometry.pixel_to_cell` assigns to
   it, the same pixels whose superpixel votes it joins in segmentation; each epoch draws one
   of an image's annotations (BSDS500 has ~5) at random;
3. a ``tf.data`` pipeline batches features and cell labels (padding labelled 0, ignored);
4. the training model is ``features / s -> hconv8``, with ``s`` fixed (see
   :func:`feature_scale`) and only hconv8's kernel and bias trainable; :mod:`binmap_tf.training.losses`
   gives its loss (``segment``: same code inside a segment, different codes across its
   boundary; ``regions``: adjacent segments with different mean codes, as the learned merge
   compares regions; ``unsupervised``: ITQ quantization + bit balance + decorrelation);
5. ``model.fit`` runs with callbacks that score the *whole* pipeline (EGS superpixels merged by
   the current layer's bits) on the validation images, keep the best layer by validation
   covering (ITQ itself, "epoch 0", is the first candidate), stop early and log the history.

Outputs in ``DIR``: ``hashing_ft.npz`` (the best layer as :class:`~binmap_tf.binary_map.hashing.ITQParams`,
usable wherever ``hashing=`` or ``--hashing``/``--ft-hashing`` is accepted), ``history.csv``
(Keras' ``CSVLogger``: ``epoch`` is 0-based, row ``e`` is after ``e + 1`` epochs),
``training.png`` (loss and validation Segmentation-IoU / covering per epoch) and
``train.json`` (settings, scale, ITQ and best validation figures, timings).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from binmap_tf.common.files import write_json
from binmap_tf.training.options import FEATURE_DTYPES, LOSS_NAMES, MONITORS


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    from binmap_tf.cli.common import add_dataset_arguments, add_model_arguments, check_training_splits

    parser = argparse.ArgumentParser(prog="binmap-train", description=__doc__.split("\n\n")[0])
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
                             "experiments.feature_maps fills; default: %(default)s)")
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


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # TensorFlow loads here, after the arguments, so that --help and usage errors answer at once.
    import keras

    from binmap_tf.binary_map.backbones import build_backbone
    from binmap_tf.binary_map.model import resolve_hashing
    from binmap_tf.cli.common import feature_options, recorded_settings
    from binmap_tf.evaluation.datasets import load_dataset
    from binmap_tf.training.feature_cache import FeatureCache
    from binmap_tf.training.hashing_fine_tune import (
        BestHashingCheckpoint,
        EvaluatedEarlyStopping,
        PipelineValidation,
        build_training_model,
        feature_scale,
        grid_examples,
        make_dataset,
        plot_history,
        scores_dict,
        validation_images,
    )
    from binmap_tf.training.losses import make_loss

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
