"""Issue 15: two mosquittos joined by contrib/mosquitto-bridge.conf (mqchat/# both
ways at QoS 1, a persistent bridge session) lose nothing when either side is down.

Plain paho at MQTT 3.1.1; the chatd scenarios over the same bridge come with the
daemon side of issue 15.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable

import pytest

from contrib_brokers import BridgedBroker
from harness import Broker
from mqtt311 import Mqtt311Client

pytestmark = pytest.mark.integration

MakeBroker = Callable[..., Broker]


def topic() -> str:
    return f"mqchat/v1/t{uuid.uuid4().hex[:12]}"


def numbered(tag: str, count: int) -> list[bytes]:
    return [f"{tag} {i}".encode() for i in range(count)]


def test_messages_cross_the_bridge_both_ways_once(brokers: tuple[Broker, BridgedBroker]) -> None:
    a, b = brokers
    t = topic()
    on_a = Mqtt311Client().connect(a.port, subscribe=t)
    on_b = Mqtt311Client().connect(b.port, subscribe=t)
    try:
        on_a.publish(t, b"published on A")
        on_b.publish(t, b"published on B")
        both = [b"published on A", b"published on B"]
        assert sorted(on_a.wait_payloads(2)) == both
        assert sorted(on_b.wait_payloads(2)) == both
        # A probe after them proves nothing else (no echo through the bridge) is coming.
        on_a.publish(t, b"probe")
        assert on_b.wait_payloads(3)[2:] == [b"probe"]
        assert len(on_a.wait_payloads(3)) == 3
    finally:
        on_a.close()
        on_b.close()


def test_b_gets_what_a_took_while_b_was_down(brokers: tuple[Broker, BridgedBroker]) -> None:
    """A queues for the bridge's persistent session while B is down."""
    a, b = brokers
    t = topic()
    bob = Mqtt311Client().connect(b.port, subscribe=t)
    bob.close()
    b.stop()
    alice = Mqtt311Client(persistent=False).connect(a.port)
    try:
        alice.publish(t, *numbered("while B was down", 50))
        b.start()
        bob.connect(b.port)
        assert set(bob.wait_payloads(50)) == set(numbered("while B was down", 50))
    finally:
        alice.close()
        bob.close()


def test_a_gets_what_b_took_while_a_was_down(brokers: tuple[Broker, BridgedBroker]) -> None:
    """B queues for the bridge while the link is down, and sends it when A is back."""
    a, b = brokers
    t = topic()
    carol = Mqtt311Client().connect(a.port, subscribe=t)
    carol.close()
    a.stop()
    dave = Mqtt311Client(persistent=False).connect(b.port)
    try:
        dave.publish(t, *numbered("while A was down", 50))
        a.start()
        carol.connect(a.port)
        assert set(carol.wait_payloads(50)) == set(numbered("while A was down", 50))
    finally:
        dave.close()
        carol.close()
