"""chatd's settings: each declared once, as a field of ``Settings``; flag > environment >
config file > default.

A field's ``setting(...)`` says everything about it: its TOML key, the type the
file must give, its chatd flag and environment variable if it has them, how its
value is checked, and its default (the field's own, or ``default_from``). The
file's schema, ``load_settings``, ``public_view`` (``chatctl config``) and
chatd's flags (``add_arguments``) are all derived from those declarations, so a
new setting is one field. tomllib is imported only when a file is read.
"""

from __future__ import annotations

import getpass
import os
from collections.abc import Callable, Mapping
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mqchat import config_checks as checks
from mqchat.config_checks import BrokerUrl, Check, parse_broker_url, parse_broker_urls
from mqchat.errors import ConfigError
from mqchat.paths import config_path, expand_user, runtime_dir, state_dir

if TYPE_CHECKING:
    import argparse

__all__ = ["BrokerUrl", "Settings", "load_settings", "parse_broker_url", "parse_broker_urls"]

DEFAULT_BROKER = "mqtts://broker.hivemq.com:8883"
DEFAULT_TOPIC_PREFIX = "mqchat/v1"
MAX_GRACE_PERIOD = 30 * 24 * 3600
MAX_RETENTION = 1_000_000_000
# ---------------------------------------------------------------------- declaring a setting


@dataclass(frozen=True)
class Setting:
    """How one field of Settings is given, checked and shown."""

    key: str
    """Its TOML key, ``section.leaf`` or a top-level name; also its name in ``sources``."""
    kind: type | tuple[type, ...] = str
    """What the config file must give: str, int, bool, or (str, list) for a list too."""
    flag: str | None = None
    """chatd's command-line flag, e.g. ``--state-dir``."""
    env: str | None = None
    check: Check = lambda _where, value: value
    default_from: Callable[[Mapping[str, str]], Any] | None = None
    """The default when it depends on the environment (the field then has none)."""
    show: Callable[[Any], Any] = lambda value: str(value) if isinstance(value, Path) else value
    """The value as ``chatctl config`` prints it."""
    help: str | None = None
    metavar: str | None = None


def setting(key: str, **how: Any) -> dict[str, Setting]:
    """A field's metadata that makes it a setting (``how``: the rest of ``Setting``)."""
    return {"setting": Setting(key, **how)}


def _user_name(_env: Mapping[str, str]) -> str:
    try:
        return getpass.getuser()
    except (OSError, KeyError):  # no LOGNAME, USER... and no passwd entry (a container)
        raise ConfigError(
            "cannot tell your user name: set MQCHAT_NAME, --name or name in the config file"
        ) from None


def _urls(urls: tuple[BrokerUrl, ...]) -> str | list[str]:
    return [str(u) for u in urls] if len(urls) > 1 else str(urls[0])


# ---------------------------------------------------------------------- the settings


@dataclass(frozen=True)
class Settings:
    """Everything chatd needs to start. Holds no secret, only where to find one."""

    name: str = field(
        metadata=setting(
            "name",
            flag="--name",
            env="MQCHAT_NAME",
            check=checks.name,
            default_from=_user_name,
            help="your name as others see it",
            metavar="NAME",
        )
    )
    brokers: tuple[BrokerUrl, ...] = field(
        metadata=setting(
            "broker.url",
            kind=(str, list),
            flag="--broker",
            env="MQCHAT_BROKER",
            check=checks.broker_urls,
            default_from=lambda _env: DEFAULT_BROKER,
            show=_urls,
            help="mqtt://host:1883, mqtts://host:8883, ws://, wss://",
            metavar="URL",
        )
    )
    """One URL, or several to fail over between (members of one cluster)."""
    runtime_dir: Path = field(
        metadata=setting(
            "runtime_dir",
            flag="--runtime-dir",
            env="MQCHAT_RUNTIME_DIR",
            check=checks.directory,
            default_from=runtime_dir,
            help="where the sockets live (0700)",
            metavar="DIR",
        )
    )
    state_dir: Path = field(
        metadata=setting(
            "state_dir",
            flag="--state-dir",
            env="MQCHAT_STATE_DIR",
            check=checks.directory,
            default_from=state_dir,
            help="where keys and messages are kept (0700)",
            metavar="DIR",
        )
    )
    protocol: str = field(
        default="auto", metadata=setting("broker.protocol", check=checks.protocol)
    )
    """"auto" (MQTT 5, else 3.1.1), "5" or "3.1.1"."""
    username: str | None = field(
        default=None,
        metadata=setting("broker.username", env="MQCHAT_BROKER_USERNAME", check=checks.username),
    )
    password_file: Path | None = field(
        default=None,
        metadata=setting(
            "broker.password_file", env="MQCHAT_BROKER_PASSWORD_FILE", check=checks.file_path
        ),
    )
    ca_file: Path | None = field(
        default=None, metadata=setting("broker.ca_file", check=checks.existing_file)
    )
    tls_insecure: bool = field(
        default=False,
        metadata=setting("broker.tls_insecure", kind=bool, check=checks.true_or_false),
    )
    topic_prefix: str = field(
        default=DEFAULT_TOPIC_PREFIX,
        metadata=setting("broker.topic_prefix", check=checks.topic_prefix),
    )
    keepalive: int = field(
        default=60,
        metadata=setting("broker.keepalive", kind=int, check=checks.between(5, 65535, "seconds")),
    )
    retention: int = field(
        default=10_000,
        metadata=setting(
            "store.retention", kind=int, check=checks.between(1, MAX_RETENTION, "messages per room")
        ),
    )
    presence_interval: int = field(
        default=60,
        metadata=setting("presence.interval", kind=int, check=checks.between(1, 86400, "seconds")),
    )
    """Seconds between "still here" announcements; offline after three missed."""
    repair_give_up: int = field(
        default=24 * 3600,
        metadata=setting(
            "repair.give_up_after", kind=int, check=checks.between(1, 30 * 86400, "seconds")
        ),
    )
    """Seconds a missing message is asked for before it is shown as lost (protocol.md §20)."""
    grace_period: int = field(
        default=24 * 3600,
        metadata=setting(
            "keys.grace_period",
            kind=int,
            env="MQCHAT_GRACE_PERIOD",
            check=checks.between(1, MAX_GRACE_PERIOD, "seconds"),
        ),
    )
    """Seconds an old epoch still opens after a rekey (docs/protocol.md §17.4)."""
    config_file: Path | None = None
    sources: dict[str, str] = field(default_factory=dict, compare=False)
    """Each setting's key: "flag", "environment", "config file" or "default"."""

    @property
    def broker(self) -> BrokerUrl:
        """The first broker URL: where chatd connects first."""
        return self.brokers[0]

    def public_view(self) -> dict[str, Any]:
        """The effective settings by TOML key, with where each came from; no secret."""
        view: dict[str, Any] = {}
        for f, how in SETTINGS:
            section, _, leaf = how.key.rpartition(".")
            table = view.setdefault(section, {}) if section else view
            table[leaf] = how.show(getattr(self, f.name))
        view["config_file"] = str(self.config_file) if self.config_file else None
        view["sources"] = dict(self.sources)
        return view


SETTINGS = [(f, f.metadata["setting"]) for f in fields(Settings) if "setting" in f.metadata]
"""Every setting: its field of Settings, and its declaration."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """chatd's flags for the settings that have one."""
    for _, how in SETTINGS:
        if how.flag:
            parser.add_argument(how.flag, metavar=how.metavar, help=how.help)


ENVIRONMENT = ("MQCHAT_CONFIG", *(how.env for _, how in SETTINGS if how.env))
"""The environment variables chatd reads (MQCHAT_CONFIG names the config file)."""


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


def _schema() -> dict[str, Any]:
    """The config file's tables and keys, each with the type it must give."""
    schema: dict[str, Any] = {}
    for _, how in SETTINGS:
        section, _, leaf = how.key.rpartition(".")
        (schema.setdefault(section, {}) if section else schema)[leaf] = how.kind
    return schema


def _check_schema(
    path: Path, data: Mapping[str, Any], schema: Mapping[str, Any] | None = None, where: str = ""
) -> None:
    schema = _schema() if schema is None else schema
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

    ``flags`` keys: config, and each setting's flag as a name (``runtime_dir``),
    None when not given. Every value is checked here, so that chatd refuses a
    bad one at start-up with its source named (ConfigError, exit 2), never later
    in a loop.
    """
    if flags.get("config") == "":
        raise ConfigError("--config: the path is empty")
    if flags.get("config"):
        cfg_path, explicit = expand_user(Path(str(flags["config"]))), True
    else:
        cfg_path, explicit = config_path(env)
    data = read_config_file(cfg_path, must_exist=explicit)
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for f, how in SETTINGS:
        value, where, sources[how.key] = _pick(how, flags, env, data, cfg_path)
        if value is MISSING:
            value = how.default_from(env) if how.default_from else f.default
        values[f.name] = None if value is None else how.check(where, value)
    config_file = cfg_path if data or _exists(cfg_path) else None
    return Settings(**values, config_file=config_file, sources=sources)


def _pick(
    how: Setting,
    flags: Mapping[str, str | None],
    env: Mapping[str, str],
    data: Mapping[str, Any],
    cfg_path: Path,
) -> tuple[Any, str, str]:
    """(the value as given or MISSING, where it came from as an error names it, the source)."""
    flag_value = flags.get(how.flag.removeprefix("--").replace("-", "_")) if how.flag else None
    if how.flag is not None and flag_value is not None:
        return flag_value, how.flag, "flag"
    if how.env and env.get(how.env):
        return env[how.env], how.env, "environment"
    section, _, leaf = how.key.rpartition(".")
    table = data.get(section, {}) if section else data
    if table.get(leaf) is not None:
        return table[leaf], f"config file {cfg_path}: {how.key}", "config file"
    return MISSING, f"the default {how.key}", "default"


def _exists(path: Path) -> bool:
    try:
        return path.is_file()
    except OSError:
        return False
