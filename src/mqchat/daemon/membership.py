"""Room membership on the daemon's side: the logs, who is heard, and catching up.

The rules are pure (mqchat.protocol.membership, room_log); this module feeds
them what arrives, keeps what they accept in the store's ``room_log``, moves the
room to the epoch the log's head names (mqchat.daemon.epoch_keeper), tells
people what happened (notices), and sends a member left behind what it missed:
a verified batch on an epoch the room has left, from someone who was in it, is
answered with the commit out of that epoch, verbatim, on that epoch's topic
(docs/protocol.md §28).
"""

from __future__ import annotations

import asyncio
import logging
import random as random_module
import struct
from collections.abc import Callable
from typing import Any

from mqchat.daemon.broker import BrokerLink
from mqchat.daemon.drops import DropCounter
from mqchat.daemon.epoch_keeper import EpochKeeper
from mqchat.daemon.presence import PresenceKeeper
from mqchat.daemon.rooms import Room, RoomRegistry
from mqchat.daemon.store import Store
from mqchat.daemon.store.epochs import CURRENT, GRACE, EpochRow
from mqchat.daemon.store.room_log import ANCHOR, COMMIT, EXPECT, JOIN, OUT, OWN_JOIN, LogRow
from mqchat.daemon.unit_of_work import UnitOfWork
from mqchat.errors import ProtocolError
from mqchat.protocol.batch import Batch, seal_batch
from mqchat.protocol.epochs import EpochKeys
from mqchat.protocol.ipc import notice_event
from mqchat.protocol.keybox import MemberKeyPair, secret_for, usable_member_key
from mqchat.protocol.membership import (
    Commit,
    Join,
    OpKind,
    Refused,
    Roster,
    check_join,
    commit_body,
    commit_id,
    decode_commit,
    decode_join,
    join_body,
)
from mqchat.protocol.records import PresenceState, Record, Rekey, decode_record, record_body
from mqchat.protocol.room_log import Offered, RoomLog
from mqchat.protocol.roster import NO_STATE, Member, Role, RoomState, commitment, decode_roster
from mqchat.protocol.signing import SigningIdentity

log = logging.getLogger(__name__)

ANSWER_DELAY_S = (0.2, 1.0)
"""A member left behind is answered after a random delay in this range, so that one
member's answer can stand for all (an answer seen meanwhile holds ours back)."""
ANSWER_EVERY_S = 5.0
"""At most one answer per room and old epoch in this time, from each member."""
JOIN_AGAIN_S = 1.0
JOIN_TRIES = 8
"""A newcomer with no roster says its join again after 2, 4, … 256 s (8 times)."""
_COMMIT_ROW = struct.Struct(">32sQ26sH")


def pack_commit(author: bytes, new_epoch: int, tag: str, commit: Commit, rekey: Rekey) -> bytes:
    body = commit_body(commit)
    _, rekey_bytes = record_body(rekey)
    return _COMMIT_ROW.pack(author, new_epoch, tag.encode(), len(body)) + body + rekey_bytes


def _unpack_commit(data: bytes) -> tuple[bytes, int, str, Commit, Rekey]:
    author, new_epoch, tag, size = _COMMIT_ROW.unpack_from(data)
    at = _COMMIT_ROW.size
    commit = decode_commit(data[at : at + size])
    rekey = decode_record(6, data[at + size :])
    if not isinstance(rekey, Rekey):  # pragma: no cover - written by _pack_commit only
        raise ProtocolError("a stored commit without its rekey")
    return author, new_epoch, tag.decode(), commit, rekey


class Membership:
    def __init__(
        self,
        *,
        store: Store,
        rooms: RoomRegistry,
        keeper: EpochKeeper,
        presence: PresenceKeeper,
        work: UnitOfWork,
        drops: DropCounter,
        identity: SigningIdentity,
        name: str,
        clock_ms: Callable[[], int],
        random: Callable[[int], bytes],
    ) -> None:
        self._store = store
        self._rooms = rooms
        self._keeper = keeper
        self._presence = presence
        self._work = work
        self._drops = drops
        self._identity = identity
        self.own_key = identity.public_key
        self._name = name
        self._clock_ms = clock_ms
        self._random = random
        self._jitter = random_module.Random()  # noqa: S311 -- timing jitter, not a secret
        self.member_key = MemberKeyPair.from_identity(identity)
        self._logs: dict[str, RoomLog] = {}
        self._tags: dict[str, dict[str, bytes]] = {}
        """Per room: epoch tag -> the state of that epoch (NO_STATE: it had none)."""
        self._rows: dict[str, dict[bytes, LogRow]] = {}
        self._out: dict[str, str] = {}
        self._own_join: dict[str, Join] = {}
        self._answered: dict[tuple[str, str], float] = {}
        self._rosters_seen: dict[tuple[str, bytes], float] = {}
        self._heard: dict[str, tuple[int, frozenset[bytes]]] = {}
        """Per room: the log's version, and the signing keys heard at it (a cache)."""
        self.own_commits: dict[str, tuple[bytes, tuple[bytes, ...]]] = {}
        """Per room: our last commit, and whom it removed (made again should it lose)."""
        self.rekey_again: Callable[[str, list[str]], None] = lambda room, names: None
        self.link: BrokerLink | None = None

    # ------------------------------------------------------------------ state
    def load(self) -> None:
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
        for row in rows:
            if row.kind == COMMIT:
                author, new_epoch, tag, commit, rekey = _unpack_commit(row.body)
                offered = Offered(row.id, author, commit, new_epoch, rekey.recipients)
                try:
                    book.offer(offered)
                except Refused:
                    continue
                tags.setdefault(tag, commit.prev)
            elif row.kind == OUT:
                self._out[room.name] = row.body.decode()
            elif row.kind == OWN_JOIN:
                self._own_join[room.name] = decode_join(row.body)
            elif row.kind == JOIN:
                state_hash, member = _unpack_member(row.body)
                try:
                    book.admit(state_hash, member)
                except Refused:
                    continue
        for row in rows:
            if row.kind == "tag" and row.topic is not None:
                tags[row.topic] = row.body

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
        self.keep(room, LogRow(room.name, b"tag:" + tag.encode(), "tag", state_hash, None, tag))

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
        asyncio.get_running_loop().call_later(JOIN_AGAIN_S, self._join_again, room.name, 1)

    def _join_again(self, room_name: str, attempt: int) -> None:
        """No roster yet (lost, or nobody answered): say the join again, with back-off."""
        room = self._rooms.get(room_name)
        book = self._logs.get(room_name)
        if room is None or book is None or book.expect is None or attempt > JOIN_TRIES:
            return
        self._presence.announce(room, PresenceState.ONLINE)
        delay = JOIN_AGAIN_S * 2**attempt
        asyncio.get_running_loop().call_later(delay, self._join_again, room_name, attempt + 1)

    def on_expire(self, room: Room, closed: list[EpochRow]) -> None:
        """Epochs closed: the log settles on the oldest state still open, and forgets
        the commits before it (its bounds hold however long a room lives)."""
        book = self._logs.get(room.name)
        if book is None or not book.anchored:
            return
        tags = self._tags.get(room.name, {})
        open_tags = {
            r.tag for r in self._keeper.rows_of(room).values() if r.state in (CURRENT, GRACE)
        }
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
        del closed

    def forget(self, room: Room) -> None:
        for table in (self._logs, self._tags, self._rows, self._out, self._own_join, self._heard):
            table.pop(room.name, None)
        self.own_commits.pop(room.name, None)
        self._store.room_log.forget_room(room.name)

    # ------------------------------------------------------------------ who is heard
    def hears(self, room: Room, sender_key: bytes) -> bool:
        """Whether a text from ``sender_key`` is shown: in a room with a membership
        state, only its members' and admitted newcomers' (§27.4); else anyone's."""
        if sender_key == self.own_key:
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

    def presence_records(self, room: Room) -> list[Record]:
        """Our join, with every presence batch until a commit adds us."""
        join = self._own_join.get(room.name)
        if join is None:
            return []
        head = self.head(room)
        if head is not None and head.member(self.own_key) is not None:
            return []
        return [join]

    # ------------------------------------------------------------------ receiving
    def on_batch(self, room: Room, batch: Batch, payload: bytes, now_ms: int) -> None:
        """Every verified batch of a room (the inbox calls it first)."""
        if room.epoch is None:
            return
        current = batch.room_tag == room.epoch.tag
        heard = self.hears(room, batch.sender_key)
        book = self.book(room)
        if heard and (current or book.anchored):
            self._presence.on_batch(room, batch, now_ms)
        rekey = next((r for r in batch.records if isinstance(r, Rekey)), None)
        for record in batch.records:
            if isinstance(record, Commit) and rekey is not None:
                self._on_commit(room, batch, payload, record, rekey, now_ms)
            elif isinstance(record, Join):
                self._on_join(room, batch, record, current)
            elif isinstance(record, Roster):
                self._on_roster(room, record.state, now_ms)
        if rekey is not None and not any(isinstance(r, Commit) for r in batch.records):
            self._drops.drop("rekey_without_commit", "a rekey from a daemon before issue 21")
        if not current and batch.sender_key != self.own_key and self._may_ask(room, batch):
            self._answer_later(room, batch.room_tag)

    def _may_ask(self, room: Room, batch: Batch) -> bool:
        """Who is sent the way on from an old epoch: a member of that epoch's state, a
        newcomer admitted into it, anyone in an epoch that had no state (§28)."""
        state_hash = self._tags.get(room.name, {}).get(batch.room_tag)
        if state_hash is None or state_hash == NO_STATE:
            return True
        state = self.book(room).state(state_hash)
        if state is None or state.member(batch.sender_key) is not None:
            return True
        return any(isinstance(r, Join) and r.state_hash == state_hash for r in batch.records)

    def _on_commit(
        self,
        room: Room,
        batch: Batch,
        payload: bytes,
        commit: Commit,
        rekey: Rekey,
        now_ms: int,
    ) -> None:
        _, rekey_bytes = record_body(rekey)
        cid = commit_id(
            author=batch.sender_key,
            epoch=batch.epoch,
            tag=batch.room_tag,
            commit=commit,
            rekey_body=rekey_bytes,
        )
        book = self.book(room)
        if book.knows(cid):
            self._answered[(room.name, batch.room_tag)] = asyncio.get_running_loop().time()
            return
        epoch_state = self._tags.get(room.name, {}).get(batch.room_tag)
        if epoch_state is not None and commit.prev != epoch_state:
            self._drops.drop("unknown_state", "a commit of another state than its epoch's")
            return
        offered = Offered(cid, batch.sender_key, commit, rekey.new_epoch, rekey.recipients)
        try:
            book.offer(offered)
        except Refused as exc:
            self._drops.drop(exc.reason, str(exc))
            return
        packed = pack_commit(batch.sender_key, rekey.new_epoch, batch.room_tag, commit, rekey)
        topic = self._keeper.row(room, batch.room_tag)
        self.keep(
            room, LogRow(room.name, cid, COMMIT, packed, payload, topic.topic if topic else None)
        )
        if epoch_state is None:
            self.tag_state(room, batch.room_tag, commit.prev)
        self.follow(room, now_ms)

    def _on_join(self, room: Room, batch: Batch, join: Join, current: bool) -> None:
        if batch.sender_key == self.own_key or not current:
            return
        book = self.book(room)
        state_hash = self._tags.get(room.name, {}).get(batch.room_tag)
        state = book.state(state_hash) if state_hash else None
        head = book.head()
        if state is None or head is None or state_hash != head.hash:
            return
        try:
            member = check_join(
                state,
                joiner=batch.sender_key,
                name=batch.sender_name,
                join=join,
                usable=usable_member_key,
            )
            added = book.admit(state.hash, member)
        except Refused as exc:
            self._drops.drop(exc.reason, str(exc))
            return
        if added:
            body = _pack_member(state.hash, member)
            self.keep(room, LogRow(room.name, b"join:" + member.sign_key, JOIN, body))
            self._store.memory.set_pin(room.name, member.name, member.sign_key)
            inviter = state.member(join.inviter_key)
            self._notice(
                room,
                "member_joined",
                f"{member.name} joined {room.name}, invited by "
                f"{inviter.name if inviter else 'an admin'}",
                sender=member.name,
            )
        self._answer_roster_later(room, state)

    def _on_roster(self, room: Room, state: RoomState, now_ms: int) -> None:
        loop_now = asyncio.get_running_loop().time()
        self._rosters_seen[(room.name, state.hash)] = loop_now
        book = self.book(room)
        if not book.anchor_on(state) or room.epoch is None:
            return
        self.keep(room, LogRow(room.name, b"anchor", ANCHOR, state.encode(), None, room.epoch.tag))
        self._store.room_log.delete(room.name, (EXPECT,))
        self.tag_state(room, room.epoch.tag, state.hash)
        admins = ", ".join(m.name for m in state.members if m.role == Role.ADMIN)
        self._notice(room, "admitted", f"joined {room.name}: its admins are {admins}")
        for m in state.members:
            self._store.memory.set_pin(room.name, m.name, m.sign_key)
        # Again, now that we can judge joins: the others' replies carry theirs.
        self._presence.announce(room, PresenceState.ONLINE)
        self.follow(room, now_ms)

    # ------------------------------------------------------------------ following the head
    def follow(self, room: Room, now_ms: int) -> None:
        """Move the room along the log's winning path: open each new epoch's box,
        switch, and say what changed; stop where we are not in the room."""
        book = self.book(room)
        tags = self._tags.setdefault(room.name, {})
        held = {h: t for t, h in tags.items()}
        for cand in book.path():
            if cand.state.hash in held:
                continue
            prev_tag = held.get(cand.prev)
            row = self._rows.get(room.name, {}).get(cand.id)
            if prev_tag is None or row is None:
                return
            author, new_epoch, tag, commit, rekey = _unpack_commit(row.body)
            author_m = cand.state.member(author)
            who = author_m.name if author_m else "an admin"
            if cand.state.member(self.own_key) is None:
                self._set_out(room, commit, who)
                return
            try:
                secret = secret_for(rekey, self.member_key, tag=tag, rekeyer_key=author)
            except ProtocolError as exc:
                secret = None
                self._drops.drop("bad_key_box", str(exc))
            if secret is None or commitment(secret, new_epoch) != commit.commitment:
                self._drops.drop("bad_key_box", "a key box that does not match its commitment")
                self._notice(
                    room,
                    "key_alarm",
                    f"{who}'s rekey of {room.name} gave you a key that does not match what it "
                    f"committed to: you cannot read {room.name} from epoch {new_epoch} on; "
                    f"tell {who} or another admin",
                    sender=who,
                )
                return
            keys = EpochKeys(secret, new_epoch)
            self.tag_state(room, keys.tag, cand.state.hash)
            held[cand.state.hash] = keys.tag
            self._keeper.switch(room, keys, secret, now_ms)
            self._out.pop(room.name, None)
            self._store.room_log.delete(room.name, (OUT,))
            for m in cand.state.members:
                self._store.memory.set_pin(room.name, m.name, m.sign_key)
            self._presence.announce(room, PresenceState.ONLINE)
            self._notice(
                room, "rekeyed", self._describe(room, commit, who, cand.state, cand.prev),
                sender=who, epoch=new_epoch,
            )  # fmt: skip
        head = book.head()
        target = held.get(head.hash) if head is not None else None
        if target is not None and target != self._keeper.current(room).tag:
            # The winner changed to a branch whose epoch is held already (§27.2).
            epoch = self._keeper.row(room, target)
            if epoch is not None and epoch.secret is not None:
                keys = EpochKeys(epoch.secret, epoch.epoch)
                self._keeper.switch(room, keys, epoch.secret, now_ms)
        self._again_if_lost(room)

    def _describe(self, room: Room, commit: Commit, who: str, state: RoomState, prev: bytes) -> str:
        before = self.book(room).state(prev)
        names = {m.sign_key: m.name for m in (before.members if before else ())}
        removed = [names.get(op.sign_key, "?") for op in commit.ops if op.kind == OpKind.REMOVE]
        added = [op.name for op in commit.ops if op.kind == OpKind.ADD and op.name != who]
        text = f"{who} rekeyed {room.name}: epoch {state.epoch}"
        if removed:
            text += f"; removed {', '.join(removed)}"
        if added and before is not None:
            text += f"; added {', '.join(added)}"
        return text

    def _set_out(self, room: Room, commit: Commit, who: str) -> None:
        removed = any(op.kind == OpKind.REMOVE and op.sign_key == self.own_key for op in commit.ops)
        expected = self._own_join.get(room.name) is not None and not removed
        if removed:
            kind, why = "removed", f"{who} removed you from {room.name}"
        elif expected and self.book(room).anchor is not None:
            kind, why = (
                "moved_on",
                f"{room.name} has moved on since your invite ({who} rekeyed it): ask {who} for "
                "a new one",
            )
        else:
            kind, why = "left_out", f"{who} rekeyed {room.name} without you"
        if self._out.get(room.name) == why:
            return
        self._out[room.name] = why
        self.keep(room, LogRow(room.name, b"out", OUT, why.encode()))
        self._notice(
            room,
            kind,
            f"{why}: nothing said there from now on reaches you; run `chatctl leave "
            f"{room.name}` to forget it",
            sender=who,
        )

    def _again_if_lost(self, room: Room) -> None:
        mine = self.own_commits.get(room.name)
        head = self.head(room)
        if mine is None or head is None:
            return
        cid, removed = mine
        if any(c.id == cid for c in self.book(room).path()):
            return
        still = [m.name for m in head.members if m.sign_key in removed]
        del self.own_commits[room.name]
        if still and head.is_admin(self.own_key):
            asyncio.get_running_loop().call_soon(self.rekey_again, room.name, still)

    # ------------------------------------------------------------------ answering
    def _answer_later(self, room: Room, tag: str) -> None:
        """Someone still speaks in an epoch the room has left: send it the way on."""
        key = (room.name, tag)
        loop = asyncio.get_running_loop()
        last = self._answered.get(key)
        if last is not None and loop.time() - last < ANSWER_EVERY_S:
            return
        self._answered[key] = loop.time()
        loop.call_later(
            self._jitter.uniform(*ANSWER_DELAY_S), self._answer, room.name, tag, loop.time()
        )

    def _answer(self, room_name: str, tag: str, asked: float) -> None:
        room = self._rooms.get(room_name)
        if room is None or self.link is None or not self.link.connected:
            return
        if self._answered.get((room_name, tag), 0.0) > asked:
            return  # another member answered meanwhile
        state_hash = self._tags.get(room_name, {}).get(tag)
        book = self.book(room)
        if state_hash is None:
            return
        path = book.path()
        nxt = next((c for c in path if c.prev == state_hash), None)
        row = self._rows.get(room_name, {}).get(nxt.id) if nxt else None
        if row is None or row.payload is None or row.topic is None:
            return
        state = book.state(state_hash)
        if state is not None:
            self._send_roster(room, tag, state, row.topic)
        self.link.publish(row.topic, row.payload, 1)
        self._answered[(room_name, tag)] = asyncio.get_running_loop().time()
        log.info(
            "sent a member left behind the commit out of epoch %d",
            nxt.state.epoch - 1 if nxt else 0,
        )

    def _answer_roster_later(self, room: Room, state: RoomState) -> None:
        loop = asyncio.get_running_loop()
        asked = loop.time()
        seen = self._rosters_seen.get((room.name, state.hash))
        if seen is not None and asked - seen < ANSWER_EVERY_S:
            return
        loop.call_later(
            self._jitter.uniform(*ANSWER_DELAY_S), self._roster_now, room.name, state, asked
        )

    def _roster_now(self, room_name: str, state: RoomState, asked: float) -> None:
        """The roster goes out in its own epoch, where the newcomer listens."""
        room = self._rooms.get(room_name)
        if room is None or self._rosters_seen.get((room_name, state.hash), 0.0) > asked:
            return
        tag = next((t for t, h in self._tags.get(room_name, {}).items() if h == state.hash), None)
        row = self._keeper.row(room, tag) if tag is not None else None
        if tag is not None and row is not None:
            self._send_roster(room, tag, state, row.topic)

    def _send_roster(self, room: Room, tag: str, state: RoomState, topic: str) -> None:
        row = self._keeper.row(room, tag)
        if row is None or row.secret is None or self.link is None:
            return
        payload = seal_batch(
            EpochKeys(row.secret, row.epoch),
            self._identity,
            name=self._name,
            records=[Roster(state)],
            sent_ms=self._clock_ms(),
            random=self._random,
            cipher=room.cipher,
        )
        self._rosters_seen[(room.name, state.hash)] = asyncio.get_running_loop().time()
        self.link.publish(topic, payload, 1)

    def _notice(self, room: Room, kind: str, text: str, **extra: Any) -> None:
        # Held with the batch's texts, published after its commit (or now, outside one).
        self._work.publish(room.name, notice_event(room.name, kind, text, **extra))


_MEMBER_ROW = struct.Struct(">32s32s32sBQ")


def _pack_member(state_hash: bytes, m: Member) -> bytes:
    return _MEMBER_ROW.pack(state_hash, m.sign_key, m.x25519_key, m.role, m.since) + m.name.encode()


def _unpack_member(data: bytes) -> tuple[bytes, Member]:
    state_hash, sign_key, x25519, role, since = _MEMBER_ROW.unpack_from(data)
    return state_hash, Member(
        sign_key, x25519, Role(role), data[_MEMBER_ROW.size :].decode(), since
    )
