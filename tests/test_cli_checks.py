"""A user's mistakes on the command line are usage errors (exit status 2, one message naming the
problem, no traceback), found before any model is built or image read."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from binmap_tf.cli.evaluate import main as evaluate_main
from binmap_tf.cli.segment import main as segment_main
from binmap_tf.common.images import find_images


@pytest.fixture
def files(tmp_path):
    image = tmp_path / "picture.png"
    Image.fromarray(np.zeros((40, 50, 3), np.uint8)).save(image)
    (tmp_path / "notes.txt").write_text("not an image folder")
    (tmp_path / "notes.npy").write_bytes(b"not a hashing layer")
    return tmp_path, image


SEGMENT_MISTAKES = {
    "out is a file": (["--out", "{dir}/notes.txt"], "is a file"),
    "out under a file": (["--out", "{dir}/notes.txt/out"], "cannot be created"),
    "negative EGS scale": (["--out", "{dir}/o", "--superpixels", "egs", "--scale-egs", "-5"], "scale > 0"),
    "no SLIC segments": (["--out", "{dir}/o", "--superpixels", "slic", "--n-segments", "0"], "n_segments >= 1"),
    "hamming reaches the bits": (["--out", "{dir}/o", "--merge", "adjacent", "--hamming", "9"],
                                 "--hamming 9 with 8-bit codes"),
    "hamming with the default hierarchy": (["--out", "{dir}/o", "--hamming", "1"], "add --merge adjacent"),
    "zero bits": (["--out", "{dir}/o", "--bits", "0"], "in 1 .. 62"),
    "hashing not an npz": (["--out", "{dir}/o", "--hashing", "{dir}/notes.npy"], "not a hashing layer"),
    "hashing missing": (["--out", "{dir}/o", "--hashing", "{dir}/gone.npz"], "hashing file not found"),
    "negative segments": (["--out", "{dir}/o", "--merge", "hierarchy", "--segments", "-1"], "integer >= 1"),
    "ucm of the flat merge": (["--out", "{dir}/o", "--merge", "adjacent", "--ucm", "--coco"],
                              "--merge adjacent does not build: use --merge hierarchy"),
    "ucm without a merge": (["--out", "{dir}/o", "--merge", "none", "--ucm", "--regions"], "or leave out --ucm"),
    "coco file named like a record": (["{dir}/coco.png", "--out", "{dir}/o", "--coco"],
                                      "would be the run's COCO file coco.json: rename"),
}


@pytest.mark.parametrize("case", sorted(SEGMENT_MISTAKES))
def test_segment_refuses_mistakes_before_any_work(case, files, capsys):
    folder, image = files
    arguments, message = SEGMENT_MISTAKES[case]
    (folder / "coco.png").write_bytes(image.read_bytes())
    with pytest.raises(SystemExit) as exit_info:
        segment_main([str(image)] + [a.format(dir=folder) for a in arguments])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert message in err and "Traceback" not in err
    assert not (folder / "o").exists()


def test_batch_refuses_a_ucm_without_the_hierarchy(files, capsys):
    from binmap_tf.cli.batch import main as batch_main

    folder, image = files
    with pytest.raises(SystemExit) as exit_info:
        batch_main(["--input", str(image), "--out", str(folder / "o"), "--merge", "global", "--ucm"])
    assert exit_info.value.code == 2 and "--merge global does not build" in capsys.readouterr().err
    assert not (folder / "o").exists()


EVALUATE_MISTAKES = {
    "missing data": (["--data", "{dir}/nonexistent"], "not found"),
    "unknown split": (["--split", "foo"], "unknown split 'foo'"),
    "negative limit": (["--limit", "-1"], "integer >= 1"),
    "empty selection": (["--limit", "0"], "integer >= 1"),
    "threshold above 1": (["--methods", "binmap-hier", "--threshold", "2"], "[0, 1]"),
    "unknown method": (["--methods", "binmap-watershed"], "unknown method"),
    "out is a file": (["--out", "{dir}/notes.txt"], "is a file"),
}


@pytest.mark.parametrize("case", sorted(EVALUATE_MISTAKES))
def test_evaluate_refuses_mistakes_before_any_work(case, files, capsys):
    folder, _ = files
    arguments, message = EVALUATE_MISTAKES[case]
    arguments = [a.format(dir=folder) for a in arguments]
    out = [] if "--out" in arguments else ["--out", str(folder / "o")]
    with pytest.raises(SystemExit) as exit_info:
        evaluate_main(out + arguments)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert message in err and "Traceback" not in err


def test_folders_include_gifs(tmp_path):
    Image.fromarray(np.zeros((4, 4), np.uint8), mode="L").convert("P").save(tmp_path / "a.gif")
    assert [path.name for path in find_images([tmp_path])] == ["a.gif"]


@pytest.mark.slow
def test_a_run_prints_no_tensorflow_start_up_noise(files):
    folder, image = files
    done = subprocess.run([sys.executable, "-m", "binmap_tf.cli.binary_map", str(image), "--out", str(folder / "maps")],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert "cuInit" not in done.stderr and "absl::InitializeLog" not in done.stderr, done.stderr
    assert (folder / "maps" / "picture_binary_map.png").is_file()


def test_training_records_name_no_machine_paths(tmp_path):
    import argparse

    from binmap_tf.cli.common import recorded_settings

    args = argparse.Namespace(out=tmp_path / "scorer.npz", hashing=str(tmp_path / "layers" / "hashing_joint.npz"),
                              bits=8, seed=0)
    assert recorded_settings(args) == {"hashing": "hashing_joint.npz", "bits": 8, "seed": 0}
    assert recorded_settings(argparse.Namespace(hashing=None, bits=8))["hashing"] is None


@pytest.mark.parametrize("module", ["binmap_tf.cli.train", "binmap_tf.cli.train_merge", "experiments.train_codes"])
def test_training_commands_refuse_test_and_a_val_split_equal_to_the_training_one(module, tmp_path, capsys):
    import importlib

    parse_args = importlib.import_module(module).parse_args
    out = str(tmp_path / ("scorer.npz" if module.endswith("merge") else "out"))
    for splits, message in ((["--split", "test"], "would tune on it"), (["--val-split", "test"], "would tune on it"),
                            (["--split", "val"], "--val-split must differ from --split")):
        with pytest.raises(SystemExit) as stop:
            parse_args([*splits, "--out", out])
        assert stop.value.code == 2 and message in capsys.readouterr().err
