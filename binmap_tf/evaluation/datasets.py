"""The benchmark datasets (BSDS500, MSRC-v2) as lazy sequences of images with human ground truth.

Listing a dataset only reads folder contents; images and annotations are read when a sample
asks for them, so an evaluation can hand sample indices to worker processes.

>>> dataset = load_dataset("bsds500", "test")          # doctest: +SKIP
>>> sample = dataset[0]
>>> image, annotations = sample.load_image(), sample.load_ground_truths()
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import overload

import numpy as np
import scipy.io

from binmap_tf.common.images import load_image
from binmap_tf.common.paths import data_root

__all__ = ["BenchSample", "Dataset", "Sample", "dataset_names", "load_dataset", "official_bench"]


def _read_bsds_ground_truth(path: Path) -> list[np.ndarray]:
    """All human annotations of a BSDS500 ``groundTruth`` file (uint16 labels from 1)."""
    cell = scipy.io.loadmat(path)["groundTruth"]
    return [cell[0, i]["Segmentation"][0, 0] for i in range(cell.shape[1])]


def _read_msrc_ground_truth(path: Path) -> list[np.ndarray]:
    """The one annotation of an MSRC-v2 ``<name>_GT.mat`` file (``newseg``, uint8 labels from 1)."""
    return [scipy.io.loadmat(path)["newseg"]]


@dataclass(frozen=True)
class Sample:
    """One image of a dataset and where its ground truth lives; files are read on demand.

    Attributes
    ----------
    id : str
        Image name without extension (``"100007"`` for BSDS500, ``"10_10_s"`` for MSRC).
    image_path, gt_path : Path
        The image and the ``.mat`` file of its annotations.
    reader : callable
        Reads ``gt_path`` into the list of annotations (a module-level function, so samples
        pickle to worker processes).
    """

    id: str
    image_path: Path
    gt_path: Path
    reader: Callable[[Path], list[np.ndarray]] = field(repr=False, compare=False)

    def load_image(self) -> np.ndarray:
        """The image as uint8 RGB (H, W, 3)."""
        return load_image(self.image_path)

    def load_ground_truths(self) -> list[np.ndarray]:
        """Every human annotation as an (H, W) integer label image (labels start at 1)."""
        return self.reader(self.gt_path)


@dataclass(frozen=True, kw_only=True)
class BenchSample(Sample):
    """An image of the official BSDS benchmark self-test with the inputs it scores."""

    segs_path: Path
    ucm2_path: Path

    def load_segs(self) -> list[np.ndarray]:
        """The cell ``segs`` of label images (one per threshold) the self-test scores."""
        cell = scipy.io.loadmat(self.segs_path)["segs"]
        return [cell[0, i] for i in range(cell.shape[1])]

    def load_ucm2(self) -> np.ndarray:
        """The ultrametric contour map ``ucm2`` in doubleSize format, shape (2H+1, 2W+1)."""
        return scipy.io.loadmat(self.ucm2_path)["ucm2"]


@dataclass(frozen=True)
class Dataset(Sequence[Sample]):
    """An ordered, indexable collection of samples (sorted by id).

    Attributes
    ----------
    name, split : str
        As passed to :func:`load_dataset`.
    root : Path
        The dataset folder.
    samples : tuple of Sample
        The samples, sorted by id.
    skipped : tuple of str
        Ids of images left out because their ground-truth file is missing.
    """

    name: str
    split: str
    root: Path
    samples: tuple[Sample, ...] = field(repr=False)
    skipped: tuple[str, ...] = ()

    def __len__(self) -> int:
        return len(self.samples)

    @overload
    def __getitem__(self, index: int) -> Sample: ...

    @overload
    def __getitem__(self, index: slice) -> tuple[Sample, ...]: ...

    def __getitem__(self, index: int | slice) -> Sample | tuple[Sample, ...]:
        return self.samples[index]


@dataclass(frozen=True)
class _Layout:
    """Where a dataset keeps its files, relative to the data root."""

    folder: str
    splits: tuple[str, ...]
    default_split: str
    image_dir: str  # may contain "{split}"
    gt_dir: str  # may contain "{split}"
    gt_suffix: str  # ground-truth file name = image id + gt_suffix
    read_gt: Callable[[Path], list[np.ndarray]]


_LAYOUTS = {
    "bsds500": _Layout(
        folder="bsds500",
        splits=("train", "val", "test"),
        default_split="test",
        image_dir="images/{split}",
        gt_dir="groundTruth/{split}",
        gt_suffix=".mat",
        read_gt=_read_bsds_ground_truth,
    ),
    # MSRC-v2 has no official split; the paper evaluates on the whole dataset.
    "msrc": _Layout(
        folder="msrc_v2",
        splits=("all",),
        default_split="all",
        image_dir="images",
        gt_dir="newsegmentations_mats",
        gt_suffix="_GT.mat",
        read_gt=_read_msrc_ground_truth,
    ),
}


def dataset_names() -> tuple[str, ...]:
    """Names accepted by :func:`load_dataset`."""
    return tuple(_LAYOUTS)


def _existing_folder(path: Path, what: str) -> Path:
    """Return ``path`` if it is a folder, else raise a FileNotFoundError that says how to fix it."""
    if not path.is_dir():
        raise FileNotFoundError(
            f"{what} not found: {path} is not a folder; pass --data DIR or set BINMAP_TF_DATA to the "
            "data root that holds bsds500/ and msrc_v2/"
        )
    return path


def load_dataset(
    name: str,
    split: str | None = None,
    root: str | os.PathLike | None = None,
    limit: int | None = None,
) -> Dataset:
    """List the images of a benchmark split that have ground truth.

    Parameters
    ----------
    name : {"bsds500", "msrc"}
        The dataset.
    split : str, optional
        BSDS500: ``"train"`` (200 images), ``"val"`` (100) or ``"test"`` (200, the default and
        the paper's test set; its "300 training samples" are train + val). MSRC-v2: ``"all"``
        (591 images, the default). The paper reports MSRC on "510 images" with the original
        colour-coded ground truth; here every image with the cleaned-up annotations of
        Malisiewicz & Efros is used (see the data README).
    root : path, optional
        Data root holding ``bsds500/`` and ``msrc_v2/``; default
        :func:`binmap_tf.common.paths.data_root` (``$BINMAP_TF_DATA``).
    limit : int, optional
        Keep only the first ``limit`` samples (sorted by id), e.g. for quick runs.

    Returns
    -------
    dataset : Dataset
        A sequence of :class:`Sample`; nothing is read until a sample is loaded. Images
        without a ground-truth file are left out, listed in ``skipped`` and warned about.

    Raises
    ------
    ValueError
        For an unknown name or split.
    FileNotFoundError
        When the data folders are missing.
    """
    if name not in _LAYOUTS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(_LAYOUTS)}")
    layout = _LAYOUTS[name]
    split = layout.default_split if split is None else split
    if split not in layout.splits:
        raise ValueError(f"unknown split {split!r} for {name}; choose one of {', '.join(layout.splits)}")
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be >= 0, got {limit}")

    base = data_root(root)
    folder = _existing_folder(base / layout.folder, f"{name} dataset")
    image_dir = _existing_folder(folder / layout.image_dir.format(split=split), f"{name} {split} images")
    gt_dir = _existing_folder(folder / layout.gt_dir.format(split=split), f"{name} {split} ground truth")

    samples, skipped = [], []
    for image_path in sorted(image_dir.glob("*.jpg")):
        gt_path = gt_dir / f"{image_path.stem}{layout.gt_suffix}"
        if gt_path.is_file():
            samples.append(Sample(image_path.stem, image_path, gt_path, layout.read_gt))
        else:
            skipped.append(image_path.stem)
    if skipped:
        warnings.warn(
            f"{len(skipped)} {name} {split} images have no ground truth in {gt_dir} and are left out "
            f"(e.g. {skipped[0]})",
            stacklevel=2,
        )
    return Dataset(name, split, folder, tuple(samples[:limit]), tuple(skipped))


def official_bench(root: str | os.PathLike | None = None) -> Dataset:
    """The 5-image self-test shipped with the official BSDS benchmark (``bsds500/official_bench``).

    Its samples are :class:`BenchSample` objects, which also load the segmentations
    (``segs/``) and hierarchies (``ucm2/``) whose official scores are in ``test_*/``.
    """
    folder = _existing_folder(data_root(root) / "bsds500" / "official_bench", "BSDS official benchmark")
    samples = tuple(
        BenchSample(
            path.stem,
            path,
            folder / "groundTruth" / f"{path.stem}.mat",
            _read_bsds_ground_truth,
            segs_path=folder / "segs" / f"{path.stem}.mat",
            ucm2_path=folder / "ucm2" / f"{path.stem}.mat",
        )
        for path in sorted((folder / "images").glob("*.jpg"))
    )
    return Dataset("bsds500-bench", "all", folder, samples)
