"""Turning events into text for people and for pipes.

Remote text is untrusted: every string from a peer is escaped before it
reaches the terminal, so a message cannot move the cursor, change colours,
ring the bell, set the window title or hide text behind bidi overrides.

``chatctl status`` loads this module on every call for ``escape`` and
``safe_json`` alone: datetime and string, which only dates and ``--format``
need, are imported where they are used (issue 24: ~1.5 ms of a cold start).
"""

from __future__ import annotations

import functools
import json
import time
import unicodedata
from typing import TYPE_CHECKING, Any

from mqchat.errors import UsageError

if TYPE_CHECKING:
    import datetime as dt

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


def _local_stamp(ts: str) -> dt.datetime | None:
    import datetime as dt

    try:
        return dt.datetime.fromisoformat(ts.replace("Z", "+00:00")).astimezone()
    except (ValueError, AttributeError, OverflowError):  # OverflowError: year 9999 east of UTC
        return None


_UNKNOWN = ("????-??-??", "??:??:??")


@functools.lru_cache(maxsize=64)
def _local_second(second: str, _zone: tuple[str, str]) -> tuple[str, str]:
    """Local (date, time of day) of a UTC second ``YYYY-MM-DDTHH:MM:SS``: worked out
    once a second of messages, not once a line (issue 24: ~15 µs a line). ``_zone``
    (time.tzname) keys the cache, so that a time zone changed by tzset() is seen."""
    stamp = _local_stamp(second + "Z")
    return (stamp.strftime("%Y-%m-%d"), stamp.strftime("%H:%M:%S")) if stamp else _UNKNOWN


def _local_parts(ts: str) -> tuple[str, str]:
    """Local (date, time of day) of an event's timestamp; ``_UNKNOWN`` if it has none.

    chatd's timestamps are ``...THH:MM:SS.mmmZ`` (mqchat.protocol.ipc_events.iso_ts):
    their second is looked up; anything else is parsed as it is."""
    if len(ts) == 24 and ts[19] == "." and ts[23] == "Z":
        return _local_second(ts[:19], time.tzname)
    stamp = _local_stamp(ts)
    return (stamp.strftime("%Y-%m-%d"), stamp.strftime("%H:%M:%S")) if stamp else _UNKNOWN


def local_time(ts: str) -> str:
    """The local time of day of an event's timestamp, HH:MM:SS."""
    return _local_parts(ts)[1]


def local_date(ts: str) -> str:
    """The local date of an event's timestamp, YYYY-MM-DD."""
    return _local_parts(ts)[0]


class _Today:
    """Today's local date as YYYY-MM-DD, asked of the clock at most once a second."""

    def __init__(self) -> None:
        self._checked = -1.0
        self._today = ""

    def __call__(self) -> str:
        clock = time.monotonic()
        if clock - self._checked >= 1.0:
            import datetime as dt

            self._checked = clock
            self._today = dt.date.today().isoformat()
        return self._today


_today = _Today()


def when(ts: str, today: dt.date | None = None) -> str:
    """The time of a message of today (local time), else its date and time.

    A message from another day (delayed, or replayed from long ago) must not
    look like one that just arrived (issue 11, finding 5).
    """
    date, time_of_day = _local_parts(ts)
    if date == _UNKNOWN[0]:
        return _UNKNOWN[1]
    if date == (today.isoformat() if today is not None else _today()):
        return time_of_day
    return f"{date} {time_of_day}"


FIELDS = (
    "room",
    "seq",
    "id",
    "ts",
    "date",
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
        if key not in out:
            continue
        if isinstance(value, bool):  # as in --json: true/false, not Python's True/False
            out[key] = "true" if value else "false"
        else:
            out[key] = escape(value) if isinstance(value, str) else value
    out["date"], out["time"] = _local_parts(str(event.get("ts", "")))
    return out


def _shown(value: Any) -> Any:
    """A field as ``fields`` gives it: a string escaped, a bool as in --json."""
    if isinstance(value, str):
        return escape(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    return value


MAX_SPEC_NUMBER_DIGITS = 4
"""A width or precision in --format up to 9999: more is a typo, or memory for nothing."""


def _check_spec(spec: str) -> None:
    # A field inside a spec ("{text:{sender}}") would let a peer's name set the
    # width; a huge width ("{text:99999999999}") allocates that many characters.
    if "{" in spec or "}" in spec:
        raise UsageError("--format template is not valid: a format spec may not hold a field")
    digits = 0
    for ch in spec:
        digits = digits + 1 if ch.isdigit() else 0
        if digits > MAX_SPEC_NUMBER_DIGITS:
            raise UsageError(
                f"--format template is not valid: {spec!r} has a width or precision over "
                f"{10**MAX_SPEC_NUMBER_DIGITS - 1}"
            )


def check_template(template: str) -> str:
    import string

    try:
        parsed = [(f, spec) for _, f, spec, _ in string.Formatter().parse(template)]
    except ValueError as exc:
        raise UsageError(f"--format template is not valid: {exc}") from None
    names = [f for f, _ in parsed if f is not None]
    for _, spec in parsed:
        _check_spec(spec or "")
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
        # What fields() would give, for the three fields shown (a line a message: the
        # other fields and a dict of them are not built).
        sender = _shown(event.get("sender", ""))
        text = _shown(event.get("text", ""))
        mark = "" if event.get("verified") else "?"
        room = f"[{_shown(event.get('room', ''))}] " if self.show_room else ""
        stamp = when(str(event.get("ts", "")))
        if self.colour:
            col = _RED if mark else _COLOURS[sum(str(sender).encode()) % len(_COLOURS)]
            who = f"{col}<{sender}{mark}>{_RESET}"
            return f"{_DIM}{stamp}{_RESET} {room}{who} {text}"
        return f"{stamp} {room}<{sender}{mark}> {text}"

    def presence(self, event: dict[str, Any]) -> str:
        """A member came, went or fell silent: a notice line (the event itself in --json)."""
        if self.as_json:
            return safe_json(event)
        name = escape(str(event.get("name", "?")))
        mark = "?" if event.get("verified") is False else ""  # None: nothing pinned yet
        what = {
            "leaving": "left",
            "timeout": "went offline (not heard from)",
        }.get(str(event.get("reason")), "is online" if event.get("online") else "is offline")
        return self.notice({**event, "text": f"{name}{mark} {what}"})

    def notice(self, event: dict[str, Any]) -> str:
        if self.as_json:
            return safe_json(event)
        room = event.get("room")
        where = f"[{escape(room)}] " if isinstance(room, str) and self.show_room else ""
        text = f"-- {where}{escape(str(event.get('text', '')))}"
        return f"{_DIM}{text}{_RESET}" if self.colour else text
