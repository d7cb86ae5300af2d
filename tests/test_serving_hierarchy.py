"""The merge hierarchy on served maps, on real BSDS500 images with the real model (vgg16-hed with
HED's weights, the shipped 8-bit ITQ, exported with its edge map): ``segment --serving``,
``evaluate --serving`` and the demo's served source give labels identical to their local runs,
the learned scorer (whose first level is a watershed of the edge map) and the hand-set cues alike."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from PIL import Image

from binmap_tf.binary_map.model import BinaryMapper
from binmap_tf.cli.evaluate import main as evaluate_main
from binmap_tf.cli.segment import main as segment_main
from binmap_tf.evaluation.datasets import load_dataset
from serving import export
from serving.server import LoopbackServer

pytestmark = pytest.mark.slow  # the real VGG16 on 321x481 images, served and local

HIERARCHIES = (("--merge", "hierarchy", "--scorer", "learned"), ("--merge", "hierarchy", "--scorer", "hand-set"))


@pytest.fixture(scope="module")
def local_mapper() -> BinaryMapper:
    """The mapper ``segment`` builds for the hierarchy: the default model with HED's edge map."""
    return BinaryMapper(edges=True)


@pytest.fixture(scope="module")
def server(local_mapper, tmp_path_factory):
    version = export.export_model(local_mapper, tmp_path_factory.mktemp("models") / "binmap", warmup=False)
    with LoopbackServer(version.parent, warmup=False) as running:
        yield running


@pytest.fixture(scope="module")
def samples():
    return load_dataset("bsds500", "test", limit=2)


def test_segment_command_line_served_equals_local(server, samples, tmp_path):
    """Served and local runs write the same labels, and the same bytes for the UCM, region table and
    COCO file (issue 24)."""
    paths = [str(sample.image_path) for sample in samples]
    outputs = ("--ucm", "--regions", "--coco")
    for number, options in enumerate(HIERARCHIES):
        served, local = tmp_path / f"served{number}", tmp_path / f"local{number}"
        assert segment_main([*paths, "--out", str(served), "--serving", server.target, *options, *outputs]) == 0
        assert segment_main([*paths, "--out", str(local), *options, *outputs]) == 0
        assert (served / "coco.json").read_bytes() == (local / "coco.json").read_bytes()
        for sample in samples:
            labels = np.load(served / f"{sample.id}_labels.npy")
            np.testing.assert_array_equal(labels, np.load(local / f"{sample.id}_labels.npy"), err_msg=str(options))
            for suffix in ("_ucm2.mat", "_ucm2.png", "_regions.csv"):
                assert (served / f"{sample.id}{suffix}").read_bytes() == (local / f"{sample.id}{suffix}").read_bytes()
            served_record, local_record = (json.loads((folder / f"{sample.id}.json").read_text())
                                           for folder in (served, local))
            assert served_record["serving"] == server.target
            assert {key: served_record[key] for key in ("n_segments", "n_superpixels", "superpixels", "merge")} == \
                {key: local_record[key] for key in ("n_segments", "n_superpixels", "superpixels", "merge")}
        assert served_record["superpixels"] == ("watershed" if "learned" in options else "egs")


@pytest.mark.parametrize("resolution", [(), ("--native",)], ids=["working-size", "native-tiled"])
def test_large_photo_served_equals_the_local_run(server, samples, tmp_path, resolution):
    """At the working size the client sends a 0.15 MP image; with --native the 1.39 MP photo goes in tiles."""
    from skimage.transform import resize

    from binmap_tf.common.files import write_png

    photo = resize(samples[0].load_image(), (963, 1443), order=1, preserve_range=True).round().astype(np.uint8)
    write_png(tmp_path / "photo.png", photo)  # 1.39 MP: over the 1 MP tile budget, 2 tiles; sides not multiples
    options = ("--merge", "hierarchy", "--scorer", "learned", *resolution)  # of 16: the whole image's edge map differs
    assert segment_main([str(tmp_path / "photo.png"), "--out", str(tmp_path / "served"), "--serving", server.target,
                         *options]) == 0
    assert segment_main([str(tmp_path / "photo.png"), "--out", str(tmp_path / "local"), *options]) == 0
    np.testing.assert_array_equal(np.load(tmp_path / "served" / "photo_labels.npy"),
                                  np.load(tmp_path / "local" / "photo_labels.npy"))


def test_evaluate_served_equals_local(server, tmp_path):
    methods = ["binmap-learned", "binmap-hier", "binmap-egs"]  # edges and codes alone: one request per image
    common = ["--dataset", "bsds500", "--split", "test", "--limit", "1", "--workers", "1", "--save-labels",
              "--methods", *methods]
    assert evaluate_main([*common, "--serving", server.target, "--out", str(tmp_path / "served")]) == 0
    assert evaluate_main([*common, "--cache", str(tmp_path / "cache"), "--out", str(tmp_path / "local")]) == 0
    image_id = load_dataset("bsds500", "test", limit=1)[0].id
    for method in methods:
        served, local = (np.asarray(Image.open(tmp_path / run / "labels" / method / f"{image_id}.png"))
                         for run in ("served", "local"))
        np.testing.assert_array_equal(served, local, err_msg=method)
    served, local = (json.loads((tmp_path / run / "summary.json").read_text()) for run in ("served", "local"))
    for method in methods:
        for figure in ("covering", "pri", "voi", "seg_iou", "mean_segments"):
            assert served[method][figure] == local[method][figure], (method, figure)


def test_demo_served_source_equals_local(server, local_mapper, samples):
    from demo.pipeline import LocalMappers, ServedMaps, Settings, segment_upload

    image = samples[0].load_image()
    served_source = ServedMaps(server.target)
    local_source = LocalMappers(build=lambda bits: local_mapper, bits_choices=(8,))
    served_cache = local_cache = None
    # The demo's default (the learned hierarchy on the watershed), then the hand-set cues on EGS from
    # the cached maps: the served map carries the edges, so switching does not ask the server again.
    for settings in (Settings(), Settings(superpixels="egs", scorer="hand-set", segments=20)):
        served = segment_upload(image, dataclasses.replace(settings, bits=None), served_source, served_cache)
        local = segment_upload(image, settings, local_source, local_cache)
        assert (served.result.options["merge"], served.result.options.get("scorer")) == \
            ("hierarchy", "learned" if settings.scorer == "learned" else None)
        np.testing.assert_array_equal(served.result.labels, local.result.labels, err_msg=settings.scorer)
        served_cache, local_cache = served.cache, local.cache
    assert served.cnn_seconds is None  # the second setting reused the served map
    np.testing.assert_array_equal(served_cache.maps[None].edges, local_cache.maps[8].edges)
