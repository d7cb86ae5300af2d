"""The collection pipeline (``binmap-batch``, Ray Data): same labels and files as the
``segment`` command, bad inputs listed with their error, re-runs resume. Needs the ``batch`` extra."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

pytest.importorskip("ray", reason="the batch extra is not installed: pip install -e '.[batch]'")
pytestmark = pytest.mark.ray

from binmap_tf.batch.collection import (  # noqa: E402
    FAILED_FILE,
    SUMMARY_FILE,
    MapperStage,
    Workers,
    _objects,
    _start_ray,
    match_inputs,
    plan,
    read_image,
)
from binmap_tf.cli.batch import main  # noqa: E402
from binmap_tf.cli.segment import main as segment_main  # noqa: E402
from binmap_tf.common.images import ImageError, load_image  # noqa: E402
from binmap_tf.common.paths import data_root  # noqa: E402
from binmap_tf.segmentation.outputs import OUTPUT_SUFFIXES  # noqa: E402

N_IMAGES = 4


@pytest.fixture()
def collection(tmp_path):
    """A folder with 4 BSDS500 test images, a corrupt JPEG, a text file named .jpg, a dangling link
    and a folder named .jpg."""
    folder = tmp_path / "photos"
    folder.mkdir()
    sources = sorted((data_root() / "bsds500/images/test").glob("*.jpg"))[:N_IMAGES]
    assert len(sources) == N_IMAGES, "shared data missing: set BINMAP_TF_DATA to the data root"
    for source in sources:
        shutil.copy(source, folder / source.name)
    (folder / "corrupt.jpg").write_bytes(sources[0].read_bytes()[:3000])
    (folder / "notes.jpg").write_text("not an image\n")
    (folder / "gone.jpg").symlink_to(tmp_path / "nowhere" / "gone.jpg")
    (folder / "album.jpg").mkdir()
    return folder, [source.stem for source in sources]


def test_inputs_by_pattern_folder_and_uri(collection):
    folder, stems = collection
    matched = match_inputs([str(folder / "*.jpg")])
    assert len(matched) == N_IMAGES + 4
    assert match_inputs([str(folder)]) == matched  # a folder: its image files
    assert match_inputs([f"file://{folder}/1*.jpg"]) == [f"file://{folder}/{stem}.jpg" for stem in sorted(stems)
                                                         if stem.startswith("1")]
    assert match_inputs([str(folder / "missing.png")]) == [str(folder / "missing.png")]  # reported, not dropped
    np.testing.assert_array_equal(read_image(f"file://{folder}/{stems[0]}.jpg"),
                                  load_image(folder / f"{stems[0]}.jpg"))
    with pytest.raises(FileNotFoundError, match="not found"):
        read_image(f"file://{folder}/missing.jpg")


def test_plan_skips_done_and_refuses_clashing_names(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    for suffix in OUTPUT_SUFFIXES:
        (out / f"done{suffix}").write_text("")
    (out / "half_labels.npy").write_text("")  # an interrupted image is segmented again
    todo, done, failures = plan(["a/done.jpg", "a/half.jpg", "b/half.png", "a/batch_summary.jpg"], out)
    assert todo == [("a/half.jpg", "half")] and done == ["a/done.jpg"]
    assert [failure.input for failure in failures] == ["b/half.png", "a/batch_summary.jpg"]
    assert "same file name as a/half.jpg" in failures[0].error
    todo, done, _ = plan(["a/done.jpg"], out, overwrite=True)
    assert todo == [("a/done.jpg", "done")] and done == []


def test_plan_with_extra_outputs_and_coco(tmp_path):
    """An image is done when its extra files are written and, with --coco, the run's earlier COCO file
    holds it; an image named like the COCO file is refused."""
    for suffix in OUTPUT_SUFFIXES:
        (tmp_path / f"done{suffix}").write_text("")
    inputs = ["a/done.jpg", "a/coco.jpg"]
    todo, done, failures = plan(inputs, tmp_path, extras=("regions",))
    assert todo == [("a/done.jpg", "done")] and [failure.input for failure in failures] == ["a/coco.jpg"]
    (tmp_path / "done_regions.csv").write_text("")
    assert plan(inputs, tmp_path, extras=("regions",))[1] == ["a/done.jpg"]
    assert plan(inputs, tmp_path, extras=("regions",), coco_names={"other.jpg"})[1] == []
    assert plan(inputs, tmp_path, extras=("regions",), coco_names={"done.jpg"})[1] == ["a/done.jpg"]


class _Spec:
    """A model that refuses images under 8 pixels, as the CNN's size check does."""

    def build(self):
        def binary_maps(images):
            if any(min(image.shape[:2]) < 8 for image in images):
                raise ImageError("image is too small")
            return [f"map of {image.shape}" for image in images]
        return binary_maps


def test_an_image_the_model_refuses_fails_alone():
    images = [np.zeros((16, 16, 3), np.uint8), np.zeros((4, 16, 3), np.uint8), None]
    batch = {"image": _objects(images), "working": _objects(images),  # small: the working image is the image
             "error": np.array(["", "", "bad file"], dtype=object)}
    result = MapperStage(_Spec()).map_decoded(batch)
    assert list(result["binary_map"]) == ["map of (16, 16, 3)", None, None]
    assert list(result["error"]) == ["", "image is too small", "bad file"]


@pytest.fixture()
def local_ray():
    """One local Ray for both runs of a test (the command joins a running Ray instead of starting one)."""
    import ray

    started = _start_ray(Workers(cnn=1, host=2))
    yield
    if started:
        ray.shutdown()


def test_collection_matches_segment_and_resumes(collection, tmp_path, capsys, local_ray):
    folder, stems = collection
    reference, out = tmp_path / "reference", tmp_path / "out"
    assert segment_main([str(folder / f"{stem}.jpg") for stem in stems] + ["--out", str(reference)]) == 0

    assert main(["--input", str(folder / "*.jpg"), "--out", str(out), "--host-workers", "2"]) == 1
    for stem in stems:
        np.testing.assert_array_equal(np.load(out / f"{stem}_labels.npy"), np.load(reference / f"{stem}_labels.npy"))
        batch_record, cli_record = (json.loads((directory / f"{stem}.json").read_text())
                                     for directory in (out, reference))
        assert set(batch_record["timings"]) == set(cli_record["timings"])
        for record in (batch_record, cli_record):
            del record["timings"]
        assert batch_record == cli_record
    failed = {json.loads(line)["input"].rsplit("/", 1)[-1]: json.loads(line)["error"]
              for line in (out / FAILED_FILE).read_text().splitlines()}
    assert set(failed) == {"corrupt.jpg", "notes.jpg", "gone.jpg", "album.jpg"}
    assert "truncated" in failed["corrupt.jpg"] and "cannot identify image file" in failed["notes.jpg"]
    assert "not found" in failed["gone.jpg"] and "is a folder" in failed["album.jpg"]
    summary = json.loads((out / SUMMARY_FILE).read_text())
    assert (summary["written"], summary["skipped"], summary["failed"]) == (N_IMAGES, 0, 4)
    assert "4 failed" in capsys.readouterr().err

    written = {path: path.stat().st_mtime_ns for path in out.iterdir() if not path.name.startswith("batch_")}
    assert len(written) == N_IMAGES * len(OUTPUT_SUFFIXES)
    assert main(["--input", str(folder / "*.jpg"), "--out", str(out)]) == 1  # the bad files fail again
    assert {path: path.stat().st_mtime_ns for path in out.iterdir() if not path.name.startswith("batch_")} == written
    summary = json.loads((out / SUMMARY_FILE).read_text())
    assert (summary["written"], summary["skipped"], summary["failed"]) == (0, N_IMAGES, 4)


def test_cli_help_and_bad_options(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0 and "--model-server" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_info:
        main(["--input", "x/*.jpg", "--out", "o", "--cnn-workers", "0"])
    assert exit_info.value.code == 2 and "expected an integer >= 1, got 0" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(["--input", "x/*.jpg", "--out", "o", "--hashing", "missing.npz"])
    assert exit_info.value.code == 2 and "hashing file not found: missing.npz" in capsys.readouterr().err


@pytest.mark.slow
def test_cnn_on_a_model_server(tmp_path, local_ray, bsds_image_path):
    """--model-server: the CNN runs behind the serving client; labels equal segment() with that client."""
    from conftest import random_itq
    from PIL import Image

    from binmap_tf.binary_map.model import BinaryMapper
    from serving import export
    from serving.client import BinmapClient
    from serving.server import LoopbackServer

    folder = tmp_path / "photos"
    folder.mkdir()
    image = load_image(bsds_image_path)
    crops = {"top": image[:96, :144], "bottom": image[-120:, -160:]}  # two sizes: two requests
    for stem, crop in crops.items():
        Image.fromarray(crop).save(folder / f"{stem}.png")
    mapper = BinaryMapper("vgg16-hed", bits=8, hashing=random_itq(512, 8), weights=None, edges=True)  # quick build
    version = export.export_model(mapper, tmp_path / "models" / "binmap", warmup=False)
    with LoopbackServer(version.parent, warmup=False) as server, BinmapClient(server.target, timeout=60) as client:
        out = tmp_path / "out"
        assert main(["--input", str(folder / "*.png"), "--out", str(out), "--model-server", server.target]) == 0
        for stem, crop in crops.items():
            # The default merge hierarchy: the batch and client.segment ask the server for the edge map.
            np.testing.assert_array_equal(np.load(out / f"{stem}_labels.npy"), client.segment(crop).labels)
            assert json.loads((out / f"{stem}.json").read_text())["serving"] == server.target
