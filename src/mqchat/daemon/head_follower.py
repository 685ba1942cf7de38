"""Following a room's membership log: the room moves to the epoch the log's head
names (docs/protocol.md §27.2).

Each new state on the winning path opens its key box, switches the epoch
(mqchat.daemon.epoch_keeper) and says what changed (a notice); where the head
leaves us out, the room says so and takes no more of our messages. Used by what
receives commits (mqchat.daemon.membership) and by what makes them
(mqchat.daemon.rekeying), so both move the room the same way.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from mqchat.daemon.drops import DropCounter
from mqchat.daemon.epoch_keeper import EpochKeeper
from mqchat.daemon.presence import PresenceKeeper
from mqchat.daemon.room_logs import RoomLogs, unpack_commit
from mqchat.daemon.rooms import Room
from mqchat.daemon.store import Store
from mqchat.daemon.unit_of_work import UnitOfWork
from mqchat.errors import ProtocolError
from mqchat.protocol.epochs import EpochKeys
from mqchat.protocol.ipc_events import notice_event
from mqchat.protocol.keybox import MemberKeyPair, secret_for
from mqchat.protocol.membership import Commit, OpKind
from mqchat.protocol.records import PresenceState
from mqchat.protocol.roster import Member, RoomState, commitment
from mqchat.protocol.signing import SigningIdentity


class HeadFollower:
    def __init__(
        self,
        *,
        store: Store,
        logs: RoomLogs,
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
        self._keeper = keeper
        self._presence = presence
        self._work = work
        self._drops = drops
        self.own_key = identity.public_key
        self.member_key = MemberKeyPair.from_identity(identity)

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
                self.notice(
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
                self.pin(room, m)
            self._presence.announce(room, PresenceState.ONLINE)
            self.notice(
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
        self.notice(
            room,
            kind,
            f"{why}: nothing said there from now on reaches you; run `chatctl leave "
            f"{room.name}` to forget it",
            sender=who,
        )

    def pin(self, room: Room, member: Member) -> None:
        """A member's name is pinned to its key by the room's state, not on first use;
        the key is one `trust` can name (docs/security.md)."""
        memory = self._store.memory
        memory.set_pin(room.name, member.name, member.sign_key)
        memory.saw_key(room.name, member.name, member.sign_key, self._clock_ms())

    def notice(self, room: Room, kind: str, text: str, **extra: Any) -> None:
        # Held with the batch's texts, published after its commit (or now, outside one).
        self._work.publish(room.name, notice_event(room.name, kind, text, **extra))
