"""A three-node RabbitMQ cluster on loopback for tests.

The cluster is scripts/rabbitmq-cluster.sh in a short temporary directory:
nodes rabbit1..3@localhost, quorum session queues, anonymous MQTT on
127.0.0.1 only. Debian's RabbitMQ (3.10) speaks MQTT 3.1.1, not 5.

Use the ``rabbit_cluster`` fixture (one cluster per session; a test that stops
a node gets it back running afterwards). Without rabbitmq-server installed the
tests skip with the reason, except under CI, where that is a failure: CI must
run them (scripts/install-brokers.sh installs it).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from harness import short_tmpdir

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "scripts" / "rabbitmq-cluster.sh"
RABBITMQ_SERVER = Path("/usr/lib/rabbitmq/bin/rabbitmq-server")
NODES = (1, 2, 3)
PORTS_PER_CLUSTER = 41  # BASE .. BASE+40: see scripts/rabbitmq-cluster.sh
# Three nodes boot in about 13 s on an idle 2-core machine; leave room for a busy one.
START_DEADLINE_S = 180.0
NODE_DEADLINE_S = 150.0


class ClusterError(RuntimeError):
    """The cluster script failed; the message carries its output and the nodes' logs."""


def require_rabbitmq() -> None:
    """Skip without RabbitMQ, unless CI is set: CI must not skip the cluster tests."""
    if RABBITMQ_SERVER.exists():
        return
    reason = f"rabbitmq-server is not installed ({RABBITMQ_SERVER}): run scripts/install-brokers.sh"
    if os.environ.get("CI"):
        pytest.fail(f"{reason}; CI must run the RabbitMQ cluster tests", pytrace=False)
    pytest.skip(reason)


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def _block_is_free(base: int) -> bool:
    for port in range(base, base + PORTS_PER_CLUSTER):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                return False
    return True


def free_port_block() -> int:
    """A base port whose whole block is free, below the ephemeral range, so that
    no outgoing connection can take a stopped node's port before it restarts."""
    low, high = 20000, _ephemeral_low() - PORTS_PER_CLUSTER - 1
    seed = int.from_bytes(os.urandom(2), "big")
    for attempt in range(200):
        base = low + (seed + attempt * 97) % max(1, high - low)
        if _block_is_free(base):
            return base
    raise ClusterError(f"no {PORTS_PER_CLUSTER} free consecutive ports between {low} and {high}")


@dataclass(frozen=True)
class NodeStatus:
    node: int
    name: str
    state: str  # running, starting or stopped
    pid: int | None
    mqtt_port: int
    amqp_port: int


class RabbitCluster:
    """rabbit1..3@localhost, started and stopped by scripts/rabbitmq-cluster.sh."""

    def __init__(self, *, queue_type: str = "quorum") -> None:
        self.dir = short_tmpdir("rmq-")
        self.queue_type = queue_type
        self.base_port = 0
        self._ports: dict[int, int] = {}

    def _run(self, *args: str, timeout: float) -> str:
        env = dict(os.environ, RABBITMQ_MQTT_QUEUE_TYPE=self.queue_type)
        try:
            result = subprocess.run(
                ["bash", str(SCRIPT), *args],
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                env=env,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise ClusterError(f"rabbitmq-cluster.sh {args[0]} took over {timeout:g} s") from exc
        if result.returncode != 0:
            raise ClusterError(
                f"rabbitmq-cluster.sh {' '.join(args)} exited {result.returncode}:\n"
                f"{result.stderr}{result.stdout}"
            )
        return result.stdout

    def start(self) -> RabbitCluster:
        self.base_port = free_port_block()
        self._run("start", str(self.dir), str(self.base_port), timeout=START_DEADLINE_S)
        self._ports = {s.node: s.mqtt_port for s in self.status()}
        return self

    def status(self) -> list[NodeStatus]:
        out = []
        for line in self._run("status", str(self.dir), timeout=30).splitlines():
            f = dict(item.split("=", 1) for item in line.split())
            out.append(
                NodeStatus(
                    node=int(f["node"]),
                    name=f["name"],
                    state=f["state"],
                    pid=None if f["pid"] == "-" else int(f["pid"]),
                    mqtt_port=int(f["mqtt"]),
                    amqp_port=int(f["amqp"]),
                )
            )
        return out

    def mqtt_port(self, node: int) -> int:
        return self._ports[node]

    def node_url(self, node: int) -> str:
        """The MQTT URL of one node, as chatd's [broker] url takes it."""
        return f"mqtt://127.0.0.1:{self.mqtt_port(node)}"

    def stop_node(self, node: int) -> None:
        """Stop one node cleanly (SIGTERM to its process group); its data is kept."""
        self._run("stop-node", str(self.dir), str(node), timeout=NODE_DEADLINE_S)

    def kill_node(self, node: int) -> None:
        """SIGKILL one node: a crash, with no clean shutdown."""
        self._run("kill-node", str(self.dir), str(node), timeout=NODE_DEADLINE_S)

    def start_node(self, node: int) -> None:
        """Start a stopped node again; it rejoins the cluster from its own data."""
        self._run("start-node", str(self.dir), str(node), timeout=NODE_DEADLINE_S)

    def ensure_running(self) -> None:
        """Start every node that a test left stopped."""
        for s in self.status():
            if s.state == "stopped":
                self.start_node(s.node)

    def stop(self) -> None:
        if (self.dir / "cluster.env").exists():
            self._run("stop", str(self.dir), timeout=START_DEADLINE_S)

    def cleanup(self) -> None:
        try:
            self.stop()
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="session")
def rabbit_cluster_session() -> Iterator[RabbitCluster]:
    require_rabbitmq()
    cluster = RabbitCluster()
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.cleanup()


@pytest.fixture
def rabbit_cluster(rabbit_cluster_session: RabbitCluster) -> Iterator[RabbitCluster]:
    """The session's cluster, with all three nodes running again after the test."""
    yield rabbit_cluster_session
    rabbit_cluster_session.ensure_running()
