"""Shared fixtures: quiet TensorFlow, a real BSDS image, small random hashing parameters; process
checks (what a test started, and nothing left running when the run ends)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from benchmarks.processes import EXIT_GRACE_SECONDS, descendants, stop_leftovers, wait_until_gone  # noqa: E402
from binmap_tf.binary_map.hashing import ITQParams  # noqa: E402
from binmap_tf.common.paths import data_root  # noqa: E402

BSDS_TEST_IMAGE = "bsds500/images/test/100007.jpg"


def pytest_report_header(config) -> str:
    """Say at the top of every run where the shared benchmark data is, or that it is missing."""
    root = data_root()
    found = [name for name in ("bsds500", "msrc_v2") if (root / name).is_dir()]
    if len(found) == 2:
        return f"shared data: {root} (bsds500, msrc_v2)"
    return (f"shared data: MISSING under {root} (found: {found or 'nothing'}): tests that read BSDS500 or MSRC "
            "images will fail naming the path; set BINMAP_TF_DATA to the data root (see README)")


@pytest.fixture(scope="session")
def bsds_image_path():
    """Path of one real BSDS500 test image (321x481) from the shared data."""
    path = data_root() / BSDS_TEST_IMAGE
    if not path.exists():
        pytest.fail(f"shared data missing: {path}; set BINMAP_TF_DATA to the data root")
    return path


def random_itq(dim: int, bits: int, seed: int = 0) -> ITQParams:
    """ITQ-shaped parameters with a random orthonormal projection (for tests with random weights)."""
    rng = np.random.default_rng(seed)
    pcs, _ = np.linalg.qr(rng.standard_normal((dim, bits)))
    rotation, _ = np.linalg.qr(rng.standard_normal((bits, bits)))
    return ITQParams(mean=rng.standard_normal(dim).astype(np.float32), pcs=pcs, rotation=rotation)


# -- processes ---------------------------------------------------------------------------------
def is_resource_tracker(pid: int) -> bool:
    """Whether ``pid`` is multiprocessing's resource tracker: the first process pool (the evaluation's
    workers) starts it, and by design it lives as long as its parent, this test run."""
    try:
        return b"multiprocessing.resource_tracker" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def ray_group(item) -> str | None:
    """The pytest-xdist group of a test marked ``ray``: ``ray-<instance>``, where ``instance`` names the Ray
    it starts (default ``local``, the in-process Ray in its default temp folder; the two-node cluster has its own
    folder, port and address)."""
    marker = item.get_closest_marker("ray")
    return None if marker is None else f"ray-{marker.kwargs.get('instance', 'local')}"


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist reads the groups
def pytest_collection_modifyitems(config, items) -> None:
    """Tests of one Ray instance share one pytest-xdist worker (``--dist loadgroup``): two in-process Rays
    would share Ray's default temp folder, and a test's fault hooks and leftovers are its Ray's."""
    for item in items:
        group = ray_group(item)
        if group:
            item.add_marker(pytest.mark.xdist_group(group))


@pytest.hookimpl(trylast=True)  # after pytest-xdist has read the groups
def pytest_collection_finish(session) -> None:
    """Refuse to run the Ray tests beside each other: pytest-xdist's ``--dist loadgroup`` marks a grouped
    test by a suffix of its node id, which pytest 9.2 no longer keeps (pytest-dev/pytest-xdist#1386)."""
    if not getattr(session.config.option, "loadgroup", False):  # set in pytest-xdist's workers only
        return
    ungrouped = [item.nodeid for item in session.items
                 if (group := ray_group(item)) and not item.nodeid.endswith(f"@{group}")]
    if ungrouped:
        message = (f"pytest-xdist did not group the Ray tests ({ungrouped[0]} and {len(ungrouped) - 1} more) with this "
                   "pytest; install the project's dev extra (pytest < 9.2)")
        print(f"ERROR: {message}", file=sys.stderr)  # a worker's exception reaches the terminal only as a crash
        raise pytest.UsageError(message)


STRAY_PROCESSES = pytest.StashKey[list]()  # pytest-xdist's controller: what its workers left running


def left_running() -> list[str]:
    """``"pid name"`` of every process this one started that is still running after a grace period
    (the resource tracker of multiprocessing aside, which exits with us)."""
    stray = {pid: name for pid, name in descendants(os.getpid()).items() if not is_resource_tracker(pid)}
    return [f"{pid} {stray[pid]}" for pid in sorted(wait_until_gone(stray, EXIT_GRACE_SECONDS))]


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node, error) -> None:
    """pytest-xdist's controller gathers what each worker reports left running (see :func:`pytest_sessionfinish`)."""
    node.config.stash.setdefault(STRAY_PROCESSES, []).extend(getattr(node, "workeroutput", {}).get("stray", []))


def pytest_sessionfinish(session, exitstatus) -> None:
    """Fail the run if a test left a process running (a Ray node, a model server, a browser): every
    test stops what it starts, by the process ids it started. Under pytest-xdist each worker checks its
    own processes and reports them to the controller, which fails the run."""
    if not Path("/proc").is_dir():
        return
    config = session.config
    if config.pluginmanager.hasplugin("dsession"):  # the controller, whose workers have finished
        stray = config.stash.get(STRAY_PROCESSES, [])
    else:
        stray = left_running()
        if hasattr(config, "workeroutput"):  # a worker: the controller reports and fails
            config.workeroutput["stray"] = stray
            return
    if stray:
        print(f"\nERROR: processes left running after the tests: {', '.join(stray)}; the test that started them "
              "must stop them by their ids", file=sys.stderr)
        session.exitstatus = 1


# -- small collections and a quick served model (batch tests) -----------------------------------
BSDS_CROP = (160, 240)  # small, so that a batch run takes seconds; one size, so that CNN batches stack
# The crops are segmented at their own size (not brought up to the default working size, 4x the pixels):
# the fault tests are about the run, not the resolution, and spend their time on it.
CROP_PIXELS = BSDS_CROP[0] * BSDS_CROP[1]
CROP_OPTIONS = ("--working-pixels", str(CROP_PIXELS))  # not the cluster test's: see its KILL_DELAY_SECONDS


def write_bsds_crops(folder: Path, count: int) -> Path:
    """Write crops of the first ``count`` BSDS500 test images into ``folder`` as PNG; return it."""
    from PIL import Image

    from binmap_tf.common.images import load_image

    sources = sorted((data_root() / "bsds500/images/test").glob("*.jpg"))[:count]
    assert len(sources) == count, "shared data missing: set BINMAP_TF_DATA to the data root"
    for source in sources:
        Image.fromarray(load_image(source)[:BSDS_CROP[0], :BSDS_CROP[1]]).save(folder / f"{source.stem}.png")
    return folder


def complete(out: Path) -> set[str]:
    """Stems whose output files are all in ``out``."""
    from binmap_tf.segmentation.outputs import output_paths

    return {path.name[:-len(".json")] for path in out.glob("*.json")
            if all(file.exists() for file in output_paths(out, path.name[:-len(".json")]))}


def assert_whole_images_only(out: Path) -> None:
    """Every image in ``out`` has all its files or none, and no temporary file is left."""
    from binmap_tf.segmentation.outputs import OUTPUT_SUFFIXES

    by_stem: dict[str, set[str]] = {}
    for path in out.iterdir():
        assert not path.name.startswith("."), f"temporary file left: {path.name}"
        if path.name.startswith("batch_"):
            continue
        suffix = next(suffix for suffix in OUTPUT_SUFFIXES if path.name.endswith(suffix))
        by_stem.setdefault(path.name[:-len(suffix)], set()).add(suffix)
    partial = {stem: sorted(found) for stem, found in by_stem.items() if found != set(OUTPUT_SUFFIXES)}
    assert partial == {}, f"half-written images: {partial}"


class Driver:
    """``binmap-batch`` in a process of its own (a driver, as ``ray job submit`` starts one), to be
    waited for or killed; the processes below it are tracked by id, so that a test can stop
    whatever outlives it."""

    def __init__(self, args: list[str], log: Path, env: dict[str, str] | None = None) -> None:
        self._log = open(log, "w")  # noqa: SIM115  (the driver writes to it until close())
        self.log_path = log
        self.process = subprocess.Popen([sys.executable, "-m", "binmap_tf.cli.batch", *args], stdout=self._log,
                                        stderr=subprocess.STDOUT, env=env, start_new_session=True)
        self.tree: dict[int, str] = {}

    def wait_until(self, condition: Callable[[], bool], seconds: float) -> None:
        """Wait until ``condition()`` holds while the run goes on; fail if the run ends first or it takes
        over ``seconds``."""
        deadline = time.monotonic() + seconds
        while not condition() and self.process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert self.process.poll() is None, f"the run ended too soon: {self.process.returncode}, " \
                                            f"{self.log_path.read_text()[-3000:]}"
        assert condition(), f"still waiting after {seconds} s"

    def kill(self) -> None:
        """SIGKILL the driver alone, as the kernel's OOM killer or a lost login would."""
        self.tree = descendants(self.process.pid)
        self.process.kill()
        self.process.wait()

    def close(self) -> tuple[dict[int, str], set[int]]:
        """Kill the driver if it still runs, then stop by id whatever of its tree outlives it
        (:func:`stop_leftovers`): the processes that needed a signal, the ids still alive. What
        outlives a killed driver waits for services that are gone (Ray's agents, up to a minute):
        no long grace."""
        if self.process.poll() is None:
            self.kill()
        self._log.close()
        return stop_leftovers(self.tree, grace=2.0)


@pytest.fixture(scope="session")
def served_model(tmp_path_factory):
    """A quickly built model (random backbone weights, with the edge map) and its exported base folder,
    for a :class:`serving.server.LoopbackServer`."""
    from binmap_tf.binary_map.model import BinaryMapper
    from serving import export

    mapper = BinaryMapper("vgg16-hed", bits=8, hashing=random_itq(512, 8), weights=None, edges=True)
    version = export.export_model(mapper, tmp_path_factory.mktemp("models") / "binmap", warmup=False)
    return mapper, version.parent
