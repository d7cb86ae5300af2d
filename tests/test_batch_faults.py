"""Faults a collection run survives without losing or duplicating an image (issue 25): a model
server that goes away mid-run (and comes back, or not), output that cannot be written, a driver
killed mid-run. Each test checks that every image ends up written exactly once (or named in
batch_failed.jsonl), that no half-written or temporary file stays, and that the rerun completes.
Needs the ``batch`` extra."""

from __future__ import annotations

import json
import logging
import os
import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("ray", reason="the batch extra is not installed: pip install -e '.[batch]'")

from conftest import random_itq  # noqa: E402
from faults import FULL_DISK_FLAG  # noqa: E402

from binmap_tf.batch.collection import FAILED_FILE, SUMMARY_FILE  # noqa: E402
from binmap_tf.cli.batch import main  # noqa: E402
from binmap_tf.common.images import load_image  # noqa: E402
from binmap_tf.common.paths import data_root  # noqa: E402
from binmap_tf.segmentation.outputs import OUTPUT_SUFFIXES, output_paths  # noqa: E402

N_IMAGES = 12  # BSDS500 test images, cropped: enough for "mid-run" to leave half of them to do
CROP = (160, 240)  # small, so that a run takes seconds; equal sizes, so that CNN batches stack
RESTART_SECONDS = 5.0  # how long a stopped model server stays down before it is started again
POLL_SECONDS = 0.05


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    """A folder of :data:`N_IMAGES` crops of distinct BSDS500 test images, as PNG."""
    from PIL import Image

    folder = tmp_path_factory.mktemp("photos")
    sources = sorted((data_root() / "bsds500/images/test").glob("*.jpg"))[:N_IMAGES]
    assert len(sources) == N_IMAGES, "shared data missing: set BINMAP_TF_DATA to the data root"
    for source in sources:
        Image.fromarray(load_image(source)[:CROP[0], :CROP[1]]).save(folder / f"{source.stem}.png")
    return folder


@pytest.fixture(scope="module")
def ray_with_fault_hooks(tmp_path_factory):
    """One local Ray for the module whose workers install :mod:`faults` (a full disk while a flag file
    exists); the commands under test join it. Yields the flag's path."""
    import ray

    from binmap_tf.batch.collection import _start_ray, Workers

    flag = tmp_path_factory.mktemp("faults") / "disk_is_full"
    tests = str(Path(__file__).parent)
    path = os.pathsep.join(filter(None, [tests, os.environ.get("PYTHONPATH")]))
    assert not ray.is_initialized()
    ray.init(address="local", num_cpus=3, include_dashboard=False, logging_level=logging.WARNING,
             object_store_memory=512 * 2**20,
             runtime_env={"worker_process_setup_hook": "faults.install_from_environment",
                          "env_vars": {"PYTHONPATH": path, FULL_DISK_FLAG: str(flag),
                                       "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2")}})
    assert not _start_ray(Workers())  # the commands join this Ray rather than start their own
    try:
        yield flag
    finally:
        ray.shutdown()


@pytest.fixture(scope="module")
def served_model(tmp_path_factory):
    """A quickly built model (random backbone weights, with the edge map) and its exported base folder."""
    from binmap_tf.binary_map.model import BinaryMapper
    from serving import export

    mapper = BinaryMapper("vgg16-hed", bits=8, hashing=random_itq(512, 8), weights=None, edges=True)
    version = export.export_model(mapper, tmp_path_factory.mktemp("models") / "binmap", warmup=False)
    return mapper, version.parent


def stems(folder: Path) -> list[str]:
    return sorted(path.stem for path in folder.glob("*.png"))


def complete(out: Path) -> set[str]:
    """Stems whose five output files are all in ``out``."""
    return {path.name[:-len(".json")] for path in out.glob("*.json")
            if all(file.exists() for file in output_paths(out, path.name[:-len(".json")]))}


def assert_whole_images_only(out: Path) -> None:
    """Every image in ``out`` has all its files or none, and no temporary file is left."""
    by_stem: dict[str, set[str]] = {}
    for path in out.iterdir():
        assert not path.name.startswith("."), f"temporary file left: {path.name}"
        if path.name.startswith("batch_"):
            continue
        suffix = next(suffix for suffix in OUTPUT_SUFFIXES if path.name.endswith(suffix))
        by_stem.setdefault(path.name[:-len(suffix)], set()).add(suffix)
    partial = {stem: sorted(found) for stem, found in by_stem.items() if found != set(OUTPUT_SUFFIXES)}
    assert partial == {}, f"half-written images: {partial}"


def failed_inputs(out: Path) -> dict[str, str]:
    """``batch_failed.jsonl`` as ``{stem: error}``."""
    records = [json.loads(line) for line in (out / FAILED_FILE).read_text().splitlines()]
    return {Path(record["input"]).stem: record["error"] for record in records}


class _DownServer:
    """A model whose every call fails as a client's does once its retries are used up."""

    def __init__(self) -> None:
        self.calls = 0

    def build(self):
        def binary_maps(images):
            self.calls += 1
            error = RuntimeError("the model server at host:8500 is unavailable")
            error.retryable = True  # as serving.client's ServerUnavailableError
            raise error
        return binary_maps


def test_a_server_failure_fails_the_batch_at_once_not_image_by_image():
    from binmap_tf.batch.collection import MapperStage, _objects

    images = [np.zeros((16, 16, 3), np.uint8)] * 3
    batch = {"working": _objects(images), "error": np.array(["", "", ""], dtype=object)}
    down = _DownServer()
    result = MapperStage(down)(batch)
    assert down.calls == 1  # not once more per image: each would wait out the client's retries again
    assert list(result["error"]) == ["RuntimeError: the model server at host:8500 is unavailable"] * 3


class Outage:
    """Stops a :class:`~serving.server.LoopbackServer` when it receives Predict request number ``at``
    and, when ``restart_after`` is given, serves the same model on the same port again that many
    seconds later: a model server that crashed mid-run and was restarted (or not)."""

    def __init__(self, server, model_dir: Path, at: int, restart_after: float | None = None) -> None:
        self.server, self.model_dir, self.at, self.restart_after = server, model_dir, at, restart_after
        self.requests, self.stopped_at, self.restarted = 0, None, None
        self._lock, self._thread = threading.Lock(), None
        server.servicer.before_predict = self._count

    def _count(self, request) -> None:
        with self._lock:
            self.requests += 1
            if self.requests != self.at:
                return
        self._thread = threading.Thread(target=self._stop_and_restart, daemon=True)
        self._thread.start()  # not here: the server waits for this request's handler to return

    def _stop_and_restart(self) -> None:
        from serving.server import LoopbackServer

        self.server.stop()  # refuses new calls and cuts off those in flight (UNAVAILABLE)
        self.stopped_at = time.monotonic()
        if self.restart_after is not None:
            time.sleep(self.restart_after)
            self.restarted = LoopbackServer(self.model_dir, port=self.server.port, warmup=False).start()

    def close(self) -> None:
        """Wait for the outage to run its course, then stop whichever server is running."""
        if self._thread is not None:
            self._thread.join()
        else:
            self.server.stop()
        if self.restarted is not None:
            self.restarted.stop()


def served_run(photos: Path, out: Path, model_dir: Path, restart_after: float | None, *options: str
               ) -> tuple[int, Outage, float]:
    """``binmap-batch --model-server`` over ``photos`` whose server goes down while it answers the
    request of the middle image; return the exit status, the outage and the seconds from the
    server's stop to the end of the run."""
    from serving.server import LoopbackServer

    server = LoopbackServer(model_dir, warmup=False).start()
    # Request 1 is the client's probe of the model's geometry, then one request per image.
    outage = Outage(server, model_dir, at=1 + len(stems(photos)) // 2, restart_after=restart_after)
    try:
        status = main(["--input", str(photos / "*.png"), "--out", str(out), "--model-server", server.target,
                       "--batch-size", "1", "--cnn-workers", "1", "--host-workers", "2", *options])
        ended = time.monotonic()
    finally:
        outage.close()
    assert outage.stopped_at is not None, "the server was never stopped: the run made fewer requests than planned"
    return status, outage, ended - outage.stopped_at


@pytest.mark.slow
def test_a_restarted_model_server_costs_time_not_images(photos, served_model, ray_with_fault_hooks, tmp_path):
    """The server stops mid-run and is back 5 s later: the client's retries (default settings) carry
    every image through; none is lost, failed or written twice, and the labels are the model's."""
    from binmap_tf.segmentation.pipeline import segment

    mapper, model_dir = served_model
    out = tmp_path / "out"
    status, outage, _ = served_run(photos, out, model_dir, RESTART_SECONDS)
    assert outage.restarted is not None and outage.restarted.scheduler.images_run > 0  # the rest went there
    assert failed_inputs(out) == {}
    assert status == 0
    summary = json.loads((out / SUMMARY_FILE).read_text())
    assert (summary["written"], summary["failed"]) == (N_IMAGES, 0)
    assert complete(out) == set(stems(photos))
    assert_whole_images_only(out)
    for stem in stems(photos):
        expected = segment(load_image(photos / f"{stem}.png"), mapper).labels
        np.testing.assert_array_equal(np.load(out / f"{stem}_labels.npy"), expected, err_msg=stem)


@pytest.mark.slow
def test_a_model_server_gone_for_good_fails_the_rest_quickly_and_by_name(photos, served_model, ray_with_fault_hooks,
                                                                          tmp_path):
    """The server stops mid-run for good: the run ends after one request's retries (later requests
    try once), every image not written is in batch_failed.jsonl naming the server and the fix, and
    the rerun once a server is back writes exactly those."""
    from serving.retry import RetryPolicy
    from serving.server import LoopbackServer

    _, model_dir = served_model
    out = tmp_path / "out"
    retry = RetryPolicy(attempts=4, base_delay=0.5, max_delay=2.0)
    status, outage, seconds = served_run(photos, out, model_dir, None, "--retry-attempts", str(retry.attempts),
                                         "--retry-base-delay", str(retry.base_delay),
                                         "--retry-max-delay", str(retry.max_delay))
    assert status == 1
    failed, written = failed_inputs(out), complete(out)
    assert written | set(failed) == set(stems(photos)) and not written & set(failed)
    # Request k > 1 maps image k - 1: the images of the requests after the stop fail, and the one
    # whose request stopped the server unless it was answered before the stop cut it off.
    after_stop = N_IMAGES + 1 - outage.at
    assert after_stop <= len(failed) <= after_stop + 1
    for error in failed.values():
        assert f"model server at {outage.server.target} is unavailable" in error and "binmap-serve" in error
    # Bounded: far less than every failed image waiting out its retries.
    assert seconds < len(failed) * retry.shortest_wait(), seconds
    assert_whole_images_only(out)

    with LoopbackServer(model_dir, port=outage.server.port, warmup=False):
        assert main(["--input", str(photos / "*.png"), "--out", str(out), "--model-server", outage.server.target]) == 0
    summary = json.loads((out / SUMMARY_FILE).read_text())
    assert (summary["written"], summary["skipped"], summary["failed"]) == (len(failed), N_IMAGES - len(failed), 0)
    assert complete(out) == set(stems(photos)) and failed_inputs(out) == {}
