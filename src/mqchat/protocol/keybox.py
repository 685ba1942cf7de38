"""Member keys and the key box (docs/protocol.md, "Member keys" and "Key box").

Each identity has an X25519 key pair derived from its Ed25519 seed, so it needs
no file of its own and can never drift from the identity. A rekey seals the new
epoch secret to each member's X25519 public key in a *key box*: HPKE-style
ephemeral-static X25519, HKDF-SHA256 and AES-256-GCM, with the room tag, the
new epoch, the rekeying member and both public keys bound into the key
derivation, so a box opens only for its recipient, in its room, for its epoch,
inside the rekey of the member who made it.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable
from typing import Final

# The crypto core loads cryptography at import, as kdf.py and envelope.py do.
from cryptography.exceptions import InvalidTag  # noqa: TID253
from cryptography.hazmat.primitives import hashes, serialization  # noqa: TID253
from cryptography.hazmat.primitives.asymmetric.x25519 import (  # noqa: TID253
    X25519PrivateKey,
    X25519PublicKey,
)
from cryptography.hazmat.primitives.ciphers.aead import AESGCM  # noqa: TID253
from cryptography.hazmat.primitives.kdf.hkdf import HKDF  # noqa: TID253

from mqchat.errors import ProtocolError
from mqchat.protocol.epochs import SECRET_BYTES, check_epoch
from mqchat.protocol.fingerprints import fingerprint
from mqchat.protocol.kdf import TAG_CHARS
from mqchat.protocol.limits import KEY_BYTES
from mqchat.protocol.records import MAX_REKEY_RECIPIENTS, KeyBox, Rekey
from mqchat.protocol.signing import SigningIdentity

Random = Callable[[int], bytes]

MEMBER_KEY_INFO: Final = b"mqchat/v2 x25519 member key"
BOX_LABEL: Final = b"mqchat/v2 key box\x00"
BOX_NONCE_BYTES: Final = 12


def _public_bytes(key: X25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def _hkdf(ikm: bytes, info: bytes, length: int) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=None, info=info).derive(ikm)


def _exchange(private: X25519PrivateKey, public: bytes) -> bytes:
    if len(public) != KEY_BYTES:
        raise ProtocolError("an X25519 public key is 32 bytes")
    try:
        # OpenSSL refuses a low-order peer key (an all-zero shared secret).
        return private.exchange(X25519PublicKey.from_public_bytes(public))
    except ValueError as exc:
        raise ProtocolError("X25519 public key is not usable") from exc


_PROBE: Final = X25519PrivateKey.from_private_bytes(bytes(range(1, 33)))


def usable_member_key(public: bytes) -> bool:
    """Whether a key box can be sealed to ``public``: 32 bytes, not of low order (an
    exchange with it would give the all-zero secret). Checked when a member key is
    received, so a bad one never enters a room's state (issue 21, attack 2)."""
    try:
        _exchange(_PROBE, public)
    except ProtocolError:
        return False
    return True


class MemberKeyPair:
    """A member's X25519 key pair. repr shows the public key's fingerprint only."""

    __slots__ = ("_private", "public_key")

    def __init__(self, private: X25519PrivateKey) -> None:
        self._private = private
        self.public_key = _public_bytes(private)

    @classmethod
    def from_identity(cls, identity: SigningIdentity) -> MemberKeyPair:
        """X25519 private key = HKDF-SHA256(Ed25519 seed, info "mqchat/v2 x25519 member key")."""
        seed = _hkdf(identity.private_bytes(), MEMBER_KEY_INFO, 32)
        return cls(X25519PrivateKey.from_private_bytes(seed))

    def exchange(self, public: bytes) -> bytes:
        return _exchange(self._private, public)

    def __repr__(self) -> str:
        return f"MemberKeyPair(fingerprint={fingerprint(self.public_key)!r})"

    __str__ = __repr__


def _box_key(
    shared: bytes,
    *,
    tag: str,
    new_epoch: int,
    rekeyer_key: bytes,
    ephemeral: bytes,
    recipient: bytes,
) -> tuple[bytes, bytes]:
    if len(tag) != TAG_CHARS or len(rekeyer_key) != KEY_BYTES:
        raise ProtocolError("room tag or rekeyer key has the wrong length")
    info = b"".join(
        (BOX_LABEL, tag.encode(), struct.pack(">Q", check_epoch(new_epoch)), rekeyer_key)
    )
    okm = _hkdf(shared, info + ephemeral + recipient, 32 + BOX_NONCE_BYTES)
    return okm[:32], okm[32:]


def seal_box(
    secret: bytes,
    recipient: bytes,
    *,
    tag: str,
    new_epoch: int,
    rekeyer_key: bytes,
    random: Random,
) -> KeyBox:
    """Seal ``secret`` to ``recipient``'s X25519 key; ``random`` gives the ephemeral key."""
    if len(secret) != SECRET_BYTES:
        raise ProtocolError("an epoch secret is 32 bytes")
    ephemeral_private = X25519PrivateKey.from_private_bytes(random(32))
    ephemeral = _public_bytes(ephemeral_private)
    shared = _exchange(ephemeral_private, recipient)
    key, nonce = _box_key(
        shared,
        tag=tag,
        new_epoch=new_epoch,
        rekeyer_key=rekeyer_key,
        ephemeral=ephemeral,
        recipient=recipient,
    )
    return KeyBox(recipient, ephemeral, AESGCM(key).encrypt(nonce, secret, None))


def open_box(
    box: KeyBox, member: MemberKeyPair, *, tag: str, new_epoch: int, rekeyer_key: bytes
) -> bytes:
    """The secret in ``box``, or ProtocolError if it is not for this member, room and epoch."""
    if box.recipient != member.public_key:
        raise ProtocolError("this key box is sealed to another member")
    shared = member.exchange(box.ephemeral)
    key, nonce = _box_key(
        shared,
        tag=tag,
        new_epoch=new_epoch,
        rekeyer_key=rekeyer_key,
        ephemeral=box.ephemeral,
        recipient=box.recipient,
    )
    try:
        secret = AESGCM(key).decrypt(nonce, box.sealed, None)
    except InvalidTag as exc:
        raise ProtocolError(
            "key box does not open: tampered, or for another room or epoch"
        ) from exc
    if len(secret) != SECRET_BYTES:
        raise ProtocolError("key box holds a secret of the wrong size")
    return secret


def build_rekey(
    secret: bytes,
    recipients: Iterable[bytes],
    *,
    tag: str,
    new_epoch: int,
    rekeyer_key: bytes,
    random: Random,
) -> Rekey:
    """A rekey record: ``secret`` sealed to each recipient, boxes sorted by recipient key.

    ``tag`` is the room tag of the epoch the rekey is published in (``new_epoch - 1``).
    """
    unique = sorted(set(recipients))
    if not 1 <= len(unique) <= MAX_REKEY_RECIPIENTS:
        raise ProtocolError(f"a rekey seals to 1 to {MAX_REKEY_RECIPIENTS} members")
    boxes = tuple(
        seal_box(
            secret, recipient, tag=tag, new_epoch=new_epoch, rekeyer_key=rekeyer_key, random=random
        )
        for recipient in unique
    )
    return Rekey(new_epoch, boxes)


def secret_for(
    rekey: Rekey, member: MemberKeyPair, *, tag: str, rekeyer_key: bytes
) -> bytes | None:
    """The new secret if ``rekey`` holds a box for ``member``; None if it leaves it out."""
    for box in rekey.boxes:
        if box.recipient == member.public_key:
            return open_box(
                box, member, tag=tag, new_epoch=rekey.new_epoch, rekeyer_key=rekeyer_key
            )
    return None
