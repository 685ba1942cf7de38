"""The broker link: the only module that knows paho exists.

paho runs in one thread of our own, driven with ``Client.loop()``, so that
reconnects use our capped, jittered backoff. Its callbacks do nothing but hand
events to the asyncio loop with ``call_soon_threadsafe``; paho's publish, ack
and subscribe calls are thread-safe and are made from the loop thread.
"""

from __future__ import annotations

import asyncio
import logging
import random
import socket
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from mqchat.config import Settings
from mqchat.protocol.limits import MAX_PAYLOAD_BYTES

log = logging.getLogger(__name__)

SESSION_EXPIRY_S = 7 * 24 * 3600
"""How long the broker keeps our session (and queues QoS 1 messages) while we are away."""
MAX_PACKET_BYTES = MAX_PAYLOAD_BYTES + 1024
"""Asked of the broker at CONNECT (MQTT 5 Maximum Packet Size): the largest
payload chatd would open, plus room for the topic and headers. A broker does not
send us anything larger, so a huge payload never reaches our memory."""
MAX_INFLIGHT = 100
"""QoS 1 publishes awaiting PUBACK at once, or fewer if the broker's Receive Maximum says so."""
BACKOFF_FIRST_S = 0.5
BACKOFF_MAX_S = 60.0


@dataclass(frozen=True)
class Incoming:
    topic: str
    payload: bytes
    mid: int
    qos: int


def backoff_delays(rng: random.Random) -> Callable[[], float]:
    """Capped exponential backoff with full jitter (AWS architecture blog's "full jitter")."""
    attempt = 0

    def next_delay() -> float:
        nonlocal attempt
        cap = min(BACKOFF_MAX_S, BACKOFF_FIRST_S * 2**attempt)
        attempt = min(attempt + 1, 16)
        return rng.uniform(BACKOFF_FIRST_S / 2, cap)

    return next_delay


class BrokerLink:
    """One MQTT v5 connection with a persistent session, QoS 1 both ways."""

    def __init__(
        self,
        settings: Settings,
        client_id: str,
        password: str | None,
        loop: asyncio.AbstractEventLoop,
        *,
        on_message: Callable[[Incoming], None],
        on_state: Callable[[bool, str], None],
        on_published: Callable[[int, str | None], None],
        on_fatal: Callable[[str], None],
    ) -> None:
        self._settings = settings
        self._loop = loop
        self._on_message = on_message
        self._on_state = on_state
        self._on_published = on_published
        self._on_fatal = on_fatal
        # What we want subscribed, what we still must unsubscribe, and whether a
        # session is up: changed only under the lock, by the loop's calls and by
        # paho's CONNACK handler alike, so a join can never fall between the
        # handler's copy of the list and the session coming up.
        self._topics: dict[str, int] = {}
        self._unsubscribe: set[str] = set()
        self._session_up = False
        self._topics_lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._connacks = 0  # successful CONNACKs; the paho thread's own counter
        self.connected = False
        self.receive_maximum = 65535
        """How many QoS 1 publishes the broker takes unacknowledged (MQTT 5 CONNACK)."""
        url = settings.broker
        self._client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=mqtt.MQTTv5,
            transport="websockets" if url.transport == "websockets" else "tcp",
            manual_ack=True,
            reconnect_on_failure=False,
        )
        if url.transport == "websockets":
            self._client.ws_set_options(path=url.path)
        if url.tls:
            ctx = ssl.create_default_context(
                cafile=str(settings.ca_file) if settings.ca_file else None
            )
            if settings.tls_insecure:
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE
            self._client.tls_set_context(ctx)
        if settings.username:
            self._client.username_pw_set(settings.username, password)
        self._client.max_inflight_messages_set(MAX_INFLIGHT)
        self._client.on_connect = self._cb_connect
        self._client.on_disconnect = self._cb_disconnect
        self._client.on_message = self._cb_message
        self._client.on_publish = self._cb_publish
        self._client.on_socket_open = self._cb_socket_open

    # called from the asyncio thread ------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._supervised, name="mqtt-link", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Disconnect cleanly (the broker keeps our session) and end the thread."""
        self._stopping.set()
        if self.connected:
            self._client.disconnect()
        if self._thread is not None:
            self._thread.join(timeout)

    def subscribe(self, topic: str, qos: int) -> None:
        with self._topics_lock:
            self._topics[topic] = qos
            self._unsubscribe.discard(topic)
            if self._session_up:
                self._client.subscribe(topic, options=SubscribeOptions(qos=qos, noLocal=True))

    def unsubscribe(self, topic: str) -> None:
        """Stop receiving ``topic``, now or, while disconnected, at the next CONNACK:
        the persistent session would otherwise keep delivering it."""
        with self._topics_lock:
            self._topics.pop(topic, None)
            if self._session_up:
                self._client.unsubscribe(topic)
            else:
                self._unsubscribe.add(topic)

    def publish(self, topic: str, payload: bytes, qos: int) -> int | None:
        """Hand a message to paho; return its mid, or None if it was not taken.

        A QoS 1 message is kept by paho across reconnects, so its mid is returned
        even while disconnected; a QoS 0 message is only taken while connected.
        """
        info = self._client.publish(topic, payload, qos=qos)
        if info.rc == MQTTErrorCode.MQTT_ERR_SUCCESS or (
            qos > 0 and info.rc == MQTTErrorCode.MQTT_ERR_NO_CONN
        ):
            return info.mid
        return None

    def ack(self, mid: int, qos: int) -> None:
        if qos > 0:
            self._client.ack(mid, qos)

    # the paho thread ---------------------------------------------------
    def _supervised(self) -> None:
        """Run the link; if it dies of a bug, say so and stop chatd (systemd restarts it)
        rather than leave a daemon that looks connected and is not."""
        try:
            self._run()
        except BaseException as exc:
            log.critical("the broker link failed", exc_info=True)
            self.connected = False
            self._loop.call_soon_threadsafe(self._on_fatal, f"the broker link failed: {exc!r}")

    def _run(self) -> None:
        url = self._settings.broker
        delays = backoff_delays(random.Random())  # noqa: S311 -- jitter, not a secret
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]  # paho: unannotated
        props.SessionExpiryInterval = SESSION_EXPIRY_S
        props.MaximumPacketSize = MAX_PACKET_BYTES
        first = True
        while not self._stopping.is_set():
            try:
                if first:
                    self._client.connect(
                        url.host,
                        url.port,
                        keepalive=self._settings.keepalive,
                        clean_start=False,
                        properties=props,
                    )
                    first = False
                else:
                    self._client.reconnect()
            except (OSError, ssl.SSLError, ValueError) as exc:
                first = first and isinstance(exc, ValueError)
                self._set_state(False, f"cannot connect to {url}: {exc}")
                self._stopping.wait(delays())
                continue
            connacks = self._connacks
            while not self._stopping.is_set():
                rc = self._client.loop(timeout=1.0)
                if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                    break
            with self._topics_lock:
                self._session_up = False
            if self._connacks != connacks:
                # A session was up: the next outage starts from a short delay,
                # not from where the last one's backoff had climbed to.
                delays = backoff_delays(random.Random())  # noqa: S311 -- jitter
            if self.connected and self._stopping.is_set():
                # Let the DISCONNECT go out.
                self._client.loop(timeout=0.2)
            if not self._stopping.is_set():
                self._set_state(False, f"lost the connection to {url}")
                self._stopping.wait(delays())

    def _set_state(self, connected: bool, reason: str) -> None:
        was = self.connected
        self.connected = connected
        if was != connected or not connected:
            self._loop.call_soon_threadsafe(self._on_state, connected, reason)

    def _cb_socket_open(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        # Nagle plus delayed ACKs stalls a QoS 1 round trip by 40 ms or more.
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except (AttributeError, OSError):
            log.debug("could not set TCP_NODELAY on the broker socket")

    def _cb_connect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.ConnectFlags,
        reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if reason.is_failure:
            self._set_state(False, f"broker refused the connection: {reason}")
            return
        self._connacks += 1
        # paho does not read the broker's Receive Maximum itself (and cannot change
        # its in-flight limit while connected): the service hands it no more.
        received = getattr(properties, "ReceiveMaximum", None) if properties else None
        self.receive_maximum = received if isinstance(received, int) and received > 0 else 65535
        with self._topics_lock:
            for topic, qos in self._topics.items():
                client.subscribe(topic, options=SubscribeOptions(qos=qos, noLocal=True))
            for topic in self._unsubscribe:
                client.unsubscribe(topic)
            self._unsubscribe.clear()
            self._session_up = True
        self._set_state(True, f"connected to {self._settings.broker}")

    def _cb_disconnect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.DisconnectFlags,
        reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        with self._topics_lock:
            self._session_up = False
        if self.connected and not self._stopping.is_set():
            self._set_state(False, f"disconnected from {self._settings.broker}: {reason}")
        else:
            self.connected = False

    def _cb_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        try:
            topic = msg.topic
        except UnicodeDecodeError:
            topic = ""  # no room has it: counted and dropped, but still acknowledged
        self._loop.call_soon_threadsafe(
            self._on_message, Incoming(topic, bytes(msg.payload), msg.mid, msg.qos)
        )

    def _cb_publish(
        self,
        client: mqtt.Client,
        userdata: Any,
        mid: int,
        reason: ReasonCode,
        properties: Properties,
    ) -> None:
        refusal = str(reason) if reason.is_failure else None
        self._loop.call_soon_threadsafe(self._on_published, mid, refusal)
