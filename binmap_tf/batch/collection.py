"""Segment a whole image collection on Ray Data, on this machine or on a Ray cluster.

The pipeline (:func:`segment_collection`) is the same method as :mod:`binmap_tf.segmentation.pipeline`, spread
over processes by an existing engine rather than a home-made pool:

1. the inputs are matched by glob pattern (local paths, or ``s3://``, ``gs://``, ``hdfs://`` URIs
   through Arrow's filesystems) and those whose outputs are complete are skipped (resumable);
2. every image is read and decoded (:func:`read_image`) by the CNN workers of step 3; a missing,
   unreadable or corrupt file becomes a failure with its message and the run goes on;
3. the CNN computes binary maps in a pool of actors (``map_batches``), each holding one model:
   a :class:`~binmap_tf.binary_map.model.BinaryMapper`, or a client of a model server; a batch goes through
   :meth:`BinaryMapper.map_batch <binmap_tf.binary_map.model.BinaryMapper.map_batch>` (or the client's
   ``binary_maps``), which stacks only images of equal size;
4. the host side (superpixels, codes, merging) runs in parallel tasks through
   :func:`~binmap_tf.segmentation.pipeline.segment_with_map`, the one segmentation pipeline, and each image is
   written by :func:`~binmap_tf.segmentation.outputs.write_segmentation`: the same files as ``segment``;
5. the driver writes :data:`FAILED_FILE` (one JSON line per failed input),
   :data:`SUMMARY_FILE` (counts, throughput, settings) and, when asked for, the run's COCO file
   (:data:`~binmap_tf.segmentation.outputs.COCO_FILE`: the images segmented now and those a
   resumed run skips, read back from the earlier file).

Why Ray Data and not Apache Beam: see README, "Large collections" (Beam's Python SDK needs
protobuf < 7, this project's TensorFlow environment has protobuf 7).
"""

from __future__ import annotations

import contextlib
import dataclasses
import glob
import io
import json
import logging
import os
import time
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, Callable, Iterable, Sequence

import numpy as np

from binmap_tf.common.errors import expected_failure, failure_message
from binmap_tf.common.files import temporary_target, write_json, write_text
from binmap_tf.common.images import ImageError, decode_image, find_images, load_image, warn_notices
from binmap_tf.segmentation.outputs import COCO_FILE, check_extras, output_paths, read_coco, write_coco
from binmap_tf.segmentation.pipeline import DEFAULT_MERGE, needs_edges, working_image
from binmap_tf.segmentation.resolution import DEFAULT_WORKING_PIXELS

if TYPE_CHECKING:
    from binmap_tf.binary_map.maps import BinaryMap

log = logging.getLogger(__name__)

SUMMARY_FILE = "batch_summary.json"
FAILED_FILE = "batch_failed.jsonl"
_WILDCARDS = "*?["
# Ray Data block size: under one decoded image and its map, so the host stage gets images one by
# one (a task each) rather than a CNN batch at a time, and a host worker lost mid-image costs that
# image alone.
BLOCK_BYTES = 2**16
# Ray's retries of the workers (actors), set here rather than left to Ray Data's defaults (which
# restart a worker without end): a worker lost with its node, or killed, is started again wherever
# a CPU is free, and the tasks it held (or whose lost outputs are needed again) run again there,
# as long as it takes (max_task_retries=-1: until its worker is up again a task fails at once each
# time it is sent, so a count of tries would end the run on a lost node); but one worker is
# restarted at most WORKER_RESTARTS times, so that an input that kills its worker every time (out
# of memory) ends the run instead of looping, while a run that loses a few nodes goes on. A retried
# image is written again whole (atomically, the same files); the summary counts it under "retried".
WORKER_RESTARTS = 8
WORKER_RETRIES = {"max_restarts": WORKER_RESTARTS, "max_task_retries": -1}
STAGES = ("cnn", "host")


@dataclass(frozen=True)
class ModelSpec:
    """Where the binary maps come from: a :class:`~binmap_tf.binary_map.model.BinaryMapper` built from
    ``mapper_options`` in every CNN worker, or a model server's client that ``connect()`` makes in
    each worker (the command line passes ``functools.partial(serving.client.connect, ...)``: the
    library never imports ``serving``), with ``server`` (``HOST:PORT``) naming it in the records.
    Plain values and a picklable factory, so it travels to worker processes on other machines."""

    mapper_options: dict[str, Any] = field(default_factory=dict)
    server: str | None = None
    connect: Callable[[], Any] | None = None

    def __post_init__(self) -> None:
        if (self.server is None) != (self.connect is None):
            raise ValueError("a served ModelSpec needs both server (its address, for the records) and connect "
                             "(a picklable factory of its client)")

    def record(self) -> dict[str, Any]:
        """What the per-image JSON says about the model, as the ``segment`` command writes it."""
        if self.server:
            return {"serving": self.server}
        from binmap_tf.binary_map.model import DEFAULT_BACKBONE

        return {"backbone": self.mapper_options.get("backbone", DEFAULT_BACKBONE)}

    def build(self) -> Callable[[list[np.ndarray]], list[BinaryMap]]:
        """``images -> binary maps``, grouping images of one size into one forward pass (or request)."""
        if self.connect is not None:
            return self.connect().binary_maps
        from binmap_tf.binary_map.model import BinaryMapper

        return BinaryMapper(**self.mapper_options).map_batch


@dataclass
class Failure:
    """An input that produced no outputs, and why."""

    input: str
    error: str


class RecordsNotWritten(RuntimeError):
    """The run ended but its own records (:data:`FAILED_FILE`, :data:`SUMMARY_FILE`) could not be
    written, e.g. on a full disk: ``summary`` and ``failures`` are what they would have said, so that
    the caller can report them another way."""

    def __init__(self, message: str, summary: dict[str, Any], failures: list[Failure]) -> None:
        super().__init__(message)
        self.summary, self.failures = summary, failures


# -- inputs ------------------------------------------------------------------------------------
def _is_uri(path: str) -> bool:
    return "://" in path


def _match_uri(pattern: str) -> list[str]:
    """Files matching ``pattern`` (``scheme://...`` with ``*``, ``?``, ``[..]``, ``**``) through
    :mod:`pyarrow.fs`: list under the part before the first wildcard, keep what matches."""
    import fnmatch

    from pyarrow import fs

    filesystem, path = fs.FileSystem.from_uri(pattern)
    prefix = pattern[:len(pattern) - len(path)] if pattern.endswith(path) else ""
    if not any(char in path for char in _WILDCARDS):
        return [pattern]
    parts = PurePosixPath(path).parts
    fixed = next(i for i, part in enumerate(parts) if any(char in part for char in _WILDCARDS))
    base = str(PurePosixPath(*parts[:fixed])) if fixed else ""
    infos = filesystem.get_file_info(fs.FileSelector(base, recursive=True, allow_not_found=True))
    depth = None if "**" in path else len(parts)
    return sorted(prefix + info.path for info in infos
                  if info.type == fs.FileType.File and fnmatch.fnmatchcase(info.path, path)
                  and (depth is None or len(PurePosixPath(info.path).parts) == depth))


def match_inputs(patterns: Iterable[str]) -> list[str]:
    """Expand glob patterns (``**`` included), folders (their image files) and URIs into inputs.

    A path without wildcards is kept as given even when it does not exist, so that it is reported
    as a failure rather than silently dropped; a pattern that matches nothing is logged.
    """
    inputs: list[str] = []
    for pattern in patterns:
        if _is_uri(pattern):
            matched = _match_uri(pattern)
        elif os.path.isdir(pattern):
            matched = [str(path) for path in find_images([pattern])]
        elif any(char in pattern for char in _WILDCARDS):
            matched = sorted(glob.glob(pattern, recursive=True))
        else:
            matched = [pattern]
        if not matched:
            log.warning("%s matches no file", pattern)
        inputs.extend(matched)
    return list(dict.fromkeys(inputs))  # a file matched by two patterns is segmented once


def stem_of(uri: str) -> str:
    """The name the outputs of ``uri`` take (``<stem>_labels.png``, ...), as ``segment`` names them."""
    return PurePosixPath(uri.rstrip("/")).stem if _is_uri(uri) else Path(uri).stem


def file_name_of(uri: str) -> str:
    """The file name of ``uri``, as the COCO file names its image (``segment`` names it the same way)."""
    return PurePosixPath(uri.rstrip("/")).name if _is_uri(uri) else Path(uri).name


def is_done(out: str | os.PathLike, stem: str, extras: Sequence[str] = ()) -> bool:
    """Whether every file ``segment`` writes for ``stem`` (with the ``extras`` outputs) is already in ``out``."""
    return all(path.exists() for path in output_paths(out, stem, extras))


def plan(inputs: Sequence[str], out: str | os.PathLike, overwrite: bool = False, extras: Sequence[str] = (),
         coco_names: set[str] | None = None) -> tuple[list[tuple[str, str]], list[str], list[Failure]]:
    """Split ``inputs`` into ``(input, stem)`` pairs to segment, inputs already done (skipped unless
    ``overwrite``) and failures: a second input with the same stem would overwrite the first's
    files, a stem naming the summary (or COCO) files would overwrite them. With the ``extras``
    outputs an input is done when they are written too; with ``coco_names`` (the file names in the
    run's earlier COCO file) when its annotations are in that file too."""
    todo: list[tuple[str, str]] = []
    done: list[str] = []
    failures: list[Failure] = []
    owner: dict[str, str] = {}
    reserved = {Path(SUMMARY_FILE).stem, Path(FAILED_FILE).stem, Path(COCO_FILE).stem}
    for uri in inputs:
        stem = stem_of(uri)
        if stem in owner:
            failures.append(Failure(uri, f"has the same file name as {owner[stem]}; their outputs would "
                                         "overwrite each other: segment them into separate --out folders"))
        elif stem in reserved:
            failures.append(Failure(uri, f"its outputs would overwrite the batch's {stem} file; rename it"))
        elif not overwrite and is_done(out, stem, extras) and (coco_names is None
                                                                or file_name_of(uri) in coco_names):
            owner[stem] = uri
            done.append(uri)
        else:
            owner[stem] = uri
            todo.append((uri, stem))
    return todo, done, failures


def remove_leftovers(out: str | os.PathLike, stems: Iterable[str], extras: Iterable[str] = ()) -> int:
    """Remove the temporary files that an interrupted run (killed, or its folder turned read-only
    mid-write) left for the outputs of ``stems`` (with ``extras``) and for the run's records in ``out``; return how
    many. Their images are either written whole or about to be, so no other writer can own them
    (two runs writing the same images into one folder at once are not supported). A file that
    cannot be removed (the folder is still read-only) is left; the images then fail by name."""
    extras = tuple(extras)
    names = {path.name for stem in stems for path in output_paths(out, stem, extras)} | {SUMMARY_FILE, FAILED_FILE,
                                                                                          COCO_FILE}
    removed = 0
    with contextlib.suppress(FileNotFoundError), os.scandir(out) as entries:
        for entry in entries:
            if entry.name.startswith(".") and temporary_target(entry.name) in names:
                with contextlib.suppress(OSError):
                    os.unlink(entry.path)
                    removed += 1
    return removed


def read_image(uri: str) -> np.ndarray:
    """Read and decode one input as uint8 RGB (H, W, 3): local files by :func:`~binmap_tf.common.images.load_image`,
    URIs through :mod:`pyarrow.fs`. Raises ``FileNotFoundError`` or :class:`~binmap_tf.common.images.ImageError`."""
    if not _is_uri(uri):
        return load_image(uri)
    from pyarrow import fs

    filesystem, path = fs.FileSystem.from_uri(uri)
    info = filesystem.get_file_info(path)
    if info.type == fs.FileType.NotFound:
        raise FileNotFoundError(f"image file not found: {uri}; check the path")
    if info.type != fs.FileType.File:
        raise ImageError(f"{uri} is a folder, not an image file")
    try:
        with filesystem.open_input_stream(path) as stream:
            data = stream.read()
    except OSError as error:
        raise ImageError(f"cannot read {uri} ({error})") from error
    return warn_notices(decode_image(io.BytesIO(data), uri))


# -- pipeline stages (run in Ray workers) ------------------------------------------------------
def _objects(values: Sequence[Any]) -> np.ndarray:
    """A 1-D object array of ``values`` (numpy would otherwise stack equal-shaped arrays)."""
    array = np.empty(len(values), dtype=object)
    for index, value in enumerate(values):
        array[index] = value
    return array


def decode_row(row: dict[str, Any], working_pixels: int | None = DEFAULT_WORKING_PIXELS) -> dict[str, Any]:
    """Stage 2: ``{"input", "stem"}`` -> the same plus ``image``, the ``working`` image the CNN and
    the host stages run on (:func:`~binmap_tf.segmentation.pipeline.working_image`; None on failure)
    and ``error``."""
    try:
        image = read_image(row["input"])
        return {**row, "image": image, "working": working_image(image, working_pixels), "error": ""}
    except Exception as error:  # noqa: BLE001  (a bad input is recorded, the run goes on)
        return {**row, "image": None, "working": None, "error": failure_message(error)}


def _node_id() -> str:
    """The Ray node this worker runs on, for the summary (which machines did the work); "" outside Ray."""
    import ray

    return ray.get_runtime_context().get_node_id() if ray.is_initialized() else ""


class StartLog:
    """How many times each stage started each image, kept by a Ray actor on the driver's node (which
    outlives the workers' nodes): an image whose first try died with its worker is started twice,
    so the run can tell how many were retried. (Ray's attempt numbers are not visible in the threads
    where Ray Data runs the stages, and its state API needs the dashboard.)"""

    def __init__(self) -> None:
        self._starts: Counter[tuple[str, str]] = Counter()

    def start(self, stage: str, stems: list[str]) -> None:
        self._starts.update((stage, stem) for stem in stems)

    def retried(self) -> dict[str, int]:
        """Per stage, how many images it started more than once."""
        return {stage: sum(count > 1 for (name, _), count in self._starts.items() if name == stage)
                for stage in STAGES}


def _record_start(starts: Any, stage: str, stems: Iterable[str]) -> None:
    """Tell the :class:`StartLog` actor ``starts`` (None: none) that ``stage`` starts ``stems``, and wait
    for the answer: a message still on its way when the worker dies would be lost with it."""
    if starts is not None:
        import ray

        ray.get(starts.start.remote(stage, list(stems)))


class MapperStage:
    """Stages 2 and 3, one per CNN actor: decodes a batch of ``{"input", "stem"}`` rows
    (:func:`decode_row`) and adds ``binary_map`` and ``cnn_seconds`` (its share of the batch's
    forward pass). An image the model refuses fails alone; an error whose ``retryable`` attribute
    is true (a model server's client's, after its own retries) is about the server, not the images,
    so the batch fails as a whole without trying each image.

    Decoding here, not in Ray tasks of its own, keeps every step of an image in the two pools of
    workers, each holding its CPU: the work of a lost node is redone by the surviving workers, where
    a decoding task to be run again would wait for a CPU that the workers hold."""

    def __init__(self, model: ModelSpec, threads: int | None = None,
                 working_pixels: int | None = DEFAULT_WORKING_PIXELS, starts: Any = None) -> None:
        self._model, self._threads, self._working_pixels, self._starts = model, threads, working_pixels, starts
        self._mapper: Callable[[list[np.ndarray]], list[BinaryMap]] | None = None

    def _map(self, images: list[np.ndarray]) -> list[BinaryMap]:
        """Binary maps of ``images``; the model is built on first use, so that a batch of failed
        inputs (e.g. a re-run where only the bad files are left) never loads it."""
        if self._mapper is None:
            if self._threads:
                import tensorflow as tf

                tf.config.threading.set_intra_op_parallelism_threads(self._threads)
                tf.config.threading.set_inter_op_parallelism_threads(self._threads)
            self._mapper = self._model.build()
        return self._mapper(images)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        _record_start(self._starts, "cnn", batch["stem"])
        rows = [decode_row({"input": uri, "stem": stem}, self._working_pixels)
                for uri, stem in zip(batch["input"], batch["stem"])]
        return self.map_decoded({key: _objects([row[key] for row in rows]) for key in rows[0]})

    def map_decoded(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Stage 3 alone: add the binary maps to a batch of decoded rows (``working`` images, ``error``)."""
        images, errors = list(batch["working"]), [str(error) for error in batch["error"]]
        maps: list[Any] = [None] * len(images)
        seconds = [0.0] * len(images)
        todo = [i for i, error in enumerate(errors) if not error]
        start = time.perf_counter()
        try:
            computed = self._map([images[i] for i in todo]) if todo else []
            share = (time.perf_counter() - start) / max(len(todo), 1)  # the batch's forward time, shared
            for index, binary_map in zip(todo, computed):
                maps[index], seconds[index] = binary_map, share
        except Exception as error:  # noqa: BLE001  (find the image(s) at fault: one at a time)
            if getattr(error, "retryable", False):
                for index in todo:
                    errors[index] = failure_message(error)
                todo = []
            for index in todo:
                start = time.perf_counter()
                try:
                    maps[index] = self._map([images[index]])[0]
                    seconds[index] = time.perf_counter() - start
                except Exception as error:  # noqa: BLE001
                    errors[index] = failure_message(error)
        return {**batch, "error": np.array(errors, dtype=object), "binary_map": _objects(maps),
                "cnn_seconds": np.array(seconds), "cnn_node": np.array([_node_id()] * len(images), dtype=object)}


class SegmentStage:
    """Stage 4: segment one image from its binary map with
    :func:`~binmap_tf.segmentation.pipeline.segment_with_map` and write its files (with the ``extras``
    outputs) with :func:`~binmap_tf.segmentation.outputs.write_segmentation`; returns a small record for
    the summary, holding the image's COCO entry as JSON text when ``coco``. ``starts``: a :class:`StartLog` actor."""

    def __init__(self, out: str, options: dict[str, Any], record: dict[str, Any], extras: Sequence[str] = (),
                 coco: bool = False, starts: Any = None) -> None:
        self.out, self.options, self.record, self.extras, self.coco = out, options, record, tuple(extras), coco
        self.starts = starts

    def __call__(self, row: dict[str, Any]) -> dict[str, Any]:
        from binmap_tf.segmentation.interchange import coco_entry
        from binmap_tf.segmentation.outputs import write_segmentation
        from binmap_tf.segmentation.pipeline import segment_with_map

        _record_start(self.starts, "host", [row["stem"]])
        outcome = {"input": row["input"], "stem": row["stem"], "error": row["error"], "n_segments": -1,
                   "cnn_seconds": float(row.get("cnn_seconds") or 0.0), "host_seconds": 0.0, "write_seconds": 0.0,
                   "coco": "",
                   "cnn_node": row.get("cnn_node") or "", "host_node": _node_id()}
        if row["error"]:
            return outcome
        try:
            image, cnn = row["image"], outcome["cnn_seconds"]
            result = segment_with_map(image, row["binary_map"], working=row["working"], **self.options)
            # As segment() records them: the CNN first, "total" over every stage.
            result.timings = {"cnn": cnn, **result.timings, "total": cnn + result.timings["total"]}
            start = time.perf_counter()
            write_segmentation(self.out, row["stem"], image, result, {"image": row["input"], **self.record},
                               self.extras)
            if self.coco:
                outcome["coco"] = json.dumps(coco_entry(result, file_name_of(row["input"])))
        except Exception as error:  # noqa: BLE001  (recorded; a bug also logs its trace)
            if not expected_failure(error):
                log.exception("segmenting %s failed", row["input"])
            return {**outcome, "error": failure_message(error)}
        return {**outcome, "n_segments": result.n_segments, "host_seconds": result.timings["total"] - cnn,
                "write_seconds": time.perf_counter() - start}


# -- the driver --------------------------------------------------------------------------------
@dataclass
class Workers:
    """How many processes run each stage, and TensorFlow threads per CNN worker (None: all cores).

    Each worker is a Ray actor (a process that keeps its model or imports between images). On one
    machine Ray is started with ``cnn + host`` CPU slots, one per worker, however many cores there
    are; on a cluster (``address``) each worker asks for one CPU of the cluster.
    """

    cnn: int = 1
    host: int = 2
    cnn_threads: int | None = None
    batch_size: int = 4
    address: str | None = None


def _start_ray(workers: Workers) -> bool:
    """Start (or join) Ray; return whether this call started it (and so should stop it)."""
    import ray

    if ray.is_initialized():
        return False
    quiet = {"env_vars": {"TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2")}}
    if workers.address:
        ray.init(address=workers.address, runtime_env=quiet, logging_level=logging.WARNING)
    else:  # "local": a Ray of its own, even where `ray start` left a cluster that ray.init would join
        ray.init(address="local", num_cpus=workers.cnn + workers.host, include_dashboard=False, runtime_env=quiet,
                 logging_level=logging.WARNING, object_store_memory=512 * 2**20)
    return True


def run_pipeline(todo: Sequence[tuple[str, str]], out: str | os.PathLike, options: dict[str, Any],
                 model: ModelSpec, workers: Workers, progress: Callable[[dict[str, Any]], None] | None = None,
                 extras: Sequence[str] = (), coco: bool = False) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """Run stages 2-4 on Ray Data for ``todo`` (``(input, stem)`` pairs), writing the ``extras`` outputs
    too; return one record per input (with its COCO entry as JSON text when ``coco``) and, per stage,
    how many images Ray ran again (:class:`StartLog`)."""
    import ray
    import ray.data
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    started = _start_ray(workers)
    context = ray.data.DataContext.get_current()
    saved = context.enable_progress_bars, context.target_max_block_size
    try:
        context.enable_progress_bars = False  # the caller's progress callback reports instead
        # Small blocks: the CNN's output is split per image or so, and the host workers share it.
        context.target_max_block_size = BLOCK_BYTES
        items = [{"input": uri, "stem": stem} for uri, stem in todo]
        starts = ray.remote(StartLog).options(num_cpus=0, scheduling_strategy=NodeAffinitySchedulingStrategy(
            ray.get_runtime_context().get_node_id(), soft=False)).remote()
        cnn = {"model": model, "threads": workers.cnn_threads,
               "working_pixels": options.get("working_pixels", DEFAULT_WORKING_PIXELS), "starts": starts}
        with warnings.catch_warnings():
            # Ray 2.60 names no parameter for an actor's retries: they go as Ray's remote keywords,
            # which it warns will go in 2.64 (then the test of a lost node fails on the TypeError).
            warnings.filterwarnings("ignore", message="`ray_remote_args` is deprecated")
            dataset = (ray.data.from_items(items, override_num_blocks=len(items))
                       .map_batches(MapperStage, fn_constructor_kwargs=cnn, batch_size=workers.batch_size,
                                    batch_format="numpy", compute=ray.data.ActorPoolStrategy(size=workers.cnn),
                                    num_cpus=1, **WORKER_RETRIES)
                       .map(SegmentStage, fn_constructor_kwargs={"out": str(out), "options": options,
                                                                 "record": model.record(), "extras": tuple(extras),
                                                                 "coco": coco, "starts": starts},
                            compute=ray.data.ActorPoolStrategy(size=workers.host), num_cpus=1, **WORKER_RETRIES))
        records = []
        for row in dataset.iter_rows():
            record = {key: row[key] for key in ("input", "stem", "error", "n_segments", "cnn_seconds",
                                                "host_seconds", "write_seconds", "coco",
                                                "cnn_node", "host_node")}
            records.append(record)
            if progress is not None:
                progress(record)
        retried = ray.get(starts.retried.remote())
        ray.kill(starts)
        return records, retried
    finally:
        context.enable_progress_bars, context.target_max_block_size = saved
        if started:
            ray.shutdown()


def segment_collection(patterns: Sequence[str], out: str | os.PathLike, options: dict[str, Any] | None = None,
                       model: ModelSpec | None = None, workers: Workers | None = None, overwrite: bool = False,
                       progress: Callable[[dict[str, Any]], None] | None = None, extras: Sequence[str] = (),
                       coco: bool = False) -> dict[str, Any]:
    """Segment every image ``patterns`` match into ``out``; return the summary also written there.

    ``options`` are those of :func:`~binmap_tf.segmentation.pipeline.segment` (superpixels, hamming, merge, ...),
    ``model`` where the maps come from (default: the default :class:`~binmap_tf.binary_map.model.BinaryMapper`),
    ``workers`` the processes (see :class:`Workers`), ``extras`` the optional per-image outputs
    (``"ucm"``, ``"regions"``; :func:`~binmap_tf.segmentation.outputs.write_segmentation`) and ``coco``
    whether to write the run's COCO file. Images whose files are all in ``out`` (and, with ``coco``,
    in its COCO file) are skipped unless ``overwrite``; when nothing is left to do, Ray is not
    started. Failed inputs are listed in ``out/batch_failed.jsonl``; ``progress`` is called with each
    image's record. Raises :class:`RecordsNotWritten` when the run's own records cannot be
    written (its images are).
    """
    options = dict(options or {})
    extras = check_extras(extras, options.get("merge", DEFAULT_MERGE))
    model = model or ModelSpec()
    workers = workers or Workers()
    if needs_edges(options.get("superpixels"), options.get("merge")):
        model = dataclasses.replace(model, mapper_options={**model.mapper_options, "edges": True})
    start = time.perf_counter()
    inputs = match_inputs(patterns)
    earlier = read_coco(Path(out) / COCO_FILE) if coco else {}
    todo, done, failures = plan(inputs, out, overwrite, extras, set(earlier) if coco else None)
    leftovers = remove_leftovers(out, [stem for _, stem in todo] + [stem_of(uri) for uri in done], extras)
    log.info("%d inputs: %d to segment, %d already done, %d refused; %d temporary files of an interrupted run "
             "removed", len(inputs), len(todo), len(done), len(failures), leftovers)
    records, retried = (run_pipeline(todo, out, options, model, workers, progress, extras, coco) if todo
                        else ([], dict.fromkeys(STAGES, 0)))
    # A worker that died mid-write (with its node) left temporary files of an image its retry wrote whole.
    leftovers += remove_leftovers(out, [stem for _, stem in todo], extras)
    seconds = time.perf_counter() - start
    failures += [Failure(record["input"], record["error"]) for record in records if record["error"]]
    written = [record for record in records if not record["error"]]
    summary = {
        "inputs": len(inputs), "written": len(written), "skipped": len(done), "failed": len(failures),
        "leftovers_removed": leftovers,
        "seconds": round(seconds, 3), "images_per_second": round(len(written) / seconds, 4) if written else 0.0,
        "mean_seconds": {stage: round(float(np.mean([r[f"{stage}_seconds"] for r in written])), 4)
                         for stage in ("cnn", "host", "write")} if written else {},
        "images_per_node": {stage: dict(Counter(r[f"{stage}_node"] for r in written)) for stage in STAGES},
        "retried": retried,
        "patterns": list(patterns), "engine": "ray.data", "workers": vars(workers), **model.record(),
        "options": options,
    }
    try:
        write_text(Path(out) / FAILED_FILE, "".join(json.dumps(vars(failure)) + "\n" for failure in failures))
        if coco:
            write_coco(Path(out) / COCO_FILE, [earlier[file_name_of(uri)] for uri in done]
                       + [json.loads(record["coco"]) for record in written])
        write_json(Path(out) / SUMMARY_FILE, summary)
    except OSError as error:  # a full disk or a read-only folder: what the records say goes to the caller
        raise RecordsNotWritten(f"cannot write {FAILED_FILE} and {SUMMARY_FILE} into {out}: {error.strerror or error}; "
                                "free space there or make it writable, then run the same command again: it segments "
                                "only the images not yet written", summary, failures) from error
    return summary
