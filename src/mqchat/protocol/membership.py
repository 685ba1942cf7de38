"""Membership records and the rules that judge them (docs/protocol.md §25-§28).

Three record kinds carry membership: a **commit** (kind 8, with a rekey record
in the same batch) moves a room from one state to the next epoch's; a **join**
(kind 9) is a newcomer's admission, signed by the admin who invited it; a
**roster** (kind 10) is a state in full, for a newcomer to anchor on. The rules
are pure functions of (state, record): they refuse with ``Refused`` (a
ProtocolError with a counter name) or return the new state. No I/O, no clock.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import IntEnum
from typing import Final

from mqchat.errors import ProtocolError
from mqchat.protocol.limits import KEY_BYTES
from mqchat.protocol.roster import (
    MAX_MEMBERS,
    MAX_NAME_BYTES,
    NO_STATE,
    Member,
    Role,
    RoomState,
    decode_roster,
)
from mqchat.protocol.signing import verify

SIGNATURE_BYTES: Final = 64
COMMIT_ID_LABEL: Final = b"mqchat/v2 commit id\x00"
ADMISSION_LABEL: Final = b"mqchat/v2 admission\x00"
JOIN_LABEL: Final = b"mqchat/v2 join\x00"

_COMMIT_HEAD = struct.Struct(f">{KEY_BYTES}s{KEY_BYTES}sH")
_JOIN = struct.Struct(
    f">{KEY_BYTES}s{KEY_BYTES}s{KEY_BYTES}sB{SIGNATURE_BYTES}s{KEY_BYTES}s{SIGNATURE_BYTES}s"
)


class Refused(ProtocolError):
    """A membership record that the room's rules refuse; ``reason`` names its counter."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class OpKind(IntEnum):
    ADD = 1
    REMOVE = 2
    ROLE = 3


@dataclass(frozen=True, slots=True)
class Op:
    kind: OpKind
    sign_key: bytes
    x25519_key: bytes = b""
    role: Role = Role.MEMBER
    name: str = ""


@dataclass(frozen=True, slots=True)
class Commit:
    """Move from state ``prev`` to the next epoch, whose secret ``commitment`` names."""

    prev: bytes
    commitment: bytes
    ops: tuple[Op, ...] = ()

    @property
    def genesis(self) -> bool:
        return self.prev == NO_STATE


@dataclass(frozen=True, slots=True)
class Join:
    """A newcomer's admission: the inviter's signature over a ticket, and the ticket's
    signature over the newcomer's keys and name (§26)."""

    state_hash: bytes
    inviter_key: bytes
    ticket_key: bytes
    role: Role
    admission: bytes
    x25519_key: bytes
    ticket_signature: bytes


@dataclass(frozen=True, slots=True)
class Roster:
    """A room state in full (§25.1), sent to a newcomer that asks by joining."""

    state: RoomState


# -- encoding ------------------------------------------------------------------


def _op_bytes(op: Op) -> bytes:
    if len(op.sign_key) != KEY_BYTES:
        raise ProtocolError("an op names a 32-byte signing key")
    if op.kind == OpKind.ADD:
        name = op.name.encode()
        if len(op.x25519_key) != KEY_BYTES or not 1 <= len(name) <= MAX_NAME_BYTES:
            raise ProtocolError("an add names a member key and a name of 1 to 64 bytes")
        head = bytes((op.kind,)) + op.sign_key + op.x25519_key
        return head + bytes((Role(op.role), len(name))) + name
    if op.kind == OpKind.REMOVE:
        return bytes((op.kind,)) + op.sign_key
    return bytes((op.kind,)) + op.sign_key + bytes((Role(op.role),))


def commit_body(commit: Commit) -> bytes:
    if len(commit.prev) != KEY_BYTES or len(commit.commitment) != KEY_BYTES:
        raise ProtocolError("a commit's prev and commitment are 32 bytes each")
    if len(commit.ops) > MAX_MEMBERS * 2:
        raise ProtocolError("a commit has too many ops")
    previous = b""
    for op in commit.ops:
        # Sorted by key, one op per key: one commit has one encoding.
        if op.sign_key <= previous:
            raise ProtocolError("a commit's ops must be sorted by key, one per key")
        previous = op.sign_key
    ops = b"".join(_op_bytes(op) for op in commit.ops)
    return _COMMIT_HEAD.pack(commit.prev, commit.commitment, len(commit.ops)) + ops


def join_body(join: Join) -> bytes:
    return _JOIN.pack(
        join.state_hash,
        join.inviter_key,
        join.ticket_key,
        Role(join.role),
        join.admission,
        join.x25519_key,
        join.ticket_signature,
    )


def decode_commit(body: bytes) -> Commit:
    if len(body) < _COMMIT_HEAD.size:
        raise ProtocolError("commit record is truncated")
    prev, commit_hash, count = _COMMIT_HEAD.unpack_from(body)
    at = _COMMIT_HEAD.size
    ops = []
    try:
        for _ in range(count):
            kind = OpKind(body[at])
            key = body[at + 1 : at + 1 + KEY_BYTES]
            at += 1 + KEY_BYTES
            if kind == OpKind.ADD:
                x25519 = body[at : at + KEY_BYTES]
                role, size = body[at + KEY_BYTES], body[at + KEY_BYTES + 1]
                name = body[at + KEY_BYTES + 2 : at + KEY_BYTES + 2 + size].decode()
                at += KEY_BYTES + 2 + size
                ops.append(Op(kind, key, x25519, Role(role), name))
            elif kind == OpKind.REMOVE:
                ops.append(Op(kind, key))
            else:
                ops.append(Op(kind, key, role=Role(body[at])))
                at += 1
    except (IndexError, ValueError, UnicodeDecodeError) as exc:
        raise ProtocolError("commit record has a bad op") from exc
    commit = Commit(prev, commit_hash, tuple(ops))
    if commit_body(commit) != body:
        raise ProtocolError("commit record is not in its one encoding")
    return commit


def decode_join(body: bytes) -> Join:
    if len(body) != _JOIN.size:
        raise ProtocolError(f"join record has {len(body)} bytes, not {_JOIN.size}")
    state_hash, inviter, ticket, role, admission, x25519, ticket_sig = _JOIN.unpack(body)
    try:
        kind = Role(role)
    except ValueError as exc:
        raise ProtocolError("join record has an unknown role") from exc
    return Join(state_hash, inviter, ticket, kind, admission, x25519, ticket_sig)


def decode_roster_record(body: bytes) -> Roster:
    return Roster(decode_roster(body))


# -- ids, admissions -----------------------------------------------------------


def commit_id(*, author: bytes, epoch: int, tag: str, commit: Commit, rekey_body: bytes) -> bytes:
    """Names a commit: its author, the epoch and tag it is published in, and both records."""
    return hashlib.sha256(
        COMMIT_ID_LABEL
        + author
        + struct.pack(">Q", epoch)
        + tag.encode()
        + commit_body(commit)
        + rekey_body
    ).digest()


def admission_message(state_hash: bytes, ticket_key: bytes, role: Role) -> bytes:
    return ADMISSION_LABEL + state_hash + ticket_key + bytes((Role(role),))


def join_message(state_hash: bytes, joiner_key: bytes, x25519_key: bytes, name: str) -> bytes:
    return JOIN_LABEL + state_hash + joiner_key + x25519_key + name.encode()


# -- the rules -----------------------------------------------------------------

Usable = Callable[[bytes], bool]
"""Whether an X25519 public key can be sealed to (mqchat.protocol.keybox.usable_member_key)."""


def _refuse(reason: str, message: str) -> Refused:
    return Refused(reason, message)


def apply_ops(
    state: RoomState | None, ops: Iterable[Op], new_epoch: int, usable: Usable
) -> tuple[Member, ...]:
    """The members after ``ops``; ``state`` None for a genesis commit (adds only)."""
    members = {m.sign_key: m for m in (state.members if state else ())}
    for op in ops:
        current = members.get(op.sign_key)
        if op.kind == OpKind.ADD:
            if current is not None:
                raise _refuse("bad_commit", "a commit adds someone who is a member already")
            if not usable(op.x25519_key):
                raise _refuse("unusable_key", "a commit adds a member key that cannot be used")
            members[op.sign_key] = Member(op.sign_key, op.x25519_key, op.role, op.name, new_epoch)
        elif state is None:
            raise _refuse("bad_commit", "a room's first commit can only add members")
        elif current is None and op.kind == OpKind.REMOVE:
            continue  # refuses a newcomer's admission: it never enters the state
        elif current is None:
            raise _refuse("bad_commit", "a commit changes the role of someone who is no member")
        elif op.kind == OpKind.REMOVE:
            del members[op.sign_key]
        else:
            members[op.sign_key] = Member(
                current.sign_key, current.x25519_key, op.role, current.name, current.since
            )
    return tuple(sorted(members.values()))


def apply_commit(
    state: RoomState | None,
    *,
    author: bytes,
    commit: Commit,
    new_epoch: int,
    recipients: Iterable[bytes],
    usable: Usable,
) -> RoomState:
    """The state a valid commit leads to, or ``Refused`` (docs/protocol.md §27.1).

    ``state`` is the state the commit changes (None: the room had none, a genesis
    commit); ``recipients`` the X25519 keys of the rekey's boxes in the same batch.
    """
    if state is None:
        if not commit.genesis:
            raise _refuse("unknown_state", "a commit of a state this member does not hold")
    else:
        if commit.prev != state.hash:
            raise _refuse("unknown_state", "a commit of another state")
        if new_epoch != state.epoch + 1:
            raise _refuse("bad_commit", "a commit must start the epoch after its state's")
        if not state.is_admin(author):
            raise _refuse("not_admin", "a commit by someone who is not an admin of the room")
    sealed_to = list(recipients)
    members = apply_ops(state, commit.ops, new_epoch, usable)
    if len(members) > MAX_MEMBERS:
        raise _refuse("too_many", f"a room has at most {MAX_MEMBERS} members")
    try:
        new = RoomState(new_epoch, commit.prev, commit.commitment, members)
    except Refused:
        raise
    except ProtocolError as exc:  # nobody left, no admin left, a name twice
        raise _refuse("bad_commit", f"a commit that breaks the room's rules: {exc}") from exc
    if state is None and not new.is_admin(author):
        raise _refuse("bad_commit", "a room's first commit makes its author an admin")
    if new.member(author) is None:
        raise _refuse("bad_commit", "an admin cannot remove itself: leave instead")
    if frozenset(sealed_to) != new.x25519_keys or len(sealed_to) != len(new.members):
        raise _refuse("bad_recipients", "a rekey must be sealed to exactly the room's members")
    return new


def check_join(state: RoomState, *, joiner: bytes, name: str, join: Join, usable: Usable) -> Member:
    """The member a join admits into ``state`` (pending until a commit adds it), or
    ``Refused`` (docs/protocol.md §26)."""
    if join.state_hash != state.hash:
        raise _refuse("stale_invite", "a join into another state of the room")
    if not state.is_admin(join.inviter_key):
        raise _refuse("not_admin", "a join whose invite is not from an admin")
    if not verify(
        join.inviter_key,
        join.admission,
        admission_message(join.state_hash, join.ticket_key, join.role),
    ):
        raise _refuse("bad_join", "a join whose admission signature does not verify")
    if not verify(
        join.ticket_key,
        join.ticket_signature,
        join_message(join.state_hash, joiner, join.x25519_key, name),
    ):
        raise _refuse("bad_join", "a join whose ticket signature does not verify")
    if state.member(joiner) is not None:
        raise _refuse("bad_join", "a join by a member")
    if join.x25519_key in state.x25519_keys or not usable(join.x25519_key):
        raise _refuse("unusable_key", "a join with a member key that cannot be used")
    return Member(joiner, join.x25519_key, join.role, name, state.epoch + 1)


# -- concurrent commits --------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Candidate:
    """A valid commit of a state, and the state it leads to."""

    id: bytes
    author: bytes
    prev: bytes
    state: RoomState
    seniority: tuple[int, bytes]


def winner(candidates: Iterable[Candidate]) -> Candidate | None:
    """The commit of one state that every member follows (docs/protocol.md §27.2).

    A commit that leaves out the author of another beats it (a removal wins over
    anything the removed does at the same point); of the rest, the most senior
    author's (who entered the room first, then the lower key); of one author's,
    the lower id. Nothing here is a number an author can choose to win with: its
    seniority was fixed when it was admitted.
    """
    pool = list(candidates)
    if not pool:
        return None
    excluded = {c.author for c in pool for other in pool if c.author not in other.state.sign_keys}
    eligible = [c for c in pool if c.author not in excluded] or pool
    return min(eligible, key=lambda c: (c.seniority, c.id))
