"""Key fingerprints: what people compare aloud. hashlib only, no cryptography.

``chatctl status`` and ``identity`` format fingerprints on every call; keeping
this apart from ``mqchat.protocol.signing`` keeps cryptography out of them.
They only format fingerprints chatd worked out, so hashlib (which loads
OpenSSL: ~2 ms of a cold start, issue 24) is imported by ``fingerprint`` alone.
"""

from __future__ import annotations

MIN_FINGERPRINT_DIGITS = 32
"""How much of a fingerprint a person must give to name a key (``chatctl trust``)."""


def fingerprint(public_key: bytes) -> str:
    """64 lowercase hex digits: SHA-256 of the raw public key."""
    import hashlib

    return hashlib.sha256(public_key).hexdigest()


def fingerprint_digits(text: str) -> str:
    """The hex digits of a fingerprint as a person typed it (spaces, colons, any case)."""
    return "".join(ch for ch in text.lower() if ch not in " :-\t")


def format_fingerprint(fp: str) -> str:
    """Group a fingerprint for people to compare aloud: ``3f2a 9c01 ...``."""
    return " ".join(fp[i : i + 4] for i in range(0, len(fp), 4))


def short_fingerprint(fp: str) -> str:
    """The first MIN_FINGERPRINT_DIGITS digits, grouped: what `who` and `members` print,
    exactly as much as `chatctl trust` needs to name a key."""
    return format_fingerprint(fp[:MIN_FINGERPRINT_DIGITS])
