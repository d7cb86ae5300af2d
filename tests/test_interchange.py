"""The outputs other tools open (issue 24): the hierarchy as a BSDS ucm2 (.mat and 16-bit PNG) that cuts
into ``segment``'s labels, COCO masks that decode into them, and the region table. Maps without a CNN
(codes on a grid, Sobel edges), so the learned hierarchy runs in seconds on real BSDS500 images."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import scipy.io
from PIL import Image
from skimage.color import rgb2gray, rgb2lab
from skimage.filters import sobel
from skimage.measure import label as connected_components
from skimage.measure import regionprops, regionprops_table

from binmap_tf.binary_map.geometry import GridGeometry
from binmap_tf.binary_map.maps import BinaryMap
from binmap_tf.common.images import load_image
from binmap_tf.common.paths import data_root
from binmap_tf.evaluation.datasets import BenchSample, _read_bsds_ground_truth
from binmap_tf.evaluation.metrics import contingency, region_scores, ucm_segmentation, ucm_thresholds
from binmap_tf.segmentation.interchange import UCM_PNG_SCALE, coco_entry, region_table, table_csv
from binmap_tf.segmentation.outputs import check_extras, write_coco, write_segmentation
from binmap_tf.segmentation.pipeline import StageCache, segment, segment_with_map

STRIDE = 16
IMAGE_IDS = ("100007", "10081")
# pycocotools' decoder predates numpy 2's copy keyword.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:pycocotools.*")


def sobel_map(image: np.ndarray, bits: int = 8) -> BinaryMap:
    """A map without a CNN: codes from the mean colour of each 16-pixel cell, Sobel edges as the edge map."""
    height, width = image.shape[:2]
    grid = image[::STRIDE, ::STRIDE].astype(np.int64)
    codes = (grid[..., 0] // 64) * 16 + (grid[..., 1] // 64) * 4 + grid[..., 2] // 64
    cell_bits = ((codes[..., None] >> np.arange(bits - 1, -1, -1)) & 1).astype(np.uint8)
    edges = sobel(rgb2gray(image))
    return BinaryMap(bits=cell_bits, logits=cell_bits.astype(np.float32) - 0.5, scale=1.0,
                     image_shape=(height, width), edges=(edges / edges.max()).astype(np.float32),
                     geometry=GridGeometry(stride=STRIDE, offset=(STRIDE - 1) / 2, receptive_field=STRIDE))


@pytest.fixture(scope="module", params=IMAGE_IDS)
def segmented(request, tmp_path_factory):
    """A BSDS500 test image, its map, its default segmentation and every file written with all outputs."""
    path = data_root() / "bsds500" / "images" / "test" / f"{request.param}.jpg"
    image = load_image(path)
    binary_map = sobel_map(image)
    result = segment(image, binary_map=binary_map)
    out = tmp_path_factory.mktemp("out")
    write_segmentation(out, request.param, image, result, {}, extras=("ucm", "regions"))
    write_coco(out / "coco.json", [coco_entry(result, path.name)])
    stages = StageCache()  # other cuts of the same tree: segment's pipeline, without building the tree again

    def cut(**options) -> np.ndarray:
        return segment_with_map(image, binary_map, stages=stages, **options).labels

    return {"id": request.param, "path": path, "image": image, "map": binary_map, "result": result, "out": out,
            "cut": cut}


def same_partition(first: np.ndarray, second: np.ndarray) -> bool:
    """Whether two label images split the pixels the same way, whatever their numbering."""
    table = contingency(first, second)
    return table.shape[0] == table.shape[1] == table.nnz


def four_connected(labels: np.ndarray) -> np.ndarray:
    """``labels`` with every segment split into its 4-connected pieces: what a ucm2 can hold (see
    :meth:`~binmap_tf.segmentation.hierarchy.MergeTree.ucm`: a region touching itself only diagonally is
    split there)."""
    return connected_components(labels + 1, connectivity=1, background=0)


def levels(result) -> tuple[list[float], list[tuple[int, float]]]:
    """Thresholds halfway between successive distinct merge heights (where a cut is one level of the
    tree) and counts whose cut is a threshold cut (no tie at its boundary), with that threshold."""
    heights = np.sort(result.hierarchy.heights)
    distinct = np.unique(heights)
    thresholds = [float((distinct[i] + distinct[i + 1]) / 2) for i in np.linspace(0, len(distinct) - 2, 6).astype(int)]
    n = result.n_superpixels
    counts = [(count, float((heights[n - count - 1] + heights[n - count]) / 2))
              for count in (2, 3, 5, 8, 13, 21, 34, 55) if count < n and heights[n - count - 1] < heights[n - count]]
    return thresholds, counts


def test_ucm_file_cuts_into_segments_labels(segmented):
    """Thresholding the written ucm2 and taking connected components (the project's reader of official
    ucm2 files) gives segment()'s labels at that threshold, and at that count, up to numbering and the
    4-connectivity of a ucm2."""
    result, image, cut = segmented["result"], segmented["image"], segmented["cut"]
    ucm2 = scipy.io.loadmat(segmented["out"] / f"{segmented['id']}_ucm2.mat")["ucm2"]
    np.testing.assert_array_equal(ucm2, result.ucm())
    assert ucm2.dtype == np.float64 and ucm2.shape == (2 * image.shape[0] + 1, 2 * image.shape[1] + 1)
    thresholds, counts = levels(result)
    assert len(counts) >= 5, "too few untied counts to test"
    np.testing.assert_array_equal(cut(threshold=result.options["cut"]["threshold"]), result.labels)
    cuts = [(cut(threshold=t), t) for t in thresholds] + [(cut(segments=count), t) for count, t in counts]
    for labels, threshold in cuts:
        from_file, pieces = ucm_segmentation(ucm2, threshold), four_connected(labels)
        assert same_partition(from_file, pieces), threshold
        # As they are exactly when no segment touches itself only diagonally.
        assert same_partition(from_file, labels) == (pieces.max() == labels.max() + 1), threshold


def test_default_cut_of_the_ucm_file(segmented):
    result = segmented["result"]
    ucm2 = scipy.io.loadmat(segmented["out"] / f"{segmented['id']}_ucm2.mat")["ucm2"]
    from_file = ucm_segmentation(ucm2, result.options["cut"]["threshold"])
    assert same_partition(from_file, four_connected(result.labels))


def test_ucm_png_is_the_mat_in_16_bits(segmented):
    result = segmented["result"]
    ucm2 = scipy.io.loadmat(segmented["out"] / f"{segmented['id']}_ucm2.mat")["ucm2"]
    png = np.asarray(Image.open(segmented["out"] / f"{segmented['id']}_ucm2.png"))
    assert png.dtype == np.uint16 and png.shape == ucm2.shape
    np.testing.assert_array_equal(png, np.rint(ucm2 * UCM_PNG_SCALE))
    np.testing.assert_allclose(png / UCM_PNG_SCALE, ucm2, atol=0.5 / UCM_PNG_SCALE)
    # Cut where no merge height is within a 16-bit step, the PNG gives the .mat's segments; closer,
    # heights that round to one step cannot be told apart (the .mat keeps every digit).
    heights = np.unique(result.hierarchy.heights)
    gaps = np.flatnonzero(np.diff(heights) > 2 / UCM_PNG_SCALE)
    thresholds = (heights[gaps] + heights[gaps + 1]) / 2
    assert len(thresholds) >= 5
    for threshold in thresholds[np.linspace(0, len(thresholds) - 1, 5).astype(int)]:
        assert same_partition(ucm_segmentation(png / UCM_PNG_SCALE, threshold), ucm_segmentation(ucm2, threshold))


def test_ucm_file_scores_as_the_tree_in_the_bsds_benchmark(segmented):
    """The file through the benchmark's own path for official ucm2 files (BenchSample.load_ucm2, the
    official thresholds): the same covering, PRI and VoI as the tree's cuts split 4-connected."""
    bsds = data_root() / "bsds500"
    sample = BenchSample(id=segmented["id"], image_path=segmented["path"],
                         gt_path=bsds / "groundTruth" / "test" / f"{segmented['id']}.mat",
                         reader=_read_bsds_ground_truth, segs_path=segmented["out"] / "unused.mat",
                         ucm2_path=segmented["out"] / f"{segmented['id']}_ucm2.mat")
    ucm2, ground_truth = sample.load_ucm2(), sample.load_ground_truths()
    tree = segmented["result"].hierarchy
    for threshold in ucm_thresholds(5):
        from_file = region_scores(ucm_segmentation(ucm2, threshold), ground_truth)
        from_tree = region_scores(four_connected(tree.cut(threshold=threshold)), ground_truth)
        for name in ("covering", "rand_index", "variation_of_information"):
            assert getattr(from_file, name) == getattr(from_tree, name), (threshold, name)


def test_coco_masks_decode_into_the_labels(segmented):
    from pycocotools import mask as coco_mask
    from pycocotools.coco import COCO

    result = segmented["result"]
    coco = COCO(str(segmented["out"] / "coco.json"))
    (image_id,) = coco.getImgIds()
    assert coco.imgs[image_id]["file_name"] == segmented["path"].name
    annotations = coco.loadAnns(coco.getAnnIds(imgIds=[image_id]))
    assert len(annotations) == result.n_segments
    decoded = np.full(result.labels.shape, -1)
    props = {region.label - 1: region for region in regionprops(result.labels + 1)}
    heights = result.hierarchy.node_heights
    threshold = result.options["cut"]["threshold"]
    for annotation in annotations:
        mask = coco.annToMask(annotation).astype(bool)
        assert np.all(decoded[mask] == -1), "masks overlap"
        decoded[mask] = annotation["label"]
        region = props[annotation["label"]]
        min_row, min_col, max_row, max_col = region.bbox
        assert annotation["area"] == region.area == coco_mask.area(annotation["segmentation"])
        assert annotation["bbox"] == [min_col, min_row, max_col - min_col, max_row - min_row]
        assert annotation["score"] in heights and annotation["score"] <= threshold
    np.testing.assert_array_equal(decoded, result.labels)


def test_region_table_is_regionprops(segmented):
    result, image = segmented["result"], segmented["image"]
    table = pd.read_csv(segmented["out"] / f"{segmented['id']}_regions.csv")
    expected = regionprops_table(result.labels + 1, intensity_image=rgb2lab(image),
                                 properties=("label", "area", "bbox", "centroid", "intensity_mean"))
    np.testing.assert_array_equal(table["label"], expected["label"] - 1)
    np.testing.assert_array_equal(table["area"], expected["area"])
    for index, column in enumerate(("bbox_min_row", "bbox_min_col", "bbox_max_row", "bbox_max_col")):
        np.testing.assert_array_equal(table[column], expected[f"bbox-{index}"])
    np.testing.assert_allclose(table[["centroid_row", "centroid_col"]], np.stack(
        [expected["centroid-0"], expected["centroid-1"]], axis=1), rtol=1e-12)
    np.testing.assert_allclose(table[["mean_L", "mean_a", "mean_b"]], np.stack(
        [expected[f"intensity_mean-{c}"] for c in range(3)], axis=1), atol=0.01)  # float32 CIELAB; 1 is just visible
    # Each segment lives between the height that made it and the height at which it is merged away.
    tree, threshold = result.hierarchy, result.options["cut"]["threshold"]
    assert np.all(table["height"] <= threshold)
    assert np.all(table["parent_height"].fillna(np.inf) > threshold)
    np.testing.assert_array_equal(table["height"], tree.node_heights[table["node"]])
    np.testing.assert_array_equal(table["parent"], tree.parents[table["node"]])
    for node, label in zip(table["node"], table["label"]):  # the node's superpixels are the segment
        leaves = [node] if node < tree.n_superpixels else []
        pending = [node] if node >= tree.n_superpixels else []
        while pending:
            for child in tree.children[pending.pop() - tree.n_superpixels]:
                (leaves if child < tree.n_superpixels else pending).append(int(child))
        np.testing.assert_array_equal(np.sort(leaves), np.flatnonzero(result.segment_of == label))


def test_count_cut_records_its_own_nodes(segmented):
    image, binary_map = segmented["image"], segmented["map"]
    result = segment_with_map(image, binary_map, segments=7)
    table = region_table(image, result)
    assert len(table["node"]) == 7 and len(set(table["node"].tolist())) == 7
    assert np.isnan(table["parent_height"]).sum() <= 1  # only the root has no parent


def test_flat_merges_write_coco_and_regions_but_no_ucm(segmented, tmp_path):
    image, binary_map = segmented["image"], segmented["map"]
    for options in ({"merge": "adjacent", "superpixels": "egs"}, {"merge": "none", "superpixels": "slic"}):
        result = segment(image, binary_map=binary_map, **options)
        with pytest.raises(ValueError, match="merge='hierarchy'"):
            write_segmentation(tmp_path, "flat", image, result, {}, extras=("ucm",))
        write_segmentation(tmp_path, "flat", image, result, {}, extras=("regions",))
        table = pd.read_csv(tmp_path / "flat_regions.csv")
        assert len(table) == result.n_segments and "height" not in table and "node" not in table
        entry = coco_entry(result, "flat.jpg")
        assert len(entry["annotations"]) == result.n_segments
        assert all("score" not in annotation for annotation in entry["annotations"])
    with pytest.raises(ValueError, match="unknown outputs"):
        check_extras(["ucm2"], "hierarchy")


def test_coco_file_does_not_depend_on_the_order_of_images(segmented, tmp_path):
    result = segmented["result"]
    entries = [coco_entry(result, name) for name in ("b.jpg", "a.jpg", "c.jpg")]
    write_coco(tmp_path / "one.json", entries)
    write_coco(tmp_path / "two.json", entries[::-1])
    assert (tmp_path / "one.json").read_bytes() == (tmp_path / "two.json").read_bytes()
    document = json.loads((tmp_path / "one.json").read_text())
    assert [image["file_name"] for image in document["images"]] == ["a.jpg", "b.jpg", "c.jpg"]
    assert [annotation["id"] for annotation in document["annotations"]] == \
        list(range(1, 3 * result.n_segments + 1))


def test_table_csv_keeps_every_digit():
    text = table_csv({"a": np.array([1, 2]), "b": np.array([0.1 + 0.2, np.nan])})
    assert text == "a,b\n1,0.30000000000000004\n2,\n"
