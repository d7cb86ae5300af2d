"""The collection pipeline on a real two-node Ray cluster on this machine (issue 25): a head and a
second node, each a ``ray start --block`` process of its own (:mod:`benchmarks.local_cluster`);
``binmap-batch --address auto`` joins it, both nodes work, then the second node dies (SIGKILL,
every process of it) and the head finishes the run. Needs the ``batch`` extra."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("ray", reason="the batch extra is not installed: pip install -e '.[batch]'")
pytestmark = pytest.mark.ray(instance="cluster")  # its own Ray: runs beside the in-process one

from conftest import BSDS_CROP, Driver, assert_whole_images_only, complete, write_bsds_crops  # noqa: E402

from benchmarks.local_cluster import ClusterNotStarted, LocalCluster, Node  # noqa: E402
from binmap_tf.batch.collection import SUMMARY_FILE  # noqa: E402
from binmap_tf.common.images import load_image  # noqa: E402
from binmap_tf.segmentation.resolution import working_shape  # noqa: E402
from serving.protocol import IMAGES_INPUT  # noqa: E402

N_IMAGES = 16  # BSDS500 crops: four CNN batches of 4, half of them mapped before the kill, half after
# Per node: room for both workers (one CPU each). Ray Data spreads its workers over the nodes, so
# while both nodes live each runs one; the worker lost with node 2 is restarted on the head's
# free CPU. (With one CPU per node it would wait for a CPU that never frees up.)
NODE_CPUS = 2
DRIVER_SECONDS = 300  # a run on the cluster that has not ended after this long has hung
# Once both workers are busy: time for the host worker to begin its next image, far less than one takes.
# (The crops go at the default working size here, unlike the fault tests': at their own size an image
# took so little that in one CI run the host had written its backlog before the kill, and nothing was retried.)
KILL_DELAY_SECONDS = 0.05


@pytest.fixture(scope="module")
def two_node_cluster(tmp_path_factory):
    """A head and a second node with :data:`NODE_CPUS` CPUs each (:class:`~benchmarks.local_cluster.LocalCluster`).
    Afterwards both nodes are stopped by the ids they were started with, and no process of theirs
    may be left."""
    cluster = LocalCluster(2, NODE_CPUS, tmp_path_factory.mktemp("cluster_logs"))
    try:
        try:
            cluster.start()
        except ClusterNotStarted as error:
            pytest.skip(str(error))
        yield cluster
    finally:
        signalled, alive = cluster.stop()
    if signalled:
        print(f"stopped by id after ray start had exited: {sorted(signalled.values())}")
    assert alive == set(), "processes of the cluster are left running"


class Gate:
    """The model server's ``before_predict`` hook: lets the CNN worker's requests through while fewer
    than ``limit`` crops (sent at the working size) are mapped, then holds them (``waiting``) until :meth:`let_one_through` or
    :meth:`open`. While a request waits, the CNN worker is in the middle of a batch, every crop let
    through is mapped (the worker sends one request at a time), and the host worker works through
    those not yet written."""

    def __init__(self, limit: int) -> None:
        self.limit: float = limit
        self.mapped, self.waiting = 0, False
        self._changed = threading.Condition()

    def __call__(self, request) -> None:
        shape = tuple(dim.size for dim in request.inputs[IMAGES_INPUT].tensor_shape.dim)
        if shape[1:3] != working_shape(BSDS_CROP):  # a client's probe of the model's geometry
            return
        with self._changed:
            while self.mapped >= self.limit:
                self.waiting = True
                self._changed.wait()
            self.waiting = False
            self.mapped += shape[0]

    def let_one_through(self) -> None:
        with self._changed:
            self.limit = self.mapped + 1
            self._changed.notify_all()

    def open(self) -> None:
        """Let every request through from now on (retried batches are mapped again)."""
        with self._changed:
            self.limit = float("inf")
            self._changed.notify_all()


def kill_mid_image(node: Node, gate: Gate, out: Path, driver: Driver) -> None:
    """Kill ``node`` while the CNN worker waits in a request and the host worker has at least two
    mapped crops to write, so that the node dies in the middle of an image whichever worker it runs
    (while the host has nearly caught up, the CNN maps one more batch first)."""
    def both_busy() -> bool:
        if gate.waiting and gate.mapped - len(complete(out)) >= 2:
            return True
        if gate.waiting:
            gate.let_one_through()
        return False

    driver.wait_until(both_busy, DRIVER_SECONDS)
    time.sleep(KILL_DELAY_SECONDS)
    node.kill()


@pytest.mark.slow
def test_two_nodes_share_the_work_and_the_head_finishes_it_when_the_other_dies(two_node_cluster, served_model,
                                                                                 tmp_path):
    """``binmap-batch --address auto`` on the cluster: both nodes run a worker until the second node
    is killed (SIGKILL, all its processes) in the middle of an image, when about half of the images
    are written; Ray restarts the lost worker on the head and runs its image(s) again, so the run
    ends with every image written once, the labels equal to ``segment``'s, no temporary file left,
    and the retried images counted."""
    from binmap_tf.segmentation.pipeline import segment
    from serving.server import LoopbackServer

    mapper, model_dir = served_model
    photos, out = tmp_path / "photos", tmp_path / "out"
    photos.mkdir()
    write_bsds_crops(photos, N_IMAGES)
    gate = Gate(N_IMAGES // 2)
    with LoopbackServer(model_dir, warmup=False) as server:
        server.servicer.before_predict = gate
        driver = Driver(["--input", str(photos / "*.png"), "--out", str(out), "--address", "auto",
                         "--model-server", server.target, "--cnn-workers", "1", "--host-workers", "1"],
                        tmp_path / "driver.log", two_node_cluster.env)
        try:
            kill_mid_image(two_node_cluster.nodes[1], gate, out, driver)
            gate.open()
            status = driver.process.wait(DRIVER_SECONDS)
        finally:
            gate.open()
            driver.close()
    assert status == 0, driver.log_path.read_text()[-3000:]
    summary = json.loads((out / SUMMARY_FILE).read_text())
    assert (summary["written"], summary["failed"]) == (N_IMAGES, 0)
    assert complete(out) == {path.stem for path in photos.glob("*.png")}
    assert_whole_images_only(out)
    per_node, head = summary["images_per_node"], two_node_cluster.head
    assert sum(per_node["cnn"].values()) == sum(per_node["host"].values()) == N_IMAGES
    assert len(set(per_node["cnn"]) | set(per_node["host"])) == 2, per_node  # both nodes worked
    assert head in per_node["cnn"] and head in per_node["host"], per_node  # the head finished both stages
    assert sum(summary["retried"].values()) >= 1, summary["retried"]  # node 2 died in the middle of an image
    for path in sorted(photos.glob("*.png")):
        expected = segment(load_image(path), mapper).labels
        np.testing.assert_array_equal(np.load(out / f"{path.stem}_labels.npy"), expected, err_msg=path.stem)
