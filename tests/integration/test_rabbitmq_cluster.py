"""Issue 15: the three-node RabbitMQ cluster of scripts/rabbitmq-cluster.sh, with
plain paho at MQTT 3.1.1 and QoS 1 (chatd cannot speak 3.1.1 yet).

Run alone with ``pytest -m rabbitmq``. They skip only where rabbitmq-server is
not installed and CI is not set.
"""

from __future__ import annotations

import uuid

import pytest

from mqtt311 import Mqtt311Client
from rabbitmq import RabbitCluster

pytestmark = [pytest.mark.integration, pytest.mark.rabbitmq]


def topic() -> str:
    return f"mqchat/v1/t{uuid.uuid4().hex[:12]}"


def numbered(tag: str, start: int, stop: int) -> list[bytes]:
    return [f"{tag} {i}".encode() for i in range(start, stop)]


def test_a_message_crosses_nodes_both_ways(rabbit_cluster: RabbitCluster) -> None:
    t = topic()
    alice = Mqtt311Client().connect(rabbit_cluster.mqtt_port(1), subscribe=t)
    bob = Mqtt311Client().connect(rabbit_cluster.mqtt_port(3), subscribe=t)
    try:
        alice.publish(t, b"from node 1")
        bob.publish(t, b"from node 3")
        # Each gets both: RabbitMQ has no noLocal, so one's own echo comes back too.
        assert sorted(bob.wait_payloads(2)) == [b"from node 1", b"from node 3"]
        assert sorted(alice.wait_payloads(2)) == [b"from node 1", b"from node 3"]
    finally:
        alice.close()
        bob.close()


def test_an_offline_session_survives_the_loss_of_its_node(rabbit_cluster: RabbitCluster) -> None:
    """bob's queue lives on node 3; node 3 is down while he is away and while
    alice sends; bob comes back on node 2 and gets all 100 (quorum queues: a
    classic queue loses all 100, and bob cannot even subscribe)."""
    t = topic()
    bob = Mqtt311Client().connect(rabbit_cluster.mqtt_port(3), subscribe=t)
    bob.close()
    rabbit_cluster.stop_node(3)
    alice = Mqtt311Client(persistent=False).connect(rabbit_cluster.mqtt_port(1))
    try:
        alice.publish(t, *numbered("offline", 0, 100))
        bob.connect(rabbit_cluster.mqtt_port(2))  # his session, so no new subscribe
        got = bob.wait_payloads(100)
        assert set(got) == set(numbered("offline", 0, 100))
    finally:
        alice.close()
        bob.close()


def test_a_node_restarted_during_a_stream_loses_nothing(rabbit_cluster: RabbitCluster) -> None:
    """400 messages: 100 before node 3 (bob's node and queue) stops, 200 while it is
    down and bob has moved to node 2, 100 after it is back. All 400 arrive."""
    t = topic()
    bob = Mqtt311Client().connect(rabbit_cluster.mqtt_port(3), subscribe=t)
    alice = Mqtt311Client(persistent=False).connect(rabbit_cluster.mqtt_port(1))
    try:
        alice.publish(t, *numbered("stream", 0, 100))
        rabbit_cluster.stop_node(3)
        bob.close()
        bob.connect(rabbit_cluster.mqtt_port(2))
        alice.publish(t, *numbered("stream", 100, 300))
        # The premise: these 200 were published while bob's node (and its queue's
        # home) was down, so the stream really crossed the outage.
        assert _state(rabbit_cluster, 3) == "stopped"
        rabbit_cluster.start_node(3)
        alice.publish(t, *numbered("stream", 300, 400))
        got = bob.wait_payloads(400)
        missing = set(numbered("stream", 0, 400)) - set(got)
        assert not missing, f"{len(missing)} of 400 lost ({len(got)} received)"
    finally:
        alice.close()
        bob.close()


def _state(cluster: RabbitCluster, node: int) -> str:
    return next(s.state for s in cluster.status() if s.node == node)
