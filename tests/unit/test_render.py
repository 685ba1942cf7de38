"""Rendering remote text: nothing a peer sends may drive the terminal."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mqchat.client.render import Renderer, check_template, escape, safe_json
from mqchat.errors import UsageError

# What a terminal acts on: C0 controls, DEL, C1 controls (CSI is 0x9b).
TERMINAL_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")


def event(**kw: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "type": "message",
        "room": "lobby",
        "seq": 1,
        "id": "ab" * 16,
        "ts": "2026-11-26T21:04:14.123Z",
        "sender": "alice",
        "fingerprint": "cd" * 16,
        "verified": True,
        "own": False,
        "legacy": False,
        "text": "hi",
    }
    return {**base, **kw}


def plain(**kw: bool) -> Renderer:
    return Renderer(as_json=False, template=None, colour=False, show_room=False, **kw)


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("hello, world", "hello, world"),
        ("héllo 世界 🙂", "héllo 世界 🙂"),
        ("\x1b[2J", "\\x1b[2J"),
        ("\x1b]0;title\x07", "\\x1b]0;title\\x07"),
        ("bell\x07", "bell\\x07"),
        ("over\rwrite", "over\\rwrite"),
        ("back\x08space", "back\\x08space"),
        ("del\x7f", "del\\x7f"),
        ("csi\x9b31m", "csi\\x9b31m"),
        ("nul\x00", "nul\\x00"),
        ("two\nlines", "two\\nlines"),
        ("tab\there", "tab\\there"),
        ("a\\x1b", "a\\\\x1b"),  # a literal backslash cannot fake an escape
        ("evil\u202etxt.exe", "evil\\u202etxt.exe"),  # bidi override
        ("zero\u200bwidth", "zero\\u200bwidth"),
        ("line\u2028sep", "line\\u2028sep"),
        ("tag\U000e0041", "tag\\U000e0041"),
        ("no\xa0break", "no break"),
    ],
)
def test_escape(raw: str, shown: str) -> None:
    assert escape(raw) == shown


@given(st.text())
def test_escape_output_is_one_printable_line(text: str) -> None:
    shown = escape(text)
    assert all(ch.isprintable() for ch in shown)
    assert not TERMINAL_CONTROL.search(shown)


@given(st.text())
def test_safe_json_is_printable_and_round_trips(text: str) -> None:
    line = safe_json({"text": text, "sender": text})
    assert all(ch.isprintable() for ch in line)
    assert json.loads(line) == {"text": text, "sender": text}


def test_safe_json_escapes_what_json_dumps_leaves_raw() -> None:
    line = safe_json({"text": "\x7f\x9b\u202e\U000e0041"})
    assert line == '{"text": "\\u007f\\u009b\\u202e\\udb40\\udc41"}'


def test_plain_line_escapes_name_and_text_and_marks_unverified() -> None:
    line = plain().message(event(sender="ev\x1bil", text="a\x1b[2Jb\rc", verified=False))
    assert line.endswith("<ev\\x1bil?> a\\x1b[2Jb\\rc")
    assert not TERMINAL_CONTROL.search(line)
    assert plain().message(event()).endswith("<alice> hi")


def test_colour_line_has_only_our_own_escapes() -> None:
    r = Renderer(as_json=False, template=None, colour=True, show_room=True)
    line = r.message(event(sender="x\x1b[8m", text="\x1b[31mred"))
    assert "\x1b[8m" not in line and "\x1b[31mred" not in line
    assert "x\\x1b[8m" in line and "\\x1b[31mred" in line


def test_notice_is_escaped() -> None:
    notice = {"type": "notice", "room": "l\x1bby", "kind": "key_changed", "text": "x\x07y"}
    line = Renderer(as_json=False, template=None, colour=False, show_room=True).notice(notice)
    assert line == "-- [l\\x1bby] x\\x07y"


def test_template_fields_are_escaped() -> None:
    r = Renderer(as_json=False, template="{sender}|{text}|{seq}", colour=False, show_room=False)
    assert r.message(event(sender="a\x07", text="b\x1b")) == "a\\x07|b\\x1b|1"


@pytest.mark.parametrize(
    "template", ["{seq:>5} {sender}: {text}", "{time} {verified!s} {fingerprint:.8}", "plain"]
)
def test_check_template_accepts(template: str) -> None:
    assert check_template(template) == template


@pytest.mark.parametrize(
    ("template", "says"),
    [
        ("{nope}", "{nope}"),
        ("{}", "knows the fields"),
        ("{0}", "{0}"),
        ("{ text}", "{ text}"),
        ("{text", "not valid"),
        ("text}", "not valid"),
        ("{text.__class__}", "{text.__class__}"),
        ("{seq[0]}", "{seq[0]}"),
        ("{text:d}", "not valid"),
        ("{text!z}", "not valid"),
        ("{text:{nope}}", "not valid"),
    ],
)
def test_check_template_refuses(template: str, says: str) -> None:
    with pytest.raises(UsageError, match=re.escape(says)):
        check_template(template)


@pytest.mark.parametrize(
    ("verified", "line"),
    [(True, "-- alice is online"), (None, "-- alice is online"), (False, "-- alice? is online")],
)
def test_presence_marks_only_a_name_pinned_to_another_key(verified: bool | None, line: str) -> None:
    """A member heard before any message of theirs has nothing pinned yet (None): that is
    no warning; only a key other than the pinned one is (False)."""
    presence = {
        "type": "presence",
        "room": "r",
        "name": "alice",
        "fingerprint": "a" * 64,
        "verified": verified,
        "online": True,
        "reason": "joined",
    }
    assert plain().presence(presence) == line
