"""Dataset listing and ground-truth parsing on the shared BSDS500 and MSRC-v2 data."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.io
from PIL import Image

from binmap_tf.evaluation.datasets import Sample, load_dataset, official_bench


@pytest.mark.parametrize(
    "name, split, count", [("bsds500", "train", 200), ("bsds500", "val", 100), ("bsds500", "test", 200),
                           ("msrc", "all", 591)]
)
def test_split_sizes(name, split, count):
    dataset = load_dataset(name, split)
    assert len(dataset) == count
    assert dataset.skipped == ()
    ids = [sample.id for sample in dataset]
    assert ids == sorted(ids) and len(set(ids)) == count


def test_default_splits_are_the_evaluation_sets():
    assert load_dataset("bsds500").split == "test"
    assert load_dataset("msrc").split == "all"


@pytest.mark.parametrize("name, split", [("bsds500", "train"), ("bsds500", "val"), ("bsds500", "test"),
                                         ("msrc", "all")])
def test_ground_truth_matches_image(name, split):
    for sample in load_dataset(name, split, limit=3):
        image = sample.load_image()
        annotations = sample.load_ground_truths()
        assert image.dtype == np.uint8 and image.shape[2] == 3
        if name == "bsds500":
            assert 4 <= len(annotations) <= 9  # about 5 annotators per image
        else:
            assert len(annotations) == 1
        for labels in annotations:
            assert labels.shape == image.shape[:2]
            assert np.issubdtype(labels.dtype, np.integer) and labels.min() == 1


def test_dataset_is_a_sequence():
    dataset = load_dataset("bsds500", "val", limit=4)
    assert len(dataset) == 4
    assert dataset[-1] is dataset.samples[3]
    assert list(dataset[1:3]) == list(dataset)[1:3]
    assert isinstance(dataset[0], Sample) and dataset[0] in dataset


def test_missing_data_root_names_path_and_fix(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match="BINMAP_TF_DATA") as error:
        load_dataset("bsds500", root=tmp_path / "nowhere")
    assert str(tmp_path / "nowhere" / "bsds500") in str(error.value)
    monkeypatch.setenv("BINMAP_TF_DATA", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="--data"):
        load_dataset("msrc")


def test_unknown_name_or_split():
    with pytest.raises(ValueError, match="bsds500, msrc"):
        load_dataset("pascal")
    with pytest.raises(ValueError, match="train, val, test"):
        load_dataset("bsds500", "all")


def test_images_without_ground_truth_are_skipped(tmp_path):
    images, gts = tmp_path / "msrc_v2" / "images", tmp_path / "msrc_v2" / "newsegmentations_mats"
    images.mkdir(parents=True)
    gts.mkdir()
    for name in ("a", "b"):
        Image.fromarray(np.zeros((3, 4, 3), np.uint8)).save(images / f"{name}.jpg")
    scipy.io.savemat(gts / "a_GT.mat", {"newseg": np.ones((3, 4), np.uint8)})
    with pytest.warns(UserWarning, match="no ground truth"):
        dataset = load_dataset("msrc", root=tmp_path)
    assert [sample.id for sample in dataset] == ["a"] and dataset.skipped == ("b",)
    np.testing.assert_array_equal(dataset[0].load_ground_truths()[0], np.ones((3, 4)))


def test_official_bench_inputs():
    bench = official_bench()
    assert [sample.id for sample in bench] == ["2018", "3063", "5096", "6046", "8068"]
    sample = bench[0]
    shape = sample.load_ground_truths()[0].shape
    assert [seg.shape for seg in sample.load_segs()] == [shape] * 5
    assert sample.load_ucm2().shape == (2 * shape[0] + 1, 2 * shape[1] + 1)
