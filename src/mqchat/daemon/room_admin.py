"""The room methods of chatd: create, invite, join by invite, rekey, members.

Each turns a request into membership records (mqchat.protocol.membership) and
hands them to the same path a received one takes (mqchat.daemon.membership):
a rekey we make is offered to our own log, judged by the same rules, and
followed by opening our own key box, so sending and receiving cannot disagree.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from mqchat.daemon.catch_up import CatchUp
from mqchat.daemon.epoch_keeper import EpochKeeper, prefix_of
from mqchat.daemon.membership import Membership
from mqchat.daemon.presence import PresenceKeeper
from mqchat.daemon.room_logs import pack_commit
from mqchat.daemon.rooms import Room, RoomRegistry
from mqchat.daemon.store import Store
from mqchat.daemon.store.epochs import CURRENT, EpochRow
from mqchat.daemon.store.room_log import COMMIT, LogRow
from mqchat.daemon.unit_of_work import UnitOfWork
from mqchat.errors import MqchatError, UsageError
from mqchat.protocol import envelope
from mqchat.protocol.batch import seal_batch
from mqchat.protocol.epochs import DEFAULT_CIPHER, EpochKeys, new_epoch_secret
from mqchat.protocol.fingerprints import fingerprint
from mqchat.protocol.invite import Admission, Invite, encode_invite, parse_invite
from mqchat.protocol.ipc import notice_event
from mqchat.protocol.keybox import build_rekey, usable_member_key
from mqchat.protocol.limits import normalize_name, normalize_room
from mqchat.protocol.membership import (
    Commit,
    Join,
    Op,
    OpKind,
    Refused,
    admission_message,
    apply_ops,
    commit_id,
    join_message,
)
from mqchat.protocol.records import PresenceState, record_body
from mqchat.protocol.room_log import Offered
from mqchat.protocol.roster import NO_STATE, Member, Role, RoomState, commitment
from mqchat.protocol.signing import SigningIdentity

log = logging.getLogger(__name__)


class RekeyRefused(MqchatError):
    """The rekey was not made."""


class RoomAdmin:
    def __init__(
        self,
        *,
        store: Store,
        rooms: RoomRegistry,
        keeper: EpochKeeper,
        membership: Membership,
        catch_up: CatchUp,
        presence: PresenceKeeper,
        work: UnitOfWork,
        identity: SigningIdentity,
        name: str,
        topic_prefix: str,
        clock_ms: Callable[[], int],
        random: Callable[[int], bytes],
    ) -> None:
        self._store = store
        self._rooms = rooms
        self._keeper = keeper
        self._membership = membership
        self._logs = membership.logs
        self._catch_up = catch_up
        self._presence = presence
        self._work = work
        self._identity = identity
        self._own_key = identity.public_key
        self._name = name
        self._prefix = topic_prefix
        self._clock_ms = clock_ms
        self._random = random

    # ------------------------------------------------------------------ joining
    def _check_not_joined(self, name: str) -> None:
        if self._rooms.get(name) is not None:
            raise UsageError(
                f"you have already joined {name!r}; run `chatctl leave {name}` first, or pick "
                "another name"
            )

    def _enter(self, room: Room, row: EpochRow) -> None:
        room.last_seq = self._store.messages.last_seq(room.name)
        self._store.rooms.save(room.to_record())
        self._rooms.add(room)
        self._keeper.enter(room, row)
        self._store.memory.set_pin(room.name, self._name, self._own_key)
        if self._keeper.link is not None:
            for topic in room.topics:
                self._keeper.link.subscribe(topic, room.qos)

    def create(self, room: str, cipher: str | None) -> dict[str, Any]:
        """A room whose secret is 256 random bits; its creator is its first admin."""
        name = normalize_room(room)
        chosen = envelope.check_cipher(cipher or DEFAULT_CIPHER)
        self._check_not_joined(name)
        secret = new_epoch_secret(self._random)
        keys = EpochKeys(secret, 0)
        topic = keys.topic(self._prefix)
        new = Room.random_key_room(name, chosen, keys, topic, joined_ms=self._clock_ms())
        self._enter(new, EpochRow(name, keys.tag, 0, CURRENT, secret, topic))
        me = Member(
            self._own_key, self._membership.member_key.public_key, Role.ADMIN, self._name, 0
        )
        self._logs.anchor(new, RoomState(0, NO_STATE, commitment(secret, 0), (me,)), keys.tag)
        self._presence.announce(new, PresenceState.ONLINE)
        self._notice(new, "joined", f"created {new.name}: you are its admin")
        log.info("created a room (%s)", chosen)
        return {**self._info(new), "created": True}

    def invite(self, room: str) -> dict[str, Any]:
        r = self._rooms.require(room)
        if r.legacy:
            raise UsageError("a legacy room has no invites: its passphrase is its key")
        current = self._keeper.current(r)
        if current.secret is None:  # pragma: no cover - the current epoch has its secret
            raise ValueError("current epoch without a secret")
        admission = None
        head = self._logs.head(r)
        if head is not None:
            if not head.is_admin(self._own_key):
                admins = ", ".join(m.name for m in head.members if m.role == Role.ADMIN)
                raise RekeyRefused(f"only an admin of {r.name} can invite: ask {admins}")
            seed = self._random(32)
            ticket = SigningIdentity.from_private_bytes(seed)
            signature = self._identity.sign(
                admission_message(head.hash, ticket.public_key, Role.MEMBER)
            )
            admission = Admission(head.hash, seed, signature)
        line = encode_invite(
            Invite(
                room=r.name,
                epoch=current.epoch,
                secret=current.secret,
                cipher=r.cipher,
                topic_prefix=prefix_of(current.topic),
                inviter_key=self._own_key,
                admission=admission,
            )
        )
        return {"room": r.name, "epoch": current.epoch, "invite": line}

    def join_invite(self, invite: str) -> dict[str, Any]:
        """Join the room an invite names, at its epoch (docs/protocol.md §18, §26)."""
        parsed = parse_invite(invite)
        keys = EpochKeys(parsed.secret, parsed.epoch)
        old = self._rooms.get(parsed.room)
        if old is not None:
            known = {old.epoch.tag if old.epoch else None, *(g.keys.tag for g in old.grace)}
            if keys.tag in known and self._logs.out_reason(old) is None:
                return {**self._info(old), "joined": False}
            if self._logs.out_reason(old) is None:
                raise UsageError(
                    f"you have already joined {parsed.room!r} with another key; run "
                    f"`chatctl leave {parsed.room}` first"
                )
            raise UsageError(
                f"{self._logs.out_reason(old)}; run `chatctl leave {parsed.room}` "
                "before joining it again"
            )
        topic = keys.topic(parsed.topic_prefix)
        new = Room.random_key_room(
            parsed.room, parsed.cipher, keys, topic, joined_ms=self._clock_ms()
        )
        row = EpochRow(new.name, keys.tag, parsed.epoch, CURRENT, parsed.secret, topic)
        self._enter(new, row)
        if parsed.admission is not None:
            adm = parsed.admission
            ticket = SigningIdentity.from_private_bytes(adm.ticket_seed)
            x25519 = self._membership.member_key.public_key
            join = Join(
                adm.state_hash,
                parsed.inviter_key,
                ticket.public_key,
                Role.MEMBER,
                adm.signature,
                x25519,
                ticket.sign(join_message(adm.state_hash, self._own_key, x25519, self._name)),
            )
            self._logs.expect(new, adm.state_hash, join)
            self._catch_up.join_again_later(new)
        self._presence.announce(new, PresenceState.ONLINE)
        self._notice(new, "joined", f"joined {new.name}")
        log.info("joined a room by invite (%s)", parsed.cipher)
        return {
            **self._info(new),
            "joined": True,
            "inviter_fingerprint": parsed.inviter_fingerprint,
        }

    # ------------------------------------------------------------------ rekeys
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
        link = self._keeper.link
        if link is None or not link.connected:
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
        # Published once the commit is stored: a rekey that did not commit never left.
        topic = r.v2_topic

        def publish() -> None:
            link.publish(topic, payload, 1)

        self._work.after_commit(publish)
        gone = {op.sign_key for op in ops if op.kind == OpKind.REMOVE}
        self._membership.own_commits[r.name] = (cid, tuple(gone))
        self._membership.follow(r, self._clock_ms())
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
            ops = [Op(OpKind.ADD, self._own_key, self._membership.member_key.public_key,
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

    def forget(self, room: Room) -> None:
        self._keeper.forget(room)
        self._membership.forget(room)

    def _notice(self, room: Room, kind: str, text: str, **extra: Any) -> None:
        # Held with the batch's texts, published after its commit (or now, outside one).
        self._work.publish(room.name, notice_event(room.name, kind, text, **extra))

    def _info(self, room: Room) -> dict[str, Any]:
        return {
            "name": room.name,
            "cipher": room.cipher,
            "legacy": False,
            "weak": False,
            "last_seq": room.last_seq,
            "warning": None,
            "epoch": room.epoch.epoch if room.epoch else 0,
        }
