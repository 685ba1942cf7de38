"""Ed25519 sender identities, with no file or randomness of their own."""

from __future__ import annotations

from collections.abc import Callable

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

# Re-exported: fingerprints moved out so that formatting one needs no cryptography.
from mqchat.protocol.fingerprints import fingerprint, format_fingerprint

__all__ = [
    "PUBLIC_KEY_BYTES",
    "SIGNATURE_BYTES",
    "Random",
    "SigningIdentity",
    "fingerprint",
    "format_fingerprint",
    "verify",
]

Random = Callable[[int], bytes]
PUBLIC_KEY_BYTES = 32
SIGNATURE_BYTES = 64


class SigningIdentity:
    """A daemon's Ed25519 key pair. repr and str show the fingerprint only."""

    __slots__ = ("_private", "public_key")

    def __init__(self, private: Ed25519PrivateKey) -> None:
        self._private = private
        self.public_key = private.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )

    @classmethod
    def generate(cls, random: Random) -> SigningIdentity:
        return cls(Ed25519PrivateKey.from_private_bytes(random(32)))

    @classmethod
    def from_private_bytes(cls, seed: bytes) -> SigningIdentity:
        return cls(Ed25519PrivateKey.from_private_bytes(seed))

    def private_bytes(self) -> bytes:
        return self._private.private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.public_key)

    def sign(self, data: bytes) -> bytes:
        return self._private.sign(data)

    def __repr__(self) -> str:
        return f"SigningIdentity(fingerprint={self.fingerprint!r})"

    __str__ = __repr__


def verify(public_key: bytes, signature: bytes, data: bytes) -> bool:
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(signature, data)
    except (InvalidSignature, ValueError):
        return False
    return True
