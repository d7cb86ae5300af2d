"""The evaluation CLI end to end on a few real benchmark images."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from PIL import Image

from binmap_tf.cli.evaluate import main
from binmap_tf.evaluation.datasets import load_dataset
from binmap_tf.evaluation.methods import SWEEP_VALUES, parse_method
from binmap_tf.evaluation.metrics import region_scores


def test_method_names_parse_and_bad_ones_are_refused():
    assert parse_method("binmap-slic-ft").map_variant == "ft"
    assert parse_method("egs").map_variant is None
    with pytest.raises(ValueError, match="unknown method"):
        parse_method("binmap-watershed")


def test_evaluate_writes_summary_table_and_rescorable_labels(tmp_path):
    out = tmp_path / "eval"
    status = main(["--dataset", "bsds500", "--split", "test", "--limit", "2", "--workers", "1",
                   "--methods", "egs", "binmap-egs", "--out", str(out), "--save-labels",
                   "--cache", str(tmp_path / "cache")])
    assert status == 0
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary) == {"egs", "binmap-egs"}
    for row in summary.values():
        assert 0 < row["seg_iou"] < 1 and 0 < row["covering"] < 1 and row["n_images"] == 2
    # merging never adds segments
    assert summary["binmap-egs"]["mean_segments"] <= summary["egs"]["mean_segments"]
    assert "45.19" in (out / "table.md").read_text()
    rows = list(csv.DictReader((out / "per_image.csv").open()))
    assert len(rows) == 4
    assert len(list((tmp_path / "cache").rglob("*.npz"))) == 2
    # the saved labels re-score to the per-image figures
    samples = {sample.id: sample for sample in load_dataset("bsds500", "test", limit=2)}
    for row in rows:
        labels = np.asarray(Image.open(out / "labels" / row["method"] / f"{row['image_id']}.png"))
        scores = region_scores(labels, samples[row["image_id"]].load_ground_truths())
        assert scores.covering == pytest.approx(float(row["covering"]), abs=1e-6)
        assert scores.abo == pytest.approx(float(row["abo"]), abs=1e-6)


def test_sweep_writes_csv_and_figure(tmp_path):
    out = tmp_path / "sweep"
    assert main(["--dataset", "msrc", "--split", "all", "--limit", "2", "--workers", "2", "--methods", "egs",
                 "slic", "--sweep", "--out", str(out)]) == 0
    all_rows = list(csv.DictReader((out / "sweep.csv").open()))
    rows = [row for row in all_rows if row["method"] == "egs"]
    assert [float(row["value"]) for row in rows] == list(SWEEP_VALUES["egs"])  # holds the main value 100
    # SLIC's main value (500) is not on its grid: the sweep adds it, so the table has every method
    assert 500.0 in [float(row["value"]) for row in all_rows if row["method"] == "slic"]
    assert set(json.loads((out / "summary.json").read_text())) == {"egs", "slic"}
    counts = [float(row["mean_superpixels"]) for row in rows]
    assert counts == sorted(counts, reverse=True)  # larger EGS scale, fewer superpixels
    assert (out / "sweep.png").stat().st_size > 10_000


def test_ft_methods_use_the_shipped_layer_or_the_given_file(tmp_path, capsys):
    base = ["--limit", "1", "--workers", "1", "--methods", "binmap-egs", "binmap-egs-ft",
            "--cache", str(tmp_path / "cache")]
    assert main(base + ["--out", str(tmp_path / "shipped")]) == 0
    rows = list(csv.DictReader((tmp_path / "shipped" / "per_image.csv").open()))
    by_method = {row["method"]: row for row in rows}
    assert by_method["binmap-egs"]["n_segments"] != by_method["binmap-egs-ft"]["n_segments"]
    assert len({path.parent.parent for path in (tmp_path / "cache").rglob("*.npz")}) == 2  # two map caches
    with pytest.raises(SystemExit) as exit_info:  # a usage error, found before any model is built
        main(base + ["--out", str(tmp_path / "missing"), "--ft-hashing", str(tmp_path / "missing.npz")])
    assert exit_info.value.code == 2 and "missing.npz" in capsys.readouterr().err


def test_binmap_learned_runs_with_a_scorer_file_at_its_threshold(tmp_path, capsys):
    from binmap_tf.segmentation.merge_features import feature_names
    from binmap_tf.segmentation.merge_scorer import MergeScorer
    from tests.test_learned_merge import random_scorer

    scorer = random_scorer(len(feature_names(8)))
    path = tmp_path / "scorer.npz"
    MergeScorer(scorer.mean, scorer.std, scorer.kernels, scorer.biases,
                info={"name": "random", "threshold": 0.3, "hashing": "ITQ",
                      "first_level": {"superpixels": "watershed", "h": 0.05}}).save(path)
    base = ["--limit", "1", "--workers", "1", "--methods", "binmap-learned", "--scorer", str(path),
            "--cache", str(tmp_path / "cache")]
    assert main(base + ["--out", str(tmp_path / "run")]) == 0
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["binmap-learned"]["value"] == 0.3
    for extra, message in ((["--bits", "16"], "reads 8-bit codes of ITQ; pass --bits 8"),
                           (["--methods", "learned-no-codes"], "does not name")):
        with pytest.raises(SystemExit) as exit_info:  # usage errors, before any model is built
            main(base + extra + ["--out", str(tmp_path / "bad")])
        assert exit_info.value.code == 2 and message in capsys.readouterr().err
