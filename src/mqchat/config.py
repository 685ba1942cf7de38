"""Paths (XDG), the TOML config file, and flag > environment > file > default.

``chatctl`` imports this for the runtime dir alone, so tomllib is imported
only when a config file is actually read.
"""

from __future__ import annotations

import getpass
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from mqchat.errors import ConfigError, UsageError
from mqchat.paths import config_path, expand_user, runtime_dir, state_dir
from mqchat.protocol.limits import normalize_name

DEFAULT_BROKER = "mqtts://broker.hivemq.com:8883"
DEFAULT_PROTOCOL = "auto"
DEFAULT_PRESENCE_INTERVAL = 60
DEFAULT_REPAIR_GIVE_UP = 24 * 60 * 60
"""A missing message is asked for this long (seconds), then shown as lost."""
DEFAULT_GRACE_PERIOD = 24 * 3600
"""docs/protocol.md §17.4: how long an old epoch still opens after a rekey."""
MAX_GRACE_PERIOD = 30 * 24 * 3600
PROTOCOLS = ("auto", "5", "3.1.1")
MAX_BROKER_URLS = 16
DEFAULT_TOPIC_PREFIX = "mqchat/v1"
DEFAULT_KEEPALIVE = 60
DEFAULT_RETENTION = 10_000
MAX_RETENTION = 1_000_000_000
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


def parse_broker_urls(value: Any, where: str) -> tuple[BrokerUrl, ...]:
    """One URL, a comma-separated list of them (flag, environment) or a TOML list."""
    items = value if isinstance(value, list) else str(value).split(",")
    urls = tuple(parse_broker_url(str(item).strip(" "), f"{where}:") for item in items)
    if not urls:
        raise ConfigError(f"{where}: no broker URL given")
    if len(urls) > MAX_BROKER_URLS:
        raise ConfigError(f"{where}: at most {MAX_BROKER_URLS} broker URLs")
    return urls


@dataclass(frozen=True)
class Settings:
    """Everything chatd needs to start. Holds no secret, only where to find one."""

    name: str
    brokers: tuple[BrokerUrl, ...]
    """One URL, or several to fail over between (members of one cluster)."""
    runtime_dir: Path
    state_dir: Path
    username: str | None = None
    password_file: Path | None = None
    ca_file: Path | None = None
    tls_insecure: bool = False
    topic_prefix: str = DEFAULT_TOPIC_PREFIX
    keepalive: int = DEFAULT_KEEPALIVE
    retention: int = DEFAULT_RETENTION
    presence_interval: int = DEFAULT_PRESENCE_INTERVAL
    """Seconds between "still here" announcements; offline after three missed."""
    repair_give_up: int = DEFAULT_REPAIR_GIVE_UP
    """Seconds a missing message is asked for before it is shown as lost (protocol.md §20)."""
    grace_period: int = DEFAULT_GRACE_PERIOD
    """Seconds an old epoch still opens after a rekey (docs/protocol.md §17.4)."""
    protocol: str = DEFAULT_PROTOCOL
    """"auto" (MQTT 5, else 3.1.1), "5" or "3.1.1"."""
    config_file: Path | None = None
    sources: dict[str, str] = field(default_factory=dict, compare=False)

    @property
    def broker(self) -> BrokerUrl:
        """The first broker URL: where chatd connects first."""
        return self.brokers[0]

    def public_view(self) -> dict[str, Any]:
        """The effective settings, with where each came from; no secret."""
        return {
            "name": self.name,
            "broker": {
                "url": [str(u) for u in self.brokers]
                if len(self.brokers) > 1
                else str(self.broker),
                "protocol": self.protocol,
                "username": self.username,
                "password_file": str(self.password_file) if self.password_file else None,
                "ca_file": str(self.ca_file) if self.ca_file else None,
                "tls_insecure": self.tls_insecure,
                "topic_prefix": self.topic_prefix,
                "keepalive": self.keepalive,
            },
            "store": {"retention": self.retention},
            "presence": {"interval": self.presence_interval},
            "repair": {"give_up_after": self.repair_give_up},
            "keys": {"grace_period": self.grace_period},
            "runtime_dir": str(self.runtime_dir),
            "state_dir": str(self.state_dir),
            "config_file": str(self.config_file) if self.config_file else None,
            "sources": dict(self.sources),
        }


MAX_CONFIG_BYTES = 1024 * 1024
"""A config file is a few lines; /dev/zero or a log named by mistake is refused."""


def read_config_file(path: Path, *, must_exist: bool) -> dict[str, Any]:
    """The checked contents of the TOML file at ``path``; {} if it may be absent and is."""
    import tomllib

    try:
        with path.open("rb") as f:
            raw = f.read(MAX_CONFIG_BYTES + 1)
    except FileNotFoundError:
        if must_exist:
            raise ConfigError(f"config file {path} does not exist") from None
        return {}
    except IsADirectoryError:
        raise ConfigError(f"config file {path} is a directory, not a file") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(f"config file {path} is larger than {MAX_CONFIG_BYTES} bytes")
    try:
        text = raw.decode()
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config file {path} is not UTF-8 text (byte {exc.start})") from None
    try:
        data = tomllib.loads(text)
    except RecursionError:
        raise ConfigError(f"config file {path} nests arrays or tables too deeply") from None
    except ValueError as exc:  # TOMLDecodeError, or an integer of over 4300 digits
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    _check_schema(path, data)
    return data


_KIND_NAMES = {
    str: "a string",
    int: "an integer",
    bool: "true or false",
    (str, list): "a string or a list of strings",
}

_SCHEMA: dict[str, Any] = {
    "name": str,
    "broker": {
        "url": (str, list),
        "protocol": str,
        "username": str,
        "password_file": str,
        "ca_file": str,
        "tls_insecure": bool,
        "topic_prefix": str,
        "keepalive": int,
    },
    "store": {"retention": int},
    "presence": {"interval": int},
    "repair": {"give_up_after": int},
    "keys": {"grace_period": int},
}


def _check_schema(
    path: Path, data: Mapping[str, Any], schema: Mapping[str, Any] = _SCHEMA, where: str = ""
) -> None:
    for key, value in data.items():
        name = f"{where}{key}"
        if key not in schema:
            raise ConfigError(f"config file {path}: unknown setting {name!r}")
        kind = schema[key]
        if isinstance(kind, dict):
            if not isinstance(value, dict):
                raise ConfigError(f"config file {path}: [{name}] must be a table")
            _check_schema(path, value, kind, f"{name}.")
        elif (
            not isinstance(value, kind)
            or (kind is int and isinstance(value, bool))
            or (isinstance(value, list) and not all(isinstance(v, str) for v in value))
        ):
            raise ConfigError(f"config file {path}: {name} must be {_KIND_NAMES[kind]}")


def load_settings(flags: Mapping[str, str | None], env: Mapping[str, str] = os.environ) -> Settings:
    """Resolve settings: flag > environment > config file > default.

    ``flags`` keys: config, broker, name, runtime_dir, state_dir (None when not given).
    Every value is checked here, so that chatd refuses a bad one at start-up
    with its source named (ConfigError, exit 2), never later in a loop.
    """
    from mqchat.config_checks import (
        check_dir,
        check_int,
        check_path,
        check_topic_prefix,
        check_username,
    )

    if flags.get("config") == "":
        raise ConfigError("--config: the path is empty")
    if flags.get("config"):
        cfg_path, explicit = expand_user(Path(str(flags["config"]))), True
    else:
        cfg_path, explicit = config_path(env)
    data = read_config_file(cfg_path, must_exist=explicit)
    pick = _Picker(flags, env, data, cfg_path)

    name_value, where = pick("name", "--name", "MQCHAT_NAME", default=_user_name)
    try:
        name = normalize_name(str(name_value))
    except UsageError as exc:
        raise ConfigError(f"{where}: {exc.message}") from None
    url_value, where = pick("broker.url", "--broker", "MQCHAT_BROKER", default=DEFAULT_BROKER)
    brokers = parse_broker_urls(url_value, where)
    protocol, where_protocol = pick("broker.protocol", default=DEFAULT_PROTOCOL)
    if protocol not in PROTOCOLS:
        raise ConfigError(
            f"{where_protocol} must be one of {', '.join(repr(p) for p in PROTOCOLS)}"
        )
    rdir_value, where = pick(
        "runtime_dir", "--runtime-dir", "MQCHAT_RUNTIME_DIR", default=lambda: runtime_dir(env)
    )
    rdir = check_dir(where, str(rdir_value))
    sdir_value, where = pick(
        "state_dir", "--state-dir", "MQCHAT_STATE_DIR", default=lambda: state_dir(env)
    )
    sdir = check_dir(where, str(sdir_value))
    username, where = pick("broker.username", None, "MQCHAT_BROKER_USERNAME")
    if username is not None:
        check_username(where, str(username))
    password_file, where = pick("broker.password_file", None, "MQCHAT_BROKER_PASSWORD_FILE")
    if password_file is not None:
        check_path(where, str(password_file))
    ca_file, where = pick("broker.ca_file")
    if ca_file is not None:
        check_path(where, str(ca_file), must_be_file=True)
    tls_insecure, _ = pick("broker.tls_insecure", default=False)
    prefix, where = pick("broker.topic_prefix", default=DEFAULT_TOPIC_PREFIX)
    keepalive, where_keepalive = pick("broker.keepalive", default=DEFAULT_KEEPALIVE)
    retention, where_retention = pick("store.retention", default=DEFAULT_RETENTION)
    interval, where_interval = pick("presence.interval", default=DEFAULT_PRESENCE_INTERVAL)
    give_up, where_give_up = pick("repair.give_up_after", default=DEFAULT_REPAIR_GIVE_UP)
    grace, where_grace = pick(
        "keys.grace_period", None, "MQCHAT_GRACE_PERIOD", default=DEFAULT_GRACE_PERIOD
    )
    if isinstance(grace, str):  # from the environment
        grace = int(grace) if grace.isascii() and grace.isdigit() and len(grace) < 12 else grace
    return Settings(
        name=name,
        brokers=brokers,
        protocol=str(protocol),
        runtime_dir=rdir,
        state_dir=sdir,
        username=str(username) if username else None,
        password_file=expand_user(Path(str(password_file))) if password_file else None,
        ca_file=expand_user(Path(str(ca_file))) if ca_file else None,
        tls_insecure=bool(tls_insecure),
        topic_prefix=check_topic_prefix(where, str(prefix)),
        keepalive=check_int(where_keepalive, keepalive, 5, 65535, "seconds"),
        retention=check_int(where_retention, retention, 1, MAX_RETENTION, "messages per room"),
        presence_interval=check_int(where_interval, interval, 1, 86400, "seconds"),
        repair_give_up=check_int(where_give_up, give_up, 1, 30 * 86400, "seconds"),
        grace_period=check_int(where_grace, grace, 1, MAX_GRACE_PERIOD, "seconds"),
        config_file=cfg_path if data or _exists(cfg_path) else None,
        sources=pick.sources,
    )


def _exists(path: Path) -> bool:
    try:
        return path.is_file()
    except OSError:
        return False


def _user_name() -> str:
    try:
        return getpass.getuser()
    except (OSError, KeyError):  # no LOGNAME, USER... and no passwd entry (a container)
        raise ConfigError(
            "cannot tell your user name: set MQCHAT_NAME, --name or name in the config file"
        ) from None


class _Picker:
    """Takes each setting from flag > environment > config file > default, and says where."""

    def __init__(
        self,
        flags: Mapping[str, str | None],
        env: Mapping[str, str],
        data: Mapping[str, Any],
        cfg_path: Path,
    ) -> None:
        self.flags = flags
        self.env = env
        self.data = data
        self.cfg_path = cfg_path
        self.sources: dict[str, str] = {}

    def __call__(
        self,
        key: str,
        flag: str | None = None,
        env_name: str | None = None,
        *,
        default: Any = None,
    ) -> tuple[Any, str]:
        """(value, where it came from, as an error message names it)."""
        flag_value = self.flags.get(flag.removeprefix("--").replace("-", "_")) if flag else None
        if flag is not None and flag_value is not None:
            self.sources[key] = "flag"
            return flag_value, flag
        if env_name and self.env.get(env_name):
            self.sources[key] = "environment"
            return self.env[env_name], env_name
        section, _, leaf = key.rpartition(".")
        table = self.data.get(section, {}) if section else self.data
        if table.get(leaf) is not None:
            self.sources[key] = "config file"
            return table[leaf], f"config file {self.cfg_path}: {key}"
        self.sources[key] = "default"
        return (default() if callable(default) else default), f"the default {key}"
