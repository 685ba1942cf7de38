"""Key fingerprints: what people compare aloud. hashlib only, no cryptography.

``chatctl status`` and ``identity`` format fingerprints on every call; keeping
this apart from ``mqchat.protocol.signing`` keeps cryptography out of them.
"""

from __future__ import annotations

import hashlib


def fingerprint(public_key: bytes) -> str:
    """32 lowercase hex digits: the first 16 bytes of SHA-256 of the raw public key."""
    return hashlib.sha256(public_key).hexdigest()[:32]


def format_fingerprint(fp: str) -> str:
    """Group a fingerprint for people to compare aloud: ``3f2a 9c01 ...``."""
    return " ".join(fp[i : i + 4] for i in range(0, len(fp), 4))
