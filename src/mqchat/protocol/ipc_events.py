"""The events chatd publishes on events.sock, and how they are framed (docs/ipc.md, "Events").

One module for both ends: chatd builds events and topic frames here, and
chatctl reads them with the same rules. Pure: no zmq, no sockets.

events.sock is a ZeroMQ XPUB. Each event is a message of two frames, [topic,
JSON event]. The topic is the room's name in UTF-8 followed by a NUL byte, so
that a plain ``zmq.SUB`` subscribed to ``b"lobby\\0"`` gets lobby's events and
never those of "lobby2"; NUL cannot occur in a room name. Notices that belong
to no room have the topic ``b"\\0"``. Topics that start with 0x01 are chatd's
own (the welcome message, sync answers): no room name starts with a control
character either.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
from typing import Any, Final, Literal, Protocol

from mqchat.errors import InvalidRoomName
from mqchat.protocol.limits import MAX_TIMESTAMP_MS, normalize_room

TOPIC_END: Final = b"\x00"
NO_ROOM_TOPIC: Final = TOPIC_END
"""Notices of no room (broker_up, broker_down)."""
EVERY_TOPIC: Final = b""
"""A subscription to every room, every notice and chatd's own messages."""
CONTROL: Final = b"\x01"
WELCOME_TOPIC: Final = CONTROL + b"welcome"
"""The one-frame message (ZMQ_XPUB_WELCOME_MSG) each new connection gets first. A
client that sees it a second time was connected again: chatd restarted, or closed
it for not reading; what it missed is in the store."""
SYNC_PREFIX: Final = CONTROL + b"sync" + TOPIC_END
PACKED_PREFIX: Final = CONTROL + b"packed" + TOPIC_END
"""The packed form of the events (docs/ipc.md, "Packed events"): the consecutive
events of a room that one commit tells share a message, one JSON object a line.
Subscribed alone, every room's; followed by a room's topic, that room's."""
SYNC_TOKEN_CHARS: Final = 32
"""A sync token: 32 lowercase hex digits (128 random bits)."""
MAX_TOPIC_BYTES: Final = 4 * 64 + 1
"""A room name is at most 64 characters of up to 4 bytes, and the NUL."""

TopicKind = Literal["every", "no_room", "room", "packed_every", "packed_room", "sync", "welcome"]


def room_topic(room: str) -> bytes:
    """The topic frame of a room's events (room: already NFC, as chatd keeps names)."""
    return room.encode() + TOPIC_END


def packed_topic(room: str) -> bytes:
    """The topic of a room's packed events (room: already NFC)."""
    return PACKED_PREFIX + room.encode() + TOPIC_END


def sync_topic(token: str) -> bytes:
    return SYNC_PREFIX + token.encode()


def topic_kind(topic: bytes) -> TopicKind | None:
    """What a subscription asks for; None for a topic that chatd never publishes."""
    if topic == EVERY_TOPIC:
        return "every"
    if topic == NO_ROOM_TOPIC:
        return "no_room"
    if topic == WELCOME_TOPIC:
        return "welcome"
    if topic.startswith(SYNC_PREFIX):
        token = topic[len(SYNC_PREFIX) :]
        ok = len(token) == SYNC_TOKEN_CHARS and all(c in b"0123456789abcdef" for c in token)
        return "sync" if ok else None
    if topic == PACKED_PREFIX:
        return "packed_every"
    if topic.startswith(PACKED_PREFIX):
        return "packed_room" if _is_room_topic(topic[len(PACKED_PREFIX) :]) else None
    return "room" if _is_room_topic(topic) else None


def _is_room_topic(topic: bytes) -> bool:
    if len(topic) > MAX_TOPIC_BYTES or not topic.endswith(TOPIC_END):
        return False
    try:
        name = topic[:-1].decode()
        return normalize_room(name) == name
    except (UnicodeDecodeError, InvalidRoomName):
        return False


def encode_event(event: dict[str, Any]) -> bytes:
    """The JSON frame of an event: compact UTF-8, what ``tail --json`` prints."""
    frame = _message_frame(event)
    if frame is not None:
        return frame
    return json.dumps(event, ensure_ascii=False, separators=(",", ":")).encode()


_json_str = json.encoder.encode_basestring
"""The quoting json.dumps(ensure_ascii=False) uses for a string (in C): the quotes,
and escapes for quote, backslash and control characters; TypeError for a non-string."""
_MESSAGE_KEYS: Final = (
    "type",
    "room",
    "seq",
    "id",
    "ts",
    "sender",
    "fingerprint",
    "verified",
    "own",
    "legacy",
    "text",
)
_JSON_BOOL: Final = {True: "true", False: "false"}


def _message_frame(e: dict[str, Any]) -> bytes | None:
    """A message event (``message_event``'s keys in its order, its types) by template:
    the same bytes as json.dumps gives, at a third of its cost (issue 24: a general
    encoder per event). None for anything else, which json.dumps encodes."""
    if len(e) != len(_MESSAGE_KEYS) or tuple(e) != _MESSAGE_KEYS or e["type"] != "message":
        return None
    return _message_template(
        e["room"], e["seq"], e["id"], e["ts"], e["sender"], e["fingerprint"],
        e["verified"], e["own"], e["legacy"], e["text"],
    )  # fmt: skip


def message_line(m: StoredMessageLike) -> bytes:
    """``encode_event(to_event(m))``, without the dict between them (once a text)."""
    line = _message_template(
        m.room, m.seq, m.id, iso_ts(m.ts_ms), m.sender, m.fingerprint,
        m.verified, m.own, m.legacy, m.text,
    )  # fmt: skip
    return line if line is not None else encode_event(to_event(m))


def _message_template(
    room: Any, seq: Any, mid: Any, ts: Any, sender: Any, fp: Any,
    verified: Any, own: Any, legacy: Any, text: Any,
) -> bytes | None:  # fmt: skip
    """A message event's JSON, or None when a field's type is not the schema's."""
    if type(seq) is not int or not (
        type(verified) is bool and type(own) is bool and type(legacy) is bool
    ):
        return None
    try:
        return (
            f'{{"type":"message","room":{_json_str(room)},"seq":{seq},'
            f'"id":{_json_str(mid)},"ts":{_json_str(ts)},'
            f'"sender":{_json_str(sender)},"fingerprint":{_json_str(fp)},'
            f'"verified":{_JSON_BOOL[verified]},"own":{_JSON_BOOL[own]},'
            f'"legacy":{_JSON_BOOL[legacy]},"text":{_json_str(text)}}}'
        ).encode()
    except TypeError:  # a field that is not a string
        return None


def decode_event(line: bytes) -> dict[str, Any] | None:
    """One event's object, or None for anything that is not a JSON object."""
    try:
        event = json.loads(line)
    except (ValueError, RecursionError):
        return None
    return event if isinstance(event, dict) else None


def decode_events(frame: bytes) -> list[dict[str, Any] | None]:
    """An event message's second frame: one or more events, one JSON object a line
    (docs/ipc.md, "Events"). Each is decoded on its own; None for a line that is not
    a JSON object. A JSON text never holds a raw newline, so a line is an event."""
    if b"\n" not in frame:
        return [decode_event(frame)]
    # One decoder call for the whole frame, as a JSON array: a call a line cost a
    # reader ~1 µs a line more (issue 24). A line that is not one JSON value breaks
    # the array or its count, and then each line is decoded on its own.
    try:
        events = json.loads(b"[" + frame.replace(b"\n", b",") + b"]")
    except (ValueError, RecursionError):
        events = None
    if isinstance(events, list) and len(events) == frame.count(b"\n") + 1:
        return [e if isinstance(e, dict) else None for e in events]
    return [decode_event(line) for line in frame.split(b"\n")]


DAY_MS: Final = 86_400_000


_last_second: list[tuple[int, str]] = [(-1, "")]
"""The last second iso_ts worked out, and its text: a stream's events share it (one
tuple, replaced whole, so that a thread never reads one's second with another's text)."""


def iso_ts(ms: int) -> str:
    """``2026-11-26T21:04:14.123Z``: UTC, to the millisecond. The date and time of
    day are worked out once a second (every message's event has one); the
    milliseconds are appended. A time outside 1970..9999 (stored by a version that
    did not bound version 2 texts) is shown at the nearest end rather than failing
    the whole history."""
    if not 0 <= ms <= MAX_TIMESTAMP_MS:
        ms = min(max(ms, 0), MAX_TIMESTAMP_MS)
    second, millis = divmod(ms, 1000)
    known, text = _last_second[0]
    if known != second:
        text = _second(second)
        _last_second[0] = (second, text)
    return f"{text}{_MILLIS[millis]}"


_MILLIS: Final = tuple(f".{n:03d}Z" for n in range(1000))
"""``.000Z`` to ``.999Z``: a timestamp's end, formatted once."""


@functools.lru_cache(maxsize=64)
def _second(second: int) -> str:
    """``2026-11-26T21:04:14``, of seconds since 1970 (UTC)."""
    day, of_day = divmod(second, DAY_MS // 1000)
    minutes, seconds = divmod(of_day, 60)
    hours, minutes = divmod(minutes, 60)
    return f"{_date(day)}T{hours:02d}:{minutes:02d}:{seconds:02d}"


@functools.lru_cache(maxsize=64)
def _date(day: int) -> str:
    return (dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(days=day)).strftime("%Y-%m-%d")


def message_event(
    *,
    room: str,
    seq: int,
    message_id: str,
    ts: str,
    sender: str,
    fingerprint: str,
    verified: bool,
    own: bool,
    text: str,
    legacy: bool = False,
) -> dict[str, Any]:
    """The event of DESIGN.md's schema, as `chatctl tail --json` prints it."""
    return {
        "type": "message",
        "room": room,
        "seq": seq,
        "id": message_id,
        "ts": ts,
        "sender": sender,
        "fingerprint": fingerprint,
        "verified": verified,
        "own": own,
        "legacy": legacy,
        "text": text,
    }


class StoredMessageLike(Protocol):
    """What a stored message holds (mqchat.daemon.store.StoredMessage)."""

    @property
    def room(self) -> str: ...
    @property
    def seq(self) -> int: ...
    @property
    def id(self) -> str: ...
    @property
    def ts_ms(self) -> int: ...
    @property
    def sender(self) -> str: ...
    @property
    def fingerprint(self) -> str: ...
    @property
    def verified(self) -> bool: ...
    @property
    def own(self) -> bool: ...
    @property
    def text(self) -> str: ...
    @property
    def legacy(self) -> bool: ...


def to_event(m: StoredMessageLike) -> dict[str, Any]:
    """``message_event`` of a stored message, built here directly (once a text)."""
    return {
        "type": "message",
        "room": m.room,
        "seq": m.seq,
        "id": m.id,
        "ts": iso_ts(m.ts_ms),
        "sender": m.sender,
        "fingerprint": m.fingerprint,
        "verified": m.verified,
        "own": m.own,
        "legacy": m.legacy,
        "text": m.text,
    }


def notice_event(room: str | None, kind: str, text: str, **extra: Any) -> dict[str, Any]:
    """A notice: joined, left, broker_up, broker_down, key_changed. No seq."""
    return {"type": "notice", "room": room, "kind": kind, "text": text, **extra}


def head_event(room: str, seq: int) -> dict[str, Any]:
    """The room's last seq, repeated after a burst: a reader whose queue was full when
    the last messages came learns that it missed them, and reads them from the store."""
    return {"type": "head", "room": room, "seq": seq}


def sync_event(token: str) -> dict[str, Any]:
    """The answer to a sync subscription: every subscription sent before it is in force.
    ``packed``: this chatd sends the packed form (a client of an older one, which
    does not say so, subscribes to the plain topics instead)."""
    return {"type": "sync", "token": token, "packed": True}


def reconnected_event() -> dict[str, Any]:
    """What chatctl's event reader yields after connecting again (not sent by chatd)."""
    return {"type": "dropped", "count": None, "reason": "reconnected"}
