"""The one-pass PUBLISH reading (mqchat.daemon.broker_packets) against paho's own.

Every packet is built by hand from the MQTT 3.1.1 and 5 specifications. What paho
would hand chatd (topic, payload, mid, qos) must be what the one-pass reading
hands it; a packet it does not take goes paho's way.
"""

from __future__ import annotations

import contextlib
import select
import socket
import struct
import threading
from collections.abc import Callable

import paho.mqtt.client as mqtt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from paho.mqtt.enums import CallbackAPIVersion

from mqchat.daemon.broker_packets import PahoClient, read_puback, read_publish

PUBLISH = 0x30


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def properties(payload_format: int | None, content_type: str | None, user: list[str]) -> bytes:
    """A PUBLISH's MQTT 5 properties: its length, then the properties."""
    body = b""
    if payload_format is not None:
        body += bytes([0x01, payload_format])
    if content_type is not None:
        raw = content_type.encode()
        body += b"\x03" + struct.pack(">H", len(raw)) + raw
    for value in user:
        raw = value.encode()
        body += b"\x26" + struct.pack(">H", len(raw)) + raw + struct.pack(">H", len(raw)) + raw
    return varint(len(body)) + body


def publish(topic: bytes, payload: bytes, qos: int, mid: int, props: bytes | None) -> bytes:
    """The packet after its fixed header, as paho keeps it in ``_in_packet``."""
    out = struct.pack(">H", len(topic)) + topic
    if qos:
        out += struct.pack(">H", mid)
    if props is not None:
        out += props
    return out + payload


def through(
    client: mqtt.Client, command: int, packet: bytes
) -> list[tuple[bytes, bytes, int, int]]:
    """What ``client`` hands on for one PUBLISH, by either path."""
    got: list[tuple[bytes, bytes, int, int]] = []

    def on_message(_c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        got.append((msg.topic.encode(), bytes(msg.payload), msg.mid, msg.qos))

    client.on_message = on_message
    client._in_packet["command"] = command  # paho's read state, as it fills it
    client._in_packet["packet"] = packet
    client._handle_publish()
    return got


def client(v5: bool) -> PahoClient:
    return PahoClient(
        CallbackAPIVersion.VERSION2,
        client_id="t",
        protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311,
        manual_ack=True,
    )


texts = st.text(st.characters(blacklist_categories=("Cs", "Cc")), max_size=20)
"""Property strings paho accepts (MQTT 5 §1.5.4: no NUL; paho refuses some controls)."""


@given(
    topic=st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=40),
    payload=st.binary(max_size=300),
    qos=st.integers(0, 1),
    mid=st.integers(1, 65535),
    v5=st.booleans(),
    payload_format=st.none() | st.integers(0, 1),
    content_type=st.none() | texts,
    user=st.lists(texts, max_size=3),
)
def test_what_chatd_is_handed_is_what_paho_would_hand_it(
    topic: str,
    payload: bytes,
    qos: int,
    mid: int,
    v5: bool,
    payload_format: int | None,
    content_type: str | None,
    user: list[str],
) -> None:
    props = properties(payload_format, content_type, user) if v5 else None
    packet = publish(topic.encode(), payload, qos, mid if qos else 0, props)
    command = PUBLISH | (qos << 1)
    expected = through(client(v5), command, packet)  # no on_payload: paho's own path
    fast = client(v5)
    got: list[tuple[bytes, bytes, int, int]] = []
    fast.on_payload = lambda _c, *read: got.append(read)
    assert through(fast, command, packet) == []  # not paho's path
    assert got == expected == [(topic.encode(), payload, mid if qos else 0, qos)]


@pytest.mark.parametrize(
    ("packet", "v5"),
    [
        (b"", True),
        (b"\x00", False),
        (b"\x00\x05abc", True),  # the topic runs past the end
        (b"\x00\x01t", True),  # no packet id (QoS 1)
        (b"\x00\x01t\x00\x07", True),  # no properties length
        (b"\x00\x01t\x00\x07\x05ab", True),  # properties run past the end
        (b"\x00\x01t\x00\x07\xff\xff\xff\xff\x01", True),  # a 5-byte variable integer
        (b"\x00\x00\x00\x07payload", False),  # MQTT 3.1.1 has no empty topic
    ],
)
def test_a_packet_cut_short_goes_paho_s_way(packet: bytes, v5: bool) -> None:
    assert read_publish(PUBLISH | 0x02, packet, v5) is None


def test_qos_2_goes_paho_s_way() -> None:
    packet = publish(b"t", b"p", 2, 7, b"\x00")
    assert read_publish(PUBLISH | 0x04, packet, True) is None
    assert read_publish(PUBLISH | 0x02, packet, True) == (b"t", b"p", 7, 1)


def test_properties_are_skipped_unread() -> None:
    """chatd uses no PUBLISH property: one paho would refuse (a NUL in a string,
    MQTT 5 §1.5.4) does not cost the connection, the payload is read as any other."""
    props = properties(None, "a\x00b", [])
    packet = publish(b"t", b"p", 1, 9, props)
    assert read_publish(PUBLISH | 0x02, packet, True) == (b"t", b"p", 9, 1)


def test_a_topic_that_is_not_utf8_is_handed_on_as_bytes() -> None:
    packet = publish(b"\xff\xfe", b"p", 1, 3, varint(0))
    assert read_publish(PUBLISH | 0x02, packet, True) == (b"\xff\xfe", b"p", 3, 1)


PUBACK = 0x40


def acked(client: mqtt.Client, packet: bytes) -> list[tuple[int, bool, str]]:
    """What on_publish is told when ``packet`` (a PUBACK) comes for a QoS 1 message
    paho holds unacknowledged, and whether paho still holds it after."""
    told: list[tuple[int, bool, str]] = []
    client.on_publish = lambda _c, _u, mid, reason, _p: told.append(
        (mid, reason.is_failure, str(reason))
    )
    info = client.publish("t", b"p", qos=1)  # not connected: paho keeps it, unacknowledged
    assert info.mid == 1
    client._in_packet["command"] = PUBACK
    client._in_packet["packet"] = packet
    client._handle_pubackcomp("PUBACK")
    assert 1 not in client._out_messages
    return told


@pytest.mark.parametrize("v5", [True, False])
@pytest.mark.parametrize(
    "packet",
    [
        b"\x00\x01",  # success: the id alone
        b"\x00\x01\x00",  # success, said
        b"\x00\x01\x00\x00",  # success, no properties
        b"\x00\x01\x10",  # no matching subscribers: paho's way, a success too
        b"\x00\x01\x97",  # quota exceeded: a refusal, paho's way
        b"\x00\x01\x00\x03\x1f\x00\x00",  # a reason string: paho's way
    ],
)
def test_a_puback_tells_what_paho_would_tell(packet: bytes, v5: bool) -> None:
    if not v5 and len(packet) > 2:
        return  # MQTT 3.1.1's PUBACK is the id alone
    theirs = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id="t",
        protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311,
        manual_ack=True,
    )
    assert acked(client(v5), packet) == acked(theirs, packet)


def test_only_a_plain_successful_puback_is_read_here() -> None:
    assert read_puback(b"\x00\x07") == 7
    assert read_puback(b"\x01\x00\x00\x00") == 256
    assert read_puback(b"\x00\x07\x97") is None
    assert read_puback(b"\x00\x07\x00\x03\x1f\x00\x00") is None
    assert read_puback(b"\x00") is None


def framed(command: int, packet: bytes) -> bytes:
    """A packet as it travels: its fixed header (type, remaining length), then it."""
    return bytes([command]) + varint(len(packet)) + packet


def reader(sock: socket.socket) -> tuple[PahoClient, list[tuple[bytes, bytes, int, int]]]:
    """A client reading ``sock`` as its connection, and what it hands on."""
    paho = client(True)
    paho._sock = sock
    got: list[tuple[bytes, bytes, int, int]] = []
    paho.on_payload = lambda _c, *read: got.append(read)
    return paho, got


def read_all(paho: PahoClient, sock: socket.socket) -> None:
    """Read as the loop does (daemon/broker_socket.py): on while bytes wait, in the
    kernel or read ahead."""
    while True:
        paho.loop_read()
        if not paho.buffered() and not select.select([sock], [], [], 0)[0]:
            return


@given(
    payloads=st.lists(st.binary(max_size=200_000), min_size=1, max_size=6),
    cuts=st.lists(st.integers(1, 70_000), max_size=8),
)
@settings(max_examples=40, deadline=None)
def test_packets_are_handed_on_whole_however_the_bytes_come(
    payloads: list[bytes], cuts: list[int]
) -> None:
    """Read ahead or not, cut anywhere: each PUBLISH whole, in order, once."""
    stream = b"".join(
        framed(PUBLISH | 0x02, publish(b"room/t", p, 1, i + 1, b"\x00"))
        for i, p in enumerate(payloads)
    )
    ours, peer = socket.socketpair()
    ours.setblocking(False)
    with ours, peer:
        paho, got = reader(ours)
        at = 0
        for size in [*cuts, len(stream)]:
            chunk = stream[at : at + size]
            at += len(chunk)
            if chunk:
                sender = threading.Thread(target=peer.sendall, args=(chunk,))
                sender.start()
                while sender.is_alive() or select.select([ours], [], [], 0)[0]:
                    read_all(paho, ours)
                    sender.join(0.01)
        read_all(paho, ours)
    assert got == [(b"room/t", p, i + 1, 1) for i, p in enumerate(payloads)]


def test_what_came_together_is_read_with_one_call_and_handed_on_all() -> None:
    """Three PUBLISHes and a PUBACK in one segment: the first read takes them all
    (paho alone reads a byte at a time), and the loop goes on while they wait."""
    ours, peer = socket.socketpair()
    ours.setblocking(False)
    with ours, peer:
        paho, got = reader(ours)
        packets = [
            framed(PUBLISH | 0x02, publish(b"t", b"p%d" % i, 1, i + 1, b"\x00")) for i in range(3)
        ]
        peer.sendall(b"".join(packets))
        paho.loop_read()  # one packet a call: paho's max_packets with nothing in flight
        assert got == [(b"t", b"p0", 1, 1)]
        assert not select.select([ours], [], [], 0)[0]  # the kernel holds nothing more
        assert paho.buffered()
        read_all(paho, ours)
        assert [read[1] for read in got] == [b"p0", b"p1", b"p2"]
        assert not paho.buffered()


def test_bytes_read_ahead_belong_to_their_socket() -> None:
    """After a reconnect, what was read ahead from the old connection is not read
    as the new one's."""
    old, old_peer = socket.socketpair()
    new, new_peer = socket.socketpair()
    for s in (old, new):
        s.setblocking(False)
    with old, old_peer, new, new_peer:
        paho, got = reader(old)
        old_peer.sendall(
            b"".join(framed(PUBLISH, publish(b"old", b"%d" % i, 0, 0, b"\x00")) for i in range(2))
        )
        paho.loop_read()
        assert paho.buffered()
        paho._sock = new
        assert not paho.buffered()
        new_peer.sendall(framed(PUBLISH, publish(b"new", b"x", 0, 0, b"\x00")))
        read_all(paho, new)
        assert got == [(b"old", b"0", 0, 0), (b"new", b"x", 0, 0)]


def wire(paho: mqtt.Client, send: Callable[[mqtt.Client], object]) -> bytes:
    """The bytes ``send`` puts on ``paho``'s connection (a socketpair)."""
    ours, peer = socket.socketpair()
    ours.setblocking(False)
    with ours, peer:
        paho._sock = ours
        send(paho)
        peer.setblocking(False)
        out = b""
        while select.select([peer], [], [], 0)[0]:
            chunk = peer.recv(1 << 20)
            if not chunk:
                break
            out += chunk
        paho._sock = None
        return out


def theirs(v5: bool) -> mqtt.Client:
    return mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id="t",
        protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311,
        manual_ack=True,
    )


@given(
    topic=st.text(
        st.characters(blacklist_categories=("Cs",), blacklist_characters="+#\x00"),
        min_size=1,
        max_size=60,
    ),
    payload=st.binary(max_size=20_000),
    qos=st.integers(0, 1),
    v5=st.booleans(),
)
@settings(max_examples=60, deadline=None)
def test_a_publish_written_at_once_is_the_packet_paho_writes(
    topic: str, payload: bytes, qos: int, v5: bool
) -> None:
    """Byte for byte, with the same packet id, and paho holds the QoS 1 message
    for its PUBACK (and its resend after a reconnect) as it would."""
    ours = client(v5)
    expected = wire(theirs(v5), lambda c: c.publish(topic, payload, qos=qos))
    assert wire(ours, lambda c: c.publish(topic, payload, qos=qos)) == expected
    assert (1 in ours._out_messages) == (qos == 1)
    assert not ours._out_packet


def test_a_resend_after_a_reconnect_is_marked_dup() -> None:
    for paho in (client(True), theirs(True)):
        got = wire(paho, lambda c: c._send_publish(7, b"t", b"p", 1, False, True))
        assert got == bytes([0x3A, 7, 0, 1]) + b"t" + b"\x00\x07\x00p"


def test_a_lone_publish_and_puback_skip_paho_s_queue(monkeypatch: pytest.MonkeyPatch) -> None:
    def queued(*_a: object) -> None:
        raise AssertionError("went through paho's queue")

    monkeypatch.setattr(mqtt.Client, "_packet_queue", queued)
    assert wire(client(True), lambda c: (c.publish("t", b"p", qos=1), c.ack(3, 1)))


def test_a_puback_written_at_once_is_paho_s() -> None:
    got = wire(client(True), lambda c: c.ack(258, 1))
    assert got == wire(theirs(True), lambda c: c.ack(258, 1)) == b"\x40\x02\x01\x02"


def test_what_the_socket_does_not_take_waits_in_paho_s_queue_in_order() -> None:
    """A full socket: the rest of the packet, and every packet after it, go out
    in order once it drains (paho's own queue, written by the loop)."""
    ours, peer = socket.socketpair()
    ours.setblocking(False)
    ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    with ours, peer:
        paho = client(True)
        paho._sock = ours
        payloads = [bytes([i]) * 50_000 for i in range(4)]
        for p in payloads:
            paho.publish("t", p, qos=1)
        paho.ack(9, 1)
        assert paho.want_write()  # the socket did not take it all
        got = b""
        peer.setblocking(False)
        while paho.want_write() or select.select([peer], [], [], 0.05)[0]:
            paho.loop_write()
            with contextlib.suppress(BlockingIOError):
                got += peer.recv(1 << 20)
        paho._sock = None
    expected = (
        b"".join(
            framed(PUBLISH | 0x02, publish(b"t", p, 1, i + 1, b"\x00"))
            for i, p in enumerate(payloads)
        )
        + b"\x40\x02\x00\x09"
    )
    assert got == expected
