"""Reading secrets from files that only their owner can read."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from mqchat.errors import SecretFileError


def read_secret_file(path: str | Path, what: str = "secret file") -> str:
    """Return the first line of a 0600 file owned by the caller, without its newline."""
    p = Path(path).expanduser()
    try:
        fd = os.open(p, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        raise SecretFileError(f"{what} {p} does not exist") from None
    except OSError as exc:
        raise SecretFileError(f"cannot open {what} {p}: {exc.strerror}") from None
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise SecretFileError(f"{what} {p} is not a regular file")
        if st.st_uid != os.getuid():
            raise SecretFileError(f"{what} {p} is not owned by you")
        if st.st_mode & 0o077:
            raise SecretFileError(
                f"{what} {p} is readable by others (mode {stat.S_IMODE(st.st_mode):04o}); "
                f"run: chmod 600 {p}"
            )
        data = f.read(64 * 1024)
    try:
        text = data.decode()
    except UnicodeDecodeError:
        raise SecretFileError(f"{what} {p} is not UTF-8 text") from None
    return text.splitlines()[0] if text else ""
