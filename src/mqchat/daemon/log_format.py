"""chatd's log lines: with a timestamp, unless the journal adds its own.

systemd sets JOURNAL_STREAM to the device and inode of the stream it gave a
service as stderr (systemd.exec(5)): when stderr is that stream, the journal
stamps each line and a second time would only be noise. Anywhere else (a
terminal, a file, `chatd 2>>chatd.log &`) a line without a time says little.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping
from typing import TextIO

PLAIN = "chatd: %(levelname)s: %(message)s"
STAMPED = "%(asctime)s.%(msecs)03dZ " + PLAIN
DATE_FORMAT = "%Y-%m-%dT%H:%M:%S"


def under_journal(stream: TextIO, env: Mapping[str, str]) -> bool:
    """``stream`` is the one systemd connected to the journal."""
    device, _, inode = env.get("JOURNAL_STREAM", "").partition(":")
    if not (device.isdigit() and inode.isdigit()):
        return False
    try:
        st = os.fstat(stream.fileno())
    except (OSError, ValueError):
        return False
    return (st.st_dev, st.st_ino) == (int(device), int(inode))


def formatter(stream: TextIO, env: Mapping[str, str]) -> logging.Formatter:
    if under_journal(stream, env):
        return logging.Formatter(PLAIN)
    stamped = logging.Formatter(STAMPED, DATE_FORMAT)
    stamped.converter = time.gmtime  # UTC, as the event timestamps (docs/ipc.md)
    return stamped


def configure(stream: TextIO, level: str, env: Mapping[str, str] = os.environ) -> None:
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter(stream, env))
    logging.basicConfig(level=level, handlers=[handler])
