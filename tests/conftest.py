"""Shared fixtures: quiet TensorFlow, a real BSDS image, small random hashing parameters; process
checks (what a test started, and nothing left running when the run ends)."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
from pathlib import Path
from typing import Iterable

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

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
def descendants(pid: int) -> dict[int, str]:
    """Live (not zombie) processes below ``pid``, ``{pid: command name}``, read from /proc (Linux)."""
    parents: dict[int, tuple[int, str]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:  # it ended meanwhile
            continue
        name, rest = stat[stat.index("(") + 1:stat.rindex(")")], stat[stat.rindex(")") + 2:].split()
        if rest[0] != "Z":
            parents[int(entry.name)] = (int(rest[1]), name)
    found: dict[int, str] = {}
    frontier = [pid]
    while frontier:
        parent = frontier.pop()
        for child, (ppid, name) in parents.items():
            if ppid == parent and child not in found:
                found[child] = name
                frontier.append(child)
    return found


def wait_until_gone(pids: Iterable[int], seconds: float) -> set[int]:
    """Wait up to ``seconds`` for processes ``pids`` to end; return those still alive (zombies count as ended)."""
    deadline = time.monotonic() + seconds
    alive = set(pids)
    while alive:
        alive = {pid for pid in alive if _alive(pid)}
        if not alive or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    return alive


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def process_name(pid: int) -> str | None:
    """The command name of process ``pid``, or None when there is none."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat[stat.index("(") + 1:stat.rindex(")")]


# Seconds a process started by a test may take to exit after its test stopped it (Ray's workers
# finish their shutdown shortly after ray.shutdown() returns).
EXIT_GRACE_SECONDS = 10.0


def stop_leftovers(tree: dict[int, str], grace: float = EXIT_GRACE_SECONDS) -> tuple[dict[int, str], set[int]]:
    """Give the processes of ``tree`` (``{pid: name}``, taken while their parent ran) ``grace`` seconds
    to exit, then SIGTERM and at last SIGKILL, by id, those still running under the same name (not a
    new process that took a freed id). Returns the processes that needed a signal and the ids still alive."""
    left = wait_until_gone(tree, grace)
    alive = left
    for signal_number in (signal.SIGTERM, signal.SIGKILL):
        for pid in alive:
            if process_name(pid) == tree[pid]:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal_number)
        alive = wait_until_gone(alive, grace)
    return {pid: tree[pid] for pid in left}, alive


def is_resource_tracker(pid: int) -> bool:
    """Whether ``pid`` is multiprocessing's resource tracker: the first process pool (the evaluation's
    workers) starts it, and by design it lives as long as its parent, this test run."""
    try:
        return b"multiprocessing.resource_tracker" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def pytest_sessionfinish(session, exitstatus) -> None:
    """Fail the run if a test left a process running (a Ray node, a model server, a browser): every
    test stops what it starts, by the process ids it started."""
    if not Path("/proc").is_dir():
        return
    stray = {pid: name for pid, name in descendants(os.getpid()).items() if not is_resource_tracker(pid)}
    still = wait_until_gone(stray, EXIT_GRACE_SECONDS)
    if still:
        names = ", ".join(f"{pid} {stray[pid]}" for pid in sorted(still))
        print(f"\nERROR: processes left running after the tests: {names}; the test that started them must stop "
              "them by their ids", file=sys.stderr)
        session.exitstatus = 1


# -- small collections and a quick served model (batch tests) -----------------------------------
BSDS_CROP = (160, 240)  # small, so that a batch run takes seconds; one size, so that CNN batches stack


def write_bsds_crops(folder: Path, count: int) -> Path:
    """Write crops of the first ``count`` BSDS500 test images into ``folder`` as PNG; return it."""
    from PIL import Image

    from binmap_tf.common.images import load_image

    sources = sorted((data_root() / "bsds500/images/test").glob("*.jpg"))[:count]
    assert len(sources) == count, "shared data missing: set BINMAP_TF_DATA to the data root"
    for source in sources:
        Image.fromarray(load_image(source)[:BSDS_CROP[0], :BSDS_CROP[1]]).save(folder / f"{source.stem}.png")
    return folder


@pytest.fixture(scope="session")
def served_model(tmp_path_factory):
    """A quickly built model (random backbone weights, with the edge map) and its exported base folder,
    for a :class:`serving.server.LoopbackServer`."""
    from binmap_tf.binary_map.model import BinaryMapper
    from serving import export

    mapper = BinaryMapper("vgg16-hed", bits=8, hashing=random_itq(512, 8), weights=None, edges=True)
    version = export.export_model(mapper, tmp_path_factory.mktemp("models") / "binmap", warmup=False)
    return mapper, version.parent
