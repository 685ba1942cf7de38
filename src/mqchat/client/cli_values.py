"""What chatctl's option values mean: each is read from its text by one function here.

Both front ends read with these: the fast path (mqchat.client.fast) and the
typer app (mqchat.client.typer_app, as typer ``parser=``), so they cannot
accept different things. A reader raises UsageError for text that is not a
value; the fast path then leaves the command line to typer, which says so.
Imported on every call: nothing heavier than pathlib.
"""

from __future__ import annotations

from pathlib import Path

from mqchat.errors import UsageError
from mqchat.protocol.ciphers import CIPHERS
from mqchat.protocol.limits import MAX_SEQ

DEFAULT_TIMEOUT = 10.0
MIN_TIMEOUT = 0.1
MAX_TIMEOUT = 24 * 3600.0
"""A day: longer than anything chatd takes, and short of what a poll() can wait."""
MAX_COUNT = MAX_SEQ
"""The largest ``-n`` or ``--since``: seq numbers are SQLite integers."""
DEFAULT_LINES = 10


def _shown(text: str) -> str:
    """A value quoted for an error message: escaped, and cut if long."""
    return repr(text if len(text) <= 40 else text[:40] + "...")


def read_count(text: str) -> int:
    """``-n``, ``--since``: ASCII digits, 0 to MAX_COUNT.

    Not int(): it takes "+3", " 3", "3_0" and Arabic-Indic digits too.
    """
    if (
        not (text.isascii() and text.isdigit())
        or len(text) > len(str(MAX_COUNT))
        or int(text) > MAX_COUNT
    ):
        raise UsageError(f"{_shown(text)} is not a valid count: a whole number, 0 to {MAX_COUNT}")
    return int(text)


def read_seconds(text: str) -> float:
    """``--timeout``: a number of seconds from MIN_TIMEOUT to MAX_TIMEOUT."""
    try:
        seconds = float(text)
    except ValueError:
        raise UsageError(f"{_shown(text)} is not a number of seconds") from None
    # "not (a <= x <= b)" and not "x < a or x > b": nan compares false to all.
    if not MIN_TIMEOUT <= seconds <= MAX_TIMEOUT:
        raise UsageError(
            f"must be between {MIN_TIMEOUT:g} and {MAX_TIMEOUT:g} seconds, not {_shown(text)}"
        )
    return seconds


def read_path(text: str) -> Path:
    """A file or directory name; the command that opens it says what is wrong with it."""
    if not text:
        raise UsageError("an empty path names nothing")
    return Path(text)


def read_cipher(text: str) -> str:
    """``--cipher``: one of CIPHERS, exactly as written."""
    if text not in CIPHERS:
        raise UsageError(f"{_shown(text)} is not one of {', '.join(CIPHERS)}")
    return text
