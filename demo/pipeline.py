"""The demo's steps as plain functions and small classes, without Gradio, so tests can call them:
check and prepare an upload, get its binary map (cached per image and code length), segment it
on the host (re-cutting the stored merge tree when only the number of segments changes), render
what the page shows, highlight a clicked segment and write the downloads (the command line's files).
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import os
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol

import numpy as np

from binmap_tf.binary_map.maps import BinaryMap
from binmap_tf.common.images import ImageError, as_rgb_uint8
from binmap_tf.common.paths import data_root
from binmap_tf.segmentation.interchange import coco_entry
from binmap_tf.segmentation.labels import channel_sums
from binmap_tf.segmentation.outputs import COCO_FILE, FILE_SUFFIXES, boundary_overlay, write_coco, write_files
from binmap_tf.segmentation.pipeline import (
    DEFAULT_MERGE,
    DEFAULT_SCORER,
    HAND_SET,
    SegmentationResult,
    StageCache,
    choose_scorer,
    needs_edges,
    resolve_options,
    segment_with_map,
    working_image,
)
from binmap_tf.segmentation.resolution import MIN_WORKING_PIXELS, resize_image, shape_of_pixels, upsample_labels
from binmap_tf.segmentation.superpixels import EGS_SCALE, SLIC_N_SEGMENTS

# Uploads of any size are segmented at the working resolution (binmap_tf.segmentation.resolution) and
# their labels come back at full resolution (the download); the page's views are drawn at most this
# large, which is what a browser shows anyway and keeps each response small.
DEMO_MAX_PIXELS = 1024 * 1024
# Files with more pixels are refused from their header, before decoding (a 64 MP RGB image
# decodes to 192 MiB; PIL's own decompression-bomb limit is ~179 MP).
MAX_UPLOAD_PIXELS = 64 * 1024 * 1024
# Code lengths a local mapper offers: 8 bits display as grey levels, 24 as RGB.
LOCAL_BITS = (8, 24)
# Seconds a request to the model server may take (a CPU-only server needs ~20 s for 1 MP).
SERVING_TIMEOUT = 60.0
# The hierarchy's number-of-segments slider: 0 (its start) cuts at the scorer's own height, chosen on
# BSDS500 val; any other value cuts at that many segments.
AUTOMATIC_CUT = 0
# What orders the hierarchy's merges: the page's choices, as labels and values.
MERGE_ORDERS = (("learned scorer (codes, edges, colour, texture)", DEFAULT_SCORER),
                ("hand-set weights (codes + edges + colour)", HAND_SET))
EXAMPLE_BSDS_IDS = ("100007", "106047", "108004")
# The name downloads take when the upload's file name is unknown (webcam, clipboard).
UNNAMED_UPLOAD = "upload.png"
# Upload names kept by pixel digest (UploadNames): as many as the sessions whose state the page keeps.
NAMES_KEPT = 200
# A clicked segment is painted half-way to this colour (RGB) in the segments image.
HIGHLIGHT = (255, 0, 255)
# The files a result offers for download, the command line's: labels, the UCM (with a hierarchy), the
# region table, and a COCO file of the one image.
DOWNLOADS = ("labels", "ucm", "regions")
EXAMPLE_SKIMAGE_FILES = ("astronaut.png", "coffee.png", "chelsea.png")


class DemoError(Exception):
    """A failure the page shows as a message, e.g. the model server is down."""


class MapSource(Protocol):
    """Where binary maps come from: ``source(image, bits) -> BinaryMap``.

    ``bits_choices`` lists the code lengths the user may pick; it is empty when the source fixes
    the code length (a served model), and ``bits`` is then ignored. ``has_edges`` says whether its
    maps carry the network's edge map, which the merge hierarchy needs.
    """

    bits_choices: tuple[int, ...]
    has_edges: bool

    def __call__(self, image: np.ndarray, bits: int | None) -> BinaryMap: ...


def build_local_mapper(bits: int) -> Callable[[np.ndarray], BinaryMap]:
    """The vgg16-hed mapper with ``bits`` and HED's edge map (so switching to the hierarchy does not
    run the CNN again); 8 bits reuses :func:`binmap_tf.segmentation.pipeline.default_mapper`."""
    from binmap_tf.binary_map.model import DEFAULT_BITS, BinaryMapper
    from binmap_tf.segmentation.pipeline import default_mapper

    return default_mapper(edges=True) if bits == DEFAULT_BITS else BinaryMapper(bits=bits, edges=True)


class LocalMappers:
    """Binary maps computed in this process, one mapper per code length, built on first use and kept
    (building VGG16 takes seconds; the 24-bit map needs its own 24-bit hashing layer)."""

    has_edges = True

    def __init__(self, build: Callable[[int], Callable[[np.ndarray], BinaryMap]] = build_local_mapper,
                 bits_choices: tuple[int, ...] = LOCAL_BITS) -> None:
        self._build = build
        self.bits_choices = bits_choices
        self._mappers: dict[int, Callable[[np.ndarray], BinaryMap]] = {}
        self._lock = threading.Lock()

    def mapper(self, bits: int | None) -> Callable[[np.ndarray], BinaryMap]:
        """The mapper for ``bits``, built now if it is the first request for it."""
        if bits not in self.bits_choices:
            raise ValueError(f"choose a code length among {self.bits_choices}, not {bits!r}")
        with self._lock:  # two queue workers must not build the same model twice
            if bits not in self._mappers:
                self._mappers[bits] = self._build(bits)
            return self._mappers[bits]

    def __call__(self, image: np.ndarray, bits: int | None) -> BinaryMap:
        return self.mapper(bits)(image)


def hashing_mappers(hashing: str | os.PathLike) -> LocalMappers:
    """Local maps from one hashing layer (an ``.npz`` from fit_itq or train, or ``"fine-tuned"``):
    its code length is the only choice."""
    from binmap_tf.binary_map.model import BinaryMapper

    mapper = BinaryMapper(bits=None, hashing=hashing, edges=True)
    return LocalMappers(build=lambda bits: mapper, bits_choices=(mapper.bits,))


class ServedMaps:
    """Binary maps from a model server through :class:`serving.client.BinmapClient`.

    The served model fixes the code length. Maps carry the edge map (the ``with_edges`` signature),
    as the local mappers' do, so switching to the hierarchy does not ask the server again. ``retry``
    (a :class:`serving.retry.RetryPolicy`, None: its defaults) rides out a restarting server. Every
    failure of the server becomes a :class:`DemoError` whose message names ``target``.
    """

    bits_choices: tuple[int, ...] = ()
    has_edges = True

    def __init__(self, target: str, timeout: float = SERVING_TIMEOUT, retry: Any = None) -> None:
        from serving.client import BinmapClient  # needs the [serving] extra, only with --serving
        from serving.retry import RetryPolicy

        self.target = target
        # The same client, retries included, as `segment --serving` and `batch --model-server`.
        self._client = BinmapClient(target, timeout=timeout, edges=True, retry=retry or RetryPolicy())

    def __call__(self, image: np.ndarray, bits: int | None) -> BinaryMap:
        from serving.client import ServingError

        try:
            return self._client.binary_map(image)
        except ServingError as error:
            message = str(error)
            if self.target not in message:
                message = f"no binary map from the model server at {self.target}: {message}"
            raise DemoError(message) from error


@dataclass(frozen=True)
class Settings:
    """The page's controls: superpixel method and its main parameter, merging (the Hamming threshold
    of a flat merge; or what orders a hierarchy and the number of segments it is cut at, 0 for the
    scorer's own cut) and code length. The defaults are the package's default segmentation: the
    learned hierarchy on the watershed of the network's edges, cut at its val-chosen height."""

    superpixels: str = "watershed"
    scale: float = EGS_SCALE
    n_segments: int = SLIC_N_SEGMENTS
    hamming: int = 0
    merge: str = DEFAULT_MERGE
    bits: int | None = 8
    segments: int = AUTOMATIC_CUT
    scorer: str = DEFAULT_SCORER

    def segment_options(self) -> dict[str, Any]:
        """Keyword arguments of :func:`binmap_tf.segmentation.pipeline.segment`, checked (``ValueError``) so that a
        bad setting fails before the CNN runs."""
        params = {"egs": {"scale": self.scale}, "slic": {"n_segments": self.n_segments}}.get(self.superpixels, {})
        if self.merge == "hierarchy":
            cut = {} if self.segments == AUTOMATIC_CUT else {"segments": self.segments}
            merging = {"scorer": self.scorer, **cut}
        else:
            merging = {"hamming": self.hamming}
        scorer = choose_scorer(self.merge, merging.get("scorer"))
        resolve_options(self.superpixels, merging.get("hamming", 0), self.merge, params, merging.get("segments"),
                        scorer=scorer)
        return {"superpixels": self.superpixels, "merge": self.merge, **merging, **params}


def array_digest(array: np.ndarray) -> str:
    """Hash of an array's shape, dtype and bytes: equal pixels give equal keys."""
    array = np.ascontiguousarray(array)
    digest = hashlib.blake2b(f"{array.shape}{array.dtype}".encode(), digest_size=16)
    digest.update(memoryview(array).cast("B"))
    return digest.hexdigest()


def check_upload(path: str | os.PathLike, max_pixels: int = MAX_UPLOAD_PIXELS) -> None:
    """Raise :class:`ImageError` unless ``path`` is an image file of at most ``max_pixels``.

    Reads the file header only, so a huge or hostile file is refused before it is decoded.
    """
    from PIL import Image, UnidentifiedImageError

    name = Path(path).name
    try:
        with Image.open(path) as pil:
            width, height = pil.size
    except Image.DecompressionBombError as error:
        raise ImageError(f"{name} has too many pixels to open safely ({error}); upload a smaller image") from error
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise ImageError(f"{name} is not an image this demo can read; upload a JPEG, PNG, BMP, TIFF "
                         "or WebP file") from error
    if width * height > max_pixels:
        raise ImageError(f"{name} is {width}x{height} = {width * height / 1e6:.3g} MP, more than the "
                         f"{max_pixels / 1e6:.3g} MP this demo accepts; upload a smaller image")


def prepare_image(upload: np.ndarray, max_pixels: int = DEMO_MAX_PIXELS) -> tuple[np.ndarray, tuple[str, ...]]:
    """``upload`` as uint8 RGB at its full size (grey repeated, alpha dropped), and a notice for the
    user when the page will show it smaller than ``max_pixels`` (the labels stay full-size)."""
    image = as_rgb_uint8(upload)
    height, width = image.shape[:2]
    if height * width <= max_pixels:
        return image, ()
    shown_height, shown_width = display_shape(image.shape[:2], max_pixels)
    return image, (f"The image is {width}x{height} pixels ({height * width / 1e6:.1f} MP): it is segmented whole "
                   f"and the label download is full-size; the page shows it at {shown_width}x{shown_height}.",)


def display_shape(shape: tuple[int, int], max_pixels: int) -> tuple[int, int]:
    """(height, width) the page draws an image of ``shape`` at: at most ``max_pixels``, aspect kept."""
    height, width = shape
    return tuple(shape) if height * width <= max_pixels else shape_of_pixels(shape, max(max_pixels, MIN_WORKING_PIXELS))


class UploadNames:
    """File names of recent uploads by :func:`array_digest` of their pixels: the page hands the
    segmentation a numpy image without its file name, which the downloads and the COCO file keep, as
    the command line names them. Holds the last :data:`NAMES_KEPT`; thread-safe."""

    def __init__(self, capacity: int = NAMES_KEPT) -> None:
        self._names: OrderedDict[str, str] = OrderedDict()
        self._capacity = capacity
        self._lock = threading.Lock()

    def add(self, pixels: np.ndarray, name: str | None) -> None:
        """Remember ``name`` (a file name; any folder is dropped) for the uint8 RGB ``pixels``."""
        if name:
            with self._lock:
                self._names[array_digest(pixels)] = Path(name).name
                while len(self._names) > self._capacity:
                    self._names.popitem(last=False)

    def get(self, digest: str) -> str:
        """The file name of the upload with ``digest``, or :data:`UNNAMED_UPLOAD`."""
        with self._lock:
            return self._names.get(digest, UNNAMED_UPLOAD)


@dataclass
class Shown:
    """What the page shows of the current result, for a click on it: the labels, the segments image
    and the region table's header and rows (as in the downloaded CSV)."""

    labels: np.ndarray
    segments: np.ndarray
    header: list[str]
    rows: list[list[str]]


@dataclass
class MapCache:
    """The session's current image, prepared, its binary maps by code length, the stages of its last
    segmentation and what the page shows of it (kept in ``gr.State``).

    ``digest`` is :func:`array_digest` of the uploaded pixels, so changing a superpixel or merge control
    reuses the map instead of running the CNN again, and ``stages`` keeps the superpixels and the merge
    tree while only the number of segments changes (``stages_key``: the other settings), so the
    hierarchy slider re-cuts the stored tree. A new image replaces the whole entry: one image per
    session bounds the memory a session holds.
    """

    digest: str = ""
    image: np.ndarray | None = None
    working: np.ndarray | None = None  # the image the CNN and the merge run on (working_image)
    notices: tuple[str, ...] = ()
    maps: dict[int | None, BinaryMap] = field(default_factory=dict)
    stages: StageCache = field(default_factory=StageCache)
    stages_key: Settings | None = None
    shown: Shown | None = None


@dataclass
class DemoRun:
    """One segmentation by the demo: the prepared image, the result, and where its map came from."""

    image: np.ndarray
    result: SegmentationResult
    cnn_seconds: float | None  # None: the binary map came from the cache
    notices: tuple[str, ...]
    cache: MapCache


def segment_upload(upload: np.ndarray, settings: Settings, source: MapSource, cache: MapCache | None = None,
                   max_pixels: int = DEMO_MAX_PIXELS) -> DemoRun:
    """Segment an uploaded image; the CNN runs only for an image and code length not in ``cache``.

    Raises :class:`ImageError` or ``ValueError`` for a bad image or setting, :class:`DemoError`
    when the map source fails.
    """
    options = settings.segment_options()
    rgb = as_rgb_uint8(upload)  # ImageError for what is not an image; no copy for uint8 RGB
    digest = array_digest(rgb)
    if cache is None or cache.digest != digest:
        image, notices = prepare_image(rgb, max_pixels)
        cache = MapCache(digest=digest, image=image, working=working_image(image), notices=notices)
    binary_map = cache.maps.get(settings.bits)
    cnn_seconds = None
    if needs_edges(settings.superpixels, settings.merge) and not source.has_edges:
        raise ValueError("the merge hierarchy and the watershed superpixels need the network's edge map, which "
                         "this source of binary maps does not give; choose EGS or SLIC and adjacent or global merging")
    if binary_map is None:
        start = time.perf_counter()
        binary_map = source(cache.working, settings.bits)
        cnn_seconds = time.perf_counter() - start
        cache.maps[settings.bits] = binary_map
    stages_key = dataclasses.replace(settings, segments=AUTOMATIC_CUT)  # all but the cut
    if cache.stages_key != stages_key:  # keep one setting's stages: the memory a session holds stays bounded
        cache.stages, cache.stages_key = StageCache(), stages_key
    result = segment_with_map(cache.image, binary_map, working=cache.working, stages=cache.stages, **options)
    return DemoRun(image=cache.image, result=result, cnn_seconds=cnn_seconds, notices=cache.notices, cache=cache)


def average_colours(image: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Every segment painted in its mean colour, as ``label2rgb(kind="avg")`` draws it, but with one
    ``bincount`` per channel instead of one pass over the image per label (label2rgb: 1.3 s for the
    955 EGS superpixels of a 512x512 image)."""
    flat_labels = labels.ravel()
    counts = np.bincount(flat_labels)
    pixels = image.reshape(-1, image.shape[-1]).astype(np.float64)
    sums = channel_sums(flat_labels, pixels, len(counts))
    means = np.round(sums / np.maximum(counts, 1)[:, None]).astype(np.uint8)
    return means[labels]


@dataclass
class Views:
    """What the page shows for one :class:`DemoRun`."""

    binary_map: np.ndarray  # the map upsampled to the image: grey (8 bits) or RGB (24 bits)
    superpixels: np.ndarray  # superpixel boundaries on the image
    segments: np.ndarray  # segments in their mean colour, with boundaries (a click highlights one)
    table: list[list[str]]  # counts and seconds per stage
    summary: str  # Markdown: counts, settings and notices


def stats_table(run: DemoRun) -> list[list[str]]:
    """Rows ``[quantity, value]``: sizes, counts and seconds per stage (CNN "cached" when reused)."""
    result, timings = run.result, run.result.timings
    height, width = result.labels.shape
    grid_height, grid_width = result.binary_map.grid_shape
    cnn = "cached" if run.cnn_seconds is None else f"{run.cnn_seconds:.3f}"
    return [
        ["image", f"{width} x {height}"],
        ["binary map", f"{result.binary_map.n_bits} bits, {grid_width} x {grid_height} grid"],
        ["superpixels", str(result.n_superpixels)],
        ["segments", str(result.n_segments)],
        ["CNN (s)", cnn],
        ["superpixels (s)", f"{timings['superpixels']:.3f}"],
        ["assign codes (s)", f"{timings['assign']:.3f}"],
        ["merge (s)", f"{timings['merge']:.3f}"],
        ["total (s)", f"{timings['total'] + (run.cnn_seconds or 0.0):.3f}"],
    ]


def summary_text(run: DemoRun) -> str:
    """Markdown: the counts and settings in one line, then the notices."""
    result, options = run.result, run.result.options
    if options["merge"] == "hierarchy":
        order = (f"the learned scorer {options['scorer']!r}" if "scorer" in options
                 else "hand-set weights of codes, edges and colour")
        cut = ("at the number of segments asked for" if "segments" in options["cut"]
               else f"at height {options['cut']['threshold']:g} (chosen on BSDS500 val)")
        how = f"merge hierarchy ordered by {order}, cut {cut}"
    else:
        codes = "equal codes" if options["hamming"] == 0 else f"codes within Hamming distance {options['hamming']}"
        how = f"{codes}, {options['merge']} merging"
    origin = "reused" if run.cnn_seconds is None else f"computed in {run.cnn_seconds:.1f} s"
    lines = [f"**{result.n_segments} segments** merged from {result.n_superpixels} "
             f"{options['superpixels'].upper()} superpixels ({how}; "
             f"{result.binary_map.n_bits}-bit binary map {origin})."]
    lines += [f"⚠️ {notice}" for notice in run.notices]
    return "\n\n".join(lines)


def render(run: DemoRun, max_pixels: int = DEMO_MAX_PIXELS) -> Views:
    """The images, table and summary the page shows for ``run``, drawn at most ``max_pixels`` large."""
    shape = display_shape(run.image.shape[:2], max_pixels)
    image = resize_image(run.image, shape)
    labels, superpixels = (upsample_labels(values, shape) for values in (run.result.labels, run.result.superpixels))
    return Views(binary_map=run.result.binary_map.to_image(),
                 superpixels=boundary_overlay(image, superpixels),
                 segments=boundary_overlay(average_colours(image, labels), labels),
                 table=stats_table(run), summary=summary_text(run))


def write_downloads(run: DemoRun, folder: str | os.PathLike, file_name: str) -> list[Path]:
    """Write the command line's files of ``run`` for the upload ``file_name``: ``<stem>_labels.png``,
    with a hierarchy ``<stem>_ucm2.png`` and ``.mat``, ``<stem>_regions.csv`` and a COCO file of the one
    image, ``coco.json`` (byte for byte what ``binmap-segment --ucm --regions --coco`` writes for the
    same image and options). They go to a subfolder of ``folder`` named by the image, name and
    options, so equal results share files and repeated runs do not pile them up. Returns the files
    offered for download (not the ``.npy`` labels)."""
    result = run.result
    key = json.dumps([array_digest(run.image), file_name, result.options], sort_keys=True, default=str)
    subfolder = Path(folder) / hashlib.blake2b(key.encode(), digest_size=8).hexdigest()
    names = [name for name in DOWNLOADS if name != "ucm" or result.hierarchy is not None]
    paths = write_files(subfolder, Path(file_name).stem, run.image, result, names)
    write_coco(subfolder / COCO_FILE, [coco_entry(result, file_name)])
    return [path for path in paths if path.suffix != ".npy"] + [subfolder / COCO_FILE]


def shown(run: DemoRun, views: Views, downloads: list[Path]) -> Shown:
    """What a click on ``run``'s segments image reads: its labels and image, and the region table as
    downloaded (the ``_regions.csv`` among ``downloads``)."""
    (table,) = [path for path in downloads if path.name.endswith(FILE_SUFFIXES["regions"][0])]
    header, *rows = list(csv.reader(table.read_text().splitlines()))
    labels = upsample_labels(run.result.labels, views.segments.shape[:2])  # as drawn: clicks are in the view
    return Shown(labels=labels, segments=views.segments, header=header, rows=rows)


def highlight(segments: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``segments`` (uint8 RGB) with the pixels of ``mask`` painted half-way to :data:`HIGHLIGHT`."""
    painted = segments.copy()
    painted[mask] = (segments[mask].astype(np.uint16) + np.array(HIGHLIGHT, np.uint16) + 1) // 2
    return painted


def select_segment(view: Shown, x: int, y: int) -> tuple[np.ndarray, list[str], list[str]]:
    """The segment at pixel column ``x``, row ``y``: the segments image with it highlighted, and its row
    of the region table with the header."""
    label = int(view.labels[y, x])
    return highlight(view.segments, view.labels == label), view.header, view.rows[label]


def example_images() -> list[str]:
    """Example files: a few BSDS500 test images (when the shared data is present) and
    scikit-image's bundled photos."""
    from skimage import data

    bsds = data_root() / "bsds500" / "images" / "test"
    candidates = [bsds / f"{name}.jpg" for name in EXAMPLE_BSDS_IDS]
    candidates += [Path(data.data_dir) / name for name in EXAMPLE_SKIMAGE_FILES]
    return [str(path) for path in candidates if path.is_file()]
