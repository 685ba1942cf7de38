"""The room methods of chatd: create, invite, join by invite (rekey: mqchat.daemon.rekeying).

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
from mqchat.daemon.head_follower import HeadFollower
from mqchat.daemon.presence import PresenceKeeper
from mqchat.daemon.publisher import LinkEffects
from mqchat.daemon.rekeying import RekeyRefused
from mqchat.daemon.room_logs import RoomLogs
from mqchat.daemon.rooms import Room, RoomRegistry
from mqchat.daemon.store import Store
from mqchat.daemon.store.epochs import CURRENT, EpochRow
from mqchat.daemon.unit_of_work import UnitOfWork
from mqchat.errors import UsageError
from mqchat.protocol import envelope
from mqchat.protocol.epochs import DEFAULT_CIPHER, EpochKeys, new_epoch_secret
from mqchat.protocol.invite import Admission, Invite, encode_invite, parse_invite
from mqchat.protocol.ipc_events import notice_event
from mqchat.protocol.limits import normalize_room
from mqchat.protocol.membership import (
    Join,
    admission_message,
    join_message,
)
from mqchat.protocol.records import PresenceState
from mqchat.protocol.roster import NO_STATE, Member, Role, RoomState, commitment
from mqchat.protocol.signing import SigningIdentity

log = logging.getLogger(__name__)


class RoomAdmin:
    def __init__(
        self,
        *,
        store: Store,
        rooms: RoomRegistry,
        keeper: EpochKeeper,
        logs: RoomLogs,
        follower: HeadFollower,
        link: LinkEffects,
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
        self._logs = logs
        self._follower = follower
        self._link = link
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
        for topic in room.topics:
            self._link.subscribe(topic, room.qos)

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
        me = Member(self._own_key, self._follower.member_key.public_key, Role.ADMIN, self._name, 0)
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
            x25519 = self._follower.member_key.public_key
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
