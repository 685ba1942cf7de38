"""contrib/mosquitto.conf keeps what the broker acknowledged across its restart.

A persistent subscriber is away while 2,000 QoS 1 messages arrive for it, and the
broker restarts half way. With the shipped file all 2,000 arrive; with
mosquitto's default limits (max_queued_messages 1000, persistence on) the broker
drops messages it had acknowledged, and says so only in its own log.
"""

from __future__ import annotations

import uuid

import pytest

from contrib_brokers import ConfiguredBroker, ContribBroker, DefaultLimitsBroker
from harness import wait_until
from mqtt311 import Mqtt311Client

pytestmark = pytest.mark.integration

COUNT = 2000


def publish(broker: ConfiguredBroker, topic: str, payloads: list[bytes]) -> None:
    alice = Mqtt311Client(persistent=False).connect(broker.port)
    try:
        alice.publish(topic, *payloads)  # returns when every one is PUBACKed
    finally:
        alice.close()


def stream_with_restart(broker: ConfiguredBroker) -> Mqtt311Client:
    """bob subscribes and leaves; 1,000 messages; broker restart; 1,000 more; bob returns."""
    topic = f"mqchat/v1/t{uuid.uuid4().hex[:12]}"
    payloads = [f"m {i}".encode() for i in range(COUNT)]
    bob = Mqtt311Client().connect(broker.port, subscribe=topic)
    bob.close()
    publish(broker, topic, payloads[: COUNT // 2])
    broker.stop()  # SIGTERM: mosquitto saves its database
    broker.start()
    publish(broker, topic, payloads[COUNT // 2 :])
    return bob.connect(broker.port)


def test_contrib_config_keeps_every_acknowledged_message_across_a_restart() -> None:
    broker = ContribBroker().start()
    bob = None
    try:
        bob = stream_with_restart(broker)
        got = bob.wait_payloads(COUNT)
        assert set(got) == {f"m {i}".encode() for i in range(COUNT)}
    finally:
        if bob is not None:
            bob.close()
        broker.cleanup()


def test_default_limits_drop_acknowledged_messages() -> None:
    """The same stream against mosquitto's defaults: the reason for the shipped file."""
    broker = DefaultLimitsBroker().start()
    bob = None
    try:
        bob = stream_with_restart(broker)
        wait_until(
            lambda: "Outgoing messages are being dropped" in broker.log_text(),
            "mosquitto to report dropped messages",
        )
    finally:
        if bob is not None:
            bob.close()
        broker.cleanup()
