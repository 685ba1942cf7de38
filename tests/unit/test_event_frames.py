"""An event message's second frame: one or more JSON events, one a line (docs/ipc.md)."""

from __future__ import annotations

import json

from mqchat.protocol.ipc_events import decode_events, encode_event, message_event


def _event(seq: int, text: str) -> dict[str, object]:
    return message_event(
        room="lobby", seq=seq, message_id="ab" * 16, ts="2026-12-08T00:00:00.000Z",
        sender="alice", fingerprint="f" * 32, verified=True, own=False, text=text,
    )  # fmt: skip


def test_a_packed_frame_gives_every_event_in_order() -> None:
    events = [_event(i, f"line {i}\n with a newline, a \u2028 and a \x1b") for i in range(1, 40)]
    frame = b"\n".join(encode_event(e) for e in events)
    assert decode_events(frame) == events
    assert decode_events(encode_event(events[0])) == [events[0]]


def test_a_line_that_is_not_an_event_is_none_and_the_others_still_come() -> None:
    good = [encode_event(_event(i, "ok")) for i in (1, 2, 3)]
    for bad in (b"", b"1,2", b"[1]", b'"text"', b"{not json", b"\xff\xfe"):
        got = decode_events(b"\n".join([good[0], bad, good[1], good[2]]))
        assert got[1] is None, bad
        assert [e["seq"] for e in got if e is not None] == [1, 2, 3], bad
        assert len(got) == 4, bad


def test_an_ordinary_json_line_is_read_as_it_is() -> None:
    assert decode_events(json.dumps({"type": "head", "room": "x", "seq": 3}).encode()) == [
        {"type": "head", "room": "x", "seq": 3}
    ]


def test_a_stored_messages_line_is_what_json_dumps_gives_for_its_event() -> None:
    """The event of a stored message is built without a dict (issue 24): the same
    bytes as the general encoder gives, whatever its text holds."""
    from mqchat.daemon.store.records import StoredMessage
    from mqchat.protocol.ipc_events import message_line, to_event

    for text in ("plain", 'quote " and \\ back', "\n\t\x00\x1b[31m", "caf\u00e9 \u2028 \U0001f600"):
        for flags in ((True, False, False), (False, True, True)):
            m = StoredMessage("lobby", 7, "ab" * 16, 1_765_000_000_123, "bob", "f", *flags, text)
            expected = json.dumps(to_event(m), ensure_ascii=False, separators=(",", ":"))
            assert message_line(m) == expected.encode() == encode_event(to_event(m))
    odd = StoredMessage("lobby", 7, "ab", 0, "bob", "f", 1, 0, 0, "t")  # type: ignore[arg-type]
    assert json.loads(message_line(odd))["verified"] == 1  # not the template: as json.dumps
