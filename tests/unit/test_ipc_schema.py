"""JSON-RPC 2.0 requests, replies and events between chatctl and chatd.

The daemon must never die of a request: any bytes either decode to a Request or
raise IpcError with a JSON-RPC code.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mqchat.errors import IpcError
from mqchat.protocol.ipc import (
    INTERNAL_ERROR,
    INVALID_PARAMS,
    INVALID_REQUEST,
    METHOD_NOT_FOUND,
    METHODS,
    PARSE_ERROR,
    Request,
    decode_reply,
    decode_request,
    encode_error,
    encode_request,
    encode_result,
)
from mqchat.protocol.ipc_events import message_event, notice_event

REQUEST_CODES = {PARSE_ERROR, INVALID_REQUEST, METHOD_NOT_FOUND, INVALID_PARAMS}


def request(method: str, params: Any = None, req_id: Any = 1, **extra: Any) -> bytes:
    obj: dict[str, Any] = {"jsonrpc": "2.0", "id": req_id, "method": method, **extra}
    if params is not None:
        obj["params"] = params
    return json.dumps(obj).encode()


def error_code(raw: bytes) -> int:
    with pytest.raises(IpcError) as excinfo:
        decode_request(raw)
    return excinfo.value.code


# -- requests ------------------------------------------------------------------


def test_send_request_decodes() -> None:
    req = decode_request(request("send", {"room": "lobby", "text": "hi"}, req_id="a1"))
    assert req == Request("a1", "send", {"room": "lobby", "text": "hi"})


def test_join_fills_defaults() -> None:
    req = decode_request(request("join", {"room": "lobby", "passphrase": "p" * 12}))
    assert req.params == {
        "room": "lobby",
        "passphrase": "p" * 12,
        "cipher": None,  # chatd picks: aes-256-gcm for a new room (issue 14)
        "legacy": False,
        "weak": False,
    }


def test_methods_without_params_accept_none_or_empty() -> None:
    for method in ("status", "rooms", "identity"):
        assert decode_request(request(method)).params == {}
        assert decode_request(request(method, {})).params == {}


def test_encode_request_round_trips() -> None:
    raw = encode_request(7, "history", {"room": "lobby", "limit": 50, "since": 3})
    assert decode_request(raw) == Request(7, "history", {"room": "lobby", "limit": 50, "since": 3})


@pytest.mark.parametrize("raw", [b"", b"{", b"\xff\xfe\x00", b"[" * 100_000, b"nul"])
def test_bad_json_is_a_parse_error(raw: bytes) -> None:
    assert error_code(raw) == PARSE_ERROR


@pytest.mark.parametrize(
    "raw",
    [
        b"[]",
        b"42",
        b'"send"',
        b'{"id": 1, "method": "status"}',
        b'{"jsonrpc": "1.0", "id": 1, "method": "status"}',
        b'{"jsonrpc": "2.0", "id": 1, "method": 5}',
        b'{"jsonrpc": "2.0", "id": true, "method": "status"}',
        b'{"jsonrpc": "2.0", "id": [1], "method": "status"}',
    ],
)
def test_malformed_request_is_invalid(raw: bytes) -> None:
    assert error_code(raw) == INVALID_REQUEST


def test_oversized_request_is_invalid() -> None:
    raw = request("send", {"room": "lobby", "text": "x" * 300_000})
    assert error_code(raw) == INVALID_REQUEST


@pytest.mark.parametrize("method", ["shutdown", "Send", "", "__init__"])
def test_unknown_method(method: str) -> None:
    assert error_code(request(method)) == METHOD_NOT_FOUND


@pytest.mark.parametrize(
    ("method", "params"),
    [
        ("send", {"room": "lobby"}),
        ("send", {"room": "lobby", "text": 5}),
        ("send", {"room": "lobby", "text": "hi", "extra": 1}),
        ("send", ["lobby", "hi"]),
        ("join", {"room": "lobby", "passphrase": "x" * 12, "weak": "yes"}),
        ("join", {"room": "lobby", "passphrase": "x" * 12, "legacy": 1}),
        ("history", {"room": "lobby", "limit": True}),
        ("history", {"room": "lobby", "limit": 1.5}),
        ("status", {"verbose": True}),
    ],
)
def test_bad_params(method: str, params: Any) -> None:
    assert error_code(request(method, params)) == INVALID_PARAMS


def test_error_carries_the_request_id() -> None:
    with pytest.raises(IpcError) as excinfo:
        decode_request(request("send", {}, req_id="abc"))
    assert excinfo.value.data == "abc"
    with pytest.raises(IpcError) as excinfo:
        decode_request(request("nope", req_id=9))
    assert excinfo.value.data == 9


# -- replies and events --------------------------------------------------------


def test_result_reply_round_trips() -> None:
    reply = decode_reply(encode_result(3, {"seq": 42, "rooms": ["lobby"]}))
    assert reply.id == 3
    assert reply.result == {"seq": 42, "rooms": ["lobby"]}
    assert reply.error_code is None


def test_error_reply_round_trips() -> None:
    reply = decode_reply(encode_error("x", -32001, "not joined: lobby"))
    assert (reply.id, reply.error_code, reply.error_message) == ("x", -32001, "not joined: lobby")


@pytest.mark.parametrize("raw", [b"garbage", b"[]", b'{"id": 1, "result": 2}'])
def test_bad_reply_is_an_internal_error(raw: bytes) -> None:
    with pytest.raises(IpcError) as excinfo:
        decode_reply(raw)
    assert excinfo.value.code == INTERNAL_ERROR


def test_message_event_has_the_documented_fields() -> None:
    event = message_event(
        room="lobby",
        seq=42,
        message_id="00ff",
        ts="2026-11-26T21:04:14.123Z",
        sender="alice",
        fingerprint="ab" * 16,
        verified=True,
        own=False,
        text="hi",
    )
    decoded = json.loads(json.dumps(event))
    assert decoded["type"] == "message"
    assert {"room", "seq", "id", "ts", "sender", "fingerprint", "verified", "own", "text"} <= set(
        decoded
    )
    assert decoded["seq"] == 42


def test_notice_has_no_seq() -> None:
    event = notice_event(None, "broker_up", "up")
    assert event["type"] == "notice"
    assert "seq" not in event


# -- fuzzing -------------------------------------------------------------------

FUZZ = settings(max_examples=300, deadline=None, database=None)
FUZZ_JSON = settings(max_examples=150, deadline=None, database=None)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=8,
)
param_names = st.sampled_from(sorted({name for spec in METHODS.values() for name in spec}))
param_values = st.one_of(
    st.text(max_size=20),
    st.booleans(),
    st.integers(),
    st.none(),
    st.lists(st.integers(), max_size=2),
)
near_requests = st.fixed_dictionaries(
    {
        "jsonrpc": st.sampled_from(["2.0", "2.0", "2.0", "1.0"]),
        "method": st.one_of(st.sampled_from(sorted(METHODS)), st.text(max_size=8)),
    },
    optional={
        "id": st.one_of(st.integers(), st.text(max_size=8), st.none(), st.booleans()),
        "params": st.one_of(
            st.dictionaries(param_names, param_values, max_size=6),
            st.dictionaries(param_names, st.text(max_size=10), max_size=6),
            st.lists(st.text(max_size=4), max_size=2),
        ),
    },
)


def decodes_or_raises_rpc_error(raw: bytes) -> Request | None:
    try:
        return decode_request(raw)
    except IpcError as exc:
        code = exc.code
    assert code in REQUEST_CODES
    return None


@FUZZ
@given(st.binary(max_size=300))
def test_arbitrary_bytes_decode_or_raise_rpc_error(raw: bytes) -> None:
    decodes_or_raises_rpc_error(raw)


@FUZZ_JSON
@given(json_values)
def test_arbitrary_json_decodes_or_raises_rpc_error(value: Any) -> None:
    decodes_or_raises_rpc_error(json.dumps(value).encode())


@FUZZ_JSON
@given(near_requests)
def test_near_valid_requests_decode_to_well_typed_params(value: dict[str, Any]) -> None:
    req = decodes_or_raises_rpc_error(json.dumps(value).encode())
    if req is None:
        return
    spec = METHODS[req.method]
    assert set(req.params) == set(spec)
    for name, (kind, required, _default) in spec.items():
        param = req.params[name]
        if required or param is not None:
            assert type(param) is kind


def test_a_rooms_topic_never_matches_a_longer_rooms_topic() -> None:
    from mqchat.protocol.ipc_events import room_topic

    assert not room_topic("ab").startswith(room_topic("a"))
    assert room_topic("a") == b"a\x00"


def test_only_topics_chatd_publishes_are_recognised() -> None:
    from mqchat.protocol.ipc_events import (
        NO_ROOM_TOPIC,
        PACKED_PREFIX,
        WELCOME_TOPIC,
        packed_topic,
        room_topic,
        sync_topic,
        topic_kind,
    )

    assert topic_kind(PACKED_PREFIX) == "packed_every"
    assert topic_kind(packed_topic("lobby")) == "packed_room"
    assert topic_kind(PACKED_PREFIX + b"lobby") is None
    assert topic_kind(PACKED_PREFIX + room_topic("a/b")) is None
    assert topic_kind(b"") == "every"
    assert topic_kind(NO_ROOM_TOPIC) == "no_room"
    assert topic_kind(WELCOME_TOPIC) == "welcome"
    assert topic_kind(room_topic("lobby")) == "room"
    assert topic_kind(sync_topic("0" * 32)) == "sync"
    for bad in (
        b"lobby",  # no terminator: would match lobby2 too
        sync_topic("x" * 32),
        sync_topic("0" * 31),
        room_topic("a/b"),
        room_topic("r" * 65),
        b"\xff\x00",
        ("e\u0301").encode() + b"\x00",  # not NFC: chatd never publishes it
    ):
        assert topic_kind(bad) is None, bad


# ---------------------------------------------------------------------- event frames

_TEXTS = st.text(alphabet=st.characters(exclude_categories=("Cs",)), max_size=40)


@given(
    room=_TEXTS,
    seq=st.integers(min_value=-(2**70), max_value=2**70),
    ident=_TEXTS,
    ts=_TEXTS,
    sender=_TEXTS,
    fingerprint=_TEXTS,
    flags=st.tuples(st.booleans(), st.booleans(), st.booleans()),
    text=_TEXTS,
)
@settings(max_examples=300)
def test_a_message_event_frame_is_what_json_dumps_gives(
    room: str,
    seq: int,
    ident: str,
    ts: str,
    sender: str,
    fingerprint: str,
    flags: tuple[bool, bool, bool],
    text: str,
) -> None:
    """The template encoder (issue 24) and json.dumps agree byte for byte."""
    from mqchat.protocol.ipc_events import encode_event

    event = message_event(
        room=room,
        seq=seq,
        message_id=ident,
        ts=ts,
        sender=sender,
        fingerprint=fingerprint,
        verified=flags[0],
        own=flags[1],
        legacy=flags[2],
        text=text,
    )
    expected = json.dumps(event, ensure_ascii=False, separators=(",", ":")).encode()
    assert encode_event(event) == expected


@pytest.mark.parametrize(
    "change",
    [
        {"seq": True},
        {"seq": 1.5},
        {"verified": 1},
        {"text": None},
        {"room": 7},
        {"extra": "x"},
    ],
)
def test_an_event_unlike_a_message_is_encoded_by_json_dumps(change: dict[str, Any]) -> None:
    from mqchat.protocol.ipc_events import encode_event

    event = {
        **message_event(
            room="r",
            seq=1,
            message_id="i",
            ts="t",
            sender="s",
            fingerprint="f",
            verified=True,
            own=False,
            text="x",
        ),
        **change,
    }
    expected = json.dumps(event, ensure_ascii=False, separators=(",", ":")).encode()
    assert encode_event(event) == expected
    assert (
        encode_event({k: event[k] for k in reversed(event)})
        == json.dumps(
            {k: event[k] for k in reversed(event)}, ensure_ascii=False, separators=(",", ":")
        ).encode()
    )
