"""The IPC method ``rekey``: the next epoch with a fresh secret, sealed to exactly
the members the new state keeps (docs/protocol.md §27).

A rekey we make is offered to our own log, judged by the same rules as a received
one (mqchat.protocol.membership) and followed by opening our own key box
(mqchat.daemon.head_follower), so sending and receiving cannot disagree. Should our
commit lose to another admin's, the removal it made is made again on the winner.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from mqchat.daemon.head_follower import HeadFollower
from mqchat.daemon.publisher import LinkEffects
from mqchat.daemon.room_logs import RoomLogs, pack_commit
from mqchat.daemon.rooms import Room, RoomRegistry
from mqchat.daemon.store import Store
from mqchat.daemon.store.room_log import COMMIT, LogRow
from mqchat.daemon.unit_of_work import UnitOfWork
from mqchat.errors import MqchatError, UsageError
from mqchat.protocol.batch import seal_batch
from mqchat.protocol.epochs import new_epoch_secret
from mqchat.protocol.fingerprints import fingerprint
from mqchat.protocol.keybox import build_rekey, usable_member_key
from mqchat.protocol.limits import normalize_name
from mqchat.protocol.membership import Commit, Op, OpKind, Refused, apply_ops, commit_id
from mqchat.protocol.records import record_body
from mqchat.protocol.room_log import Offered
from mqchat.protocol.roster import NO_STATE, Role, RoomState, commitment
from mqchat.protocol.signing import SigningIdentity

log = logging.getLogger(__name__)


class RekeyRefused(MqchatError):
    """The rekey was not made."""


class Rekeying:
    def __init__(
        self,
        *,
        store: Store,
        rooms: RoomRegistry,
        logs: RoomLogs,
        follower: HeadFollower,
        link: LinkEffects,
        work: UnitOfWork,
        identity: SigningIdentity,
        name: str,
        loop: asyncio.AbstractEventLoop,
        clock_ms: Callable[[], int],
        random: Callable[[int], bytes],
    ) -> None:
        self._store = store
        self._rooms = rooms
        self._logs = logs
        self._follower = follower
        self._link = link
        self._work = work
        self._identity = identity
        self._own_key = identity.public_key
        self._name = name
        self._loop = loop
        self._clock_ms = clock_ms
        self._random = random
        self._own_commits: dict[str, tuple[bytes, tuple[bytes, ...]]] = {}
        """Per room: our last commit, and whom it removed (made again should it lose)."""

    def forget(self, room: Room) -> None:
        self._own_commits.pop(room.name, None)

    def rekey(
        self,
        room: str,
        remove: list[str] | None = None,
        admins: list[str] | None = None,
        members: list[str] | None = None,
        *,
        again: bool = False,
    ) -> dict[str, Any]:
        """Start the next epoch with a fresh secret, sealed to exactly the members the
        new state keeps (docs/protocol.md §27); ``admins`` and ``members`` change roles."""
        r = self._rooms.require(room)
        if r.legacy or r.epoch is None or r.v2_topic is None:
            raise UsageError("a legacy room cannot be rekeyed: its passphrase is its key")
        link = self._link
        if not link.connected:
            raise RekeyRefused(
                "chatd is not connected to the broker, and a rekey must reach the room now: "
                "try again once `chatctl status` says connected"
            )
        out = self._logs.out_reason(r)
        if out is not None:
            raise RekeyRefused(out)
        removed = sorted({normalize_name(n) for n in remove or ()})
        if self._name in removed:
            raise UsageError(f"you cannot remove yourself; run `chatctl leave {r.name}`")
        book = self._logs.book(r)
        head = book.head()
        ops, unreachable = self._ops(r, head, removed, again=again)
        ops = self._roles(r, head, ops, admins or [], members or [])
        secret = new_epoch_secret(self._random)
        new_epoch = r.epoch.epoch + 1
        kept = apply_ops(head, ops, new_epoch, usable_member_key)
        commit = Commit(head.hash if head else NO_STATE, commitment(secret, new_epoch), ops)
        record = build_rekey(
            secret,
            [m.x25519_key for m in kept],
            tag=r.epoch.tag,
            new_epoch=new_epoch,
            rekeyer_key=self._own_key,
            random=self._random,
        )
        payload = seal_batch(
            r.epoch,
            self._identity,
            name=self._name,
            records=[commit, record],
            sent_ms=self._clock_ms(),
            random=self._random,
            cipher=r.cipher,
        )
        cid = commit_id(
            author=self._own_key,
            epoch=r.epoch.epoch,
            tag=r.epoch.tag,
            commit=commit,
            rekey_body=record_body(record)[1],
        )
        try:
            book.offer(Offered(cid, self._own_key, commit, new_epoch, record.recipients))
        except Refused as exc:
            raise RekeyRefused(f"the room's rules refuse this rekey: {exc}") from exc
        packed = pack_commit(self._own_key, new_epoch, r.epoch.tag, commit, record)
        self._logs.keep(r, LogRow(r.name, cid, COMMIT, packed, payload, r.v2_topic))
        if head is None:
            self._logs.tag_state(r, r.epoch.tag, NO_STATE)
        # Published once the commit is stored (the link holds it until then): a
        # rekey that did not commit never left.
        link.publish(r.v2_topic, payload, 1)
        gone = {op.sign_key for op in ops if op.kind == OpKind.REMOVE}
        self._own_commits[r.name] = (cid, tuple(gone))
        self._follower.follow(r, self._clock_ms())
        log.info("rekeyed a room: epoch %d, %d members", new_epoch, len(kept))
        return {
            "room": r.name,
            "epoch": new_epoch,
            "sent_to": [
                {
                    "name": m.name,
                    "fingerprint": fingerprint(m.sign_key),
                    "you": m.name == self._name,
                }
                for m in kept
            ],
            "removed": removed,
            "admins": sorted(m.name for m in kept if m.role == Role.ADMIN),
            "unreachable": unreachable,
        }

    def _ops(
        self, room: Room, head: RoomState | None, removed: list[str], *, again: bool
    ) -> tuple[tuple[Op, ...], list[str]]:
        """What the commit changes: removals, and the newcomers admitted meanwhile; in a
        room with no state yet, everyone whose member key was heard (§27.5)."""
        if head is None:
            heard = {m.name: m for m in self._store.members.in_room(room.name)}
            unknown = [n for n in removed if n not in heard]
            if unknown and not again:
                raise UsageError(
                    f"no member named {', '.join(repr(n) for n in unknown)} in {room.name!r}; "
                    f"`chatctl members {room.name}` lists them"
                )
            ops = [Op(OpKind.ADD, self._own_key, self._follower.member_key.public_key,
                      Role.ADMIN, self._name)]  # fmt: skip
            taken = {self._name}
            unreachable = []
            for m in heard.values():
                if m.name in removed or m.name in taken or m.sender_key == self._own_key:
                    continue
                if m.x25519_key is None or not usable_member_key(m.x25519_key):
                    unreachable.append(m.name)
                    continue
                taken.add(m.name)
                ops.append(Op(OpKind.ADD, m.sender_key, m.x25519_key, Role.MEMBER, m.name))
            return tuple(sorted(ops, key=lambda op: op.sign_key)), sorted(unreachable)
        if not head.is_admin(self._own_key):
            admins = ", ".join(m.name for m in head.members if m.role == Role.ADMIN)
            raise RekeyRefused(f"only an admin of {room.name} can rekey it: ask {admins}")
        pending = self._logs.book(room).pending(head.hash)
        known = {m.name for m in (*head.members, *pending)}
        unknown = [n for n in removed if n not in known]
        if unknown and not again:
            raise UsageError(
                f"no member named {', '.join(repr(n) for n in unknown)} in {room.name!r}; "
                f"`chatctl members {room.name}` lists them"
            )
        by_name = {m.name: m for m in (*pending, *head.members)}
        ops = [Op(OpKind.REMOVE, by_name[n].sign_key) for n in removed if n in by_name]
        names = {m.name for m in head.members}
        for joiner in pending:
            # A newcomer named in --remove is not added: its admission is refused.
            if joiner.name not in names and joiner.name not in removed:
                names.add(joiner.name)
                ops.append(Op(OpKind.ADD, joiner.sign_key, joiner.x25519_key, joiner.role,
                              joiner.name))  # fmt: skip
        return tuple(sorted(ops, key=lambda op: op.sign_key)), []

    def _roles(
        self,
        room: Room,
        head: RoomState | None,
        ops: tuple[Op, ...],
        admins: list[str],
        members: list[str],
    ) -> tuple[Op, ...]:
        """Role changes: a member made admin, or an admin made member (§25.2)."""
        if not admins and not members:
            return ops
        if head is None:
            raise UsageError(
                f"{room.name} has no admins yet: its first `chatctl rekey` makes you its admin"
            )
        wanted = {normalize_name(n): Role.ADMIN for n in admins}
        wanted.update({normalize_name(n): Role.MEMBER for n in members})
        changed = list(ops)
        for name, role in wanted.items():
            m = head.by_name(name)
            if m is None:
                raise UsageError(
                    f"no member named {name!r} in {room.name!r}; `chatctl members {room.name}` "
                    "lists them"
                )
            if m.role != role and all(op.sign_key != m.sign_key for op in ops):
                changed.append(Op(OpKind.ROLE, m.sign_key, role=role))
        return tuple(sorted(changed, key=lambda op: op.sign_key))

    def again_if_lost(self, room: Room) -> None:
        """The room followed a new head: if our last commit is not on its path and
        whom it removed is still in, make the removal again on the winner (§27.2)."""
        mine = self._own_commits.get(room.name)
        head = self._logs.head(room)
        if mine is None or head is None:
            return
        cid, removed = mine
        if any(c.id == cid for c in self._logs.book(room).path()):
            return
        still = [m.name for m in head.members if m.sign_key in removed]
        del self._own_commits[room.name]
        if still and head.is_admin(self._own_key):
            self._loop.call_soon(self._again, room.name, still)

    def _again(self, room: str, removed: list[str]) -> None:
        """Our rekey lost to another (§27.2): make it again on the winner, or the removal
        is undone."""
        try:
            with self._work.batch():
                self.rekey(room, removed, again=True)
        except MqchatError as exc:
            log.warning("could not make a lost rekey again: %s", exc.message)
