"""Checks of single settings, each failing with a ConfigError that names the setting's source.

``where`` is how the error names the value's source: a flag (``--name``), an
environment variable (``MQCHAT_BROKER``) or the config file and key.
"""

from __future__ import annotations

import os
import stat
import unicodedata
from pathlib import Path
from typing import Any

from mqchat.errors import ConfigError
from mqchat.paths import expand_user

MAX_TOPIC_PREFIX_BYTES = 200
"""Room topics are the prefix, "/" and a 26-character tag; brokers limit topic length."""
MAX_USERNAME_BYTES = 65535
"""An MQTT string: two length bytes."""

_CONTROL = frozenset(("Cc", "Cf", "Cs", "Zl", "Zp"))
"""Control and format characters, line separators, and the lone surrogates
that bytes which are not UTF-8 become in argv and the environment."""


def _bad_char(text: str) -> str | None:
    """The first character no setting may hold, if any."""
    for ch in text:
        if unicodedata.category(ch) in _CONTROL:
            return ch
    return None


def check_int(where: str, value: Any, low: int, high: int, unit: str) -> int:
    """An integer in [low, high]; the file's schema already made it an int."""
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        shown = str(value) if len(str(value)) <= 30 else str(value)[:27] + "..."
        raise ConfigError(f"{where} must be between {low} and {high} {unit}, not {shown}")
    return value


def check_dir(where: str, value: str) -> Path:
    """A directory path chatd can use: ZeroMQ and SQLite take paths as UTF-8 text."""
    if not value:  # Path("") would quietly be the current directory
        raise ConfigError(f"{where}: the path is empty")
    try:
        value.encode()
    except UnicodeEncodeError:
        raise ConfigError(f"{where}: the path {value} is not UTF-8; use another one") from None
    return expand_user(Path(value))


def check_path(where: str, value: str, *, must_be_file: bool = False) -> None:
    """A file path: no NUL (a TOML string may hold one); ``must_be_file``: it is one."""
    if "\x00" in value:
        raise ConfigError(f"{where}: the path holds a NUL character")
    if not value:
        raise ConfigError(f"{where}: the path is empty")
    if not must_be_file:
        return
    path = expand_user(Path(value))
    try:
        st = os.stat(path)
    except OSError as exc:
        raise ConfigError(f"{where}: cannot use {path}: {exc.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        raise ConfigError(f"{where}: {path} is not a regular file")


def check_username(where: str, value: str) -> None:
    bad = _bad_char(value)
    if bad is not None:
        raise ConfigError(f"{where}: the user name holds the control character {bad!r}")
    if len(value.encode()) > MAX_USERNAME_BYTES:
        raise ConfigError(f"{where}: the user name is over {MAX_USERNAME_BYTES} bytes")


def check_topic_prefix(where: str, value: str) -> str:
    """The prefix of every room topic, without a trailing "/" (docs/protocol.md)."""
    prefix = value.removesuffix("/")
    bad = _bad_char(prefix)
    if bad is not None:
        # A NUL is refused by the broker on every subscribe: chatd would reconnect forever.
        raise ConfigError(f"{where} holds the control character {bad!r}")
    if "+" in prefix or "#" in prefix:
        raise ConfigError(f"{where} must not hold the wildcards + or #")
    if prefix.startswith("$"):
        raise ConfigError(f"{where} must not start with $ (kept for the broker)")
    if "." in prefix:
        # RabbitMQ's MQTT plugin maps "." to "/" and back: a prefix with a dot
        # receives nothing there (docs/brokers.md).
        raise ConfigError(f"{where} must not hold a dot: RabbitMQ would not deliver it")
    if not prefix:
        raise ConfigError(f"{where} is empty")
    if "" in prefix.split("/"):
        raise ConfigError(f"{where} {value!r} has an empty level (// or a leading /)")
    size = len(prefix.encode())
    if size > MAX_TOPIC_PREFIX_BYTES:
        raise ConfigError(
            f"{where} is {size} bytes of UTF-8; the limit is {MAX_TOPIC_PREFIX_BYTES}"
        )
    return prefix
