"""Turning events into text for people and for pipes.

Remote text is untrusted: every string from a peer is escaped before it
reaches the terminal, so a message cannot move the cursor, change colours,
ring the bell, set the window title or hide text behind bidi overrides.
"""

from __future__ import annotations

import datetime as dt
import json
import string
import unicodedata
from typing import Any

from mqchat.errors import UsageError

_SAFE_WS = frozenset(" ")
_RESET = "\x1b[0m"
_COLOURS = ("\x1b[36m", "\x1b[32m", "\x1b[35m", "\x1b[34m", "\x1b[33m", "\x1b[96m", "\x1b[92m")
_RED = "\x1b[31m"
_DIM = "\x1b[2m"


def escape(text: str) -> str:
    """Make ``text`` safe to print on one terminal line.

    Control and format characters become visible escapes: newline ``\\n``,
    tab ``\\t``, CR ``\\r``, others ``\\xNN`` / ``\\uNNNN``; a backslash doubles.
    """
    if text.isprintable() and "\\" not in text:
        return text
    out = []
    for ch in text:
        if ch == "\\":
            out.append("\\\\")
        elif ch.isprintable() or (ch in _SAFE_WS):
            out.append(ch)
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif ch == "\r":
            out.append("\\r")
        elif unicodedata.category(ch) == "Zs":
            out.append(" ")
        elif ord(ch) < 0x100:
            out.append(f"\\x{ord(ch):02x}")
        elif ord(ch) < 0x10000:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(f"\\U{ord(ch):08x}")
    return "".join(out)


def _json_escape(ch: str) -> str:
    code = ord(ch)
    if code < 0x10000:
        return f"\\u{code:04x}"
    code -= 0x10000
    return f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04x}"


def safe_json(event: dict[str, Any]) -> str:
    """One JSON line; C1 controls and bidi/format characters become \\u escapes too."""
    text = json.dumps(event, ensure_ascii=False)
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else _json_escape(ch) for ch in text)


def local_time(ts: str) -> str:
    try:
        stamp = dt.datetime.fromisoformat(ts.replace("Z", "+00:00"))
    except (ValueError, AttributeError):
        return "??:??:??"
    return stamp.astimezone().strftime("%H:%M:%S")


FIELDS = (
    "room",
    "seq",
    "id",
    "ts",
    "time",
    "sender",
    "fingerprint",
    "verified",
    "own",
    "legacy",
    "text",
    "type",
    "kind",
)


def fields(event: dict[str, Any]) -> dict[str, Any]:
    """The template fields of an event, strings escaped."""
    out: dict[str, Any] = dict.fromkeys(FIELDS, "")
    for key, value in event.items():
        if key in out:
            out[key] = escape(value) if isinstance(value, str) else value
    out["time"] = local_time(str(event.get("ts", "")))
    return out


def check_template(template: str) -> str:
    try:
        names = [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]
    except ValueError as exc:
        raise UsageError(f"--format template is not valid: {exc}") from None
    # Exact names only: "{text.__class__}" or "{seq[0]}" would reach into objects.
    unknown = [n for n in names if n not in FIELDS]
    if unknown or any(not n for n in names):
        raise UsageError(
            f"--format knows the fields {{{'}, {'.join(FIELDS)}}}; "
            f"not {', '.join('{' + n + '}' for n in unknown) or '{}'}"
        )
    try:  # a bad format spec or conversion fails here, not in the middle of a tail
        apply_template(template, _SAMPLE_EVENT)
    except (ValueError, TypeError, KeyError, IndexError) as exc:
        raise UsageError(f"--format template is not valid: {exc}") from None
    return template


_SAMPLE_EVENT: dict[str, Any] = {
    "type": "message",
    "room": "room",
    "seq": 1,
    "id": "0" * 32,
    "ts": "2026-01-01T00:00:00.000Z",
    "sender": "name",
    "fingerprint": "0" * 32,
    "verified": True,
    "own": False,
    "legacy": False,
    "text": "text",
}


def apply_template(template: str, event: dict[str, Any]) -> str:
    return template.format_map(fields(event))


class Renderer:
    def __init__(
        self, *, as_json: bool, template: str | None, colour: bool, show_room: bool
    ) -> None:
        self.as_json = as_json
        self.template = check_template(template) if template is not None else None
        self.colour = colour
        self.show_room = show_room

    def message(self, event: dict[str, Any]) -> str:
        if self.as_json:
            return safe_json(event)
        if self.template is not None:
            return apply_template(self.template, event)
        f = fields(event)
        sender = f["sender"]
        mark = "" if event.get("verified") else "?"
        room = f"[{f['room']}] " if self.show_room else ""
        if self.colour:
            col = _RED if mark else _COLOURS[sum(sender.encode()) % len(_COLOURS)]
            who = f"{col}<{sender}{mark}>{_RESET}"
            return f"{_DIM}{f['time']}{_RESET} {room}{who} {f['text']}"
        return f"{f['time']} {room}<{sender}{mark}> {f['text']}"

    def notice(self, event: dict[str, Any]) -> str:
        if self.as_json:
            return safe_json(event)
        room = event.get("room")
        where = f"[{escape(room)}] " if isinstance(room, str) and self.show_room else ""
        text = f"-- {where}{escape(str(event.get('text', '')))}"
        return f"{_DIM}{text}{_RESET}" if self.colour else text
