"""Checks of single settings, each failing with a ConfigError that names the setting's source.

Each is a ``Check``: ``check(where, value)`` returns the value chatd uses, from
the value as given (a flag's or a variable's text, or what the TOML file
holds). ``where`` is how the error names the value's source: a flag
(``--name``), an environment variable (``MQCHAT_BROKER``) or the config file and
key. mqchat.config names one for each setting.
"""

from __future__ import annotations

import os
import stat
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from mqchat.errors import ConfigError, UsageError
from mqchat.paths import expand_user
from mqchat.protocol.limits import normalize_name

Check = Callable[[str, Any], Any]
"""(where the value came from, the value as given) -> the value chatd uses, or ConfigError."""
PROTOCOLS = ("auto", "5", "3.1.1")
MAX_BROKER_URLS = 16

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


def between(low: int, high: int, unit: str) -> Check:
    """An integer from low to high (from the environment: ASCII digits)."""

    def check(where: str, value: Any) -> int:
        if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) < 12:
            value = int(value)
        return check_int(where, value, low, high, unit)

    return check


def true_or_false(_where: str, value: Any) -> bool:
    return bool(value)


def name(where: str, value: Any) -> str:
    try:
        return normalize_name(str(value))
    except UsageError as exc:
        raise ConfigError(f"{where}: {exc.message}") from None


def protocol(where: str, value: Any) -> str:
    if value not in PROTOCOLS:
        raise ConfigError(f"{where} must be one of {', '.join(repr(p) for p in PROTOCOLS)}")
    return str(value)


def directory(where: str, value: Any) -> Path:
    """A directory path chatd can use: ZeroMQ and SQLite take paths as UTF-8 text."""
    text = str(value)
    if not text:  # Path("") would quietly be the current directory
        raise ConfigError(f"{where}: the path is empty")
    try:
        text.encode()
    except UnicodeEncodeError:
        raise ConfigError(f"{where}: the path {text} is not UTF-8; use another one") from None
    return expand_user(Path(text))


def file_path(where: str, value: Any) -> Path:
    """A file path: no NUL (a TOML string may hold one)."""
    text = str(value)
    if "\x00" in text:
        raise ConfigError(f"{where}: the path holds a NUL character")
    if not text:
        raise ConfigError(f"{where}: the path is empty")
    return expand_user(Path(text))


def existing_file(where: str, value: Any) -> Path:
    """A file path that names a regular file."""
    path = file_path(where, value)
    try:
        st = os.stat(path)
    except OSError as exc:
        raise ConfigError(f"{where}: cannot use {path}: {exc.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        raise ConfigError(f"{where}: {path} is not a regular file")
    return path


def username(where: str, value: Any) -> str | None:
    text = str(value)
    bad = _bad_char(text)
    if bad is not None:
        raise ConfigError(f"{where}: the user name holds the control character {bad!r}")
    if len(text.encode()) > MAX_USERNAME_BYTES:
        raise ConfigError(f"{where}: the user name is over {MAX_USERNAME_BYTES} bytes")
    return text or None


def topic_prefix(where: str, value: Any) -> str:
    """The prefix of every room topic, without a trailing "/" (docs/protocol.md)."""
    prefix = str(value).removesuffix("/")
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


SCHEMES = {"mqtt": 1883, "mqtts": 8883, "ws": 80, "wss": 443}


@dataclass(frozen=True)
class BrokerUrl:
    scheme: str
    host: str
    port: int
    path: str = "/mqtt"

    @property
    def tls(self) -> bool:
        return self.scheme in ("mqtts", "wss")

    @property
    def transport(self) -> str:
        return "websockets" if self.scheme in ("ws", "wss") else "tcp"

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        tail = self.path if self.transport == "websockets" else ""
        return f"{self.scheme}://{host}:{self.port}{tail}"


def parse_broker_url(url: str, where: str = "broker URL") -> BrokerUrl:
    """Parse ``url``, or raise ConfigError naming ``where`` it came from."""
    if not url.isprintable() or " " in url:
        # isprintable is False for control characters, other white space and the
        # lone surrogates that bytes which are not UTF-8 become in argv and env.
        raise ConfigError(f"{where} {url!r} must be printable text with no spaces")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ConfigError(f"{where} {url!r} is not valid: {exc}") from None
    if parts.scheme not in SCHEMES:
        raise ConfigError(
            f"{where} {url!r} must start with one of {', '.join(s + '://' for s in SCHEMES)}"
        )
    if not parts.hostname:
        raise ConfigError(f"{where} {url!r} has no host")
    if port == 0:
        raise ConfigError(f"{where} {url!r}: the port must be 1 to 65535")
    if parts.username or parts.password:
        raise ConfigError(
            f"{where}: put no user name or password in the broker URL (it would show in `ps`); "
            "use [broker] username and password_file in the config file"
        )
    return BrokerUrl(
        parts.scheme, parts.hostname, port or SCHEMES[parts.scheme], parts.path or "/mqtt"
    )


def broker_urls(where: str, value: Any) -> tuple[BrokerUrl, ...]:
    return parse_broker_urls(value, where)


def parse_broker_urls(value: Any, where: str) -> tuple[BrokerUrl, ...]:
    """One URL, a comma-separated list of them (flag, environment) or a TOML list."""
    items = value if isinstance(value, list) else str(value).split(",")
    urls = tuple(parse_broker_url(str(item).strip(" "), f"{where}:") for item in items)
    if not urls:
        raise ConfigError(f"{where}: no broker URL given")
    if len(urls) > MAX_BROKER_URLS:
        raise ConfigError(f"{where}: at most {MAX_BROKER_URLS} broker URLs")
    return urls
