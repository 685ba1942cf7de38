"""The private runtime directory: its checks, its lock, its socket paths."""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

from mqchat.errors import AlreadyRunning, RuntimeDirError
from mqchat.paths import CTL_SOCKET, EVENTS_SOCKET, LOCK_FILE, SUN_PATH_MAX
from mqchat.private_dir import check_private_dir


def prepare_private_dir(path: Path, what: str) -> None:
    """Create ``path`` 0700 if it is missing, then check it."""
    if not path.exists():
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        with contextlib.suppress(FileExistsError):
            path.mkdir(mode=0o700)
    try:
        check_private_dir(path, what)
    except FileNotFoundError:
        raise RuntimeDirError(f"{what} {path} does not exist") from None


def socket_paths(runtime_dir: Path) -> tuple[Path, Path]:
    ctl, events = runtime_dir / CTL_SOCKET, runtime_dir / EVENTS_SOCKET
    longest = max(len(os.fsencode(ctl)), len(os.fsencode(events)))
    if longest > SUN_PATH_MAX:
        raise RuntimeDirError(
            f"runtime directory {runtime_dir} is too long for a socket path "
            f"({longest} > {SUN_PATH_MAX} bytes); choose a shorter --runtime-dir"
        )
    return ctl, events


class DaemonLock:
    """An flock on <dir>/chatd.lock, held for the daemon's life.

    chatd takes one in its runtime dir (one daemon per set of sockets) and one in
    its state dir (one daemon per store, identity and MQTT client id: two would
    take the broker session from each other).
    """

    def __init__(self, directory: Path, what: str = "runtime directory") -> None:
        self.path = directory / LOCK_FILE
        try:
            self._fd = os.open(
                self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600
            )
        except OSError as exc:
            raise RuntimeDirError(
                f"cannot open the lock file {self.path}: {exc.strerror}"
            ) from None
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            other = os.pread(self._fd, 32, 0).decode(errors="replace").strip()
            os.close(self._fd)
            pid = f" (pid {other})" if other.isdigit() else ""
            flag = "--runtime-dir" if what == "runtime directory" else "--state-dir"
            raise AlreadyRunning(
                f"chatd is already running for {what} {directory}{pid}; stop it first, "
                f"or start this one with another {flag}"
            ) from None
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, f"{os.getpid()}\n".encode(), 0)

    def release(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
