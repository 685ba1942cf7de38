"""Rooms' membership logs as chatd holds them: in memory, and in the store's ``room_log``.

One ``RoomLog`` (mqchat.protocol.room_log) per room, rebuilt from its rows at
start; which state each epoch tag belongs to; why we are out of a room; our own
join; the commits with the verbatim payloads they came in (to send again). The
log settles when epochs close, so its bounds hold however long a room lives.
Nothing here decides anything: the rules are pure, and mqchat.daemon.membership
applies them.
"""

from __future__ import annotations

import contextlib
import struct

from mqchat.daemon.rooms import Room, RoomRegistry
from mqchat.daemon.store import Store
from mqchat.daemon.store.epochs import CURRENT, GRACE, EpochRow
from mqchat.daemon.store.room_log import (
    ANCHOR,
    COMMIT,
    EXPECT,
    JOIN,
    OUT,
    OWN_JOIN,
    LogRow,
)
from mqchat.daemon.store.room_log import TAG_KIND as TAG
from mqchat.errors import ProtocolError
from mqchat.protocol.keybox import usable_member_key
from mqchat.protocol.membership import (
    Commit,
    Join,
    Refused,
    commit_body,
    decode_commit,
    decode_join,
    join_body,
)
from mqchat.protocol.records import Record, Rekey, decode_record, record_body
from mqchat.protocol.room_log import Offered, RoomLog
from mqchat.protocol.roster import NO_STATE, Member, Role, RoomState, decode_roster

_COMMIT_ROW = struct.Struct(">32sQ26sH")
_MEMBER_ROW = struct.Struct(">32s32s32sBQ")


def pack_commit(author: bytes, new_epoch: int, tag: str, commit: Commit, rekey: Rekey) -> bytes:
    body = commit_body(commit)
    _, rekey_bytes = record_body(rekey)
    return _COMMIT_ROW.pack(author, new_epoch, tag.encode(), len(body)) + body + rekey_bytes


def unpack_commit(data: bytes) -> tuple[bytes, int, str, Commit, Rekey]:
    author, new_epoch, tag, size = _COMMIT_ROW.unpack_from(data)
    at = _COMMIT_ROW.size
    commit = decode_commit(data[at : at + size])
    rekey = decode_record(6, data[at + size :])
    if not isinstance(rekey, Rekey):  # pragma: no cover - written by pack_commit only
        raise ProtocolError("a stored commit without its rekey")
    return author, new_epoch, tag.decode(), commit, rekey


def pack_member(state_hash: bytes, m: Member) -> bytes:
    return _MEMBER_ROW.pack(state_hash, m.sign_key, m.x25519_key, m.role, m.since) + m.name.encode()


def unpack_member(data: bytes) -> tuple[bytes, Member]:
    state_hash, sign_key, x25519, role, since = _MEMBER_ROW.unpack_from(data)
    name = data[_MEMBER_ROW.size :].decode()
    return state_hash, Member(sign_key, x25519, Role(role), name, since)


class RoomLogs:
    def __init__(self, *, store: Store, rooms: RoomRegistry, own_key: bytes) -> None:
        self._store = store
        self._rooms = rooms
        self._own_key = own_key
        self._logs: dict[str, RoomLog] = {}
        self._tags: dict[str, dict[str, bytes]] = {}
        """Per room: epoch tag -> the state of that epoch (NO_STATE: it had none)."""
        self._rows: dict[str, dict[bytes, LogRow]] = {}
        self._out: dict[str, str] = {}
        self._own_join: dict[str, Join] = {}
        self._heard: dict[str, tuple[int, frozenset[bytes]]] = {}
        """Per room: the log's version, and the signing keys heard at it (a cache)."""
        self.reload()

    def reload(self) -> None:
        """Everything from the store: at start, and when a batch rolled back (the
        logs in memory are the store's cache, never ahead of it)."""
        for table in (self._logs, self._tags, self._rows, self._out, self._own_join, self._heard):
            table.clear()
        for room in list(self._rooms):
            rows = self._store.room_log.of(room.name)
            if rows:
                self._restore(room, rows)

    def _restore(self, room: Room, rows: list[LogRow]) -> None:
        anchor = next((r for r in rows if r.kind == ANCHOR), None)
        expect = next((r for r in rows if r.kind == EXPECT), None)
        state = decode_roster(anchor.body) if anchor is not None else None
        book = self._logs[room.name] = RoomLog(
            state, usable_member_key, expect=expect.body if expect is not None else None
        )
        tags = self._tags.setdefault(room.name, {})
        if anchor is not None and anchor.topic is not None:
            tags[anchor.topic] = state.hash if state is not None else NO_STATE
        self._rows[room.name] = {r.id: r for r in rows}
        self._offer_in_order(book, tags, [r for r in rows if r.kind == COMMIT])
        for row in rows:
            if row.kind == OUT:
                self._out[room.name] = row.body.decode()
            elif row.kind == OWN_JOIN:
                self._own_join[room.name] = decode_join(row.body)
            elif row.kind == JOIN:
                state_hash, member = unpack_member(row.body)
                try:
                    book.admit(state_hash, member)
                except Refused:
                    continue
        for row in rows:
            if row.kind == TAG and row.topic is not None:
                tags[row.topic] = row.body

    @staticmethod
    def _offer_in_order(book: RoomLog, tags: dict[str, bytes], rows: list[LogRow]) -> None:
        """Stored commits, each once its state is known: the store keeps them in no
        order, and the log takes a commit only of a state it holds."""
        waiting = []
        for row in rows:
            author, new_epoch, tag, commit, rekey = unpack_commit(row.body)
            waiting.append((Offered(row.id, author, commit, new_epoch, rekey.recipients), tag))
        while waiting:
            later = []
            for offered, tag in waiting:
                known = offered.commit.genesis or book.state(offered.commit.prev) is not None
                if not known:
                    later.append((offered, tag))
                    continue
                try:
                    book.offer(offered)
                except Refused:
                    continue
                tags.setdefault(tag, offered.commit.prev)
            if len(later) == len(waiting):
                for offered, _ in later:  # a newcomer's, of the state it waits for
                    with contextlib.suppress(Refused):
                        book.offer(offered)
                return
            waiting = later

    def book(self, room: Room) -> RoomLog:
        book = self._logs.get(room.name)
        if book is None:
            book = self._logs[room.name] = RoomLog(None, usable_member_key)
            self._tags.setdefault(room.name, {})
            self._rows.setdefault(room.name, {})
        return book

    def head(self, room: Room) -> RoomState | None:
        return self.book(room).head()

    def out_reason(self, room: Room) -> str | None:
        """Why we can no longer send in ``room`` (removed, left out), or None."""
        return self._out.get(room.name)

    def keep(self, room: Room, row: LogRow) -> None:
        self._rows.setdefault(room.name, {})[row.id] = row
        self._store.room_log.save(row)

    def tag_state(self, room: Room, tag: str, state_hash: bytes) -> None:
        self._tags.setdefault(room.name, {})[tag] = state_hash
        self.keep(room, LogRow(room.name, b"tag:" + tag.encode(), TAG, state_hash, None, tag))

    def anchor(self, room: Room, state: RoomState, tag: str) -> None:
        """A room we created: its first state, ours."""
        self._logs[room.name] = RoomLog(state, usable_member_key)
        self.keep(room, LogRow(room.name, b"anchor", ANCHOR, state.encode(), None, tag))
        self.tag_state(room, tag, state.hash)

    def expect(self, room: Room, state_hash: bytes, join: Join) -> None:
        """A room joined by invite: wait for the roster of the state the invite names."""
        self._logs[room.name] = RoomLog(None, usable_member_key, expect=state_hash)
        self.keep(room, LogRow(room.name, b"expect", EXPECT, state_hash))
        self._own_join[room.name] = join
        self.keep(room, LogRow(room.name, b"own_join", OWN_JOIN, join_body(join)))

    def on_expire(self, room: Room, closed: list[EpochRow], still: list[EpochRow]) -> None:
        """Epochs closed (``closed``; ``still``: the room's other epochs): the log
        settles on the oldest state still open and forgets the commits before it, so
        its bounds hold however long a room lives."""
        book = self._logs.get(room.name)
        if book is None or not book.anchored:
            return
        tags = self._tags.get(room.name, {})
        open_tags = {r.tag for r in still if r.state in (CURRENT, GRACE)}
        open_states = {tags[t] for t in open_tags if t in tags}
        oldest = next((c for c in book.path() if c.state.hash in open_states), None)
        if oldest is None or not book.settle(oldest.state.hash):
            return
        anchor = book.anchor
        if anchor is None:  # pragma: no cover - settle sets it
            return
        self.keep(room, LogRow(room.name, b"anchor", ANCHOR, anchor.encode()))
        kept = book.commit_ids()
        rows = self._rows.get(room.name, {})
        for cid in [i for i, r in rows.items() if r.kind == COMMIT and i not in kept]:
            del rows[cid]
            self._store.room_log.delete_id(room.name, cid)

    def forget(self, room: Room) -> None:
        for table in (self._logs, self._tags, self._rows, self._out, self._own_join, self._heard):
            table.pop(room.name, None)
        self._store.room_log.forget_room(room.name)

    # ------------------------------------------------------------------ who is heard
    def hears(self, room: Room, sender_key: bytes) -> bool:
        """Whether a text from ``sender_key`` is shown: in a room with a membership
        state, only its members' and admitted newcomers' (§27.4); else anyone's."""
        if sender_key == self._own_key:
            return True
        book = self._logs.get(room.name)
        if book is None or not book.anchored:
            return True
        cached = self._heard.get(room.name)
        if cached is None or cached[0] != book.version:
            head = book.head()
            keys = (
                frozenset()
                if head is None
                else head.sign_keys | {m.sign_key for m in book.pending(head.hash)}
            )
            cached = self._heard[room.name] = (book.version, keys)
        return sender_key in cached[1]

    # ------------------------------------------------------------------ lookups
    def tags(self, room: Room) -> dict[str, bytes]:
        return self._tags.setdefault(room.name, {})

    def row(self, room: Room, row_id: bytes) -> LogRow | None:
        return self._rows.get(room.name, {}).get(row_id)

    def own_join(self, room: Room) -> Join | None:
        return self._own_join.get(room.name)

    def join_to_repeat(self, room: Room) -> list[Record]:
        """Our join, with every presence batch until a commit adds us."""
        join = self._own_join.get(room.name)
        if join is None:
            return []
        head = self.head(room)
        if head is not None and head.member(self._own_key) is not None:
            return []
        return [join]

    def set_out(self, room: Room, why: str) -> bool:
        """Remember why we are out of ``room``; False if that was known already."""
        if self._out.get(room.name) == why:
            return False
        self._out[room.name] = why
        self.keep(room, LogRow(room.name, b"out", OUT, why.encode()))
        return True

    def clear_out(self, room: Room) -> None:
        if self._out.pop(room.name, None) is not None:
            self._store.room_log.delete(room.name, (OUT,))

    def anchored_on_roster(self, room: Room, state: RoomState, tag: str) -> None:
        self.keep(room, LogRow(room.name, b"anchor", ANCHOR, state.encode(), None, tag))
        self._store.room_log.delete(room.name, (EXPECT,))
        self.tag_state(room, tag, state.hash)
