"""experiments/codes_ablation.py gathers the codes ablation's figures from its records."""

from __future__ import annotations

import json

import pytest

from binmap_tf.segmentation.merge_features import feature_names
from binmap_tf.segmentation.merge_scorer import MergeScorer
from tests.test_learned_merge import random_scorer


def test_codes_ablation_gathers_val_test_and_msrc_figures(tmp_path):
    from experiments.codes_ablation import main as codes_ablation

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
