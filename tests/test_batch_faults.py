"""Faults a collection run survives without losing or duplicating an image (issue 25): a model
server that goes away mid-run (and comes back, or not), a worker killed mid-write, output that
cannot be written, a driver killed mid-run. Each test checks that every image ends up written
exactly once (or named in batch_failed.jsonl), that no half-written or temporary file stays, that
the rerun completes, and that the outputs equal those of a run without the fault. (A node lost from
a cluster: tests/test_batch_cluster.py.) Needs the ``batch`` extra."""

from __future__ import annotations

import errno
import json
import logging
import os
import re
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("ray", reason="the batch extra is not installed: pip install -e '.[batch]'")
pytestmark = pytest.mark.ray

from benchmarks.processes import descendants, stop_leftovers  # noqa: E402
from conftest import CROP_OPTIONS, Driver, assert_whole_images_only, complete, write_bsds_crops  # noqa: E402
from faults import DIE_MID_WRITE_FLAG, FULL_DISK_FLAG, full_disk_writer  # noqa: E402

from binmap_tf.batch.collection import FAILED_FILE, SUMMARY_FILE  # noqa: E402
from binmap_tf.cli.batch import main  # noqa: E402
from binmap_tf.segmentation.outputs import OUTPUT_SUFFIXES, output_paths  # noqa: E402

N_IMAGES = 8  # BSDS500 test images, cropped: enough for "mid-run" to leave half of them to do
RESTART_SECONDS = 2.0  # how long a stopped model server stays down before it is started again
POLL_SECONDS = 0.05
DRIVER_SECONDS = 300  # a killed-run test gives up waiting for half of the images after this long


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    """A folder of :data:`N_IMAGES` crops of distinct BSDS500 test images, as PNG."""
    return write_bsds_crops(tmp_path_factory.mktemp("photos"), N_IMAGES)


@dataclass(frozen=True)
class FaultFlags:
    """Flag files that turn on the faults of :mod:`faults` in Ray's workers while they exist."""

    full_disk: Path
    die_mid_write: Path


def start_local_ray(**options) -> None:
    """``ray.init(**options)``; a start whose raylet never registers with its GCS (Ray's 30 s startup
    timeout; seen once in CI, right after the cluster test, with no raylet log at all) is stopped by the
    ids of the processes it started and tried once more. What the fault tests check comes after."""
    import ray

    before = set(descendants(os.getpid()))
    try:
        ray.init(**options)
    except Exception as error:  # Ray raises a bare Exception for this
        if "timed out during startup" not in str(error):
            raise
        started = {pid: name for pid, name in descendants(os.getpid()).items() if pid not in before}
        stop_leftovers(started, grace=2.0)
        ray.init(**options)


@pytest.fixture(scope="module")
def ray_with_fault_hooks(tmp_path_factory) -> FaultFlags:
    """One local Ray for the module whose workers install :mod:`faults` (a full disk, a death
    mid-write, each while its flag file exists); the commands under test join it. Yields the flags."""
    import ray

    from binmap_tf.batch.collection import Workers, _start_ray

    folder = tmp_path_factory.mktemp("faults")
    flags = FaultFlags(folder / "disk_is_full", folder / "die_mid_write")
    tests = str(Path(__file__).parent)
    path = os.pathsep.join(filter(None, [tests, os.environ.get("PYTHONPATH")]))
    assert not ray.is_initialized()
    start_local_ray(address="local", num_cpus=3, include_dashboard=False, logging_level=logging.WARNING,
                    object_store_memory=512 * 2**20,
                    runtime_env={"worker_process_setup_hook": "faults.install_from_environment",
                                 "env_vars": {"PYTHONPATH": path, FULL_DISK_FLAG: str(flags.full_disk),
                                              DIE_MID_WRITE_FLAG: str(flags.die_mid_write),
                                              "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2")}})
    assert not _start_ray(Workers())  # the commands join this Ray rather than start their own
    try:
        yield flags
    finally:
        ray.shutdown()


@pytest.fixture(scope="module")
def server(served_model):
    """A model server for the module's tests that do not stop it."""
    from serving.server import LoopbackServer

    with LoopbackServer(served_model[1], warmup=False) as running:
        yield running


@pytest.fixture(scope="module")
def clean(photos, server, ray_with_fault_hooks, tmp_path_factory) -> Path:
    """The outputs of a run without a fault: what every faulty run must end up with."""
    out = tmp_path_factory.mktemp("clean")
    assert main(served_batch(photos, out, server.target, "--host-workers", "1")) == 0
    return out


def served_batch(photos: Path, out: Path, target: str, *options: str) -> list[str]:
    """``binmap-batch``'s arguments for the crops in ``photos``, written to ``out``, mapped by the model
    server at ``target``, at the crops' own size, with ``options``."""
    return ["--input", str(photos / "*.png"), "--out", str(out), "--model-server", target, *CROP_OPTIONS, *options]


def stems(folder: Path) -> list[str]:
    return sorted(path.stem for path in folder.glob("*.png"))


def failed_inputs(out: Path) -> dict[str, str]:
    """``batch_failed.jsonl`` as ``{stem: error}``."""
    records = [json.loads(line) for line in (out / FAILED_FILE).read_text().splitlines()]
    return {Path(record["input"]).stem: record["error"] for record in records}


def file_bytes(out: Path, stem: str) -> dict[str, bytes | dict]:
    """The outputs of ``stem``: the bytes of each file, the JSON parsed and without its timings."""
    found: dict[str, bytes | dict] = {}
    for path in output_paths(out, stem):
        if path.suffix == ".json":
            record = json.loads(path.read_text())
            del record["timings"]
            found[path.name] = record
        else:
            found[path.name] = path.read_bytes()
    return found


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
    result = MapperStage(down).map_decoded(batch)
    assert down.calls == 1  # not once more per image: each would wait out the client's retries again
    assert list(result["error"]) == ["RuntimeError: the model server at host:8500 is unavailable"] * 3


def test_files_that_belong_together_appear_together_or_not_at_all(tmp_path, monkeypatch):
    from binmap_tf.common import files

    targets = [tmp_path / name for name in ("a.npy", "a.png", "a.json")]
    with pytest.raises(OSError, match="No space left"):
        with files.atomic_paths(targets) as tmps:
            tmps[0].write_bytes(b"written")
            raise OSError(28, "No space left on device")  # the disk fills up while the second one is written
    assert list(tmp_path.iterdir()) == []

    real_replace, moves = os.replace, []

    def replace_fails_on_the_second(source, target):
        moves.append(target)
        if len(moves) == 2:
            raise PermissionError(1, "Operation not permitted")  # the folder turned read-only meanwhile
        real_replace(source, target)

    monkeypatch.setattr(files.os, "replace", replace_fails_on_the_second)
    with pytest.raises(PermissionError):
        with files.atomic_paths(targets) as tmps:
            for tmp in tmps:
                tmp.write_text(tmp.name)
    assert [Path(target).name for target in moves] == ["a.npy", "a.png"]  # in order, the JSON last
    assert list(tmp_path.iterdir()) == []  # the one moved before the failure was taken back
    monkeypatch.undo()
    with files.atomic_paths(targets) as tmps:
        for tmp in tmps:
            tmp.write_text("complete")
    assert sorted(path.name for path in tmp_path.iterdir()) == sorted(target.name for target in targets)


def test_leftovers_of_an_interrupted_run_are_recognised_and_removed(tmp_path):
    from binmap_tf.batch.collection import remove_leftovers
    from binmap_tf.common.files import atomic_path, temporary_target

    with atomic_path(tmp_path / "img_labels.npy") as tmp:
        assert temporary_target(tmp.name) == "img_labels.npy"  # the names atomic_path really makes
        tmp.write_bytes(b"complete")
    assert temporary_target("img_labels.npy") is None and temporary_target(".bashrc") is None
    (tmp_path / ".img_overlay.png.abcd1234.png").write_bytes(b"half")  # ours: an output of img
    (tmp_path / f".{SUMMARY_FILE}.abcd1234.json").write_text("{")  # ours: the run's record
    (tmp_path / ".other_overlay.png.abcd1234.png").write_bytes(b"")  # an image this run does not write
    (tmp_path / ".bashrc").write_text("")  # not a temporary file at all
    assert remove_leftovers(tmp_path, ["img"]) == 2
    assert sorted(path.name for path in tmp_path.iterdir() if path.name.startswith(".")) == [
        ".bashrc", ".other_overlay.png.abcd1234.png"]


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
        status = main(served_batch(photos, out, server.target, "--batch-size", "1", "--cnn-workers", "1",
                                   "--host-workers", "2", *options))
        ended = time.monotonic()
    finally:
        outage.close()
    assert outage.stopped_at is not None, "the server was never stopped: the run made fewer requests than planned"
    return status, outage, ended - outage.stopped_at


@pytest.mark.slow
def test_a_restarted_model_server_and_a_worker_killed_mid_write_cost_time_not_images(photos, served_model, clean,
                                                                                     ray_with_fault_hooks, tmp_path):
    """Faults that retries absorb. The server stops mid-run and is back 2 s later: the client's
    retries (default settings) carry every image through. A host worker dies (``os._exit``, as
    SIGKILL) with an image's files written but none in place: Ray starts it again and runs that image
    again (``max_restarts``, ``max_task_retries``). No image is lost, failed or written twice, the
    dead worker's temporary files are removed, the summary counts the retried image, and the labels
    are the clean run's."""
    out = tmp_path / "out"
    ray_with_fault_hooks.die_mid_write.touch()
    try:
        status, outage, _ = served_run(photos, out, served_model[1], RESTART_SECONDS)
        assert not ray_with_fault_hooks.die_mid_write.exists(), "no worker died: that fault did not happen"
    finally:
        ray_with_fault_hooks.die_mid_write.unlink(missing_ok=True)
    assert outage.restarted is not None and outage.restarted.scheduler.images_run > 0  # the rest went there
    assert failed_inputs(out) == {}
    assert status == 0
    summary = json.loads((out / SUMMARY_FILE).read_text())
    assert (summary["written"], summary["failed"]) == (N_IMAGES, 0)
    assert summary["retried"] == {"cnn": 0, "host": 1}
    assert summary["leftovers_removed"] == len(OUTPUT_SUFFIXES)  # the dead worker's temporary files
    assert complete(out) == set(stems(photos))
    assert_whole_images_only(out)
    for stem in stems(photos):  # the JSON records name another server
        np.testing.assert_array_equal(np.load(out / f"{stem}_labels.npy"), np.load(clean / f"{stem}_labels.npy"))


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
        assert main(served_batch(photos, out, outage.server.target)) == 0
    summary = json.loads((out / SUMMARY_FILE).read_text())
    assert (summary["written"], summary["skipped"], summary["failed"]) == (len(failed), N_IMAGES - len(failed), 0)
    assert complete(out) == set(stems(photos)) and failed_inputs(out) == {}


class FullDisk:
    """The disk fills up: every atomic write fails with ENOSPC while the flag file exists, in Ray's
    workers (:mod:`faults`, installed by the module's Ray) and in this process (the driver)."""

    reason = os.strerror(errno.ENOSPC)

    def __init__(self, flag: Path, monkeypatch) -> None:
        from binmap_tf.common import files

        self.flag = flag
        monkeypatch.setattr(files, "atomic_path", full_disk_writer(flag, files.atomic_path))

    def start(self) -> None:
        self.flag.touch()

    def stop(self) -> None:
        self.flag.unlink(missing_ok=True)


class ReadOnlyFolder:
    """The output folder turns read-only: its mode for a user, ``chattr +i`` for root (whom the mode
    does not stop); skips where neither can be done."""

    def __init__(self, folder: Path) -> None:
        self.folder, self.as_root = folder, os.geteuid() == 0
        self.reason = os.strerror(errno.EPERM if self.as_root else errno.EACCES)
        if self.as_root:
            try:
                self._chattr("+i")
            except (OSError, subprocess.CalledProcessError) as error:
                pytest.skip(f"the tests run as root, whom a read-only folder mode does not stop, and `chattr +i` "
                            f"cannot make {folder} immutable here ({error})")
            self._chattr("-i")

    def _chattr(self, flag: str) -> None:
        subprocess.run(["chattr", flag, str(self.folder)], check=True, capture_output=True)

    def start(self) -> None:
        self._chattr("+i") if self.as_root else self.folder.chmod(0o555)

    def stop(self) -> None:
        self._chattr("-i") if self.as_root else self.folder.chmod(0o755)


def when_written(out: Path, count: int, action, done: threading.Event) -> None:
    """Call ``action`` once ``count`` images are complete in ``out`` (unless ``done`` is set first)."""
    while not done.is_set():
        if len(complete(out)) >= count:
            action()
            return
        time.sleep(POLL_SECONDS)


@pytest.mark.slow
@pytest.mark.parametrize("fault", ["full disk", "read-only folder"])
def test_output_that_cannot_be_written_fails_by_image_and_the_rerun_completes(fault, photos, server,
                                                                               ray_with_fault_hooks, tmp_path,
                                                                               monkeypatch, capsys):
    """Half-way through, the disk fills up (or the folder turns read-only): each image not written is
    named with the reason and the fix (on stderr: the run's records cannot be written either), no
    image is half-written, and once fixed the same command writes exactly the missing ones."""
    out = tmp_path / "out"
    out.mkdir()
    breaker = FullDisk(ray_with_fault_hooks.full_disk, monkeypatch) if fault == "full disk" else ReadOnlyFolder(out)
    done = threading.Event()
    # One host worker: images are written one after the other, so half of them are still to come.
    command = served_batch(photos, out, server.target, "--host-workers", "1", "--retry-attempts", "1")
    watcher = threading.Thread(target=when_written, args=(out, N_IMAGES // 2, breaker.start, done))
    watcher.start()
    try:
        status = main(command)
    finally:
        done.set()
        watcher.join()
        visible = {path.name for path in out.iterdir() if not path.name.startswith(".")}
        breaker.stop()
    err = capsys.readouterr().err
    written = complete(out)
    assert status == 1 and written != set(stems(photos)), "the fault hit no image: the run ended before it"
    assert len(written) >= N_IMAGES // 2
    for stem in set(stems(photos)) - written:
        assert f"failed: {photos / stem}.png: cannot write the outputs of {stem} into {out}: {breaker.reason}; " \
               "free space there or make it writable" in err, stem
    assert f"cannot write {FAILED_FILE} and {SUMMARY_FILE} into {out}: {breaker.reason}" in err
    assert "then run the same command again" in err
    assert visible == {f"{stem}{suffix}" for stem in written for suffix in OUTPUT_SUFFIXES}  # no part of an image

    assert main(command) == 0  # after the fix
    summary = json.loads((out / SUMMARY_FILE).read_text())
    assert (summary["written"], summary["skipped"], summary["failed"]) == (N_IMAGES - len(written), len(written), 0)
    assert complete(out) == set(stems(photos)) and failed_inputs(out) == {}
    assert_whole_images_only(out)  # temporary files a read-only folder kept are gone too


@pytest.mark.slow
def test_a_killed_run_resumes_with_the_missing_images_only(photos, server, clean, tmp_path):
    """SIGKILL the driver (with its own Ray) half-way: the same command then writes only the images not
    yet complete, leaves the others untouched, and the union equals a clean run byte for byte (the
    JSON but for its timings); nothing the killed run started outlives the test."""
    out = tmp_path / "out"
    command = served_batch(photos, out, server.target, "--host-workers", "1")
    driver = Driver(command, tmp_path / "killed_driver.log")
    try:
        driver.wait_until(lambda: len(complete(out)) >= N_IMAGES // 2, DRIVER_SECONDS)
        driver.kill()
    finally:
        signalled, alive = driver.close()
    assert alive == set(), f"processes of the killed run left: {sorted(driver.tree[pid] for pid in alive)}"
    if signalled:  # Ray's agents outlive their killed node by up to a minute; the test stopped them
        print(f"stopped after the killed run: {sorted(signalled.values())}")

    survivors = complete(out)
    assert N_IMAGES // 2 <= len(survivors) < N_IMAGES
    before = {path: path.stat().st_mtime_ns for stem in survivors for path in output_paths(out, stem)}
    assert main(command) == 0
    summary = json.loads((out / SUMMARY_FILE).read_text())
    assert (summary["written"], summary["skipped"], summary["failed"]) == (N_IMAGES - len(survivors), len(survivors), 0)
    assert {path: path.stat().st_mtime_ns for path in before} == before  # written once, not again
    assert_whole_images_only(out)
    for stem in stems(photos):
        assert file_bytes(out, stem) == file_bytes(clean, stem), stem


def test_the_fault_tests_the_docs_name_exist():
    root = Path(__file__).resolve().parents[1]
    named = set(re.findall(r"`(test_\w+)`", (root / "docs/large_collections.md").read_text()))
    assert named and named <= set(globals()), sorted(named - set(globals()))
    assert "tests/test_batch_faults.py" in (root / "README.md").read_text()
