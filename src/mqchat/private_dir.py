"""The check that a directory is private to the user, shared by chatd and chatctl.

chatd refuses to serve from, and chatctl to connect through, a runtime
directory that another user could swap a socket in: one that is a symlink, is
owned by another uid, or grants any group or other permission. Imports nothing
heavier than ``os`` and ``stat``, because ``chatctl send`` runs it on every call.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from mqchat.errors import RuntimeDirError

__all__ = ["check_private_dir"]


def check_private_dir(path: Path, what: str = "runtime directory") -> None:
    """Raise RuntimeDirError unless ``path`` is a real directory, ours, mode 0700 or stricter.

    A missing directory raises FileNotFoundError, so that each caller can say
    what its absence means (chatctl: chatd is not running).
    """
    st = os.lstat(path)
    if stat.S_ISLNK(st.st_mode):
        raise RuntimeDirError(f"{what} {path} is a symbolic link, not a directory")
    if not stat.S_ISDIR(st.st_mode):
        raise RuntimeDirError(f"{what} {path} is not a directory")
    if st.st_uid != os.getuid():
        raise RuntimeDirError(f"{what} {path} belongs to uid {st.st_uid}, not to you")
    if st.st_mode & 0o077:
        raise RuntimeDirError(
            f"{what} {path} can be entered by others (mode {stat.S_IMODE(st.st_mode):04o}); "
            f"run: chmod 700 {path}"
        )
