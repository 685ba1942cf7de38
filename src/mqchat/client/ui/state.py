"""What the interface holds: rooms, their messages and notices, unread counts, members.

Plain data, no Textual: the app feeds it what the link posts and draws from it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from mqchat.client.ui.members import Member, member_key

Event = dict[str, Any]

MAX_ENTRIES = 5000
"""Messages and notices a room keeps on screen; older ones are left to the store."""
NOTICE_FOR_ALL = ("broker_up", "broker_down")


@dataclass
class RoomView:
    name: str
    legacy: bool = False
    warning: str | None = None
    by_invite: bool = False
    """A random-key room: after leaving it, only a new invite brings it back."""
    entries: list[Event] = field(default_factory=list)
    """Messages and notices in the order they came (older pages before them)."""
    unread: int = 0
    oldest_seq: int | None = None
    """The lowest seq held; None before any message."""
    at_start: bool = False
    """No message older than ``oldest_seq`` is in the store."""
    members: list[Member] | None = None
    """None until chatd said who is here."""
    seen_since_asked: list[Event] = field(default_factory=list)
    """Presence events since ``who`` was last asked, to apply again over its answer."""

    @property
    def more_above(self) -> bool:
        return self.oldest_seq is not None and self.oldest_seq > 1 and not self.at_start

    def add(self, entry: Event) -> None:
        self.entries.append(entry)
        if len(self.entries) > MAX_ENTRIES:
            del self.entries[: len(self.entries) - MAX_ENTRIES]
            self.at_start = False
            seqs = [e["seq"] for e in self.entries if e.get("type") == "message"]
            self.oldest_seq = min(seqs) if seqs else self.oldest_seq

    def add_older(self, messages: list[Event]) -> int:
        """Put an older page first; how many messages it added."""
        older = [m for m in messages if self.oldest_seq is None or m["seq"] < self.oldest_seq]
        room_left = max(0, MAX_ENTRIES - len(self.entries))
        older = older[len(older) - room_left :] if room_left else []
        if not older:
            self.at_start = True
            return 0
        self.entries[:0] = older
        self.oldest_seq = older[0]["seq"]
        return len(older)

    asked: bool = False
    """``who`` was asked for this room (its answer may still be on the way)."""

    def asking(self) -> None:
        self.asked = True
        self.seen_since_asked = []

    def answered(self, members: list[Member]) -> None:
        """``who``'s answer; presence events that came meanwhile are newer, or the same."""
        self.members = list(members)
        for event in self.seen_since_asked:
            self.saw(event)

    def saw(self, event: Event) -> None:
        """A presence event: the member's new state (reason ``joined``, ``leaving``...)."""
        member = {k: event.get(k) for k in ("name", "fingerprint", "verified", "online")}
        member["last_seen"] = event.get("last_seen")
        members = self.members if self.members is not None else []
        key = member_key(member)
        self.members = [m for m in members if member_key(m) != key] + [member]


@dataclass
class ChatState:
    rooms: dict[str, RoomView] = field(default_factory=dict)
    current: str | None = None
    name: str = ""
    broker_url: str = ""
    broker_connected: bool | None = None
    presence: bool | None = None
    """Whether chatd answers ``who``: None until asked."""

    @property
    def room(self) -> RoomView | None:
        return self.rooms.get(self.current) if self.current is not None else None

    def names(self) -> list[str]:
        return sorted(self.rooms)

    def set_status(self, status: Event) -> None:
        self.name = str(status.get("name", ""))
        broker = status.get("broker") or {}
        self.broker_url = str(broker.get("url", ""))
        self.broker_connected = bool(broker.get("connected"))

    def add_room(self, info: Event, messages: list[Event]) -> RoomView:
        room = RoomView(
            name=info["name"],
            legacy=bool(info.get("legacy")),
            warning=info.get("warning"),
            by_invite=info.get("key") == "random",
        )
        room.entries = list(messages[-MAX_ENTRIES:])
        room.oldest_seq = messages[0]["seq"] if messages else None
        room.at_start = not messages or messages[0]["seq"] <= 1
        self.rooms[room.name] = room
        if self.current is None:
            self.current = room.name
        return room

    def remove_room(self, name: str) -> None:
        self.rooms.pop(name, None)
        if self.current == name:
            names = self.names()
            self.current = names[0] if names else None

    def select(self, name: str) -> None:
        if name in self.rooms:
            self.current = name
            self.rooms[name].unread = 0

    def step(self, by: int) -> None:
        """Select the next (1) or previous (-1) room, round the list."""
        names = self.names()
        if not names:
            return
        at = names.index(self.current) if self.current in names else 0
        self.select(names[(at + by) % len(names)])

    def take(self, event: Event) -> str | None:
        """Hold an event; the room whose view it changed, if any."""
        kind = event.get("type")
        if kind == "notice" and event.get("kind") in NOTICE_FOR_ALL:
            self.broker_connected = event.get("kind") == "broker_up"
            if self.room is not None:
                self.room.add(event)
            return self.current
        room = self.rooms.get(str(event.get("room")))
        if room is None:
            return None
        if kind == "message":
            if room.oldest_seq is None:
                room.oldest_seq = event["seq"]
            room.add(event)
            if room.name != self.current and not event.get("own"):
                room.unread += 1
        elif kind == "presence":
            room.seen_since_asked.append(event)
            del room.seen_since_asked[:-MAX_ENTRIES]
            room.saw(event)
            if event.get("reason") == "announce":
                return room.name  # the members panel changes, not the log
            room.add(event)
        elif kind == "notice":
            room.add(event)
        else:
            return None
        return room.name
