"""The daemon's identity and the stable MQTT client id, kept in the state dir."""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from pathlib import Path

from mqchat.errors import MqchatError
from mqchat.protocol.signing import SigningIdentity

IDENTITY_FILE = "identity.key"
SEQ_FILE = "identity.seq"
SEQ_BLOCK = 1024
"""Send sequence numbers reserved at a time in SEQ_FILE."""


def load_identity(state_dir: Path, random: Callable[[int], bytes]) -> SigningIdentity:
    """Read the Ed25519 seed (32 raw bytes, 0600), creating it on first start."""
    path = state_dir / IDENTITY_FILE
    try:
        return _load_or_create(path, random)
    except OSError as exc:
        raise MqchatError(f"cannot use the identity file {path}: {exc.strerror}") from None


def _load_or_create(path: Path, random: Callable[[int], bytes]) -> SigningIdentity:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    except FileExistsError:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
        with os.fdopen(fd, "rb") as f:
            st = os.fstat(f.fileno())
            if not stat.S_ISREG(st.st_mode):
                raise MqchatError(f"identity file {path} is not a regular file") from None
            if st.st_mode & 0o077 or st.st_uid != os.getuid():
                raise MqchatError(
                    f"identity file {path} must be yours and mode 0600; run: chmod 600 {path}"
                ) from None
            seed = f.read(33)
        if len(seed) != 32:
            raise MqchatError(f"identity file {path} is damaged (not 32 bytes)") from None
        return SigningIdentity.from_private_bytes(seed)
    identity = SigningIdentity.generate(random)
    with os.fdopen(fd, "wb") as f:
        f.write(identity.private_bytes())
        f.flush()
        os.fsync(f.fileno())
    return identity


class SeqReservation:
    """Keeps the send sequence number moving forward while identity.key stays.

    The number lives in the database, but a database can be deleted or restored
    from a backup while the identity stays; peers would then drop the reused
    numbers as replays. So numbers are reserved in blocks in SEQ_FILE beside the
    key, written and fsynced before any number of a block is used, and a daemon
    starts after the last reserved number whatever its database says.
    """

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / SEQ_FILE
        try:
            text = self.path.read_text().strip()
        except FileNotFoundError:
            text = "0"
        except OSError as exc:
            raise MqchatError(f"cannot read {self.path}: {exc.strerror}") from None
        if not text.isascii() or not text.isdigit():
            raise MqchatError(f"{self.path} is damaged: it must hold one number") from None
        self.reserved = int(text)

    def cover(self, seq: int) -> None:
        """Make sure ``seq`` is reserved before it is used."""
        if seq <= self.reserved:
            return
        upto = seq + SEQ_BLOCK - 1
        try:
            self._write(upto)
        except OSError as exc:
            raise MqchatError(
                f"cannot reserve send sequence numbers in {self.path}: {exc.strerror}"
            ) from None
        self.reserved = upto

    def _write(self, upto: int) -> None:
        tmp = self.path.with_name(f".{SEQ_FILE}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(f"{upto}\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
        dir_fd = os.open(self.path.parent, os.O_RDONLY | os.O_CLOEXEC)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
