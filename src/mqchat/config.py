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

from mqchat.errors import ConfigError
from mqchat.paths import config_path, runtime_dir, state_dir
from mqchat.protocol.limits import normalize_name

DEFAULT_BROKER = "mqtts://broker.hivemq.com:8883"
DEFAULT_TOPIC_PREFIX = "mqchat/v1"
DEFAULT_KEEPALIVE = 60
DEFAULT_RETENTION = 10_000
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


def parse_broker_url(url: str) -> BrokerUrl:
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ConfigError(f"broker URL {url!r} is not valid: {exc}") from None
    if parts.scheme not in SCHEMES:
        raise ConfigError(
            f"broker URL {url!r} must start with one of {', '.join(s + '://' for s in SCHEMES)}"
        )
    if not parts.hostname:
        raise ConfigError(f"broker URL {url!r} has no host")
    if parts.username or parts.password:
        raise ConfigError(
            "put no user name or password in the broker URL (it would show in `ps`); "
            "use [broker] username and password_file in the config file"
        )
    return BrokerUrl(
        parts.scheme, parts.hostname, port or SCHEMES[parts.scheme], parts.path or "/mqtt"
    )


@dataclass(frozen=True)
class Settings:
    """Everything chatd needs to start. Holds no secret, only where to find one."""

    name: str
    broker: BrokerUrl
    runtime_dir: Path
    state_dir: Path
    username: str | None = None
    password_file: Path | None = None
    ca_file: Path | None = None
    tls_insecure: bool = False
    topic_prefix: str = DEFAULT_TOPIC_PREFIX
    keepalive: int = DEFAULT_KEEPALIVE
    retention: int = DEFAULT_RETENTION
    config_file: Path | None = None
    sources: dict[str, str] = field(default_factory=dict, compare=False)

    def public_view(self) -> dict[str, Any]:
        """The effective settings, with where each came from; no secret."""
        return {
            "name": self.name,
            "broker": {
                "url": str(self.broker),
                "username": self.username,
                "password_file": str(self.password_file) if self.password_file else None,
                "ca_file": str(self.ca_file) if self.ca_file else None,
                "tls_insecure": self.tls_insecure,
                "topic_prefix": self.topic_prefix,
                "keepalive": self.keepalive,
            },
            "store": {"retention": self.retention},
            "runtime_dir": str(self.runtime_dir),
            "state_dir": str(self.state_dir),
            "config_file": str(self.config_file) if self.config_file else None,
            "sources": dict(self.sources),
        }


def read_config_file(path: Path, *, must_exist: bool) -> dict[str, Any]:
    import tomllib

    try:
        with path.open("rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        if must_exist:
            raise ConfigError(f"config file {path} does not exist") from None
        return {}
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    _check_schema(path, data)
    return data


_KIND_NAMES = {str: "a string", int: "an integer", bool: "true or false"}

_SCHEMA: dict[str, Any] = {
    "name": str,
    "broker": {
        "url": str,
        "username": str,
        "password_file": str,
        "ca_file": str,
        "tls_insecure": bool,
        "topic_prefix": str,
        "keepalive": int,
    },
    "store": {"retention": int},
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
        elif not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise ConfigError(f"config file {path}: {name} must be {_KIND_NAMES[kind]}")


def load_settings(flags: Mapping[str, str | None], env: Mapping[str, str] = os.environ) -> Settings:
    """Resolve settings: flag > environment > config file > default.

    ``flags`` keys: config, broker, name, runtime_dir, state_dir (None when not given).
    """
    sources: dict[str, str] = {}
    if flags.get("config"):
        cfg_path, explicit = Path(str(flags["config"])).expanduser(), True
    else:
        cfg_path, explicit = config_path(env)
    data = read_config_file(cfg_path, must_exist=explicit)
    broker_cfg: dict[str, Any] = data.get("broker", {})
    store_cfg: dict[str, Any] = data.get("store", {})

    def pick(
        key: str, flag: str | None, env_name: str | None, file_value: Any, default: Any
    ) -> Any:
        if flag is not None:
            sources[key] = "flag"
            return flag
        if env_name and env.get(env_name):
            sources[key] = "environment"
            return env[env_name]
        if file_value is not None:
            sources[key] = "config file"
            return file_value
        sources[key] = "default"
        return default

    name = normalize_name(
        str(pick("name", flags.get("name"), "MQCHAT_NAME", data.get("name"), getpass.getuser()))
    )
    url = parse_broker_url(
        str(
            pick(
                "broker.url",
                flags.get("broker"),
                "MQCHAT_BROKER",
                broker_cfg.get("url"),
                DEFAULT_BROKER,
            )
        )
    )
    rdir = Path(
        str(pick("runtime_dir", flags.get("runtime_dir"), None, None, runtime_dir(env)))
    ).expanduser()
    sdir = Path(
        str(pick("state_dir", flags.get("state_dir"), None, None, state_dir(env)))
    ).expanduser()
    username = pick(
        "broker.username", None, "MQCHAT_BROKER_USERNAME", broker_cfg.get("username"), None
    )
    password_file = pick(
        "broker.password_file",
        None,
        "MQCHAT_BROKER_PASSWORD_FILE",
        broker_cfg.get("password_file"),
        None,
    )
    for key, table, section in (
        ("ca_file", broker_cfg, "broker"),
        ("tls_insecure", broker_cfg, "broker"),
        ("topic_prefix", broker_cfg, "broker"),
        ("keepalive", broker_cfg, "broker"),
        ("retention", store_cfg, "store"),
    ):
        sources[f"{section}.{key}"] = "config file" if key in table else "default"
    ca_file = broker_cfg.get("ca_file")
    keepalive = int(broker_cfg.get("keepalive", DEFAULT_KEEPALIVE))
    retention = int(store_cfg.get("retention", DEFAULT_RETENTION))
    if not 5 <= keepalive <= 65535:
        raise ConfigError("broker.keepalive must be between 5 and 65535 seconds")
    if retention < 1:
        raise ConfigError("store.retention must be at least 1 message per room")
    prefix = str(broker_cfg.get("topic_prefix", DEFAULT_TOPIC_PREFIX)).strip("/")
    if not prefix or set(prefix) & {"+", "#"}:
        raise ConfigError("broker.topic_prefix must be a topic without + or #")
    return Settings(
        name=name,
        broker=url,
        runtime_dir=rdir,
        state_dir=sdir,
        username=str(username) if username else None,
        password_file=Path(str(password_file)).expanduser() if password_file else None,
        ca_file=Path(ca_file).expanduser() if ca_file else None,
        tls_insecure=bool(broker_cfg.get("tls_insecure", False)),
        topic_prefix=prefix,
        keepalive=keepalive,
        retention=retention,
        config_file=cfg_path if cfg_path.exists() else None,
        sources=sources,
    )
