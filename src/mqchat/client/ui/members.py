"""Who is in a room: the ``who`` request and one line per member (docs/ipc.md, "Presence").

chatd answers ``who`` once it announces presence; until then it answers
"method not found", which here means "not available" rather than an error.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from mqchat.client.ipc_client import Client
from mqchat.client.render import escape, when
from mqchat.errors import DaemonRefused
from mqchat.protocol.ipc import METHOD_NOT_FOUND

Member = dict[str, Any]


def ask_who(c: Client, room: str) -> dict[str, Any] | None:
    """chatd's ``who`` result for ``room``, or None when this chatd has no presence yet."""
    try:
        result: dict[str, Any] = c.call("who", {"room": room})
    except DaemonRefused as exc:
        if exc.code == METHOD_NOT_FOUND:
            return None
        raise
    return result


def member_key(member: Member) -> tuple[str, str]:
    """Members are told apart by name and key: a second key under a name is another member."""
    return str(member.get("name", "")), str(member.get("fingerprint", ""))


def member_line(member: Member, today: dt.date | None = None) -> str:
    """``alice  online``, ``bob?  last seen 12:04:01``: escaped, ``?`` for an unverified key."""
    mark = "?" if member.get("verified") is False else ""  # None: nothing pinned yet
    name = escape(str(member.get("name", "")))
    if member.get("online"):
        state = "online"
    elif member.get("last_seen"):
        state = f"last seen {when(str(member['last_seen']), today)}"
    else:
        state = "offline"
    return f"{name}{mark}  {state}"


def sorted_members(members: list[Member]) -> list[Member]:
    """Online members first, then by name."""
    return sorted(members, key=lambda m: (not m.get("online"), *member_key(m)))
