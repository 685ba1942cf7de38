"""Room membership on the daemon's side: what arrives, judged, kept and followed.

The rules are pure (mqchat.protocol.membership, room_log); this module feeds
them each verified batch's membership records, keeps what they accept
(mqchat.daemon.room_logs), moves the room to the epoch the log's head names
(mqchat.daemon.epoch_keeper), and tells people what happened (notices). A member
left behind is sent the way on by mqchat.daemon.catch_up.
"""

from __future__ import annotations

from collections.abc import Callable

from mqchat.daemon.catch_up import CatchUp
from mqchat.daemon.drops import DropCounter
from mqchat.daemon.epoch_keeper import EpochKeeper
from mqchat.daemon.head_follower import HeadFollower
from mqchat.daemon.presence import PresenceKeeper
from mqchat.daemon.room_logs import RoomLogs, pack_commit, pack_member
from mqchat.daemon.rooms import Room
from mqchat.daemon.store.room_log import COMMIT, JOIN, LogRow
from mqchat.protocol.batch import Batch
from mqchat.protocol.keybox import usable_member_key
from mqchat.protocol.membership import (
    Commit,
    Join,
    Refused,
    Roster,
    check_join,
    commit_id,
)
from mqchat.protocol.records import Presence, PresenceState, Rekey, record_body
from mqchat.protocol.room_log import Offered
from mqchat.protocol.roster import Role, RoomState
from mqchat.protocol.signing import SigningIdentity


class Membership:
    def __init__(
        self,
        *,
        logs: RoomLogs,
        follower: HeadFollower,
        catch_up: CatchUp,
        keeper: EpochKeeper,
        presence: PresenceKeeper,
        drops: DropCounter,
        identity: SigningIdentity,
        after_follow: Callable[[Room], None],
    ) -> None:
        """``after_follow``: the room followed a new head (mqchat.daemon.rekeying makes
        our rekey again should it have lost)."""
        self.logs = logs
        self._follower = follower
        self._catch_up = catch_up
        self._keeper = keeper
        self._presence = presence
        self._drops = drops
        self.own_key = identity.public_key
        self._after_follow = after_follow

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
            self._catch_up.answer_later(room, batch.room_tag, batch.sender_key)

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
        self._follower.follow(room, now_ms)
        self._after_follow(room)

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
            self._follower.pin(room, member)
            inviter = state.member(join.inviter_key)
            self._follower.notice(
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
        self._follower.notice(room, "admitted", f"joined {room.name}: its admins are {admins}")
        for m in state.members:
            self._follower.pin(room, m)
        # Again, now that we can judge joins: the others' replies carry theirs.
        self._presence.announce(room, PresenceState.ONLINE)
        self._follower.follow(room, now_ms)
        self._after_follow(room)
