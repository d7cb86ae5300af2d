"""End-to-end segmentation: stages, timings, option checks, the real mapper and the CLI."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from PIL import Image

from binmap_tf.binary_map.backbones import GridGeometry
from binmap_tf.binary_map.maps import BinaryMap
from binmap_tf.cli.segment import main
from binmap_tf.common.images import load_image
from binmap_tf.segmentation.hierarchy import DEFAULT_THRESHOLD, DEFAULT_WEIGHTS
from binmap_tf.segmentation.merge_scorer import shipped_scorer
from binmap_tf.segmentation.pipeline import default_mapper, segment, segment_labels, segment_with_map

STAGES = ["superpixels", "assign", "merge", "total"]
# The merge logic is tested on small crops at their own size (the working size brings them up to
# 481x321: tests/test_resolution.py and tests/test_large_photo.py test that step).
NATIVE = {"working_pixels": None}


@pytest.fixture(scope="module")
def crop(bsds_image_path):
    """A 96x144 corner of a real BSDS500 image."""
    return load_image(bsds_image_path)[:96, :144]


def halves_map(image: np.ndarray, bits: int = 8, edges: bool = False) -> BinaryMap:
    """A binary map of 10-pixel cells: code 0...0 on the left half of the image, 1...1 on the right;
    with ``edges``, an edge map that is 1 on the column between the halves and 0 elsewhere."""
    height, width = image.shape[:2]
    grid_h, grid_w = -(-height // 10), -(-width // 10)
    right = (np.arange(grid_w) >= grid_w // 2).astype(np.uint8)
    grid = np.broadcast_to(right[None, :, None], (grid_h, grid_w, bits)).copy()
    edge_map = None
    if edges:
        edge_map = np.zeros((height, width), np.float32)
        edge_map[:, 10 * (grid_w // 2) - 1: 10 * (grid_w // 2) + 1] = 1.0
    return BinaryMap(bits=grid, logits=grid.astype(np.float32) - 0.5, scale=1.0, image_shape=(height, width),
                     geometry=GridGeometry(stride=10.0, offset=4.5, receptive_field=10.0), edges=edge_map)


def refuse(image):
    raise AssertionError("the mapper must not run")


@pytest.mark.parametrize("method", ["egs", "slic"])
@pytest.mark.parametrize("merge", ["adjacent", "global"])
def test_superpixels_merge_by_code(crop, method, merge):
    result = segment(crop, superpixels=method, merge=merge, binary_map=halves_map(crop), **NATIVE)
    assert result.labels.shape == crop.shape[:2] and result.labels.dtype == np.int32
    np.testing.assert_array_equal(result.labels, result.segment_of[result.superpixels])
    assert 2 <= result.n_segments < result.n_superpixels
    assert set(map(tuple, result.codes)) == {(0,) * 8, (1,) * 8}
    if merge == "global":  # two codes in the map: two segments
        assert result.n_segments == 2
    np.testing.assert_array_equal(result.codes[result.segment_of], result.superpixel_codes)


def test_one_code_gives_one_segment(crop):
    binary_map = halves_map(crop)
    binary_map.bits[:] = 1
    assert segment(crop, merge="adjacent", binary_map=binary_map, **NATIVE).n_segments == 1


def test_timings_options_and_summary(crop):
    result = segment(crop, lambda image: halves_map(image), superpixels="slic", n_segments=50, hamming=1,
                     merge="adjacent", **NATIVE)
    assert list(result.timings) == ["cnn"] + STAGES
    assert result.timings["total"] >= sum(result.timings[s] for s in ("cnn", "superpixels", "assign", "merge"))
    assert result.options == {"superpixels": "slic", "hamming": 1, "merge": "adjacent",
                              "superpixel_params": {"n_segments": 50, "compactness": 10.0, "sigma": 0.0}}
    summary = json.loads(json.dumps(result.summary()))
    assert summary["n_segments"] == result.n_segments and summary["bits"] == 8
    assert summary["grid_shape"] == [10, 15] and summary["image_shape"] == [96, 144]
    with_map = segment_with_map(crop, halves_map(crop), merge="adjacent", **NATIVE)
    assert list(with_map.timings) == STAGES  # no CNN ran
    np.testing.assert_array_equal(segment_labels(crop, binary_map=halves_map(crop), merge="adjacent", **NATIVE),
                                  with_map.labels)


def test_hierarchy_cuts_at_a_count_or_a_threshold(crop):
    binary_map = halves_map(crop, edges=True)
    for count in (1, 2, 7):
        result = segment(crop, merge="hierarchy", superpixels="egs", segments=count, binary_map=binary_map, **NATIVE)
        assert result.n_segments == count and result.options["cut"] == {"segments": count}
        np.testing.assert_array_equal(result.labels, result.hierarchy.cut(n_segments=count))
    coarse, fine = (segment(crop, merge="hierarchy", superpixels="egs", threshold=t, binary_map=binary_map, **NATIVE)
                    for t in (0.6, 0.2))
    assert coarse.n_segments <= fine.n_segments
    # A finer cut only splits the coarser one's segments: each fine segment lies in one coarse segment.
    pairs = np.unique(np.stack([fine.labels.ravel(), coarse.labels.ravel()]), axis=1)
    assert pairs.shape[1] == fine.n_segments
    hand_set = segment(crop, merge="hierarchy", scorer="hand-set", binary_map=binary_map, **NATIVE)
    assert hand_set.options["cut"] == {"threshold": DEFAULT_THRESHOLD} and hand_set.hierarchy is not None
    assert hand_set.options["weights"] == dataclasses.asdict(DEFAULT_WEIGHTS) and "scorer" not in hand_set.options


def test_default_is_the_learned_hierarchy_at_its_val_threshold(crop):
    """No options: the shipped learned scorer on its own first level, cut at its val-chosen height."""
    result = segment(crop, binary_map=halves_map(crop, edges=True), **NATIVE)
    learned = shipped_scorer("learned")
    assert result.options["merge"] == "hierarchy" and result.options["scorer"] == "learned"
    assert result.options["cut"] == {"threshold": learned.threshold}
    assert result.options["superpixels"] == learned.info["first_level"]["superpixels"] == "watershed"
    explicit = segment(crop, merge="hierarchy", scorer=learned, superpixels="watershed", threshold=learned.threshold,
                       binary_map=halves_map(crop, edges=True), **NATIVE)
    np.testing.assert_array_equal(result.labels, explicit.labels)


def test_learned_default_names_the_fix_for_a_map_it_cannot_read(crop):
    with pytest.raises(ValueError, match="merge='adjacent'"):  # no edge map (e.g. alexnet)
        segment(crop, superpixels="egs", binary_map=halves_map(crop), **NATIVE)
    with pytest.raises(ValueError, match="trained on 8-bit codes and the binary map has 24"):
        segment(crop, binary_map=halves_map(crop, bits=24, edges=True), **NATIVE)
    hand_set = segment(crop, scorer="hand-set", binary_map=halves_map(crop, bits=24, edges=True), **NATIVE)
    assert hand_set.n_segments >= 1


def test_hierarchy_needs_the_edge_map(crop):
    with pytest.raises(ValueError, match="edges=True"):
        segment(crop, merge="hierarchy", binary_map=halves_map(crop), **NATIVE)


@pytest.mark.parametrize("options, message", [
    ({"merge": "nearest"}, "merge mode"),
    ({"merge": "adjacent", "hamming": -1}, "hamming"),
    ({"merge": "adjacent", "segments": 5}, "merge='hierarchy'"),
    ({"merge": "adjacent", "scorer": "learned"}, "belongs to a merge hierarchy"),
    ({"scorer": "no-such-scorer"}, "hand-set"),
    ({"merge": "hierarchy", "hamming": 1}, "cut by threshold or segments"),
    ({"merge": "hierarchy", "segments": 5, "threshold": 0.5}, "not both"),
    ({"merge": "hierarchy", "segments": 0}, "segments must be"),
    ({"merge": "hierarchy", "threshold": 1.5}, r"in \[0, 1\]"),
    ({"superpixels": "quickshift"}, "superpixel method"),
    ({"superpixels": "egs", "n_segments": 10}, "egs superpixels take"),
])
def test_options_are_checked_before_the_cnn(crop, options, message):
    with pytest.raises(ValueError, match=message):
        segment(crop, refuse, **options)


def test_map_of_another_image_is_refused(crop):
    with pytest.raises(ValueError, match="computed for an image of"):
        segment(crop[:50], binary_map=halves_map(crop), **NATIVE)


@pytest.fixture(scope="module")
def mapper():
    """The default vgg16-hed 8-bit mapper with the fitted ITQ and HED's edges, built once per module."""
    return default_mapper(edges=True)


def test_real_mapper_end_to_end(crop, mapper):
    result = segment(crop, mapper)  # brought up to the working size, 321x481: a 21x31 grid
    assert result.binary_map.bits.shape == (21, 31, 8) and result.labels.shape == crop.shape[:2]
    assert 1 <= result.n_segments <= result.n_superpixels
    assert list(result.timings) == ["resize", "cnn", *STAGES[:-1], "refine", "total"]
    np.testing.assert_array_equal(result.labels, result.full_resolution(result.segment_of[result.superpixels]))


def test_real_mapper_grey_and_rgba(crop, mapper):
    rgba = np.concatenate([crop, np.full(crop.shape[:2] + (1,), 128, np.uint8)], axis=-1)
    np.testing.assert_array_equal(segment(rgba, mapper).labels, segment(crop, mapper).labels)
    grey = segment(crop.mean(axis=-1).astype(np.uint8), mapper)
    assert grey.labels.shape == crop.shape[:2] and grey.n_segments >= 1


def test_cli_writes_outputs_and_reports_bad_files(tmp_path, bsds_image_path, capsys):
    image = load_image(bsds_image_path)
    inputs = tmp_path / "in"
    inputs.mkdir()
    Image.fromarray(image[:80, :120]).convert("L").save(inputs / "grey.png")
    Image.fromarray(image[-80:, -120:]).convert("RGBA").save(inputs / "rgba.png")
    (inputs / "broken.jpg").write_bytes(b"not an image")
    out = tmp_path / "out"
    status = main([str(inputs), "--out", str(out), "--merge", "adjacent", "--hamming", "1", "--min-size", "10",
                   "--native"])
    assert status == 1
    assert "broken.jpg" in capsys.readouterr().err
    for stem in ("grey", "rgba"):
        labels = np.load(out / f"{stem}_labels.npy")
        assert labels.shape == (80, 120) and labels.dtype == np.int32
        with Image.open(out / f"{stem}_labels.png") as png:
            np.testing.assert_array_equal(np.asarray(png), labels)
        with Image.open(out / f"{stem}_overlay.png") as png:
            assert png.mode == "RGB" and png.size == (120, 80)
        with Image.open(out / f"{stem}_binary_map.png") as png:
            assert png.size == (120, 80)
        record = json.loads((out / f"{stem}.json").read_text())
        assert record["n_segments"] == labels.max() + 1 and record["backbone"] == "vgg16-hed"
        assert record["superpixel_params"]["min_size"] == 10 and record["hamming"] == 1
        assert set(record["timings"]) == {"cnn", *STAGES}
    assert not list(out.glob("broken*")) and not list(out.glob(".*"))


@pytest.mark.parametrize("argv, message", [
    (["--n-segments", "50"], "--n-segments is an option of --superpixels slic"),
    (["--superpixels", "slic", "--scale-egs", "300"], "--scale-egs is an option of --superpixels egs"),
    (["--hamming", "-1"], "hamming"),
    (["--merge", "adjacent", "--segments", "5"], "merge='hierarchy'"),
    (["--merge", "adjacent", "--scorer", "learned"], "belongs to a merge hierarchy"),
    (["--bits", "24"], "reads 8-bit codes, not --bits 24; pass --scorer hand-set"),
])
def test_cli_refuses_bad_options(tmp_path, argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["image.jpg", "--out", str(tmp_path)] + argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_cli_default_is_the_learned_hierarchy(tmp_path, bsds_image_path):
    """A user's first command gets the learned hierarchy; --segments cuts it at that count."""
    path = tmp_path / "crop.png"
    Image.fromarray(load_image(bsds_image_path)[:96, :144]).save(path)
    assert main([str(path), "--out", str(tmp_path / "out"), "--segments", "6"]) == 0
    record = json.loads((tmp_path / "out" / "crop.json").read_text())
    assert record["n_segments"] == 6 and record["cut"] == {"segments": 6} and record["merge"] == "hierarchy"
    assert record["scorer"] == "learned" and record["superpixels"] == "watershed"
    assert np.load(tmp_path / "out" / "crop_labels.npy").max() == 5


def test_cli_dense_features_use_the_shipped_dense_hashing(tmp_path, bsds_image_path):
    path = tmp_path / "crop.png"
    Image.fromarray(load_image(bsds_image_path)[:96, :144]).save(path)
    for features in ("conv5_3", "conv4_3+conv5_3"):
        assert main([str(path), "--out", str(tmp_path / features), "--features", features]) == 0
    default, dense = (json.loads((tmp_path / name / "crop.json").read_text())["grid_shape"]
                      for name in ("conv5_3", "conv4_3+conv5_3"))
    assert dense[0] > 1.8 * default[0] and dense[1] > 1.8 * default[1]  # stride 8 against 16


def test_cli_help_exits_cleanly():
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
