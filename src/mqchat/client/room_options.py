"""How a passphrase room is joined, the same from ``chatctl join`` and ``chatctl ui``.

One place for what a newcomer would otherwise meet twice, differently: the
cipher a new room gets (AES-256-GCM, fernet only in legacy rooms), what a
passphrase must be, and what ``--weak`` accepts. The CLI and the interface both
build chatd's ``join`` params here, so a room joined from either is the same
room. Imports nothing heavy: ``chatctl join`` runs on the fast path.
"""

from __future__ import annotations

from typing import Any

from mqchat.errors import UsageError, WeakPassphrase
from mqchat.protocol.ciphers import CIPHERS, DEFAULT_CIPHER
from mqchat.protocol.limits import MIN_PASSPHRASE_CHARS, is_short_passphrase

LEGACY_CIPHER = "fernet"
"""The original program's cipher, the only one its users understand."""

__all__ = [
    "CIPHERS",
    "DEFAULT_CIPHER",
    "LEGACY_CIPHER",
    "MIN_PASSPHRASE_CHARS",
    "check_passphrase",
    "cipher_shown",
    "is_short_passphrase",
    "join_params",
    "room_label",
]


def cipher_shown(cipher: str | None, *, legacy: bool) -> str:
    """The cipher a join with ``cipher`` (None: not chosen) gives a new room."""
    if cipher is not None:
        return cipher
    return LEGACY_CIPHER if legacy else DEFAULT_CIPHER


def room_label(cipher: str | None, *, legacy: bool, weak: bool) -> str:
    """``aes-256-gcm`` or ``fernet, legacy, weak``: what the join dialog and output say."""
    flags = [cipher_shown(cipher, legacy=legacy)]
    flags += [name for name, on in (("legacy", legacy), ("weak", weak)) if on]
    return ", ".join(flags)


def check_passphrase(passphrase: str, *, weak: bool, weak_hint: str = "--weak") -> None:
    """Refuse a passphrase that is empty, only white space or not UTF-8 (UsageError),
    or (without ``weak``) shorter than MIN_PASSPHRASE_CHARS (WeakPassphrase, as chatd).

    chatd checks the length again; checking here first says so before any key
    derivation starts, with ``weak_hint`` naming how this front end accepts it.
    """
    try:
        passphrase.encode()
    except UnicodeEncodeError:
        raise UsageError("the passphrase is not valid UTF-8 text") from None
    if not passphrase.strip():
        raise UsageError(f"the passphrase is {'only white space' if passphrase else 'empty'}")
    if is_short_passphrase(passphrase) and not weak:
        raise WeakPassphrase(
            f"the passphrase is shorter than {MIN_PASSPHRASE_CHARS} characters: "
            f"choose a longer one, or accept the risk with {weak_hint}"
        )


def join_params(
    room: str, passphrase: str, *, cipher: str | None, legacy: bool, weak: bool
) -> dict[str, Any]:
    """chatd's ``join`` params (docs/ipc.md). ``cipher`` None lets chatd choose: the
    default for a new room, fernet for a legacy one, and a room joined again keeps its own."""
    return {
        "room": room,
        "passphrase": passphrase,
        "cipher": cipher,
        "legacy": legacy,
        "weak": weak,
    }
