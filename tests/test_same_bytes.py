"""Same bytes everywhere (issue 24, item 5): ``binmap-segment``, ``binmap-batch``, the Python API and the
demo's downloads write byte-identical files for the same BSDS500 images and options, the UCM, region
table and COCO file included; a resumed batch keeps its COCO file."""

from __future__ import annotations

import json
import shutil

import pytest

from binmap_tf.common.images import load_image
from binmap_tf.common.paths import data_root
from binmap_tf.segmentation.interchange import coco_entry
from binmap_tf.segmentation.outputs import (
    COCO_FILE,
    RECORD_SUFFIX,
    output_paths,
    write_coco,
    write_segmentation,
)
from binmap_tf.segmentation.pipeline import default_mapper, segment

N_IMAGES = 2  # enough for a COCO file of several images
FLAGS = ["--ucm", "--coco", "--regions"]
EXTRAS = ("ucm", "regions")


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    folder = tmp_path_factory.mktemp("photos")
    sources = sorted((data_root() / "bsds500" / "images" / "test").glob("*.jpg"))[:N_IMAGES]
    assert len(sources) == N_IMAGES, "shared data missing: set BINMAP_TF_DATA to the data root"
    for source in sources:
        shutil.copy(source, folder / source.name)
    return sorted(folder.glob("*.jpg"))


def image_files(folder, stem: str) -> dict[str, bytes]:
    """Every file written for ``stem`` but its JSON record (which holds seconds), by name."""
    return {path.name: path.read_bytes() for path in output_paths(folder, stem, EXTRAS)
            if path.suffix != RECORD_SUFFIX}


@pytest.mark.slow
@pytest.mark.ray
def test_segment_batch_api_and_demo_write_the_same_bytes(photos, tmp_path):
    pytest.importorskip("ray", reason="the batch extra is not installed: pip install -e '.[batch]'")
    from gradio.data_classes import ImageData

    from binmap_tf.cli.batch import main as batch_main
    from binmap_tf.cli.segment import main as segment_main
    from demo.app import Segmenter, upload_image
    from demo.pipeline import LocalMappers, Settings, UploadNames

    cli, batch, api = tmp_path / "cli", tmp_path / "batch", tmp_path / "api"
    assert segment_main([str(path) for path in photos] + ["--out", str(cli), *FLAGS]) == 0
    # One image per CNN call, as segment() makes it: a batched convolution may differ from a single one in
    # the last bit of the edge map (oneDNN blocks a batch differently), which moves a fine merge height of
    # the UCM by ~1e-12 (the labels stay identical; docs/large_collections.md).
    batch_flags = ["--host-workers", "1", "--batch-size", "1", *FLAGS]
    assert batch_main(["--input", str(photos[0].parent / "*.jpg"), "--out", str(batch), *batch_flags]) == 0

    mapper = default_mapper(edges=True)  # the API's mapper, and the demo's 8-bit one
    entries = []
    names = UploadNames()
    component, segmenter = upload_image(names, render=False), Segmenter(LocalMappers(), names=names)
    settings = Settings()  # the page's defaults are the command line's
    controls = (settings.superpixels, settings.scale, settings.n_segments, settings.hamming, settings.merge,
                settings.segments, settings.scorer, settings.bits)
    for path in photos:
        image = load_image(path)
        result = segment(image, mapper)
        write_segmentation(api, path.stem, image, result, {}, EXTRAS)
        entries.append(coco_entry(result, path.name))
        write_coco(api / path.stem / COCO_FILE, [entries[-1]])  # one image, as the demo offers it

        expected = image_files(cli, path.stem)
        assert image_files(batch, path.stem) == expected, f"batch differs for {path.name}"
        assert image_files(api, path.stem) == expected, f"the Python API differs for {path.name}"
        upload = component.preprocess(ImageData(path=str(path), orig_name=path.name))
        outputs = segmenter.run(upload, *controls, None)
        downloads = {name.rsplit("/", 1)[-1]: open(name, "rb").read() for name in outputs[4]}
        assert set(downloads) == {f"{path.stem}_labels.png", f"{path.stem}_ucm2.png", f"{path.stem}_ucm2.mat",
                                  f"{path.stem}_regions.csv", COCO_FILE}
        for name, data in downloads.items():
            reference = (api / path.stem / COCO_FILE).read_bytes() if name == COCO_FILE else expected[name]
            assert data == reference, f"the demo's {name} differs"
    write_coco(api / COCO_FILE, entries)
    coco = (cli / COCO_FILE).read_bytes()
    assert (batch / COCO_FILE).read_bytes() == coco and (api / COCO_FILE).read_bytes() == coco
    assert [image["file_name"] for image in json.loads(coco)["images"]] == [path.name for path in photos]

    # A resumed batch skips every image and keeps the COCO file, rebuilt from the earlier one.
    assert batch_main(["--input", str(photos[0].parent / "*.jpg"), "--out", str(batch), *batch_flags]) == 0
    summary = json.loads((batch / "batch_summary.json").read_text())
    assert (summary["written"], summary["skipped"]) == (0, N_IMAGES)
    assert (batch / COCO_FILE).read_bytes() == coco
