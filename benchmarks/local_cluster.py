"""A Ray cluster of several nodes on this machine, each a ``ray start --block`` process of its own
(its own raylet, object store and CPUs, as a machine of a real cluster has), with token
authentication and a temp dir of its own so that no other Ray on the machine joins it by
accident. For the cluster test (tests/test_batch_cluster.py) and the scale-out benchmark
(benchmarks/scale_out.py); its processes are stopped, or killed, by the ids it started."""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks.processes import EXIT_GRACE_SECONDS, descendants, kill_tree, process_name, stop_leftovers

START_SECONDS = 120  # a node that is not up after this long is taken as unable to start here
OBJECT_STORE_BYTES = 256 * 2**20
# Ray settings of the nodes (environment variables): ray start stops its node at once on SIGTERM
# instead of first draining it for up to 30 s, and the head takes a node for dead after 3 failed
# health checks 1 s apart (Ray's defaults: 5, 3 s apart), so that a lost node costs a run seconds.
NODE_SETTINGS = {"RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0", "RAY_health_check_period_ms": "1000",
                 "RAY_health_check_failure_threshold": "3"}

# Waits in a process of its own (Ray reads its authentication settings once per process) until
# the cluster has the nodes asked for, then prints the head's node id; exits 1 if it has not
# after the time given.
WAIT_FOR_NODES = """
import sys, time, ray
nodes, seconds = int(sys.argv[1]), float(sys.argv[2])
ray.init(address="auto", logging_level="ERROR")
deadline = time.monotonic() + seconds
while len([node for node in ray.nodes() if node["Alive"]]) < nodes and time.monotonic() < deadline:
    time.sleep(0.5)
print(next(node["NodeID"] for node in ray.nodes() if "node:__internal_head__" in node["Resources"]))
sys.exit(len([node for node in ray.nodes() if node["Alive"]]) < nodes)
"""


class ClusterNotStarted(RuntimeError):
    """The nodes were not up in time (the message holds their logs' ends)."""


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Node:
    """One ``ray start --block`` process (a head, or a node joining the head) and the processes under it."""

    def __init__(self, args: list[str], cpus: int, log: Path, env: dict[str, str]) -> None:
        self._log = open(log, "w")  # noqa: SIM115  (ray start writes to it until stop())
        self.log_path = log
        self.killed: dict[int, str] = {}
        ray = str(Path(sys.executable).with_name("ray"))
        self.process = subprocess.Popen([ray, "start", "--block", "--num-cpus", str(cpus), "--disable-usage-stats",
                                         "--object-store-memory", str(OBJECT_STORE_BYTES), *args],
                                        stdout=self._log, stderr=subprocess.STDOUT, env=env, start_new_session=True)

    def log_tail(self) -> str:
        return self.log_path.read_text()[-2000:]

    def kill(self) -> None:
        """SIGKILL ``ray start`` and every process under it at once, as when its machine dies."""
        self.killed = {self.process.pid: process_name(self.process.pid), **descendants(self.process.pid)}
        kill_tree(self.killed)
        self.process.wait()

    def stop(self) -> tuple[dict[int, str], set[int]]:
        """SIGTERM ``ray start`` (it stops its node's services), then stop by id whatever of its tree
        outlives it, or of the tree it had when killed (:func:`~benchmarks.processes.stop_leftovers`):
        the processes that needed a signal, the ids still alive."""
        tree = {**descendants(self.process.pid), **self.killed}
        tree.pop(self.process.pid, None)
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


class LocalCluster:
    """A head and ``nodes - 1`` more nodes of ``cpus`` CPUs each, logging into ``logs``. :meth:`start`
    starts them and waits for them; then ``address``, ``head`` (the head's node id) and ``env`` (the
    environment that lets a process join, e.g. ``binmap-batch --address auto``) are set."""

    def __init__(self, nodes: int, cpus: int, logs: Path) -> None:
        self.size, self.cpus, self.logs = nodes, cpus, logs
        self.nodes: list[Node] = []
        self.address, self.head, self.env = "", "", dict(os.environ)
        self._temp_dir = ""

    def start(self) -> LocalCluster:
        """Start the nodes; raise :class:`ClusterNotStarted` if they are not all up in time (call
        :meth:`stop` in any case)."""
        self._temp_dir = tempfile.mkdtemp(prefix="ray")  # short: Ray's socket paths must stay under 107 characters
        port = _free_port()
        self.address = f"127.0.0.1:{port}"
        self.env = {**os.environ, **NODE_SETTINGS, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32),
                    "RAY_ADDRESS": self.address}
        self.nodes.append(Node(["--head", "--port", str(port), "--temp-dir", self._temp_dir, "--include-dashboard",
                                "false", "--ray-client-server-port", str(_free_port())], self.cpus,
                               self.logs / "head.log", self.env))
        for number in range(2, self.size + 1):
            self.nodes.append(Node(["--address", self.address], self.cpus, self.logs / f"node{number}.log", self.env))
        waited = subprocess.run([sys.executable, "-c", WAIT_FOR_NODES, str(self.size), str(START_SECONDS)],
                                env=self.env, capture_output=True, text=True, timeout=2 * START_SECONDS, check=False)
        if waited.returncode != 0 or any(node.process.poll() is not None for node in self.nodes):
            raise ClusterNotStarted(f"Ray cannot start a {self.size}-node cluster on this machine (not up after "
                                    f"{START_SECONDS} s): " + " | ".join([waited.stderr[-1000:],
                                                                          *(node.log_tail() for node in self.nodes)]))
        self.head = waited.stdout.split()[-1]
        return self

    def stop(self) -> tuple[dict[int, str], set[int]]:
        """Stop every node (the head last) by the ids they started: the processes that needed a
        signal after their ``ray start`` had exited, and the ids still alive (none, normally)."""
        stopped = [node.stop() for node in reversed(self.nodes)]
        shutil.rmtree(self._temp_dir, ignore_errors=True)
        return ({pid: name for signalled, _ in stopped for pid, name in signalled.items()},
                {pid for _, alive in stopped for pid in alive})

    def __enter__(self) -> LocalCluster:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc_info) -> None:
        self.stop()
