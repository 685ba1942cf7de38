"""Room membership on the daemon's side: what arrives, judged, kept and followed.

The rules are pure (mqchat.protocol.membership, room_log); this module feeds
them each verified batch's membership records, keeps what they accept
(mqchat.daemon.room_logs), moves the room to the epoch the log's head names
(mqchat.daemon.epoch_keeper), and tells people what happened (notices). A member
left behind is sent the way on by mqchat.daemon.catch_up.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from mqchat.daemon.catch_up import CatchUp
from mqchat.daemon.drops import DropCounter
from mqchat.daemon.epoch_keeper import EpochKeeper
from mqchat.daemon.presence import PresenceKeeper
from mqchat.daemon.room_logs import RoomLogs, pack_commit, pack_member, unpack_commit
from mqchat.daemon.rooms import Room
from mqchat.daemon.store import Store
from mqchat.daemon.store.room_log import COMMIT, JOIN, LogRow
from mqchat.daemon.unit_of_work import UnitOfWork
from mqchat.errors import ProtocolError
from mqchat.protocol.batch import Batch
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
    commit_id,
)
from mqchat.protocol.records import Presence, PresenceState, Record, Rekey, record_body
from mqchat.protocol.room_log import Offered
from mqchat.protocol.roster import Member, Role, RoomState, commitment
from mqchat.protocol.signing import SigningIdentity


class Membership:
    def __init__(
        self,
        *,
        store: Store,
        logs: RoomLogs,
        catch_up: CatchUp,
        keeper: EpochKeeper,
        presence: PresenceKeeper,
        work: UnitOfWork,
        drops: DropCounter,
        identity: SigningIdentity,
        clock_ms: Callable[[], int],
    ) -> None:
        self._store = store
        self._clock_ms = clock_ms
        self.logs = logs
        self._catch_up = catch_up
        self._keeper = keeper
        self._presence = presence
        self._work = work
        self._drops = drops
        self.own_key = identity.public_key
        self.member_key = MemberKeyPair.from_identity(identity)
        self.own_commits: dict[str, tuple[bytes, tuple[bytes, ...]]] = {}
        """Per room: our last commit, and whom it removed (made again should it lose)."""
        self.rekey_again: Callable[[str, list[str]], None] = lambda room, names: None

    def forget(self, room: Room) -> None:
        self.own_commits.pop(room.name, None)
        self.logs.forget(room)

    def presence_records(self, room: Room) -> list[Record]:
        """Our join, with every presence batch until a commit adds us."""
        join = self.logs.own_join(room)
        if join is None:
            return []
        head = self.logs.head(room)
        if head is not None and head.member(self.own_key) is not None:
            return []
        return [join]

    # ------------------------------------------------------------------ receiving
    def on_batch(self, room: Room, batch: Batch, payload: bytes, now_ms: int) -> None:
        """Every verified batch of a room (the inbox calls it first)."""
        if room.epoch is None:
            return
        current = batch.room_tag == room.epoch.tag
        heard = self.logs.hears(room, batch.sender_key)
        book = self.logs.book(room)
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
        mine = batch.sender_key == self.own_key
        if not current and not mine and self._catch_up.may_ask(room, batch):
            self._catch_up.answer_later(room, batch.room_tag)

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
        book = self.logs.book(room)
        if book.knows(cid):
            self._catch_up.answered(room, batch.room_tag)
            return
        epoch_state = self.logs.tags(room).get(batch.room_tag)
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
        self.logs.keep(
            room, LogRow(room.name, cid, COMMIT, packed, payload, topic.topic if topic else None)
        )
        if epoch_state is None:
            self.logs.tag_state(room, batch.room_tag, commit.prev)
        self.follow(room, now_ms)

    def _on_join(self, room: Room, batch: Batch, join: Join, current: bool) -> None:
        if batch.sender_key == self.own_key or not current:
            return
        book = self.logs.book(room)
        state_hash = self.logs.tags(room).get(batch.room_tag)
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
            body = pack_member(state.hash, member)
            self.logs.keep(room, LogRow(room.name, b"join:" + member.sign_key, JOIN, body))
            self._pin(room, member)
            inviter = state.member(join.inviter_key)
            self._notice(
                room,
                "member_joined",
                f"{member.name} joined {room.name}, invited by "
                f"{inviter.name if inviter else 'an admin'}",
                sender=member.name,
            )
        online = any(
            isinstance(r, Presence) and r.state == PresenceState.ONLINE for r in batch.records
        )
        if added or online:  # not at every "still here" of a newcomer
            self._catch_up.roster_later(room, state)

    def _on_roster(self, room: Room, state: RoomState, now_ms: int) -> None:
        self._catch_up.roster_seen(room, state.hash)
        if room.epoch is None or not self.logs.book(room).anchor_on(state):
            return
        self.logs.anchored_on_roster(room, state, room.epoch.tag)
        admins = ", ".join(m.name for m in state.members if m.role == Role.ADMIN)
        self._notice(room, "admitted", f"joined {room.name}: its admins are {admins}")
        for m in state.members:
            self._pin(room, m)
        # Again, now that we can judge joins: the others' replies carry theirs.
        self._presence.announce(room, PresenceState.ONLINE)
        self.follow(room, now_ms)

    # ------------------------------------------------------------------ following the head
    def follow(self, room: Room, now_ms: int) -> None:
        """Move the room along the log's winning path: open each new epoch's box,
        switch, and say what changed; stop where we are not in the room."""
        book = self.logs.book(room)
        held = {h: t for t, h in self.logs.tags(room).items()}
        for cand in book.path():
            if cand.state.hash in held:
                continue
            prev_tag = held.get(cand.prev)
            row = self.logs.row(room, cand.id)
            if prev_tag is None or row is None:
                return
            author, new_epoch, tag, commit, rekey = unpack_commit(row.body)
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
            self.logs.tag_state(room, keys.tag, cand.state.hash)
            held[cand.state.hash] = keys.tag
            self._keeper.switch(room, keys, secret, now_ms)
            self.logs.clear_out(room)
            for m in cand.state.members:
                self._pin(room, m)
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
        before = self.logs.book(room).state(prev)
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
        expected = self.logs.own_join(room) is not None and not removed
        if removed:
            kind, why = "removed", f"{who} removed you from {room.name}"
        elif expected and self.logs.book(room).anchor is not None:
            kind, why = (
                "moved_on",
                f"{room.name} has moved on since your invite ({who} rekeyed it): ask {who} for "
                "a new one",
            )
        else:
            kind, why = "left_out", f"{who} rekeyed {room.name} without you"
        if not self.logs.set_out(room, why):
            return
        self._notice(
            room,
            kind,
            f"{why}: nothing said there from now on reaches you; run `chatctl leave "
            f"{room.name}` to forget it",
            sender=who,
        )

    def _again_if_lost(self, room: Room) -> None:
        mine = self.own_commits.get(room.name)
        head = self.logs.head(room)
        if mine is None or head is None:
            return
        cid, removed = mine
        if any(c.id == cid for c in self.logs.book(room).path()):
            return
        still = [m.name for m in head.members if m.sign_key in removed]
        del self.own_commits[room.name]
        if still and head.is_admin(self.own_key):
            asyncio.get_running_loop().call_soon(self.rekey_again, room.name, still)

    def _pin(self, room: Room, member: Member) -> None:
        """A member's name is pinned to its key by the room's state, not on first use;
        the key is one `trust` can name (docs/security.md)."""
        memory = self._store.memory
        memory.set_pin(room.name, member.name, member.sign_key)
        memory.saw_key(room.name, member.name, member.sign_key, self._clock_ms())

    def _notice(self, room: Room, kind: str, text: str, **extra: Any) -> None:
        # Held with the batch's texts, published after its commit (or now, outside one).
        self._work.publish(room.name, notice_event(room.name, kind, text, **extra))
