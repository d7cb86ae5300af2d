"""Benchmarks and performance options: FLOP counts, bf16 and compiled paths, the --quick run,
matched segment counts, label agreement between precisions.

Correctness only; no timing is asserted.
"""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest
from conftest import random_itq

from benchmarks.flops import count_flops
from benchmarks.levels import main as levels
from benchmarks.matched_counts import main as matched_counts
from benchmarks.precision_labels import differing_pixels
from benchmarks.run import main as run_benchmarks
from binmap_tf.binary_map.backbones import ImagePreprocessing, build_backbone
from binmap_tf.binary_map.backbones.alexnet.network import grid_shape
from binmap_tf.binary_map.model import BinaryMapper, build_binmap_model
from binmap_tf.common.images import load_image


def tiny_model() -> keras.Model:
    images = keras.Input(shape=(None, None, 3), dtype="uint8")
    x = ImagePreprocessing(scale=0.5)(images)  # 40x60 -> 20x30
    x = keras.layers.Conv2D(8, 3, padding="same", name="a")(x)  # 20x30x8
    x = keras.layers.MaxPooling2D(2)(x)  # 10x15
    x = keras.layers.Conv2D(6, 3, strides=2, groups=2, name="b")(x)  # valid: 4x7x6
    x = keras.layers.Conv2D(4, 3, dilation_rate=2, padding="same", name="c")(x)  # 4x7x4
    outputs = keras.layers.Dense(5, name="d")(x)
    return keras.Model(images, outputs)


def test_flops_of_a_tiny_model_equal_the_hand_count():
    layers = count_flops(tiny_model(), (40, 60), batch=2)
    expected = {
        "a": 2 * 2 * 20 * 30 * 3 * 3 * 3 * 8,
        "b": 2 * 2 * 4 * 7 * 3 * 3 * (8 // 2) * 6,
        "c": 2 * 2 * 4 * 7 * 3 * 3 * 6 * 4,
        "d": 2 * 2 * 4 * 7 * 4 * 5,
    }
    assert {layer.name: layer.flops for layer in layers} == expected
    assert [layer.output_shape for layer in layers] == [(2, 20, 30, 8), (2, 4, 7, 6), (2, 4, 7, 4), (2, 4, 7, 5)]


def test_flops_of_the_real_models_follow_their_grids():
    vgg = build_binmap_model(build_backbone("vgg16-hed", weights=None), hashing=random_itq(512, 8))
    layers = {layer.name: layer for layer in count_flops(vgg, (321, 481))}
    assert layers["conv5_3"].flops == 2 * 21 * 31 * 9 * 512 * 512
    assert layers["hconv8"].flops == 2 * 21 * 31 * 512 * 8
    alexnet = build_backbone("alexnet", weights=None).model  # scale 3.4, as in the paper
    layers = {layer.name: layer for layer in count_flops(alexnet, (321, 481))}
    assert layers["conv7"].output_shape[1:3] == grid_shape(321, 481) == (28, 45)
    assert layers["conv2"].flops == 2 * 135 * 203 * 25 * (96 // 2) * 256  # group=2


@pytest.fixture(scope="module")
def crop(bsds_image_path):
    return load_image(bsds_image_path)[:160, :240]


@pytest.fixture(scope="module")
def fp32_map(crop):
    return BinaryMapper(execution="eager")(crop)


@pytest.mark.parametrize("execution", ["graph", "xla"])
def test_compiled_paths_give_the_eager_map(crop, fp32_map, execution):
    binary_map = BinaryMapper(execution=execution)(crop)
    np.testing.assert_allclose(binary_map.logits, fp32_map.logits, rtol=1e-4, atol=1e-3)
    assert np.mean(binary_map.bits == fp32_map.bits) >= 0.999


def test_bf16_map_agrees_with_float32(crop, fp32_map):
    mapper = BinaryMapper(precision="bf16")
    binary_map = mapper(crop)
    assert binary_map.logits.dtype == np.float32 and binary_map.bits.shape == fp32_map.bits.shape
    assert np.mean(binary_map.bits == fp32_map.bits) >= 0.99
    assert mapper.model.get_layer("conv5_3").compute_dtype == "bfloat16"
    assert mapper.model.get_layer("hconv8").compute_dtype == "float32"
    assert keras.config.dtype_policy().name == "float32"  # the global policy is restored


def test_bf16_alexnet_keeps_lrn_in_float32_and_edges_stay_float32():
    alexnet = BinaryMapper("alexnet", hashing=random_itq(4096, 8), scale=1.0, weights=None, dilated=True,
                           precision="bf16")
    assert alexnet.model.get_layer("norm1").compute_dtype == "float32"
    assert alexnet(np.zeros((240, 240, 3), np.uint8)).bits.shape == (1, 1, 8)
    vgg = BinaryMapper(hashing=random_itq(512, 8), weights=None, edges=True, precision="bf16")
    assert vgg(np.zeros((64, 80, 3), np.uint8)).edges.dtype == np.float32


def test_performance_options_are_checked():
    with pytest.raises(ValueError, match="precision"):
        BinaryMapper(precision="fp16", weights=None)
    with pytest.raises(ValueError, match="execution"):
        BinaryMapper(execution="jit", weights=None)
    with pytest.raises(ValueError, match="build_backbone_at"):
        build_binmap_model(build_backbone("vgg16-hed", weights=None), hashing=random_itq(512, 8), precision="bf16")


def test_quick_benchmark_writes_every_section(tmp_path, capsys):
    out = tmp_path / "results.json"
    assert run_benchmarks(["--quick", "--out", str(out)]) == 0
    results = json.loads(out.read_text())
    assert {"machine", "matmul_peak", "cnn", "host", "end_to_end", "evaluate", "agreement"} <= set(results)
    assert {row["config"] for row in results["cnn"]} == {"vgg16-hed", "alexnet dilated native"}
    assert all(row["gflop_per_image"] > 0 and row["fraction_of_peak"] > 0 for row in results["cnn"])
    assert {row["cache"] for row in results["evaluate"]} == {"cold", "warm"}
    assert results["agreement"]["levers"][0]["bits_equal"] >= 0.99
    assert results["end_to_end"][0]["peak_rss_mib"] > 0
    assert "matmul peak" in capsys.readouterr().out


def test_matched_counts_cut_every_hierarchy_at_each_egs_count_and_fixed_count(tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["--dataset", "bsds500", "--split", "val", "--limit", "2", "--methods", "binmap-learned", "binmap-hier",
            "--egs-scales", "500", "1000", "--counts", "10", "--cache", str(tmp_path / "maps"), "--out", str(out)]
    assert matched_counts(argv) == 0
    assert (out / "matched_counts.md").is_file() and (out / "matched_counts.png").stat().st_size > 0
    results = json.loads((out / "matched_counts.json").read_text())
    assert results["settings"]["n_images"] == 2 and results["settings"]["levels"] == ["egs500", "egs1000", "10"]
    assert list(results["hierarchies"]) == ["binmap-learned", "binmap-hier"] and list(results["egs"]) == ["500", "1000"]
    for name, row in results["hierarchies"].items():
        for scale in ("500", "1000"):  # cut at EGS's own count on every image
            figures = row["levels"][f"egs{scale}"]
            assert figures["mean_segments"] == results["egs"][scale]["mean_segments"], name
            assert figures["matched_images"] == 2 and 0 < figures["covering"] <= 1 and 0 < figures["seg_iou"] <= 1
        assert row["levels"]["10"]["mean_segments"] == 10 and "ods" not in row
    assert results["egs"]["500"]["mean_segments"] > results["egs"]["1000"]["mean_segments"]
    printed = capsys.readouterr().out
    assert "| EGS k=500 count |" in printed and "| 10 segments | 10.0 | - |" in printed


def test_differing_pixels_ignore_renumbering_and_count_moved_pixels():
    reference = np.repeat(np.arange(4), 4).reshape(4, 4)  # rows 0..3
    assert differing_pixels(reference, 3 - reference) == 0.0  # same partition, other numbers
    moved = reference.copy()
    moved[0, :2] = 1  # two pixels of row 0 join row 1's segment
    assert differing_pixels(reference, moved) == 2 / 16
    assert differing_pixels(reference, np.zeros_like(reference)) == 12 / 16  # all in one: 3 rows lost


def test_levels_of_shrunk_images_have_their_own_maps(tmp_path):
    """``--shrink``: each image is a smaller photo, brought up to the working size for the CNN like MSRC-v2's,
    so its maps are kept apart from the full-size image's (they may have the same working shape)."""
    out, maps = tmp_path / "out", tmp_path / "maps"
    argv = ["--split", "val", "--limit", "1", "--shrink", "0.5", "--methods", "binmap-hier", "--egs-scales", "500",
            "--levels", "10", "--cache", str(maps), "--out", str(out)]
    assert levels(argv) == 0
    results = json.loads((out / "levels.json").read_text())
    assert results["settings"]["shrink"] == 0.5 and results["hierarchies"]["binmap-hier"]["levels"]["10"]["covering"] > 0
    assert [path.parent.name for path in maps.rglob("*.npz")] == ["bsds500-val-shrunk0.5"]
