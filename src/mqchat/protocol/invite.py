"""Invites: one ``mqchat:`` line that lets someone join a room (docs/protocol.md, "Invites").

An invite holds the room's current epoch secret, so it is a secret itself. Its
``check`` field, an HMAC keyed by that secret, refuses an invite that was
truncated, damaged or altered by someone who does not hold it. It is not a
signature: an invite is as trustworthy as the channel that carried it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import unicodedata
from dataclasses import dataclass, field
from typing import Final

from mqchat.errors import ProtocolError, UsageError
from mqchat.protocol.envelope import CIPHER_IDS
from mqchat.protocol.epochs import SECRET_BYTES, epoch_key
from mqchat.protocol.fingerprints import fingerprint
from mqchat.protocol.limits import KEY_BYTES, MAX_INT, normalize_room

SCHEME: Final = "mqchat:invite?"
FORMAT_VERSION: Final = "2"
FIELDS_V1: Final = ("v", "room", "epoch", "cipher", "prefix", "inviter", "secret", "check")
FIELDS: Final = (*FIELDS_V1[:-1], "state", "ticket", "admission", "check")
"""Format 2 (docs/protocol.md §26) adds the admission; format 1 invites still parse."""
SIGNATURE_BYTES: Final = 64
CHECK_BYTES: Final = 16
MAX_PREFIX_BYTES: Final = 200

_UNRESERVED: Final = frozenset(
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~"
)
_DECIMAL: Final = re.compile(r"0|[1-9][0-9]{0,15}")
_B64URL: Final = re.compile(r"[A-Za-z0-9_-]*")


class InvalidInvite(ProtocolError):
    """The invite is not valid: ask the inviter for a new one."""


@dataclass(frozen=True, slots=True)
class Invite:
    """What a joiner needs: the room, its current epoch and secret, and whom to pin."""

    room: str
    epoch: int
    secret: bytes = field(repr=False)
    cipher: str
    topic_prefix: str
    inviter_key: bytes
    admission: Admission | None = None
    """Format 2: what makes the joiner a member (None: a room without a membership state)."""

    @property
    def inviter_fingerprint(self) -> str:
        return fingerprint(self.inviter_key)


@dataclass(frozen=True, slots=True)
class Admission:
    """The state the invite admits into, the one-time ticket (an Ed25519 seed) and the
    inviter's signature over the ticket's public key (docs/protocol.md §26)."""

    state_hash: bytes
    ticket_seed: bytes = field(repr=False)
    signature: bytes


def _pct_encode(text: str) -> str:
    return "".join(chr(b) if b in _UNRESERVED else f"%{b:02X}" for b in text.encode())


def _pct_decode(value: str, what: str) -> str:
    raw = bytearray()
    i = 0
    while i < len(value):
        if value[i] == "%" and re.fullmatch(r"[0-9A-F]{2}", value[i + 1 : i + 3]):
            raw.append(int(value[i + 1 : i + 3], 16))
            i += 3
        elif value[i].isascii() and ord(value[i]) in _UNRESERVED:
            raw.append(ord(value[i]))
            i += 1
        else:
            raise InvalidInvite(f"invite is damaged: bad character in its {what}")
    try:
        text = raw.decode()
    except UnicodeDecodeError as exc:
        raise InvalidInvite(f"invite is damaged: its {what} is not UTF-8") from exc
    if _pct_encode(text) != value:
        raise InvalidInvite(f"invite is damaged: its {what} is not canonically encoded")
    return text


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(value: str, size: int, what: str) -> bytes:
    if not _B64URL.fullmatch(value) or len(value) != len(_b64(bytes(size))):
        raise InvalidInvite(f"invite is damaged or truncated: its {what} has the wrong length")
    try:
        data = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
    except (binascii.Error, ValueError) as exc:
        raise InvalidInvite(f"invite is damaged: its {what} is not base64url") from exc
    if _b64(data) != value:
        raise InvalidInvite(f"invite is damaged: its {what} is not canonically encoded")
    return data


def _check_value(secret: bytes, epoch: int, signed_part: str) -> bytes:
    key = epoch_key(secret, epoch, "invite check")
    return hmac.new(key, signed_part.encode(), hashlib.sha256).digest()[:CHECK_BYTES]


def check_topic_prefix(prefix: str) -> str:
    """A prefix an MQTT topic can start with: no wildcard, NUL or control character."""
    size = len(prefix.encode(errors="replace"))
    if not 1 <= size <= MAX_PREFIX_BYTES or prefix.startswith("/") or prefix.endswith("/"):
        raise UsageError(
            f"topic prefix must be 1 to {MAX_PREFIX_BYTES} bytes, no leading or trailing /"
        )
    if set(prefix) & {"+", "#"} or any(unicodedata.category(c) in ("Cc", "Cs") for c in prefix):
        raise UsageError("topic prefix must not contain +, # or control characters")
    return prefix


def _check_fields(invite: Invite) -> None:
    try:
        if normalize_room(invite.room) != invite.room:
            raise UsageError("room name is not in NFC")
        check_topic_prefix(invite.topic_prefix)
    except UsageError as exc:
        raise InvalidInvite(f"invite is not valid: {exc}") from None
    if not 0 <= invite.epoch <= MAX_INT or invite.cipher not in CIPHER_IDS:
        raise InvalidInvite("invite is not valid: epoch or cipher out of range")
    if len(invite.secret) != SECRET_BYTES or len(invite.inviter_key) != KEY_BYTES:
        raise InvalidInvite("invite is not valid: secret or inviter key has the wrong size")


def encode_invite(invite: Invite) -> str:
    """The invite as one line: ``mqchat:invite?v=1&room=...&check=...``."""
    _check_fields(invite)
    values = [
        "1" if invite.admission is None else FORMAT_VERSION,
        _pct_encode(invite.room),
        str(invite.epoch),
        invite.cipher,
        _pct_encode(invite.topic_prefix),
        _b64(invite.inviter_key),
        _b64(invite.secret),
    ]
    fields: tuple[str, ...] = FIELDS_V1
    if invite.admission is not None:
        fields = FIELDS
        adm = invite.admission
        values += [_b64(adm.state_hash), _b64(adm.ticket_seed), _b64(adm.signature)]
    signed_part = SCHEME + "&".join(f"{k}={v}" for k, v in zip(fields, values, strict=False))
    return f"{signed_part}&check={_b64(_check_value(invite.secret, invite.epoch, signed_part))}"


def _split(line: str) -> tuple[dict[str, str], str]:
    if not line.startswith(SCHEME):
        raise InvalidInvite("this is not an mqchat invite: it must start with mqchat:invite?")
    pairs = line[len(SCHEME) :].split("&")
    names = [pair.partition("=")[0] for pair in pairs]
    fields = FIELDS_V1 if pairs[0] == "v=1" else FIELDS
    if len(pairs) > 1 and pairs[0].startswith("v=") and pairs[0] not in ("v=1", "v=2"):
        raise InvalidInvite(
            f"invite format {pairs[0][2:]!r} is not supported (this mqchat reads formats "
            f"1 and {FORMAT_VERSION}): upgrade mqchat or ask for a new invite"
        )
    expected = fields[: len(names)]
    complete = all("=" in pair for pair in pairs[:-1])
    if len(names) > len(fields) or names[:-1] != list(expected[:-1]) or not complete:
        raise InvalidInvite(
            "invite is damaged: its fields must be " + ", ".join(fields) + ", in that order"
        )
    last_is_cut = "=" not in pairs[-1] and expected[-1].startswith(names[-1])
    if names[-1] != expected[-1] and not last_is_cut:
        raise InvalidInvite(
            "invite is damaged: its fields must be " + ", ".join(fields) + ", in that order"
        )
    if len(names) < len(fields) or last_is_cut:
        raise InvalidInvite("invite is truncated: it ends before its check field")
    signed_part = line[: line.rindex("&check=")]
    return {
        name: pair.partition("=")[2] for name, pair in zip(names, pairs, strict=True)
    }, signed_part


def parse_invite(text: str) -> Invite:
    """Parse one invite line, or raise InvalidInvite saying what is wrong with it."""
    line = text.strip()
    if any(c.isspace() for c in line):
        raise InvalidInvite("invite contains spaces or line breaks: paste it as one line")
    values, signed_part = _split(line)
    check = _unb64(values["check"], CHECK_BYTES, "check")
    secret = _unb64(values["secret"], SECRET_BYTES, "secret")
    if not _DECIMAL.fullmatch(values["epoch"]) or int(values["epoch"]) > MAX_INT:
        raise InvalidInvite("invite is damaged: its epoch is not a number in range")
    epoch = int(values["epoch"])
    if not hmac.compare_digest(check, _check_value(secret, epoch, signed_part)):
        raise InvalidInvite("invite check does not match: it was altered or damaged in copying")
    invite = Invite(
        room=_pct_decode(values["room"], "room name"),
        epoch=epoch,
        secret=secret,
        cipher=values["cipher"],
        topic_prefix=_pct_decode(values["prefix"], "topic prefix"),
        inviter_key=_unb64(values["inviter"], KEY_BYTES, "inviter key"),
        admission=None
        if "state" not in values
        else Admission(
            _unb64(values["state"], KEY_BYTES, "state"),
            _unb64(values["ticket"], KEY_BYTES, "ticket"),
            _unb64(values["admission"], SIGNATURE_BYTES, "admission"),
        ),
    )
    _check_fields(invite)
    return invite
