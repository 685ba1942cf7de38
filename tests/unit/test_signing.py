"""Ed25519 through libsodium: the same signatures as RFC 8032, and its strict refusals."""

from __future__ import annotations

import os

from mqchat.protocol.signing import SigningIdentity, verify

# The identity point and a point of order 8 (RFC 8032 encodings): keys of small order.
SMALL_ORDER_KEYS = [
    b"\x01" + bytes(31),
    bytes.fromhex("c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a"),
]


def test_signatures_are_rfc_8032s() -> None:
    """RFC 8032 §7.1, test 2: seed, public key and signature of the one-byte message."""
    seed = bytes.fromhex("4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb")
    identity = SigningIdentity.from_private_bytes(seed)
    assert identity.public_key.hex() == (
        "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c"
    )
    signature = identity.sign(b"\x72")
    assert signature.hex() == (
        "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da"
        "085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00"
    )
    assert verify(identity.public_key, signature, b"\x72")
    assert identity.private_bytes() == seed


def test_a_changed_text_key_or_signature_verifies_nothing() -> None:
    identity = SigningIdentity.generate(os.urandom)
    signature = identity.sign(b"hello")
    assert not verify(identity.public_key, signature, b"hellO")
    assert not verify(SigningIdentity.generate(os.urandom).public_key, signature, b"hello")
    assert not verify(identity.public_key, signature[:-1] + bytes([signature[-1] ^ 1]), b"hello")
    assert not verify(identity.public_key, signature[:63], b"hello")
    assert not verify(identity.public_key[:31], signature, b"hello")


def test_a_small_order_key_verifies_nothing() -> None:
    """A member cannot register a key whose signatures anyone can make: with a
    small-order key and R of small order, S = 0 "signs" every text under OpenSSL's
    verify (docs/security.md, "Signatures")."""
    for key in SMALL_ORDER_KEYS:
        for r in SMALL_ORDER_KEYS:
            assert not verify(key, r + bytes(32), b"any text at all")
