"""The broker link as chatd's parts see it, and its stand-in for running the core
without a broker (daemon/publisher.py)."""

from __future__ import annotations

from mqchat.daemon.publisher import OfflinePublisher, Publisher


def test_the_offline_publisher_takes_nothing() -> None:
    link: Publisher = OfflinePublisher()
    assert not link.connected and link.generation == 0
    assert link.publish("t", b"p", 1) is None
    link.subscribe("t", 1)
    link.unsubscribe("t")
    link.ack(1, 1)
    assert link.status()["last_error"] is None
