"""The collection pipeline on a real two-node Ray cluster on this machine (issue 25): a head and a
second node, each a ``ray start --block --num-cpus 1`` process of its own, so that the CNN worker
and the host worker cannot share a node; ``binmap-batch --address auto`` joins it. Needs the
``batch`` extra."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("ray", reason="the batch extra is not installed: pip install -e '.[batch]'")

from conftest import EXIT_GRACE_SECONDS, descendants, stop_leftovers, write_bsds_crops  # noqa: E402

from binmap_tf.batch.collection import SUMMARY_FILE  # noqa: E402
from binmap_tf.common.images import load_image  # noqa: E402

N_IMAGES = 40
NODE_CPUS = 1  # per node: the CNN worker and the host worker (one CPU each) must take a node each
START_SECONDS = 120  # a node that is not up after this long is taken as unable to start here
OBJECT_STORE_BYTES = 256 * 2**20
DRIVER_SECONDS = 600  # a run on the cluster that has not ended after this long has hung


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Node:
    """One ``ray start --block`` process (a head, or a node joining ``address``) and the processes
    under it, stopped by the ids it started, never by name."""

    def __init__(self, args: list[str], log: Path, env: dict[str, str]) -> None:
        self._log = open(log, "w")
        self.log_path = log
        ray = str(Path(sys.executable).with_name("ray"))
        self.process = subprocess.Popen([ray, "start", "--block", "--num-cpus", str(NODE_CPUS), "--disable-usage-stats",
                                         "--object-store-memory", str(OBJECT_STORE_BYTES), *args],
                                        stdout=self._log, stderr=subprocess.STDOUT, env=env, start_new_session=True)

    def log_tail(self) -> str:
        return self.log_path.read_text()[-2000:]

    def stop(self) -> tuple[dict[int, str], set[int]]:
        """SIGTERM ``ray start`` (it stops its node's services), then stop by id whatever of its tree
        outlives it (a head's agents wait for its GCS, which has gone): :func:`conftest.stop_leftovers`."""
        tree = descendants(self.process.pid)
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(EXIT_GRACE_SECONDS)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()
        # ray start has stopped its node; what outlives it waits for services that are gone: no long grace
        return stop_leftovers(tree, grace=2.0)


# Waits in a process of its own (Ray reads its authentication settings once per process) until
# the cluster has the nodes asked for; exits 1 if it has not after the time given.
WAIT_FOR_NODES = """
import sys, time, ray
nodes, seconds = int(sys.argv[1]), float(sys.argv[2])
ray.init(address="auto", logging_level="ERROR")
deadline = time.monotonic() + seconds
while len([node for node in ray.nodes() if node["Alive"]]) < nodes and time.monotonic() < deadline:
    time.sleep(0.5)
sys.exit(len([node for node in ray.nodes() if node["Alive"]]) < nodes)
"""


@dataclass
class Cluster:
    """A running cluster: its head's address and the environment that lets a process join it."""

    address: str
    env: dict[str, str]


@pytest.fixture(scope="module")
def two_node_cluster(tmp_path_factory):
    """A head and a second node with one CPU each, with token authentication and a temp dir of their
    own (so that no other Ray on this machine joins it by accident). Yields the :class:`Cluster`;
    afterwards both nodes are stopped by the ids they were started with, and no process of theirs
    may be left."""
    logs = tmp_path_factory.mktemp("cluster_logs")
    temp_dir = tempfile.mkdtemp(prefix="ray")  # short: Ray's socket paths must stay under 107 characters
    port = _free_port()
    address = f"127.0.0.1:{port}"
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32), "RAY_ADDRESS": address}
    nodes = [Node(["--head", "--port", str(port), "--temp-dir", temp_dir, "--include-dashboard", "false",
                   "--ray-client-server-port", str(_free_port())], logs / "head.log", env)]
    try:
        nodes.append(Node(["--address", address], logs / "node2.log", env))
        waited = subprocess.run([sys.executable, "-c", WAIT_FOR_NODES, str(len(nodes)), str(START_SECONDS)], env=env,
                                capture_output=True, text=True, timeout=2 * START_SECONDS)
        if waited.returncode != 0 or any(node.process.poll() is not None for node in nodes):
            pytest.skip(f"Ray cannot start a two-node cluster on this machine (not up after {START_SECONDS} s): "
                        + " | ".join([waited.stderr[-1000:], *(node.log_tail() for node in nodes)]))
        yield Cluster(address, env)
    finally:
        stopped = [node.stop() for node in reversed(nodes)]
        shutil.rmtree(temp_dir, ignore_errors=True)
    signalled = sorted(name for left, _ in stopped for name in left.values())
    if signalled:
        print(f"stopped by id after ray start had exited: {signalled}")
    assert [alive for _, alive in stopped] == [set()] * len(nodes), "processes of the cluster are left running"


@pytest.mark.slow
def test_two_nodes_share_the_work_and_give_segments_labels(two_node_cluster, served_model, tmp_path):
    """``binmap-batch --address auto`` on the cluster: the CNN worker and the host worker run on
    different nodes, and every image's labels equal ``segment``'s with the same model."""
    from binmap_tf.segmentation.pipeline import segment
    from serving.server import LoopbackServer

    mapper, model_dir = served_model
    photos, out = tmp_path / "photos", tmp_path / "out"
    photos.mkdir()
    write_bsds_crops(photos, N_IMAGES)
    with LoopbackServer(model_dir, warmup=False) as server:
        # A driver of its own, as `ray job submit -- binmap-batch --address auto` runs one.
        run = subprocess.run([sys.executable, "-m", "binmap_tf.cli.batch", "--input", str(photos / "*.png"),
                              "--out", str(out), "--address", "auto", "--model-server", server.target,
                              "--cnn-workers", "1", "--host-workers", "1"], env=two_node_cluster.env,
                             capture_output=True, text=True, timeout=DRIVER_SECONDS)
    assert run.returncode == 0, run.stderr[-3000:]
    summary = json.loads((out / SUMMARY_FILE).read_text())
    assert (summary["written"], summary["failed"]) == (N_IMAGES, 0)
    per_node = summary["images_per_node"]
    assert sum(per_node["cnn"].values()) == sum(per_node["host"].values()) == N_IMAGES
    assert len(set(per_node["cnn"]) | set(per_node["host"])) == 2, per_node  # both nodes worked
    for path in sorted(photos.glob("*.png")):
        expected = segment(load_image(path), mapper).labels
        np.testing.assert_array_equal(np.load(out / f"{path.stem}_labels.npy"), expected, err_msg=path.stem)
