"""The daemon's identity: its Ed25519 seed in the state dir (0600), made on first start.

(The MQTT client id is in the store's meta table; stream numbers are reserved by
mqchat.daemon.stream_numbers.)
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from pathlib import Path

from mqchat.errors import MqchatError
from mqchat.protocol.signing import SigningIdentity

IDENTITY_FILE = "identity.key"


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
