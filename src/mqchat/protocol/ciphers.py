"""The ciphers a room may use, by name and by wire id (docs/protocol.md §3).

One list for every part of mqchat: the envelope seals and opens with these ids,
chatd checks a join's cipher against them, and chatctl offers their names as
``join --cipher``'s choices. It imports nothing but mqchat.errors, so that
chatctl's fast path can read the names without loading cryptography.
"""

from __future__ import annotations

from typing import Final

from mqchat.errors import UsageError

CIPHER_IDS: Final[dict[str, int]] = {"fernet": 1, "aes-256-gcm": 2, "chacha20-poly1305": 3}
"""Name -> the id byte that follows the version byte of a payload."""

CIPHER_NAMES: Final[dict[int, str]] = {v: k for k, v in CIPHER_IDS.items()}
CIPHERS: Final[tuple[str, ...]] = tuple(CIPHER_IDS)
"""The names, in the order help texts list them."""

DEFAULT_CIPHER: Final = "aes-256-gcm"
"""What a new room uses unless told otherwise. Every version 1 receiver opens all
three, so a room can change cipher (or its members differ) without losing anyone."""
"""What a version 1 room sends with unless ``join --cipher`` says otherwise."""


def check_cipher(name: str) -> str:
    if name not in CIPHER_IDS:
        raise UsageError(f"unknown cipher {name!r}; choose one of {', '.join(CIPHER_IDS)}")
    return name
