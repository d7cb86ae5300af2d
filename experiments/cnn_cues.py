"""More of the CNN as inputs of the learned merge scorer (issue 23): pooled backbone features per region
(item 3) and HED's five side outputs per border (item 2).

* ``--layers conv5_3 [conv4_3]``: each region is also described by the mean of the backbone's features
  over its pixels, per layer PCA-reduced and whitened on BSDS500 train (``--dims`` components). A pair
  gets the distance of the two mean descriptors and the absolute difference per component.
* ``--side-edges``: each border is also described by the mean strength, along it, of each of HED's five
  side outputs (sigmoid of ``dsn1`` .. ``dsn5``, the maps HED fuses into its edge map): fine sides fire
  on texture, coarse ones on object outlines, which the fused map mixes.

Everything else is the shipped recipe: ``python -m experiments.cnn_cues --layers conv5_3 --out DIR --
[binmap-train-merge options]`` runs :func:`binmap_tf.cli.train_merge.main` with the cues patched in, so
the record beside ``DIR/scorer.npz`` holds the same val figures (ODS covering, covering per level) as
the shipped scorer's, for a like-for-like comparison. ``DIR/projection.{npz,json}`` hold the PCA.

The cues ride along the hierarchy's running sums (region descriptors and border strengths add as
regions merge), so they are re-read at every level as the codes are. The patches live only inside
:func:`cues_patched`; the scorer written takes more features than the product computes, so the product
cannot load it by mistake (``MergeScorer.logits`` rejects the width).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import sparse

from binmap_tf.binary_map.maps import BinaryMap
from binmap_tf.common.files import write_json, write_npz

LAYER_CHANNELS = {"conv4_3": slice(0, 512), "conv5_3": slice(512, 1024)}  # of the conv4_3+conv5_3 features
SAMPLES_PER_IMAGE = 256  # grid cells drawn per train image for the PCA (as the shipped ITQ fit)
SIDES = 5  # HED's side outputs dsn1 .. dsn5


@dataclass
class DescribedMap(BinaryMap):
    """A binary map plus per-cell region descriptors ``(h2, w2, d)`` on their own grid with the flat
    descriptor cell of every image pixel ``(H, W)``, and/or HED's side outputs ``(H, W, SIDES)``."""

    descriptors: np.ndarray | None = None
    descriptor_cells: np.ndarray | None = None
    sides: np.ndarray | None = None


@dataclass(frozen=True)
class Projection:
    """Per layer: the mean, the components ``(channels, dims)`` and the scales that whiten them."""

    layers: tuple[str, ...]
    means: tuple[np.ndarray, ...]
    components: tuple[np.ndarray, ...]
    scales: tuple[np.ndarray, ...]

    @property
    def dims(self) -> int:
        return sum(c.shape[1] for c in self.components)

    def __call__(self, features: np.ndarray) -> np.ndarray:
        """Whitened components ``(h, w, dims)`` float32 of conv4_3+conv5_3 features ``(h, w, 1024)``."""
        parts = [((features[..., LAYER_CHANNELS[layer]].astype(np.float32) - mean) @ components) / scale
                 for layer, mean, components, scale in zip(self.layers, self.means, self.components, self.scales)]
        return np.concatenate(parts, axis=-1).astype(np.float32)


def fit_projection(samples: np.ndarray, layers: tuple[str, ...], dims: int) -> Projection:
    """PCA of each layer's channels of ``samples`` ``(n, 1024)`` to ``dims`` whitened components."""
    means, components, scales = [], [], []
    for layer in layers:
        x = samples[:, LAYER_CHANNELS[layer]].astype(np.float64)
        mean = x.mean(axis=0)
        _, singular, vt = np.linalg.svd(x - mean, full_matrices=False)
        means.append(mean.astype(np.float32))
        components.append(vt[:dims].T.astype(np.float32))
        scales.append((singular[:dims] / np.sqrt(len(x) - 1)).astype(np.float32))
    return Projection(tuple(layers), tuple(means), tuple(components), tuple(scales))


def descriptor_sums(labels: np.ndarray, cells: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """Summed descriptors ``(n, d)`` of every region of ``labels`` (``0 .. n-1``): each pixel adds its cell's row."""
    table = grid.reshape(-1, grid.shape[-1]).astype(np.float64)
    n = int(labels.max()) + 1
    overlap = sparse.csr_matrix((np.ones(labels.size), (labels.ravel(), cells.ravel())), shape=(n, len(table)))
    return np.asarray(overlap @ table)


def side_border_sums(superpixels: np.ndarray, sides: np.ndarray, connectivity: int) -> np.ndarray:
    """Summed strength ``(e, SIDES)`` of each side output along every border, in the order of
    :func:`binmap_tf.segmentation.hierarchy._border_sums` (a pixel pair's strength is the larger of its two
    pixels', as for the fused edges)."""
    from binmap_tf.segmentation.merge import boundary_pixel_pairs, label_pair_keys

    first, second = boundary_pixel_pairs(superpixels, connectivity)
    pair_keys, _ = label_pair_keys(superpixels, first, second)
    keys, inverse = np.unique(pair_keys, return_inverse=True)
    flat = sides.reshape(-1, sides.shape[-1])
    strength = np.maximum(flat[first], flat[second]).astype(np.float64)
    return np.stack([np.bincount(inverse, strength[:, side], len(keys)) for side in range(sides.shape[-1])], axis=1)


def cue_feature_names(dims: int, side_edges: bool) -> list[str]:
    """Names of the columns :func:`cues_patched` appends to the scorer's features."""
    region = ["descriptor_distance", *(f"descriptor_diff{j}" for j in range(dims))] if dims else []
    return region + ([f"side{k}_mean" for k in range(1, SIDES + 1)] if side_edges else [])


def descriptor_features(area: np.ndarray, sums: np.ndarray) -> np.ndarray:
    """Distance and per-component absolute difference ``(m, 1 + d)`` of the two regions' mean descriptors;
    ``area`` ``(2, m)`` and ``sums`` ``(2, m, d)`` as the other pair sums."""
    difference = np.abs(sums[0] / area[0, :, None] - sums[1] / area[1, :, None])
    return np.concatenate([np.sqrt((difference ** 2).sum(axis=1, keepdims=True)), difference], axis=1)


@contextlib.contextmanager
def cues_patched(describe: Callable, dims: int, side_edges: bool) -> Iterator[None]:
    """Within: training images carry ``describe(dataset, items)``'s cues (:class:`DescribedMap`), the
    hierarchy sums ``dims`` descriptor components per region and (``side_edges``) the side outputs per
    border, and the scorer's features (with its fit's columns and record) gain :func:`cue_feature_names`."""
    from binmap_tf.cli import train_merge
    from binmap_tf.segmentation import hierarchy
    from binmap_tf.segmentation.merge_features import BORDER_WIDTH
    from binmap_tf.training import merge_training

    @dataclass(frozen=True)
    class DescribedRegions(hierarchy._Regions):
        descriptors: np.ndarray = None  # (nodes, dims) summed descriptors

        def arrays(self) -> tuple[np.ndarray, ...]:
            return (*super().arrays(), self.descriptors)

    region_sums, border_sums = hierarchy._region_sums, hierarchy._border_sums
    sides_of_edges: dict[int, np.ndarray] = {}  # id(edge map) -> side outputs, of the map being merged

    def described_region_sums(image, superpixels, binary_map, n_nodes, histograms=False):
        regions = region_sums(image, superpixels, binary_map, n_nodes, histograms)
        sides_of_edges.clear()
        if side_edges:
            sides_of_edges[id(binary_map.edges)] = binary_map.sides
        if not dims:
            return regions
        sums = np.zeros((n_nodes, dims))
        n = int(superpixels.max()) + 1
        sums[:n] = descriptor_sums(superpixels, binary_map.descriptor_cells, binary_map.descriptors)
        return DescribedRegions(*regions.arrays(), descriptors=sums)

    def described_border_sums(superpixels, edges, connectivity):
        pairs, sums = border_sums(superpixels, edges, connectivity)
        if not side_edges:
            return pairs, sums
        return pairs, np.concatenate([sums, side_border_sums(superpixels, sides_of_edges[id(edges)], connectivity)],
                                     axis=1)

    class CuedPairFeatures(hierarchy.PairFeatures):
        def __call__(self, regions, first, second, border, n_regions):
            area, votes, colour, histogram, *descriptors = regions.pair(first, second)
            columns = [hierarchy.pair_features(area, votes, colour, histogram, border[:, :BORDER_WIDTH],
                                               self.image_area, codes=self.codes)]
            if descriptors:
                columns.append(descriptor_features(area, descriptors[0]))
            if side_edges:
                columns.append(border[:, BORDER_WIDTH:] / np.maximum(border[:, 1:2], 1.0))
            return np.concatenate(columns, axis=1)

    extra = len(cue_feature_names(dims, side_edges))
    feature_columns, feature_names = merge_training.feature_columns, train_merge.feature_names
    load_training_images = train_merge.load_training_images

    def cued_columns(n_bits, codes):
        base = len(feature_names(n_bits, codes=True))
        return np.concatenate([feature_columns(n_bits, codes), np.arange(base, base + extra)])

    def described_images(dataset, cache, *args, **kwargs):
        return describe(dataset, load_training_images(dataset, cache, *args, **kwargs))

    patches = [(hierarchy, "_region_sums", described_region_sums), (hierarchy, "_border_sums", described_border_sums),
               (hierarchy, "PairFeatures", CuedPairFeatures), (merge_training, "feature_columns", cued_columns),
               (train_merge, "feature_names", lambda n_bits, codes=True: feature_names(n_bits, codes)
                + cue_feature_names(dims, side_edges)),
               (train_merge, "load_training_images", described_images)]
    saved = [(module, name, getattr(module, name)) for module, name, _ in patches]
    try:
        for module, name, value in patches:
            setattr(module, name, value)
        yield
    finally:
        for module, name, value in saved:
            setattr(module, name, value)


def side_output_backbone(backbone):
    """``backbone`` (VGG16-HED with its edges) reading out HED's side outputs ``(H, W, SIDES)`` as probabilities."""
    import keras

    model = backbone.model
    sides = keras.layers.Activation("sigmoid", name="side_probabilities")(model.get_layer("sides").output)
    return dataclasses.replace(backbone, model=keras.Model(model.inputs, sides), options={"features": "hed_sides"})


def parse_args(argv: list[str] | None) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(prog="python -m experiments.cnn_cues", description=__doc__.split("\n\n")[0],
                                     epilog="Arguments after -- go to binmap-train-merge (not --out).")
    parser.add_argument("--layers", nargs="*", choices=sorted(LAYER_CHANNELS), default=[],
                        help="pooled features of these layers per region (default: none)")
    parser.add_argument("--dims", type=int, default=8, help="PCA components per layer (default: %(default)s)")
    parser.add_argument("--side-edges", action="store_true", help="HED's side outputs along each border")
    parser.add_argument("--feature-cache", type=Path, default=None,
                        help="feature cache (default: $BINMAP_TF_HOME/features)")
    parser.add_argument("--out", type=Path, required=True, help="folder for the projection and the scorer")
    argv = list(argv) if argv is not None else None
    if argv is not None and "--" in argv:
        split = argv.index("--")
        args, rest = parser.parse_args(argv[:split]), argv[split + 1:]
    else:
        args, rest = parser.parse_known_args(argv)
        rest = [item for item in rest if item != "--"]
    if not args.layers and not args.side_edges:
        parser.error("choose --layers and/or --side-edges")
    return args, rest


def fit_on_train(backbone, layers: tuple[str, ...], dims: int, feature_cache: Path | None, out: Path) -> Projection:
    """The PCA of ``layers`` on :data:`SAMPLES_PER_IMAGE` random cells of each BSDS500 train image, written to ``out``."""
    from binmap_tf.evaluation.datasets import load_dataset
    from binmap_tf.training.feature_cache import FeatureCache

    clock = time.perf_counter()
    rng = np.random.default_rng(0)
    cache = FeatureCache(backbone, "bsds500-train", feature_cache)
    samples = []
    for sample in load_dataset("bsds500", "train"):
        features = cache.get(sample).reshape(-1, 1024)
        samples.append(features[rng.choice(len(features), min(SAMPLES_PER_IMAGE, len(features)), replace=False)])
    projection = fit_projection(np.concatenate(samples), layers, dims)
    write_npz(out / "projection.npz", **{f"{layer}_{key}": getattr(projection, key + "s")[i]
                                          for i, layer in enumerate(projection.layers)
                                          for key in ("mean", "component", "scale")})
    write_json(out / "projection.json", {
        "layers": list(layers), "dims_per_layer": dims, "fit_on": "bsds500 train",
        "samples": int(sum(len(s) for s in samples)), "samples_per_image": SAMPLES_PER_IMAGE, "seed": 0,
        "explained_scales": {layer: scale.tolist() for layer, scale in zip(projection.layers, projection.scales)},
        "seconds": round(time.perf_counter() - clock, 1)})
    return projection


def main(argv: list[str] | None = None) -> int:
    from binmap_tf.binary_map.model import build_backbone_at
    from binmap_tf.cli import train_merge
    from binmap_tf.cli.common import start_tensorflow
    from binmap_tf.training.feature_cache import FeatureCache

    args, train_argv = parse_args(argv)
    start_tensorflow()
    features_backbone = build_backbone_at("vgg16-hed", "fp32", features="conv4_3+conv5_3")
    sides_backbone = side_output_backbone(build_backbone_at("vgg16-hed", "fp32", edges=True)) if args.side_edges else None
    projection = fit_on_train(features_backbone, tuple(args.layers), args.dims, args.feature_cache, args.out) \
        if args.layers else None

    def describe(dataset, items):
        namespace = f"bsds500-{dataset.split}"
        features = FeatureCache(features_backbone, namespace, args.feature_cache)
        sides = FeatureCache(sides_backbone, namespace, args.feature_cache) if sides_backbone else None
        described = []
        for sample, item in zip(dataset, items):
            fields = {field.name: getattr(item.binary_map, field.name) for field in dataclasses.fields(BinaryMap)}
            if projection is not None:
                grid = projection(features.get(sample))
                fields["descriptors"], fields["descriptor_cells"] = grid, BinaryMap(
                    np.zeros((*grid.shape[:2], 1), np.uint8), np.zeros((*grid.shape[:2], 1), np.float32),
                    features_backbone.geometry, features_backbone.scale, item.binary_map.image_shape).cell_index()
            if sides is not None:
                fields["sides"] = sides.get(sample)
                if fields["sides"].shape[:2] != item.binary_map.edges.shape[:2]:
                    raise ValueError(f"side outputs {fields['sides'].shape} do not match the edge map of {sample.id}")
            described.append(dataclasses.replace(item, binary_map=DescribedMap(**fields)))
        return described

    with cues_patched(describe, projection.dims if projection else 0, args.side_edges):
        return train_merge.main([*train_argv, "--out", str(args.out / "scorer.npz")])


if __name__ == "__main__":
    raise SystemExit(main())
