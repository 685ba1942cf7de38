"""Stream numbers that never go backwards while the identity stays (docs/protocol.md §15)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from mqchat.errors import MqchatError
from mqchat.protocol.limits import MAX_INT

STREAMS_FILE = "streams"
STREAM_BLOCK = 64
"""Stream numbers reserved at a time in STREAMS_FILE (docs/protocol.md §15)."""


class StreamReservation:
    """Stream numbers (docs/protocol.md §15) that never go backwards while identity.key stays.

    The database can be deleted or restored from a backup while the identity
    stays; a receiver would then drop reused numbers as replays. So stream
    numbers are reserved in blocks of STREAM_BLOCK in STREAMS_FILE beside the
    key, written and fsynced before any number of a block is used, and floored on
    the clock so that even a restored state directory starts fresh streams.
    """

    def __init__(self, state_dir: Path, clock_ms: Callable[[], int]) -> None:
        self.path = state_dir / STREAMS_FILE
        self._clock_ms = clock_ms
        try:
            text = self.path.read_text().strip()
        except FileNotFoundError:
            text = "0"
        except OSError as exc:
            raise MqchatError(f"cannot read {self.path}: {exc.strerror}") from None
        if not text.isascii() or not text.isdigit() or len(text) > 16:
            raise MqchatError(f"{self.path} is damaged: it must hold one number") from None
        self.reserved = int(text)
        self._next = self.reserved + 1  # nothing of the reserved blocks is used again

    def take(self) -> int:
        """A stream number never handed out before by this identity."""
        if self._next > self.reserved:
            first = max(self.reserved + 1, self._clock_ms())
            upto = first + STREAM_BLOCK - 1
            if upto > MAX_INT:
                raise MqchatError(f"{self.path} has run out of stream numbers")
            try:
                _write_number(self.path, upto)
            except OSError as exc:
                raise MqchatError(
                    f"cannot reserve stream numbers in {self.path}: {exc.strerror}"
                ) from None
            self.reserved, self._next = upto, first
        stream = self._next
        self._next += 1
        return stream


def _write_number(path: Path, number: int) -> None:
    """Replace ``path`` with ``number``: a temporary file, fsync, rename, fsync the directory."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(f"{number}\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
