"""The broker link: the only module that knows paho exists.

paho runs on the asyncio loop, with no thread of its own: its blocking connect
(DNS, TCP, TLS, the websocket upgrade) runs in an executor, and once the socket
is open ``LoopSocket`` (``daemon/broker_socket.py``) drives it with
``add_reader``/``add_writer`` and a keepalive deadline. paho's callbacks run on
the loop, record what they must, and hand each event to its sink with
``call_soon``, so a sink never runs inside paho. Which broker to dial, in which
protocol, when, and what a failure is called are ``Dial``'s decisions
(``daemon/broker_dial.py``).

It speaks MQTT 5, or 3.1.1 for brokers that do not (``[broker] protocol``: with
"auto", a broker that closes before CONNACK or refuses the protocol version is
asked again in 3.1.1), and moves along a list of broker URLs when one fails
(docs/brokers.md). Without MQTT 5's noLocal, a 3.1.1 broker sends our own
payloads back: they are recognised by their first bytes (which hold a random
nonce or IV) before anything is decrypted, acknowledged, and dropped uncounted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import socket
import ssl
import time
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from mqchat.config import BrokerUrl, Settings
from mqchat.daemon.broker_dial import Dial
from mqchat.daemon.broker_packets import PahoClient
from mqchat.daemon.broker_session import Delivery, Echoes, Incoming, LinkSinks, Subscriptions
from mqchat.daemon.broker_socket import LoopSocket
from mqchat.protocol.limits import MAX_PAYLOAD_BYTES

__all__ = ["BrokerLink", "Incoming", "LinkSinks"]  # the link and what it delivers

log = logging.getLogger(__name__)

SESSION_EXPIRY_S = 7 * 24 * 3600
"""How long the broker keeps our session (and queues QoS 1 messages) while we are away."""
MAX_PACKET_BYTES = MAX_PAYLOAD_BYTES + 1024
"""Asked of the broker at CONNECT (MQTT 5 Maximum Packet Size): the largest
payload chatd would open, plus room for the topic and headers. A broker does not
send us anything larger, so a huge payload never reaches our memory."""
MAX_INFLIGHT = 100
"""QoS 1 publishes awaiting PUBACK at once, or fewer if the broker's Receive Maximum says so."""


class BrokerLink:
    """One MQTT connection (5, or 3.1.1) with a persistent session, QoS 1 both ways."""

    def __init__(
        self,
        settings: Settings,
        client_id: str,
        password: str | None,
        *,
        on_fatal: Callable[[str], None],
    ) -> None:
        self._settings = settings
        self._client_id = client_id
        self._password = password
        self._dial = Dial(
            settings.brokers,
            settings.protocol,
            rng=random.Random(),  # noqa: S311 -- jitter, not a secret
            clock_ms=lambda: time.time_ns() // 1_000_000,
            on_failure=self._lost,
        )
        self._topics = Subscriptions()
        self._echoes = Echoes()
        self._session_up = False
        self._out = Delivery(on_fatal)
        self._task: asyncio.Task[None] | None = None
        self._socket: LoopSocket | None = None
        self._wake = asyncio.Event()
        self._stopping = False
        self.generation = 0
        """Counts paho clients made: a new one holds none of the old one's messages."""
        self.connected = False
        self.receive_maximum = 65535
        """How many QoS 1 publishes the broker takes unacknowledged (MQTT 5 CONNACK)."""
        self._client = self._new_client()

    def status(self) -> dict[str, Any]:
        return self._dial.status()

    # the rest of chatd's calls, on the loop -----------------------------
    def start(self, sinks: LinkSinks) -> None:
        """Connect, and keep connected, from the running loop until ``stop``."""
        loop = asyncio.get_running_loop()
        self._out.attach(loop, sinks)
        self._task = loop.create_task(self._run(), name="broker-link")
        self._task.add_done_callback(self._run_ended)

    async def stop(self, timeout: float = 5.0) -> None:
        """Disconnect cleanly (the broker keeps our session) and end the link's task."""
        self._stopping = True
        self._wake.set()
        if self._socket is not None:
            self._client.disconnect()
            self._sync()
        if self._task is not None:
            await asyncio.wait({self._task}, timeout=timeout)
            self._task.cancel()
        if self._socket is not None:
            self._socket.close()

    def subscribe(self, topic: str, qos: int) -> None:
        self._topics.want(topic, qos)
        if self._session_up:
            subscribe(self._client, self._dial.protocol, topic, qos)
            self._sync()

    def unsubscribe(self, topic: str) -> None:
        """Stop receiving ``topic``, now or, while disconnected, at the next CONNACK:
        the persistent session would otherwise keep delivering it."""
        self._topics.drop(topic, at_next_connack=not self._session_up)
        if self._session_up:
            self._client.unsubscribe(topic)
            self._sync()

    def publish(self, topic: str, payload: bytes, qos: int) -> int | None:
        """Hand a message to paho; return its mid, or None if it was not taken.

        A QoS 1 message is kept by paho across reconnects, so its mid is returned
        even while disconnected; a QoS 0 message is only taken while connected.
        """
        if self._dial.protocol != "5":
            self._echoes.sent(payload)
        info = self._client.publish(topic, payload, qos=qos)
        self._sync()
        if info.rc == MQTTErrorCode.MQTT_ERR_SUCCESS or (
            qos > 0 and info.rc == MQTTErrorCode.MQTT_ERR_NO_CONN
        ):
            return info.mid
        return None

    def ack(self, mid: int, qos: int) -> None:
        if qos > 0:
            self._client.ack(mid, qos)
            self._sync()

    # the connect loop -----------------------------------------------------
    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while not self._stopping:
            client, url = self._client, self._dial.url
            wait = self._dial.begin()
            try:
                await loop.run_in_executor(
                    None, send_connect, client, url, self._dial.protocol, self._settings.keepalive
                )
            except (OSError, ssl.SSLError, ValueError) as exc:
                failed = self._dial.cannot_open(exc)
                await self._redial(failed.delay_s, client_too=failed.new_client)
                continue
            sock = client.socket()
            if sock is not None:  # else closed already: the attempt ends as a silent one
                self._socket = watch = LoopSocket(
                    loop, client, sock, self._settings.keepalive, self._failed
                )
                watch.start()
                if self._stopping:
                    client.disconnect()
                    watch.sync()
                overdue = loop.call_later(wait, self._connack_overdue, watch)
                await watch.closed
                overdue.cancel()
            self._session_up = False
            redial = self._dial.ended(still_connected=self.connected, stopping=self._stopping)
            self.connected = False  # if no callback said so (a session lost unseen)
            if redial is None:
                return
            await self._redial(redial.delay_s, client_too=redial.new_client)

    async def _redial(self, delay_s: float, *, client_too: bool) -> None:
        if client_too and not self._stopping:
            self._client = self._new_client()
        if delay_s > 0 and not self._stopping:
            self._wake.clear()
            with contextlib.suppress(TimeoutError):  # the delay passed: dial again
                await asyncio.wait_for(self._wake.wait(), delay_s)

    def _connack_overdue(self, watch: LoopSocket) -> None:
        if watch is self._socket and not self._session_up:
            self._client.disconnect()  # "no answer to CONNECT", or 3.1.1 in "auto"
            watch.sync()

    def _sync(self) -> None:
        if self._socket is not None:
            self._socket.sync()

    def _failed(self, exc: BaseException) -> None:
        """A bug in the link: stop chatd (systemd restarts it) rather than leave a
        daemon that looks connected and is not."""
        log.critical("the broker link failed", exc_info=exc)
        self.connected = False
        self._out.fatal(f"the broker link failed: {exc!r}")

    def _run_ended(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            self._failed(task.exception() or RuntimeError("unknown"))

    def _lost(self, reason: str) -> None:
        """A failure ``Dial`` recorded: the link is down, and the sink hears why."""
        self.connected = False
        self._out.state(False, reason)

    # paho -----------------------------------------------------------------
    def _new_client(self) -> PahoClient:
        self.generation += 1
        client = new_paho_client(
            self._settings, self._dial.url, self._dial.protocol, self._client_id, self._password
        )
        client.on_connect = self._cb_connect
        client.on_disconnect = self._cb_disconnect
        client.on_message = self._cb_message
        client.on_payload = self._cb_payload
        client.on_publish = self._cb_publish
        client.on_socket_open = set_no_delay
        client.on_socket_close = self._cb_socket_close
        return client

    def _cb_socket_close(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        """paho is about to close a socket: stop watching it, which ends the attempt.
        (Only the loop closes a watched socket: the executor's connect begins after.)"""
        if self._socket is not None and self._socket.is_for(sock):
            self._socket.close()
            self._socket = None

    def _cb_connect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.ConnectFlags,
        reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        max_qos = getattr(properties, "MaximumQoS", None) if properties else None
        answer = self._dial.connack(reason.value, reason.is_failure, str(reason), max_qos)
        if answer.hang_up:
            client.disconnect()
        if not answer.session:
            return
        # paho does not read the broker's Receive Maximum itself (and cannot change
        # its in-flight limit while connected): the outbox window hands it no more.
        received = getattr(properties, "ReceiveMaximum", None) if properties else None
        self.receive_maximum = received if isinstance(received, int) and received > 0 else 65535
        keepalive = getattr(properties, "ServerKeepAlive", None) if properties else None
        if isinstance(keepalive, int) and self._socket is not None:
            self._socket.set_keepalive(keepalive)
        wanted, dropped = self._topics.at_connack()
        for topic, qos in wanted:
            subscribe(self._client, self._dial.protocol, topic, qos)
        for topic in dropped:
            client.unsubscribe(topic)
        self._session_up = True
        self.connected = True
        self._out.state(True, self._dial.connected_reason())

    def _cb_disconnect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.DisconnectFlags,
        reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        self._session_up = False
        if self.connected and not self._stopping:
            by_broker = str(reason) if flags.is_disconnect_packet_from_server else None
            self._dial.failed(self._dial.closed_reason(by_broker))
        else:
            self.connected = False

    def _cb_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        """A PUBLISH that PahoClient left to paho (QoS 2, or one cut short)."""
        try:
            topic = msg.topic
        except UnicodeDecodeError:
            topic = ""
        self._received(client, topic, bytes(msg.payload), msg.mid, msg.qos)

    def _cb_payload(
        self, client: mqtt.Client, topic: bytes, payload: bytes, mid: int, qos: int
    ) -> None:
        """A PUBLISH of QoS 0 or 1, read by PahoClient (mqchat.daemon.broker_packets)."""
        try:
            name = topic.decode()
        except UnicodeDecodeError:
            name = ""
        self._received(client, name, payload, mid, qos)

    def _received(
        self, client: mqtt.Client, topic: str, payload: bytes, mid: int, qos: int
    ) -> None:
        """A topic that is not UTF-8 comes as "": no room has it, so it is counted,
        dropped and still acknowledged."""
        if self._dial.protocol != "5" and self._echoes.is_echo(payload):
            if qos:  # our own payload, back: not a message, not a drop
                client.ack(mid, qos)
            return
        self._out.message(Incoming(topic, payload, mid, qos))

    def _cb_publish(
        self,
        client: mqtt.Client,
        userdata: Any,
        mid: int,
        reason: ReasonCode,
        properties: Properties,
    ) -> None:
        self._out.published(mid, str(reason) if reason.is_failure else None)


def new_paho_client(
    settings: Settings, url: BrokerUrl, protocol: str, client_id: str, password: str | None
) -> PahoClient:
    """A paho client for ``url`` in ``protocol``, with chatd's session, TLS and window."""
    v5 = protocol == "5"
    client = PahoClient(
        CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311,
        clean_session=None if v5 else False,
        transport="websockets" if url.transport == "websockets" else "tcp",
        manual_ack=True,
        reconnect_on_failure=False,
    )
    if url.transport == "websockets":
        client.ws_set_options(path=url.path)
    if url.tls:
        ctx = ssl.create_default_context(cafile=str(settings.ca_file) if settings.ca_file else None)
        if settings.tls_insecure:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        client.tls_set_context(ctx)
    if settings.username:
        client.username_pw_set(settings.username, password)
    client.max_inflight_messages_set(MAX_INFLIGHT)
    return client


def send_connect(client: mqtt.Client, url: BrokerUrl, protocol: str, keepalive: int) -> None:
    """In an executor: open the socket and send CONNECT (paho blocks for both)."""
    if protocol == "5":
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]  # paho: unannotated
        props.SessionExpiryInterval = SESSION_EXPIRY_S
        props.MaximumPacketSize = MAX_PACKET_BYTES
        client.connect(url.host, url.port, keepalive=keepalive, clean_start=False, properties=props)
    else:
        client.connect(url.host, url.port, keepalive=keepalive)


def set_no_delay(client: mqtt.Client, userdata: Any, sock: Any) -> None:
    """paho's on_socket_open, in the executor inside connect: Nagle plus delayed
    ACKs stalls a QoS 1 round trip by 40 ms or more."""
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except (AttributeError, OSError):
        log.debug("could not set TCP_NODELAY on the broker socket")


def subscribe(client: mqtt.Client, protocol: str, topic: str, qos: int) -> None:
    """In MQTT 5 with noLocal: the broker does not send our own messages back."""
    if protocol == "5":
        client.subscribe(topic, options=SubscribeOptions(qos=qos, noLocal=True))
    else:
        client.subscribe(topic, qos=qos)
