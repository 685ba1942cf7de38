"""The two packets of every message, read in one pass: a received PUBLISH, and the
PUBACK for one we sent; and the bytes of the socket, read ahead.

paho turns each PUBLISH into a Properties object, an MQTTMessage and a walk of
its topic matcher before chatd sees it: ~70 us of a lone message's ~1.2 ms in
the receiving daemon (issue 24). chatd uses none of it: a QoS 0 or 1 PUBLISH is
read here into (topic, payload, mid, qos) and handed to ``on_payload``. A
PUBACK that says success, without properties, is read here too and goes on to
paho's own bookkeeping (``_do_on_publish``) with a shared success reason,
instead of a new ReasonCode and two Properties objects (~30 us in the sender).
Anything else, and any packet this reading does not take (QoS 2, a failure, one
that is cut short), goes paho's own way, which decides what is malformed. chatd
acknowledges by hand (``manual_ack``), so paho would send nothing for these
packets either. Only this module and mqchat.daemon.broker know paho; if a paho
release no longer has the internals used here, paho's own path is kept.

A QoS 1 PUBLISH and a PUBACK go out the same way: the packet is built in one
pass and written at once when nothing waits ahead of it (paho queues it, wakes
its loop and writes it from the queue: ~40 us of a lone message's path to the
broker). What the socket does not take, and every other packet, goes through
paho's own queue; paho's bookkeeping of the message (its resend after a
reconnect, its PUBACK) is unchanged.

paho asks its socket for a packet's first byte, then each byte of its length,
then the rest: three or four system calls a packet. ``PahoClient`` reads up to
READ_AHEAD_BYTES at once and hands paho what it asks for from them, so a packet
that came alone costs one call, and a stream one a read. What is read ahead
belongs to the socket it came from; ``buffered`` tells the loop that packets wait
there though the kernel's socket is empty (daemon/broker_socket.py).
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any, Literal

import paho.mqtt.client as mqtt
from paho.mqtt.enums import MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

PayloadSink = Callable[[mqtt.Client, bytes, bytes, int, int], None]
"""(client, topic bytes, payload, mid, qos)."""


_PAHO_HAS = all(
    hasattr(mqtt.Client, name)
    for name in ("_handle_publish", "_handle_pubackcomp", "_do_on_publish", "_sock_recv")
)
"""paho 2.x's internals that PahoClient relies on, checked once."""
SUCCESS = ReasonCode(PacketTypes.PUBACK)
"""The success every plain PUBACK says: one object, shared (nobody changes it)."""
NO_PROPERTIES = Properties(PacketTypes.PUBACK)  # type: ignore[no-untyped-call]  # paho: unannotated
_WRITES_AT_ONCE = (
    "_out_packet",
    "_in_callback_mutex",
    "_msgtime_mutex",
    "_thread",
    "_logger",
    "_pack_remaining_length",
)
"""paho 2.x's state that a packet written at once must look at, checked per client."""
PUBLISH = 0x30
PUBACK = 0x40
READ_AHEAD_BYTES = 65536
"""Asked of the socket at once when paho wants the next bytes and none are read ahead."""


class PahoClient(mqtt.Client):
    """paho's client, with a QoS 0 or 1 PUBLISH read by ``read_publish`` and a plain
    successful PUBACK by ``read_puback``."""

    on_payload: PayloadSink | None = None
    _ahead = b""
    """Bytes read from the socket ``_ahead_of`` that paho has not asked for yet."""
    _ahead_at = 0
    _ahead_of: object = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._writes_at_once = _PAHO_HAS and all(hasattr(self, n) for n in _WRITES_AT_ONCE)

    def _send_publish(
        self,
        mid: int,
        topic: bytes,
        payload: bytes | bytearray = b"",
        qos: int = 0,
        retain: bool = False,
        dup: bool = False,
        info: mqtt.MQTTMessageInfo | None = None,
        properties: Properties | None = None,
    ) -> MQTTErrorCode:
        if (
            not self._writes_at_once
            or properties is not None
            or qos > 1
            or self._sock is None
            or self.on_log is not None
            or self._logger is not None  # paho logs each packet it sends
            or type(topic) is not bytes
            or not isinstance(payload, bytes | bytearray)
        ):
            return super()._send_publish(mid, topic, payload, qos, retain, dup, info, properties)
        head = struct.pack(">H", len(topic)) + topic
        if qos:
            head += struct.pack(">H", mid)
        if self._protocol == mqtt.MQTTv5:
            head += b"\x00"  # no properties
        command = PUBLISH | (dup << 3) | (qos << 1) | retain
        packet = bytearray((command,))
        self._pack_remaining_length(packet, len(head) + len(payload))  # paho's, and its limit
        packet += head
        packet += payload
        return self._packet_queue(command, packet, mid, qos, info)

    def _packet_queue(
        self,
        command: int,
        packet: bytes | bytearray,
        mid: int,
        qos: int,
        info: mqtt.MQTTMessageInfo | None = None,
    ) -> MQTTErrorCode:
        kind = command & 0xF0
        if (
            not self._writes_at_once
            or not (kind == PUBACK or (kind == PUBLISH and qos == 1))
            or self._out_packet  # in order behind what waits
            or self._sock is None
            or self._thread is not None
            or self._on_socket_register_write is not None
        ):
            return super()._packet_queue(command, packet, mid, qos, info)
        if not self._in_callback_mutex.acquire(False):
            return super()._packet_queue(command, packet, mid, qos, info)  # in a callback
        try:
            try:
                sent = self._sock_send(packet)
            except (OSError, AttributeError, ValueError):
                sent = 0  # BlockingIOError included: paho's own write, below, says what it is
            if sent == len(packet):
                with self._msgtime_mutex:
                    self._last_msg_out = mqtt.time_func()
                return MQTTErrorCode.MQTT_ERR_SUCCESS
            self._out_packet.append(
                {
                    "command": command,
                    "mid": mid,
                    "qos": qos,
                    "pos": sent,
                    "to_process": len(packet) - sent,
                    "packet": packet,
                    "info": info,
                }
            )
        finally:
            self._in_callback_mutex.release()
        return self.loop_write()

    def buffered(self) -> bool:
        """Whether bytes read ahead from the current socket wait for paho."""
        return self._ahead_at < len(self._ahead) and self._ahead_of is self._sock

    def _sock_recv(self, bufsize: int) -> bytes:
        if not _PAHO_HAS:
            return super()._sock_recv(bufsize)
        if self.buffered():
            at = self._ahead_at
            taken = self._ahead[at : at + bufsize]
            self._ahead_at = at + len(taken)
            return taken
        # paho's own read, with its errors (BlockingIOError when nothing came)
        data = super()._sock_recv(max(bufsize, READ_AHEAD_BYTES))
        if len(data) <= bufsize:
            self._ahead = b""
            return data
        self._ahead, self._ahead_at, self._ahead_of = data, bufsize, self._sock
        return data[:bufsize]

    def _handle_publish(self) -> MQTTErrorCode:
        sink = self.on_payload
        if sink is not None and _PAHO_HAS:
            packet = self._in_packet
            read = read_publish(packet["command"], packet["packet"], self._protocol == mqtt.MQTTv5)
            if read is not None:
                sink(self, *read)
                return MQTTErrorCode.MQTT_ERR_SUCCESS
        return super()._handle_publish()

    def _handle_pubackcomp(self, cmd: Literal["PUBACK", "PUBCOMP"]) -> MQTTErrorCode:
        mid = read_puback(self._in_packet["packet"]) if cmd == "PUBACK" and _PAHO_HAS else None
        if mid is None:
            return super()._handle_pubackcomp(cmd)
        with self._out_message_mutex:  # as paho's own: tell once, then its bookkeeping
            if mid in self._out_messages:
                return self._do_on_publish(mid, SUCCESS, NO_PROPERTIES)
        return MQTTErrorCode.MQTT_ERR_SUCCESS


def read_puback(packet: bytes | bytearray) -> int | None:
    """The packet id of a PUBACK that says success with no properties; None else.

    MQTT 3.1.1: the id alone. MQTT 5: the id, then the reason code and a property
    length, each left out when 0."""
    size = len(packet)
    if size < 2 or size > 4 or (size >= 3 and packet[2] != 0) or (size == 4 and packet[3] != 0):
        return None
    return (packet[0] << 8) | packet[1]


def read_publish(
    command: int, packet: bytes | bytearray, v5: bool
) -> tuple[bytes, bytes, int, int] | None:
    """(topic, payload, mid, qos) of a PUBLISH of QoS 0 or 1; None for anything else.

    ``packet`` is what follows the fixed header: the topic (a 2-byte length, then
    its bytes), the packet id if QoS > 0, in MQTT 5 the properties (a variable
    byte integer length, then that many bytes, skipped), and the payload."""
    qos = (command >> 1) & 3
    size = len(packet)
    if qos > 1 or size < 2:
        return None
    at = 2 + ((packet[0] << 8) | packet[1])
    if at > size:
        return None
    topic = bytes(packet[2:at])
    mid = 0
    if qos:
        if at + 2 > size:
            return None
        mid = (packet[at] << 8) | packet[at + 1]
        at += 2
    if v5:
        length, shift = 0, 0
        for _ in range(4):
            if at >= size:
                return None
            byte = packet[at]
            at += 1
            length |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                break
        else:
            return None  # a variable byte integer is at most 4 bytes
        at += length
        if at > size:
            return None
    elif not topic:
        return None  # MQTT 3.1.1 has no topic aliases: paho refuses it
    return topic, bytes(packet[at:]), mid, qos
