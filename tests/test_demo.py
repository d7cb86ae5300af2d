"""The Gradio demo: its pure steps, its event handler, and the page driven in a real browser."""

from __future__ import annotations

import io
import json
from pathlib import Path

import gradio as gr
import numpy as np
import pandas as pd
import pytest
from gradio.data_classes import ImageData
from PIL import Image
from skimage import data

from binmap_tf.binary_map.geometry import GridGeometry
from binmap_tf.binary_map.maps import BinaryMap, unpack_codes
from binmap_tf.common.images import ImageError, load_image
from binmap_tf.segmentation.pipeline import segment
from binmap_tf.segmentation.resolution import working_shape
from demo.app import Segmenter, build_app, make_source, upload_image
from demo.pipeline import (
    LocalMappers,
    MapCache,
    ServedMaps,
    Settings,
    UploadNames,
    array_digest,
    average_colours,
    build_local_mapper,
    check_upload,
    example_images,
    prepare_image,
    render,
    segment_upload,
)

STRIDE = 16
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:gradio.queueing")  # its use of pandas


class CountingMaps:
    """Map source without a CNN: a few pseudo-random codes per image on a stride-16 grid and a
    pseudo-random edge map, constant on each cell (a few hundred watershed superpixels at the working
    size, where per-pixel noise would give tens of thousands); counts calls."""

    bits_choices = (8, 24)
    has_edges = True

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, image: np.ndarray, bits: int | None) -> BinaryMap:
        self.calls += 1
        height, width = image.shape[:2]
        rng = np.random.default_rng(int(array_digest(image)[:8], 16))
        codes = rng.integers(0, 4, size=(-(-height // STRIDE), -(-width // STRIDE)))
        cell_bits = unpack_codes(codes, bits)
        edges = np.kron(rng.random(codes.shape), np.ones((STRIDE, STRIDE)))[:height, :width]
        return BinaryMap(bits=cell_bits, logits=cell_bits.astype(np.float32) - 0.5,
                         geometry=GridGeometry(stride=STRIDE, offset=(STRIDE - 1) / 2, receptive_field=STRIDE),
                         scale=1.0, image_shape=(height, width), edges=edges.astype(np.float32))


@pytest.fixture
def small_image() -> np.ndarray:
    return data.astronaut()[::4, ::4]  # 128x128: superpixels in milliseconds


def controls(settings: Settings) -> tuple:
    """The page's control values (method, scale, n_segments, hamming, merge, segments, scorer, bits) for
    ``settings``."""
    return (settings.superpixels, settings.scale, settings.n_segments, settings.hamming, settings.merge,
            settings.segments, settings.scorer, settings.bits)


def test_demo_segmentation_equals_segment(small_image):
    source = CountingMaps()
    for settings in (Settings(), Settings(superpixels="slic", n_segments=100, hamming=1, merge="global")):
        run = segment_upload(small_image, settings, source)
        expected = segment(small_image, lambda image: source(image, settings.bits), **settings.segment_options())
        np.testing.assert_array_equal(run.result.labels, expected.labels)


def test_demo_default_is_the_package_default(small_image):
    """The page starts where segment() does: the learned hierarchy on the watershed, cut at its val height."""
    source = CountingMaps()
    run = segment_upload(small_image, Settings(), source)
    expected = segment(small_image, lambda image: source(image, 8))
    np.testing.assert_array_equal(run.result.labels, expected.labels)
    assert run.result.options == expected.options and expected.options["scorer"] == "learned"
    summary = render(run).summary
    assert "learned scorer 'learned'" in summary and "chosen on BSDS500 val" in summary
    hand_set = segment_upload(small_image, Settings(scorer="hand-set", segments=9), source, run.cache)
    assert hand_set.result.n_segments == 9 and "hand-set weights" in render(hand_set).summary
    with pytest.raises(gr.Error, match="8-bit codes"):  # the shipped scorer reads 8-bit codes
        Segmenter(source).run(small_image, *controls(Settings(bits=24)), None)


def test_changing_merge_controls_reuses_the_binary_map(small_image):
    source = CountingMaps()
    segmenter = Segmenter(source)
    outputs = segmenter.run(small_image, *controls(Settings()), MapCache())
    assert source.calls == 1
    for settings in (Settings(merge="adjacent", hamming=2), Settings(merge="global"), Settings(scorer="hand-set"),
                     Settings(superpixels="slic", n_segments=50), Settings(superpixels="egs", scale=300.0),
                     Settings(merge="hierarchy", segments=12)):
        outputs = segmenter.run(small_image.copy(), *controls(settings), outputs[-1])
        assert source.calls == 1, f"the CNN ran again for {settings}"
        assert ["CNN (s)", "cached"] in outputs[3] and "reused" in outputs[5]
    outputs = segmenter.run(small_image, *controls(Settings(merge="adjacent", bits=24)), outputs[-1])
    working = working_shape(small_image.shape[:2])  # the map is of the working image: 393x393
    assert source.calls == 2 and outputs[0].shape == (*working, 3)  # 24 bits show as RGB
    outputs = segmenter.run(small_image, *controls(Settings(bits=8)), outputs[-1])
    assert source.calls == 2 and outputs[0].shape == working  # both maps kept
    segmenter.run(small_image[::-1], *controls(Settings()), outputs[-1])
    assert source.calls == 3  # another image


def test_hierarchy_is_cut_at_the_slider_count(small_image):
    source = CountingMaps()
    cache = None
    for count in (5, 12, 40):
        run = segment_upload(small_image, Settings(merge="hierarchy", segments=count), source, cache)
        cache = run.cache
        assert run.result.n_segments == count and "merge hierarchy" in render(run).summary
        expected = segment(small_image, lambda image: source(image, 8), merge="hierarchy", segments=count)
        np.testing.assert_array_equal(run.result.labels, expected.labels)
    assert source.calls == 4  # one for the demo (then cached), one per segment() call


def test_hierarchy_needs_a_source_with_edges(small_image):
    class Served(CountingMaps):
        bits_choices = ()
        has_edges = False

    with pytest.raises(gr.Error, match="edge map"):
        Segmenter(Served()).run(small_image, *controls(Settings(merge="hierarchy", bits=None)), None)
    radios = {block.label: block for block in build_app(Served(), examples=[]).blocks.values()
              if isinstance(block, gr.Radio)}
    assert "hierarchy" not in [value for _, value in radios["Merge"].choices] and radios["Merge"].value == "adjacent"
    assert "watershed" not in [value for _, value in radios["Superpixels"].choices]
    assert radios["Superpixels"].value == "egs"


def test_fine_tuned_hashing_source(small_image):
    from binmap_tf.binary_map.model import BinaryMapper

    source = make_source(None, "fine-tuned")
    assert source.bits_choices == (8,)
    expected = BinaryMapper(hashing="fine-tuned")(small_image)
    np.testing.assert_array_equal(source(small_image, 8).bits, expected.bits)
    itq = BinaryMapper()(small_image)
    assert not np.array_equal(expected.logits, itq.logits), "the fine-tuned layer must differ from ITQ"
    with pytest.raises(SystemExit, match="no-such-layer.npz"):
        make_source(None, "no-such-layer.npz")


def test_outputs_and_downloads(small_image):
    settings = Settings(superpixels="egs", merge="adjacent", hamming=1)
    segmenter = Segmenter(CountingMaps())  # owns the folder of downloads
    binary_map, superpixels, segments, table, downloads, summary, row, _ = segmenter.run(
        small_image, *controls(settings), None)
    expected = segment_upload(small_image, settings, CountingMaps()).result
    files = {Path(path).name: Path(path) for path in downloads}
    assert set(files) == {"upload_labels.png", "upload_regions.csv", "coco.json"}  # no UCM: a flat merge
    labels = np.asarray(Image.open(files["upload_labels.png"]))
    assert labels.dtype == np.uint16
    np.testing.assert_array_equal(labels, expected.labels)
    document = json.loads(files["coco.json"].read_text())
    assert document["images"][0]["file_name"] == "upload.png"
    assert len(document["annotations"]) == expected.n_segments
    assert binary_map.shape == working_shape(small_image.shape[:2])  # the map of the working image
    assert superpixels.shape == segments.shape == small_image.shape
    assert dict(table)["segments"] == str(expected.n_segments)
    assert f"{expected.n_segments} segments" in summary and f"{expected.n_superpixels} EGS" in summary
    assert row["headers"][:2] == ["label", "area"] and row["data"] == []
    _, _, _, _, downloads, *_ = segmenter.run(small_image, *controls(Settings()), None)
    assert {Path(path).name for path in downloads} >= {"upload_ucm2.png", "upload_ucm2.mat"}  # the hierarchy's


def test_slider_recuts_the_stored_tree(small_image, monkeypatch):
    """Moving the number of segments cuts the stored tree again: no CNN, no superpixels, no merging."""
    from binmap_tf.segmentation import pipeline

    source, calls = CountingMaps(), []
    for name in ("build_hierarchy", "compute_superpixels"):
        original = getattr(pipeline, name)
        monkeypatch.setattr(pipeline, name, lambda *args, _original=original, _name=name, **kwargs: (
            calls.append(_name), _original(*args, **kwargs))[1])
    segmenter = Segmenter(source)
    outputs = segmenter.run(small_image, *controls(Settings()), None)
    assert calls == ["compute_superpixels", "build_hierarchy"]
    for count in (3, 9, 25, 4):
        outputs = segmenter.run(small_image, *controls(Settings(segments=count)), outputs[-1])
        assert f"**{count} segments**" in outputs[5]
        expected = segment(small_image, lambda image: source(image, 8), segments=count)
        labels = [path for path in outputs[4] if path.endswith("_labels.png")][0]
        np.testing.assert_array_equal(np.asarray(Image.open(labels)), expected.labels)
    assert source.calls == 1 + 4  # the page's one map, then one per segment() call above
    assert calls.count("build_hierarchy") == 1 + 4 and calls.count("compute_superpixels") == 1 + 4
    segmenter.run(small_image, *controls(Settings(scorer="hand-set", segments=4)), outputs[-1])
    assert calls.count("build_hierarchy") == 1 + 4 + 1  # another order: another tree


def test_click_highlights_the_segment_and_shows_its_row(small_image):
    segmenter = Segmenter(CountingMaps())
    outputs = segmenter.run(small_image, *controls(Settings(segments=6)), None)
    cache = outputs[-1]
    labels = cache.shown.labels
    table = pd.read_csv([path for path in outputs[4] if path.endswith("_regions.csv")][0])
    for y, x in ((5, 7), (100, 90), (64, 120)):
        event = gr.SelectData(None, {"index": [x, y], "value": None, "selected": True})
        image, row = Segmenter.select(cache, event)
        mask = labels == labels[y, x]
        changed = np.any(image != outputs[2], axis=-1)
        np.testing.assert_array_equal(changed, mask)  # the segment's pixels, and only those
        assert row["headers"] == list(table.columns) and len(row["data"]) == 1
        assert int(row["data"][0][0]) == labels[y, x]
        assert int(row["data"][0][1]) == table["area"][labels[y, x]] == mask.sum()
    assert Segmenter.select(None, event) == (gr.skip(), gr.skip())


def test_downloads_are_named_after_the_upload(small_image, tmp_path):
    path = tmp_path / "astronaut.png"
    Image.fromarray(small_image).save(path)
    names = UploadNames()
    upload = upload_image(names, render=False).preprocess(ImageData(path=str(path), orig_name=path.name))
    segmenter = Segmenter(CountingMaps(), names=names)  # owns the folder of downloads
    outputs = segmenter.run(upload, *controls(Settings()), None)
    assert {Path(name).name for name in outputs[4]} == {"astronaut_labels.png", "astronaut_ucm2.png",
                                                         "astronaut_ucm2.mat", "astronaut_regions.csv", "coco.json"}
    coco = json.loads(Path([name for name in outputs[4] if name.endswith("coco.json")][0]).read_text())
    assert coco["images"][0]["file_name"] == "astronaut.png"


def test_average_colours_paints_segment_means():
    image = np.array([[[0, 0, 0], [10, 20, 30], [200, 200, 200]]], dtype=np.uint8)
    labels = np.array([[0, 0, 1]])
    np.testing.assert_array_equal(average_colours(image, labels),
                                  [[[5, 10, 15], [5, 10, 15], [200, 200, 200]]])


def test_grey_and_rgba_uploads_are_converted(small_image):
    grey, notices = prepare_image(small_image[..., 0])
    assert grey.shape == small_image.shape and not notices
    rgba = np.dstack([small_image, np.full(small_image.shape[:2], 128, np.uint8)])
    np.testing.assert_array_equal(prepare_image(rgba)[0], small_image)


def test_large_upload_is_segmented_whole_and_shown_smaller(small_image):
    segmenter = Segmenter(CountingMaps(), max_pixels=64 * 64)
    with pytest.warns(UserWarning, match="shows it at 64x64"):  # gr.Warning outside a page
        outputs = segmenter.run(small_image, *controls(Settings()), None)
    assert outputs[2].shape == (64, 64, 3)  # the view
    (labels,) = [path for path in outputs[4] if str(path).endswith("_labels.png")]
    assert np.asarray(Image.open(labels)).shape == small_image.shape[:2]  # the labels: full size
    assert "128x128 pixels" in outputs[5] and "full-size" in outputs[5]


@pytest.mark.parametrize("upload", [np.zeros((2, 2, 2, 2)), np.array([["a", "b"]]), np.array([[None]])])
def test_non_image_arrays_give_a_message(upload):
    with pytest.raises(gr.Error, match="image"):
        Segmenter(CountingMaps()).run(upload, *controls(Settings()), None)


def test_missing_image_and_bad_settings_give_messages(small_image):
    segmenter = Segmenter(CountingMaps())
    with pytest.raises(gr.Error, match="Upload an image"):
        segmenter.run(None, *controls(Settings()), None)
    assert segmenter.rerun(None, *controls(Settings()), None) == tuple(gr.skip() for _ in range(Segmenter.OUTPUTS))
    with pytest.raises(gr.Error, match="unknown merge mode"):
        segmenter.run(small_image, *controls(Settings(merge="nearest")), None)
    with pytest.raises(gr.Error, match="code length"):
        Segmenter(LocalMappers()).run(small_image, *controls(Settings(bits=16)), None)


def test_bad_upload_files_give_messages(tmp_path, bsds_image_path):
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    with pytest.raises(ImageError, match="notes.png is not an image"):
        check_upload(text)
    with pytest.raises(ImageError, match="481x321 = 0.154 MP, more than the 0.001 MP"):
        check_upload(bsds_image_path, max_pixels=1000)
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(bsds_image_path.read_bytes()[:3000])
    component = upload_image(render=False)
    for path, message in ((text, "notes.png is not an image"), (truncated, "cannot read")):
        with pytest.raises(gr.Error, match=message):
            component.preprocess(ImageData(path=str(path), orig_name=path.name))
    image = component.preprocess(ImageData(path=str(bsds_image_path), orig_name=bsds_image_path.name))
    np.testing.assert_array_equal(image, load_image(bsds_image_path))


def test_server_down_message_names_the_target(small_image):
    from demo.browser import free_port
    from serving.retry import RetryPolicy

    target = f"127.0.0.1:{free_port()}"
    segmenter = Segmenter(ServedMaps(target, timeout=5.0, retry=RetryPolicy(attempts=2, base_delay=0.01)))
    with pytest.raises(gr.Error, match=rf"model server at {target}.*2 attempt\(s\)"):  # retried as the CLIs do
        segmenter.run(small_image, *controls(Settings(superpixels="egs", merge="adjacent", bits=None)), None)


def test_example_images_exist():
    examples = example_images()
    assert any(path.endswith("100007.jpg") for path in examples)
    assert any(path.endswith("astronaut.png") for path in examples)
    assert all(load_image(path).ndim == 3 for path in examples)


def test_app_builds_with_named_events():
    app = build_app(CountingMaps(), examples=[])
    names = {dependency.get("api_name") for dependency in app.config["dependencies"]}
    assert {"segment", "resegment", "select_segment", "superpixel_controls", "merge_controls"} <= names


def test_segment_endpoint_for_gradio_client(bsds_image_path):
    from gradio_client import Client, handle_file

    from demo.browser import serve

    source = CountingMaps()
    with serve(build_app(source, examples=[])) as url:
        outputs = Client(url, verbose=False).predict(handle_file(str(bsds_image_path)), "slic", 100, 300, 1, "global",
                                                     30, "learned", 24, api_name="/segment")
    settings = Settings(superpixels="slic", n_segments=300, hamming=1, merge="global", bits=24)
    expected = segment_upload(load_image(bsds_image_path), settings, CountingMaps()).result
    assert f"**{expected.n_segments} segments**" in outputs[5] and "24-bit" in outputs[5]
    labels = [path for path in outputs[4] if path.endswith(f"{bsds_image_path.stem}_labels.png")]
    np.testing.assert_array_equal(np.asarray(Image.open(labels[0])), expected.labels)
    assert source.calls == 1


def test_served_app_has_no_code_length_control():
    class Served(CountingMaps):
        bits_choices = ()

    app = build_app(Served(), examples=[])
    assert not any(isinstance(block, gr.Radio) and block.label == "Binary map code length"
                   for block in app.blocks.values())


def interior_pixels(labels: np.ndarray, count: int) -> list[tuple[int, int]]:
    """(row, column) of the pixel farthest from any segment boundary in each of the ``count`` segments
    where that distance is largest: clicks there hit the segment whatever the page's rounding."""
    from scipy import ndimage
    from skimage.segmentation import find_boundaries

    distance = ndimage.distance_transform_edt(~find_boundaries(labels, mode="inner"))
    segments = np.arange(labels.max() + 1)
    farthest = ndimage.maximum_position(distance, labels, segments)
    depth = ndimage.maximum(distance, labels, segments)
    return [tuple(int(v) for v in farthest[i]) for i in np.argsort(depth)[::-1][:count]]


@pytest.mark.slow
def test_browser_upload_segments_like_the_library(tmp_path, bsds_image_path):
    """The page in headless Chromium: a bad file gives a message, then a BSDS500 image is segmented
    exactly as :func:`binmap_tf.segmentation.pipeline.segment` does, switching the merge mode re-merges
    from the cached map, the hierarchy slider re-cuts the stored tree into the library's labels (the
    labels download), and a click highlights exactly the library's segment under it and shows its row."""
    try:
        from demo.browser import (
            SEGMENTS_PATTERN,
            chromium_page,
            chromium_path,
            click_pixel,
            download_links,
            fetch,
            segment_in_page,
            selected_row,
            serve,
            set_segment_count,
            shown_image,
            summary_after,
        )

        chromium_path()
    except (ImportError, FileNotFoundError) as error:  # CI must have the browser: fail, do not skip
        pytest.fail(f"the browser test cannot run: {error}")
    from playwright.sync_api import expect

    from binmap_tf.segmentation.pipeline import default_mapper

    calls: list[int] = []

    def counting_mapper(bits: int):
        mapper = build_local_mapper(bits)

        def call(image: np.ndarray) -> BinaryMap:
            calls.append(bits)
            return mapper(image)
        return call

    image = load_image(bsds_image_path)
    expected = segment(image, default_mapper(edges=True), **Settings().segment_options())  # the mapper, built
    count = 2 * expected.n_segments  # a finer level of the hand-set tree the slider re-cuts
    recut = segment(image, binary_map=expected.binary_map,
                    **Settings(scorer="hand-set", segments=count).segment_options()).labels
    clicks = interior_pixels(recut, 2)
    not_an_image = tmp_path / "notes.png"
    not_an_image.write_text("not an image")
    with serve(build_app(LocalMappers(build=counting_mapper))) as url, chromium_page() as page:
        page.goto(url)
        page.locator("#input-image input[type=file]").set_input_files(str(not_an_image))
        page.locator("#run").click()
        expect(page.get_by_test_id("toast-body")).to_contain_text("notes.png is not an image this demo can read")

        run = segment_in_page(page, url, bsds_image_path)
        page.screenshot(path=str(tmp_path / "demo.png"), full_page=True)
        print(f"\nupload -> result in the browser: {run.seconds:.2f} s for {bsds_image_path.name} "
              f"({run.n_segments} segments); screenshot {tmp_path / 'demo.png'}")
        page.get_by_label("any superpixels (global)").check()
        global_summary = summary_after(page, "global merging")
        page.get_by_label("hierarchy (learned or hand-set order)").check()
        expect(page.locator("#segments-count")).to_be_visible()
        hierarchy_summary = summary_after(page, "merge hierarchy ordered by the learned scorer")
        page.get_by_label("hand-set weights (codes + edges + colour)").check()
        hand_set_summary = summary_after(page, "hand-set weights")

        recut_summary, recut_seconds = set_segment_count(page, count)
        print(f"slider -> {count} segments shown: {recut_seconds:.2f} s")
        labels_url = download_links(page)[f"{bsds_image_path.stem}_labels.png"]
        downloaded = np.asarray(Image.open(io.BytesIO(fetch(page, labels_url))))
        highlighted, rows = [], []
        shown, url = shown_image(page, "#segments")  # the cut, nothing highlighted
        for y, x in clicks:
            click_pixel(page, "#segments", x, y)
            expect(page.locator("#segments img").first).not_to_have_attribute("src", url)
            after, url = shown_image(page, "#segments")
            highlighted.append(np.any(after != shown, axis=-1))
            rows.append(selected_row(page, rows[-1] if rows else None))

    assert run.n_segments == expected.n_segments
    assert calls == [8], "the CNN must run once: switching the merge mode reuses the cached map"
    expected_global = segment(image, binary_map=expected.binary_map, **Settings(merge="global").segment_options())
    assert "reused" in global_summary
    assert int(SEGMENTS_PATTERN.search(global_summary).group(1)) == expected_global.n_segments
    assert "learned scorer" in run.summary  # the page's default is the package's
    assert int(SEGMENTS_PATTERN.search(hierarchy_summary).group(1)) == expected.n_segments
    expected_hand_set = segment(image, binary_map=expected.binary_map, **Settings(scorer="hand-set").segment_options())
    assert int(SEGMENTS_PATTERN.search(hand_set_summary).group(1)) == expected_hand_set.n_segments
    assert "reused" in recut_summary and calls == [8]  # the slider re-cut the stored tree: no CNN
    np.testing.assert_array_equal(downloaded, recut)
    for (y, x), mask, row in zip(clicks, highlighted, rows):
        np.testing.assert_array_equal(mask, recut == recut[y, x])  # the library's segment, every pixel of it
        assert int(row["label"]) == recut[y, x] and int(row["area"]) == mask.sum()  # its row of the table


@pytest.mark.slow
def test_demo_and_cli_decode_and_segment_odd_files_alike(tmp_path, bsds_image_path):
    """16-bit PNG, GIF (palette), RGBA and grey files: the page's upload handler and the command line
    read them with the same decoder, so they segment them into the same labels."""
    from binmap_tf.cli.segment import main as segment_main

    crop = load_image(bsds_image_path)[:160, :240]
    files = {
        "deep.png": Image.fromarray(crop[..., 0].astype(np.uint16) * 257),
        "palette.gif": Image.fromarray(crop).quantize(64),
        "rgba.png": Image.fromarray(np.dstack([crop, np.full(crop.shape[:2], 128, np.uint8)])),
        "grey.png": Image.fromarray(crop[..., 1]),
    }
    for name, pil in files.items():
        pil.save(tmp_path / name)
    assert segment_main([str(tmp_path / name) for name in files] + ["--out", str(tmp_path / "cli")]) == 0
    component, source = upload_image(render=False), LocalMappers()
    for name in files:
        path = tmp_path / name
        upload = component.preprocess(ImageData(path=str(path), orig_name=name))
        np.testing.assert_array_equal(upload, load_image(path))
        labels = segment_upload(upload, Settings(), source).result.labels
        np.testing.assert_array_equal(labels, np.load(tmp_path / "cli" / f"{path.stem}_labels.npy"), err_msg=name)
    grey = component.preprocess(ImageData(path=str(tmp_path / "deep.png"), orig_name="deep.png"))
    assert grey.max() > 200  # a 16-bit file is not read as all white (or all black)
    assert len(np.unique(grey)) > 50
