"""Quality of the denser ``vgg16-hed`` map (``conv4_3+conv5_3``, stride 8) beside the default
(``conv5_3``, stride 16): the same trunk, so the same CNN cost, with 4x the grid cells.

``python -m benchmarks.dense_map --hashing ITQ.npz --out FILE.json [--split val] [--limit 50]``
scores ``egs``, ``slic``, ``binmap-egs`` and ``binmap-slic`` with each map on BSDS500 through
:func:`binmap_tf.cli.evaluate.evaluate_image` (the evaluation CLI has no ``--features`` option).
Fit the dense hashing first with
``binmap-fit-itq --features conv4_3+conv5_3 --bits 8 --out DIR``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from binmap_tf.evaluation.methods import DEFAULT_VALUES, parse_method
from binmap_tf.evaluation.runner import (
    DEFAULT_METHODS,
    HostOptions,
    evaluate_image,
    settings_for,
    summarize_settings,
)

FEATURES = ("conv5_3", "conv4_3+conv5_3")


def score(features: str, hashing: Path | None, split: str, limit: int) -> dict:
    """Grid shapes and dataset figures of every default method with the ``features`` map
    (``hashing`` None: the shipped ITQ)."""
    from binmap_tf.binary_map.model import BinaryMapper
    from binmap_tf.evaluation.datasets import load_dataset

    mapper = BinaryMapper(features=features, hashing=hashing)
    settings = settings_for([parse_method(name) for name in DEFAULT_METHODS], sweep=False, values=DEFAULT_VALUES)
    options = HostOptions(hamming=0, merge="adjacent", labels_dir=None)
    results, grids = [], set()
    for sample in load_dataset("bsds500", split=split, limit=limit):
        start = time.perf_counter()
        binary_map = mapper(sample.load_image())
        seconds = time.perf_counter() - start
        grids.add(binary_map.grid_shape)
        results.extend(evaluate_image(sample, {"itq": binary_map}, {"itq": seconds}, settings, options))
    return {"grid_shapes": sorted(grids),
            "methods": {setting.method: row for setting, row in summarize_settings(results).items()}}


def main(argv: list[str] | None = None) -> int:
    from binmap_tf.common.files import write_json

    parser = argparse.ArgumentParser(prog="python -m benchmarks.dense_map", description=__doc__.split("\n\n")[0])
    parser.add_argument("--hashing", type=Path, required=True, help="ITQ .npz fitted on conv4_3+conv5_3 features")
    parser.add_argument("--out", type=Path, required=True, help="JSON file to write")
    parser.add_argument("--split", default="val", help="BSDS500 split (default: %(default)s)")
    parser.add_argument("--limit", type=int, default=50, help="first N images (default: %(default)s)")
    args = parser.parse_args(argv)
    results = {features: score(features, args.hashing if features != FEATURES[0] else None, args.split, args.limit)
               for features in FEATURES}
    write_json(args.out, {"split": args.split, "limit": args.limit, "results": results})
    print(f"{'features':16s} {'method':12s} {'Seg-IoU':>8s} {'covering':>8s} {'PRI':>6s} {'VoI':>6s} {'segments':>8s}")
    for features, result in results.items():
        for method, row in result["methods"].items():
            print(f"{features:16s} {method:12s} {100 * row['seg_iou']:8.2f} {row['covering']:8.3f} "
                  f"{row['pri']:6.3f} {row['voi']:6.3f} {row['mean_segments']:8.1f}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
