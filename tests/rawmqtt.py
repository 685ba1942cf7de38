"""A plain paho client for tests that play the broker's or an outsider's part.

It sees every payload on the broker (a ``#`` subscriber) and publishes raw bytes
at any topic, with no chatd in between. Waiting is for events with deadlines.
"""

from __future__ import annotations

import socket
import threading
import uuid
from types import TracebackType

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from forge import epoch_zero, texts_in
from harness import DEADLINE_S, PASSPHRASE, Broker, Daemon, Tail, wait_until
from mqchat.protocol.kdf import derive_room_keys, topic_for


def room_topic(room: str, passphrase: str) -> str:
    """A passphrase room's version 1 topic under the default prefix: chatd still
    opens version 1 payloads there, from members of an older version."""
    return topic_for("mqchat/v1", derive_room_keys(passphrase, room).tag)


def text_topic(room: str, passphrase: str) -> str:
    """Where chatd sends a passphrase room's messages: epoch 0's version 2 topic."""
    return epoch_zero(passphrase, room).topic("mqchat/v1")


def first_payload(
    raw: RawClient, alice: Daemon, bob: Daemon, room: str, text: str
) -> tuple[Tail, bytes]:
    """alice and bob join ``room`` and alice says ``text``: bob's tail (past that
    message) and the payload the broker carried."""
    alice.join(room)
    bob.join(room)
    tail = bob.tail(room, "--since", "0")
    alice.ok("send", room, text)
    assert tail.messages(1)[0]["text"] == text
    return tail, raw.wait_texts(room, PASSPHRASE, 1)[0]


def _no_delay(client: mqtt.Client, userdata: object, sock: object) -> None:
    if isinstance(sock, socket.socket):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class RawClient:
    """Subscribed to ``#`` from the start; records (topic, payload) of everything."""

    def __init__(self, broker: Broker) -> None:
        self.captured: list[tuple[str, bytes]] = []
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self._client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=f"raw-{uuid.uuid4().hex[:8]}"
        )
        self._client.on_message = self._on_message
        # publish() waits for each PUBACK: with Nagle on, every small PUBLISH
        # after the first waits for the previous one's delayed ACK (~40 ms).
        self._client.on_socket_open = _no_delay
        self._client.on_subscribe = lambda *_: self._subscribed.set()
        self._client.connect("127.0.0.1", broker.port)
        self._client.subscribe("#", qos=1)
        self._client.loop_start()
        if not self._subscribed.wait(DEADLINE_S):
            self.close()
            raise AssertionError("the raw MQTT client was not subscribed in time")

    def _on_message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.captured.append((msg.topic, bytes(msg.payload)))

    def on_topic(self, topic: str) -> list[bytes]:
        with self._lock:
            return [p for t, p in self.captured if t == topic]

    def wait_payloads(self, topic: str, count: int) -> list[bytes]:
        """The first ``count`` payloads seen on ``topic``, waiting for them."""
        got: list[bytes] = wait_until(
            lambda: (p := self.on_topic(topic)) and len(p) >= count and p,
            f"{count} payloads on {topic}",
        )
        return got[:count]

    def wait_texts(self, room: str, passphrase: str, count: int) -> list[bytes]:
        """The first ``count`` payloads of a room that carry text (not presence)."""
        keys = epoch_zero(passphrase, room)
        topic = keys.topic("mqchat/v1")
        got: list[bytes] = wait_until(
            lambda: (
                (p := [x for x in self.on_topic(topic) if texts_in(x, keys)])
                and len(p) >= count
                and p
            ),
            f"{count} payloads with text on {topic}",
        )
        return got[:count]

    def publish(self, topic: str, payload: bytes) -> None:
        """Publish at QoS 1 and wait until the broker has it (PUBACK)."""
        info = self._client.publish(topic, payload, qos=1)
        info.wait_for_publish(DEADLINE_S)
        if not info.is_published():
            raise AssertionError(f"the broker did not take a {len(payload)}-byte payload")

    def close(self) -> None:
        self._client.loop_stop()
        self._client.disconnect()

    def __enter__(self) -> RawClient:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
