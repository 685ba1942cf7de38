"""A plain MQTT 3.1.1 client for tests that need no chatd: RabbitMQ 3.10 speaks
only 3.1.1, and bridges and clusters are proven with it before chatd can.
Waiting is for CONNACK, SUBACK, PUBACK or payloads, each with a deadline."""

from __future__ import annotations

import socket
import threading
import uuid

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from harness import DEADLINE_S, wait_until


class Mqtt311Client:
    """A paho client speaking MQTT 3.1.1 at QoS 1, as chatd must on RabbitMQ 3.10.

    ``persistent`` keeps the session (clean_session false) under ``client_id``,
    so the broker queues for it while it is away. Every payload received is kept.
    """

    def __init__(self, client_id: str | None = None, *, persistent: bool = True) -> None:
        self.client_id = client_id or f"t-{uuid.uuid4().hex[:10]}"
        self.persistent = persistent
        self.received: list[tuple[str, bytes]] = []
        self._lock = threading.Lock()
        self._client: mqtt.Client | None = None

    def connect(self, port: int, *, subscribe: str | None = None) -> Mqtt311Client:
        """Connect (and subscribe at QoS 1), waiting for CONNACK and SUBACK."""
        ready = threading.Event()
        refused: list[str] = []
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            clean_session=not self.persistent,
            protocol=MQTTProtocolVersion.MQTTv311,
        )

        def on_connect(c: mqtt.Client, _u: object, _f: object, rc: object, _p: object) -> None:
            sock = c.socket()
            if isinstance(sock, socket.socket):  # PUBACKs without Nagle's 40 ms delays
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if getattr(rc, "is_failure", False):
                refused.append(str(rc))
                ready.set()
            elif subscribe is None:
                ready.set()
            else:
                c.subscribe(subscribe, qos=1)

        client.on_connect = on_connect
        client.on_subscribe = lambda *_: ready.set()
        client.on_message = self._on_message
        client.connect("127.0.0.1", port, keepalive=10)
        client.loop_start()
        self._client = client
        if not ready.wait(DEADLINE_S) or refused:
            self.close()
            raise AssertionError(
                f"{self.client_id} on port {port}: no CONNACK/SUBACK within {DEADLINE_S:g} s "
                f"{refused or ''}"
            )
        return self

    def _on_message(self, _c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.received.append((msg.topic, bytes(msg.payload)))

    def payloads(self) -> list[bytes]:
        with self._lock:
            return [p for _, p in self.received]

    def wait_payloads(self, count: int, timeout: float = DEADLINE_S) -> list[bytes]:
        wait_until(lambda: len(self.payloads()) >= count, f"{count} payloads", timeout)
        return self.payloads()

    def publish(self, topic: str, *payloads: bytes) -> None:
        """Publish at QoS 1 (paho keeps up to 20 in flight) and wait for every PUBACK."""
        if self._client is None:
            raise AssertionError("publish on a closed client")
        infos = [self._client.publish(topic, p, qos=1) for p in payloads]
        for info in infos:
            info.wait_for_publish(DEADLINE_S)
        unacked = sum(1 for info in infos if not info.is_published())
        if unacked:
            raise AssertionError(f"{unacked} of {len(payloads)} publishes on {topic} got no PUBACK")

    def close(self) -> None:
        """Disconnect cleanly; a persistent session stays on the broker."""
        if self._client is not None:
            self._client.disconnect()
            self._client.loop_stop()
            self._client = None
