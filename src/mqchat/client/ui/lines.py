"""Events as styled lines for the interface.

Every string from a peer goes through render.escape, as in ``tail``, and into
a rich ``Text`` (never markup), so a message can neither drive the terminal
nor style itself. The marks are characters, not only colours, so that they
survive NO_COLOR: ``<alice?>`` is a sender whose key is not the one pinned.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from rich.text import Text

from mqchat.client.render import escape, when
from mqchat.client.ui.members import member_line, sorted_members
from mqchat.client.ui.state import RoomView
from mqchat.protocol.fingerprints import short_fingerprint

Event = dict[str, Any]

SENDER_STYLES = ("cyan", "green", "magenta", "blue", "yellow", "bright_cyan", "bright_green")
UNVERIFIED_STYLE = "bold reverse red"
"""Reversed: with NO_COLOR, red alone turns a dim grey, and the mark must stand out."""
PRESENCE_SAID = {"joined": "is here", "leaving": "left", "timeout": "went quiet (offline)"}
NOTICE_STYLES = {
    "broker_down": "bold red",
    "publish_refused": "bold red",
    "key_changed": "bold yellow",
    "dropped": "yellow",
    "error": "bold red",
}


def message_line(event: Event, today: dt.date) -> Text:
    """``12:04:01 <alice> hi``; ``<alice?>`` when the sender is not verified."""
    sender = escape(str(event.get("sender", "")))
    mark = "" if event.get("verified") else "?"
    if mark:
        style = UNVERIFIED_STYLE
    elif event.get("own"):
        style = "bold"
    else:
        style = SENDER_STYLES[sum(sender.encode()) % len(SENDER_STYLES)]
    line = Text()
    line.append(when(str(event.get("ts", "")), today), style="dim")
    line.append(" ")
    line.append(f"<{sender}{mark}>", style=style)
    line.append(" ")
    line.append(escape(str(event.get("text", ""))))
    return line


def notice_line(event: Event) -> Text:
    """``-- text``: notices from chatd, and the interface's own."""
    if event.get("type") == "presence":
        said = PRESENCE_SAID.get(str(event.get("reason")), "is online")
        mark = "?" if event.get("verified") is False else ""  # None: nothing pinned yet
        text = f"{escape(str(event.get('name', '')))}{mark} {said}"
        return Text(f"-- {text}", style="dim")
    style = NOTICE_STYLES.get(str(event.get("kind")), "dim")
    return Text(f"-- {escape(str(event.get('text', '')))}", style=style)


def own_notice_text(kind: str, data: Any) -> str:
    """The interface's own notices: ``dropped`` (an event), ``lost``, ``error``, ``note``."""
    if kind == "dropped":
        count = data.get("count")
        if count is None:
            return "reconnected to chatd: what came meanwhile is read from the store"
        return f"chatd dropped {count} events for this window (it fell behind): read from the store"
    if kind == "lost":
        return f"ERROR: {data}; no more incoming messages (restart chatctl ui)"
    if kind == "error":
        return f"ERROR: {data}"
    return str(data)


def entry_line(event: Event, today: dt.date) -> Text:
    if event.get("type") == "message":
        return message_line(event, today)
    return notice_line(event)


def hanging_split(line: Text, event: Event) -> tuple[Text, Text]:
    """``line`` as (what the indent is measured by, the rest): a message's time and
    sender, a notice's ``-- ``; wrapped lines of the rest start under its first."""
    if event.get("type") == "message":
        sender_end = line.plain.find("> ")
        cut = sender_end + 2 if sender_end >= 0 else 0
    else:
        cut = 3 if line.plain.startswith("-- ") else 0
    return line[:cut], line[cut:]


def room_label(room: RoomView, current: bool) -> Text:
    """A room in the side list: ``lobby (3)`` with unread messages; ``!`` for legacy."""
    label = Text(escape(room.name), style="bold" if room.unread or current else "")
    if room.legacy:
        label.append(" !legacy", style=UNVERIFIED_STYLE)
    if room.unread:
        label.append(f" ({room.unread})", style="bold")
    return label


WELCOME = (
    "No room yet. To start, one of:",
    "  /create ROOM    a new room; then /invite to add people",
    "  /join --invite  with an invite you were given (hidden)",
    "  /join ROOM      a room with a shared passphrase (F2)",
    "F1 lists every key and command.",
)
"""The empty screen: the recommended flow first, as in README."""


def who_lines(room: str, result: dict[str, Any] | None, today: dt.date) -> list[str]:
    """/who's answer, for the log: the members panel may be hidden at this width."""
    if result is None:
        return ["/who is not available: this chatd does not report presence"]
    members = sorted_members(result.get("members") or [])
    lines = [f"members of {escape(room)}: {len(members)}"]
    for m in members:
        lines.append(f"  {member_line(m, today)}  {short_fingerprint(str(m.get('fingerprint')))}")
    return lines


def room_title(room: RoomView | None) -> Text:
    if room is None:
        return Text("no room yet", style="dim")
    title = Text(f"# {escape(room.name)}", style="bold")
    if room.legacy:
        title.append(f"  ! legacy room: {escape(room.warning or 'unverified, unsafe')}", "red")
    return title


def members_text(room: RoomView | None, presence: bool | None, today: dt.date) -> Text:
    """The members panel: who is in the room, or why that is not known."""
    text = Text("Members\n", style="bold")
    if presence is False:
        text.append("presence not available\n(this chatd does not\nreport who is here)", "dim")
    elif room is None or room.members is None:
        text.append("…", style="dim")
    elif not room.members:
        text.append("nobody yet", style="dim")
    else:
        for member in sorted_members(room.members):
            line = member_line(member, today)
            style = "" if member.get("online") else "dim"
            if member.get("verified") is False:
                style = UNVERIFIED_STYLE
            text.append(("● " if member.get("online") else "○ ") + line + "\n", style=style)
    return text
