"""Ed25519 sender identities, with no file or randomness of their own.

Signing and verifying go through libsodium (PyNaCl): its verify takes about half
the time of OpenSSL's (~41 µs against ~87 µs here), and every payload a daemon
receives is verified once. libsodium's rules are the strict ones: a public key of
small order or in a non-canonical encoding, and a signature whose R is of small
order or whose S is not reduced, are refused (docs/security.md, "Signatures").
"""

from __future__ import annotations

from collections.abc import Callable

from nacl.bindings import crypto_sign, crypto_sign_open, crypto_sign_seed_keypair
from nacl.exceptions import BadSignatureError

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
SEED_BYTES = 32


class SigningIdentity:
    """A daemon's Ed25519 key pair. repr and str show the fingerprint only."""

    __slots__ = ("_secret", "_seed", "public_key")

    def __init__(self, seed: bytes) -> None:
        if len(seed) != SEED_BYTES:
            raise ValueError(f"an Ed25519 seed is {SEED_BYTES} bytes, not {len(seed)}")
        self._seed = bytes(seed)
        self.public_key, self._secret = crypto_sign_seed_keypair(self._seed)

    @classmethod
    def generate(cls, random: Random) -> SigningIdentity:
        return cls(random(SEED_BYTES))

    @classmethod
    def from_private_bytes(cls, seed: bytes) -> SigningIdentity:
        return cls(seed)

    def private_bytes(self) -> bytes:
        """The 32-byte seed (RFC 8032's private key), as the identity file keeps it."""
        return self._seed

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.public_key)

    def sign(self, data: bytes) -> bytes:
        return crypto_sign(data, self._secret)[:SIGNATURE_BYTES]

    def __repr__(self) -> str:
        return f"SigningIdentity(fingerprint={self.fingerprint!r})"

    __str__ = __repr__


def verify(public_key: bytes, signature: bytes, data: bytes) -> bool:
    if len(public_key) != PUBLIC_KEY_BYTES or len(signature) != SIGNATURE_BYTES:
        return False
    try:
        crypto_sign_open(signature + data, public_key)
    except (BadSignatureError, ValueError):
        return False
    return True
