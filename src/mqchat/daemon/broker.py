"""The broker link: the only module that knows paho exists.

paho runs in one thread of our own, driven with ``Client.loop()``, so that
reconnects use our capped, jittered backoff. Its callbacks do nothing but hand
events to the asyncio loop with ``call_soon_threadsafe``; paho's publish, ack
and subscribe calls are thread-safe and are made from the loop thread.

It speaks MQTT 5, or 3.1.1 for brokers that do not (``[broker] protocol``: with
"auto", a broker that closes before CONNACK or refuses the protocol version is
asked again in 3.1.1), and moves along a list of broker URLs when one fails
(docs/brokers.md). Without MQTT 5's noLocal, a 3.1.1 broker sends our own
payloads back: they are recognised by their first bytes (which hold a random
nonce or IV) before anything is decrypted, acknowledged, and dropped uncounted.
"""

from __future__ import annotations

import asyncio
import logging
import random
import socket
import ssl
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from mqchat.config import BrokerUrl, Settings
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
CONNACK_TIMEOUT_S = 10.0
"""A broker that says nothing this long after CONNECT is taken to have ignored it."""
V5_PROBE_S = 3.0
"""In "auto", until a broker has answered MQTT 5 once: the wait for CONNACK before
3.1.1 is tried. amqtt 0.12 misreads MQTT 5's CONNECT properties as a longer
packet and waits in silence; 10 s of that at every start is too long."""
ECHO_MEMORY = 65536
"""Payloads of ours remembered, by their first bytes, to drop their 3.1.1 echoes."""
ECHO_PREFIX = 48
PROTOCOL_REFUSED = {1, 0x84}  # 3.1.1 "unacceptable protocol version", 5 "unsupported"
HINT_NO_CONNACK = (
    "; the broker closed the connection before answering CONNECT: if it speaks only "
    'MQTT 3.1.1, set [broker] protocol = "3.1.1" (or "auto", the default, which tries it)'
)
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


@dataclass(frozen=True)
class LinkSinks:
    """Where the link delivers, on the event loop: messages, ups and downs, PUBACKs."""

    on_message: Callable[[Incoming], None]
    on_state: Callable[[bool, str], None]
    on_published: Callable[[int, str | None], None]


def _ignore(*args: object) -> None:
    """A sink before ``start``: nothing arrives before the link connects."""


class BrokerLink:
    """One MQTT connection (5, or 3.1.1) with a persistent session, QoS 1 both ways."""

    def __init__(
        self,
        settings: Settings,
        client_id: str,
        password: str | None,
        loop: asyncio.AbstractEventLoop,
        *,
        on_fatal: Callable[[str], None],
    ) -> None:
        self._settings = settings
        self._client_id = client_id
        self._password = password
        self._loop = loop
        self._sinks = LinkSinks(_ignore, _ignore, _ignore)  # until start
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
        self._echoes: OrderedDict[bytes, None] = OrderedDict()
        self._echoes_lock = threading.Lock()
        self._url_index = 0
        self._connack: ReasonCode | None = None  # the CONNACK of the current attempt
        self._v5_answered = False  # a broker accepted MQTT 5: wait the full CONNACK time
        self.generation = 0
        """Counts paho clients made: a new one holds none of the old one's messages."""
        self.protocol = "3.1.1" if settings.protocol == "3.1.1" else "5"
        self.connected = False
        self.receive_maximum = 65535
        """How many QoS 1 publishes the broker takes unacknowledged (MQTT 5 CONNACK)."""
        self.last_error: tuple[str, int] | None = None
        """The last failure and when (ms since the epoch), for `status`."""
        self.failing_since: int | None = None
        """When the current run of failures began; None while connected."""
        self._client = self._new_client()

    @property
    def url(self) -> BrokerUrl:
        return self._settings.brokers[self._url_index]

    def status(self) -> dict[str, Any]:
        error = self.last_error
        return {
            "url": str(self.url),
            "protocol": self.protocol,
            "last_error": None if error is None else {"reason": error[0], "at_ms": error[1]},
            "failing_since_ms": self.failing_since,
        }

    def _new_client(self) -> mqtt.Client:
        self.generation += 1
        url, settings = self.url, self._settings
        v5 = self.protocol == "5"
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=self._client_id,
            protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311,
            clean_session=None if v5 else False,
            transport="websockets" if url.transport == "websockets" else "tcp",
            manual_ack=True,
            reconnect_on_failure=False,
        )
        if url.transport == "websockets":
            client.ws_set_options(path=url.path)
        if url.tls:
            ctx = ssl.create_default_context(
                cafile=str(settings.ca_file) if settings.ca_file else None
            )
            if settings.tls_insecure:
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE
            client.tls_set_context(ctx)
        if settings.username:
            client.username_pw_set(settings.username, self._password)
        client.max_inflight_messages_set(MAX_INFLIGHT)
        client.on_connect = self._cb_connect
        client.on_disconnect = self._cb_disconnect
        client.on_message = self._cb_message
        client.on_publish = self._cb_publish
        client.on_socket_open = self._cb_socket_open
        return client

    # called from the asyncio thread ------------------------------------
    def start(self, sinks: LinkSinks) -> None:
        """Connect, and deliver to ``sinks`` from now on."""
        self._sinks = sinks
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
                self._subscribe(self._client, topic, qos)

    def unsubscribe(self, topic: str) -> None:
        """Stop receiving ``topic``, now or, while disconnected, at the next CONNACK:
        the persistent session would otherwise keep delivering it."""
        with self._topics_lock:
            self._topics.pop(topic, None)
            if self._session_up:
                self._client.unsubscribe(topic)
            else:
                self._unsubscribe.add(topic)

    def _subscribe(self, client: mqtt.Client, topic: str, qos: int) -> None:
        if self.protocol == "5":
            client.subscribe(topic, options=SubscribeOptions(qos=qos, noLocal=True))
        else:
            client.subscribe(topic, qos=qos)

    def publish(self, topic: str, payload: bytes, qos: int) -> int | None:
        """Hand a message to paho; return its mid, or None if it was not taken.

        A QoS 1 message is kept by paho across reconnects, so its mid is returned
        even while disconnected; a QoS 0 message is only taken while connected.
        """
        if self.protocol != "5":
            with self._echoes_lock:
                self._echoes[payload[:ECHO_PREFIX]] = None
                if len(self._echoes) > ECHO_MEMORY:
                    self._echoes.popitem(last=False)
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
        delays = backoff_delays(random.Random())  # noqa: S311 -- jitter, not a secret
        while not self._stopping.is_set():
            url = self.url
            connacks = self._connacks
            self._connack = None
            try:
                self._connect(url)
            except (OSError, ssl.SSLError, ValueError) as exc:
                self._failed(f"cannot connect to {url}: {exc}")
                self._next_url()
                self._stopping.wait(delays())
                continue
            self._serve()
            if self._connacks != connacks:
                # A session was up: the next outage starts from a short delay,
                # not from where the last one's backoff had climbed to.
                delays = backoff_delays(random.Random())  # noqa: S311 -- jitter
                if self.connected and not self._stopping.is_set():
                    self._failed(f"lost the connection to {url}")
            elif self._fall_back():
                continue  # ask the same broker again at once, in 3.1.1
            elif self._connack is None and not self._stopping.is_set():
                self._failed(f"no answer to CONNECT from {url}" + HINT_NO_CONNACK)
            if self._stopping.is_set():
                return
            if self._connacks == connacks:
                self._next_url()
            self._stopping.wait(delays())

    def _connect(self, url: BrokerUrl) -> None:
        if self.protocol == "5":
            props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]  # paho: unannotated
            props.SessionExpiryInterval = SESSION_EXPIRY_S
            props.MaximumPacketSize = MAX_PACKET_BYTES
            self._client.connect(
                url.host,
                url.port,
                keepalive=self._settings.keepalive,
                clean_start=False,
                properties=props,
            )
        else:
            self._client.connect(url.host, url.port, keepalive=self._settings.keepalive)

    def _serve(self) -> None:
        """Run paho until the connection ends, or CONNECT goes unanswered too long."""
        started = time.monotonic()
        probing = self._settings.protocol == "auto" and self.protocol == "5"
        wait = V5_PROBE_S if probing and not self._v5_answered else CONNACK_TIMEOUT_S
        while not self._stopping.is_set():
            rc = self._client.loop(timeout=min(1.0, wait))
            if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                break
            if self._connack is None and time.monotonic() - started > wait:
                self._client.disconnect()
                break
        with self._topics_lock:
            self._session_up = False
        if self.connected and self._stopping.is_set():
            self._client.loop(timeout=0.2)  # let the DISCONNECT go out

    def _fall_back(self) -> bool:
        """In "auto", a broker that will not speak MQTT 5 is asked in 3.1.1: once."""
        refused = self._connack is not None and self._connack.value in PROTOCOL_REFUSED
        silent = self._connack is None
        if self._settings.protocol != "auto" or self.protocol != "5" or not (refused or silent):
            return False
        if self._stopping.is_set():
            return False
        self.protocol = "3.1.1"
        log.warning(
            "%s does not speak MQTT 5 (%s); using MQTT 3.1.1 with a persistent session",
            self.url,
            "it refused the protocol version" if refused else "no CONNACK",
        )
        self._client = self._new_client()
        return True

    def _next_url(self) -> None:
        if len(self._settings.brokers) > 1:
            self._url_index = (self._url_index + 1) % len(self._settings.brokers)
            self._client = self._new_client()

    def _failed(self, reason: str) -> None:
        """Record a failure; log it at WARNING when it is new, not on every retry."""
        previous = self.last_error
        now = time.time_ns() // 1_000_000
        self.last_error = (reason, now)
        if self.failing_since is None:
            self.failing_since = now
        if previous is None or previous[0] != reason:
            log.warning("%s", reason)
        else:
            log.debug("%s", reason)
        self._set_state(False, reason)

    def _set_state(self, connected: bool, reason: str) -> None:
        was = self.connected
        self.connected = connected
        if was != connected or not connected:
            self._loop.call_soon_threadsafe(self._sinks.on_state, connected, reason)

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
        self._connack = reason
        if reason.is_failure or (self.protocol != "5" and reason.value != 0):
            if reason.value not in PROTOCOL_REFUSED or self._settings.protocol != "auto":
                self._failed(f"{self.url} refused the connection: {reason}")
            return
        max_qos = getattr(properties, "MaximumQoS", None) if properties else None
        if max_qos == 0:
            # Such a broker (mqttools; mosquitto's `max_qos 0`) drops the connection
            # at our first QoS 1 publish: connected would be a lie (issue 22 item 11).
            self._failed(
                f"{self.url} allows only QoS 0 (Maximum QoS 0 in its CONNACK); chatd needs "
                f"QoS 1 to deliver without loss: use another broker"
            )
            client.disconnect()
            return
        self._connacks += 1
        self._v5_answered = self._v5_answered or self.protocol == "5"
        self.failing_since = None
        # paho does not read the broker's Receive Maximum itself (and cannot change
        # its in-flight limit while connected): the outbox window hands it no more.
        received = getattr(properties, "ReceiveMaximum", None) if properties else None
        self.receive_maximum = received if isinstance(received, int) and received > 0 else 65535
        with self._topics_lock:
            for topic, qos in self._topics.items():
                self._subscribe(client, topic, qos)
            for topic in self._unsubscribe:
                client.unsubscribe(topic)
            self._unsubscribe.clear()
            self._session_up = True
        version = "MQTT 5" if self.protocol == "5" else "MQTT 3.1.1"
        self._set_state(True, f"connected to {self.url} ({version})")

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
            # Without a DISCONNECT packet paho's reason is "Unspecified error":
            # say what happened instead.
            if flags.is_disconnect_packet_from_server:
                self._failed(f"{self.url} ended the connection: {reason}")
            else:
                self._failed(
                    f"the connection to {self.url} closed (the broker stopped or "
                    "restarted, or the network is down); trying again"
                )
        else:
            self.connected = False

    def _cb_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        payload = bytes(msg.payload)
        if self.protocol != "5":
            with self._echoes_lock:
                echo = self._echoes.pop(payload[:ECHO_PREFIX], False) is None
            if echo:  # our own payload, back: not a message, not a drop
                if msg.qos:
                    client.ack(msg.mid, msg.qos)
                return
        try:
            topic = msg.topic
        except UnicodeDecodeError:
            topic = ""  # no room has it: counted and dropped, but still acknowledged
        self._loop.call_soon_threadsafe(
            self._sinks.on_message, Incoming(topic, payload, msg.mid, msg.qos)
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
        self._loop.call_soon_threadsafe(self._sinks.on_published, mid, refusal)
