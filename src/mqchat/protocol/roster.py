"""A room's membership state: who is in, with which keys and roles (docs/protocol.md §25).

A ``RoomState`` is the state of one epoch of a room under the membership model:
its members (Ed25519 signing key, X25519 member key, role, name, the epoch they
joined at), the hash of the state it came from and the commitment to the
epoch's secret. It has one canonical encoding, the *roster*, and its hash names
it: a commit says which state it changes by that hash, and an invite says which
state it admits into. Pure: no I/O, no clock.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass
from enum import IntEnum
from typing import Final

from mqchat.errors import ProtocolError
from mqchat.protocol.limits import KEY_BYTES, MAX_INT

MAX_MEMBERS: Final = 256
"""Members of one room state: a rekey reaches each in one batch (256 key boxes)."""
MAX_NAME_BYTES: Final = 64
STATE_LABEL: Final = b"mqchat/v2 room state\x00"
COMMITMENT_LABEL: Final = b"mqchat/v2 epoch secret\x00"
NO_STATE: Final = bytes(KEY_BYTES)
"""The ``prev`` of a genesis commit: the room had no membership state before it."""

_HEAD = struct.Struct(f">Q{KEY_BYTES}s{KEY_BYTES}sH")
_ENTRY = struct.Struct(f">{KEY_BYTES}s{KEY_BYTES}sBQB")


class Role(IntEnum):
    """What a member may do: members talk; admins also invite, add, remove and rekey."""

    MEMBER = 1
    ADMIN = 2


@dataclass(frozen=True, slots=True, order=True)
class Member:
    sign_key: bytes
    x25519_key: bytes
    role: Role
    name: str
    since: int
    """The epoch at which the member entered the state (its seniority)."""

    @property
    def seniority(self) -> tuple[int, bytes]:
        """Lower is more senior: who entered first, then the lower key."""
        return (self.since, self.sign_key)


def commitment(secret: bytes, epoch: int) -> bytes:
    """SHA-256("mqchat/v2 epoch secret" 0x00 || uint64(epoch) || secret): binds a commit
    to its secret, so that every box must hold the same one (§25.3)."""
    return hashlib.sha256(COMMITMENT_LABEL + struct.pack(">Q", epoch) + secret).digest()


@dataclass(frozen=True, slots=True)
class RoomState:
    """The membership of one epoch; ``members`` sorted by signing key."""

    epoch: int
    prev: bytes
    commitment: bytes
    members: tuple[Member, ...]

    def __post_init__(self) -> None:
        check_members(self.members)
        if not 0 <= self.epoch <= MAX_INT:
            raise ProtocolError(f"epoch {self.epoch} is outside 0..{MAX_INT}")
        if len(self.prev) != KEY_BYTES or len(self.commitment) != KEY_BYTES:
            raise ProtocolError("a state's prev and commitment are 32 bytes each")

    def member(self, sign_key: bytes) -> Member | None:
        for m in self.members:
            if m.sign_key == sign_key:
                return m
        return None

    def by_name(self, name: str) -> Member | None:
        for m in self.members:
            if m.name == name:
                return m
        return None

    def is_admin(self, sign_key: bytes) -> bool:
        m = self.member(sign_key)
        return m is not None and m.role == Role.ADMIN

    @property
    def sign_keys(self) -> frozenset[bytes]:
        return frozenset(m.sign_key for m in self.members)

    @property
    def x25519_keys(self) -> frozenset[bytes]:
        return frozenset(m.x25519_key for m in self.members)

    def encode(self) -> bytes:
        """The roster: the state's one encoding (§25.1)."""
        parts = [_HEAD.pack(self.epoch, self.prev, self.commitment, len(self.members))]
        for m in self.members:
            name = m.name.encode()
            parts.append(_ENTRY.pack(m.sign_key, m.x25519_key, m.role, m.since, len(name)) + name)
        return b"".join(parts)

    @property
    def hash(self) -> bytes:
        return hashlib.sha256(STATE_LABEL + self.encode()).digest()


def check_members(members: tuple[Member, ...]) -> None:
    """1 to 256 members, sorted by signing key, no key or name twice, an admin among them."""
    if not 1 <= len(members) <= MAX_MEMBERS:
        raise ProtocolError(f"a room state has 1 to {MAX_MEMBERS} members, not {len(members)}")
    previous = b""
    names: set[str] = set()
    x25519: set[bytes] = set()
    for m in members:
        if len(m.sign_key) != KEY_BYTES or m.sign_key <= previous:
            raise ProtocolError("members must be sorted by signing key, without repeats")
        if len(m.x25519_key) != KEY_BYTES or m.x25519_key in x25519:
            raise ProtocolError("each member has its own 32-byte member key")
        if not 1 <= len(m.name.encode()) <= MAX_NAME_BYTES or m.name in names:
            raise ProtocolError("each member has its own name of 1 to 64 bytes")
        if not 0 <= m.since <= MAX_INT:
            raise ProtocolError("a member's epoch is out of range")
        Role(m.role)
        previous = m.sign_key
        names.add(m.name)
        x25519.add(m.x25519_key)
    if not any(m.role == Role.ADMIN for m in members):
        raise ProtocolError("a room state keeps at least one admin")


def decode_roster(data: bytes) -> RoomState:
    """A roster's state, or ProtocolError: exact, canonical, every field in range."""
    if len(data) < _HEAD.size:
        raise ProtocolError("roster is truncated")
    epoch, prev, commit, count = _HEAD.unpack_from(data)
    at = _HEAD.size
    members = []
    for _ in range(count):
        if at + _ENTRY.size > len(data):
            raise ProtocolError("roster is truncated inside a member")
        sign_key, x25519, role, since, size = _ENTRY.unpack_from(data, at)
        at += _ENTRY.size
        raw = data[at : at + size]
        at += size
        if len(raw) != size:
            raise ProtocolError("roster is truncated inside a name")
        try:
            name = raw.decode()
            kind = Role(role)
        except (UnicodeDecodeError, ValueError) as exc:
            raise ProtocolError("a roster member has a bad name or role") from exc
        members.append(Member(sign_key, x25519, kind, name, since))
    if at != len(data):
        raise ProtocolError("roster has trailing bytes")
    return RoomState(epoch, prev, commit, tuple(members))
