"""Reading secrets from files that only their owner can read."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from mqchat.errors import SecretFileError
from mqchat.paths import expand_user

MAX_SECRET_BYTES = 64 * 1024
"""A secret's first line may be up to this long; a longer one is refused, not cut."""

_OPEN_ERRORS = {
    # O_NOFOLLOW fails on a symbolic link with ELOOP, whose text ("too many
    # levels of symbolic links") would say nothing useful.
    errno.ELOOP: "is a symbolic link; name the file itself",
    errno.ENXIO: "is not a regular file",  # a socket
    errno.EACCES: "cannot be read by you (permission denied)",
    errno.EPERM: "cannot be read by you (permission denied)",
    errno.ENOTDIR: "does not exist (a part of its path is not a directory)",
    errno.ENAMETOOLONG: "is a path too long for this system",
}


def _open(p: Path, what: str) -> int:
    # O_NONBLOCK: opening a FIFO would otherwise wait for a writer forever.
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
    try:
        return os.open(p, flags)
    except FileNotFoundError:
        raise SecretFileError(f"{what} {p} does not exist") from None
    except OSError as exc:
        reason = _OPEN_ERRORS.get(exc.errno or 0) or f"cannot be opened: {exc.strerror}"
        raise SecretFileError(f"{what} {p} {reason}") from None


def read_secret_file(path: str | Path, what: str = "secret file") -> str:
    """Return the first line of a 0600 file owned by the caller, without its newline."""
    p = expand_user(Path(path))
    fd = _open(p, what)
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise SecretFileError(f"{what} {p} is a directory, not a file")
        if not stat.S_ISREG(st.st_mode):
            raise SecretFileError(f"{what} {p} is not a regular file")
        if st.st_uid != os.getuid():
            raise SecretFileError(f"{what} {p} is not owned by you")
        if st.st_mode & 0o077:
            raise SecretFileError(
                f"{what} {p} is readable by others (mode {stat.S_IMODE(st.st_mode):04o}); "
                f"run: chmod 600 {p}"
            )
        first = _first_line(fd, p, what)
    finally:
        os.close(fd)
    try:
        text = first.decode()
    except UnicodeDecodeError:
        raise SecretFileError(f"{what} {p} is not UTF-8 text") from None
    # splitlines, as before: a \r (or another line boundary) also ends the line.
    return text.splitlines()[0] if text else ""


def _first_line(fd: int, p: Path, what: str) -> bytes:
    data = b""
    while b"\n" not in data and len(data) <= MAX_SECRET_BYTES:
        try:
            chunk = os.read(fd, MAX_SECRET_BYTES + 2 - len(data))
        except OSError as exc:
            raise SecretFileError(f"cannot read {what} {p}: {exc.strerror}") from None
        if not chunk:
            break
        data += chunk
    first = data.split(b"\n", 1)[0]
    if len(first) > MAX_SECRET_BYTES:
        raise SecretFileError(f"the first line of {what} {p} is over {MAX_SECRET_BYTES} bytes")
    return first
