"""Where mqchat keeps things (XDG), with nothing heavier than pathlib to import.

``chatctl``'s fast path needs the runtime dir on every call; the rest of the
settings live in ``mqchat.config``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

__all__ = [
    "CTL_SOCKET",
    "EVENTS_SOCKET",
    "LOCK_FILE",
    "SUN_PATH_MAX",
    "config_path",
    "expand_user",
    "runtime_dir",
    "state_dir",
]

# The files in the runtime dir, named once for chatd (which binds and locks
# them) and chatctl (which connects): docs/ipc.md.
CTL_SOCKET = "ctl.sock"
"""Requests: chatd's ZeroMQ ROUTER."""
EVENTS_SOCKET = "events.sock"
"""Events: chatd's listening Unix stream socket."""
LOCK_FILE = "chatd.lock"
"""Held (flock) by the running chatd, in the runtime dir and in the state dir."""
SUN_PATH_MAX = 107
"""A Unix socket path may have at most this many bytes."""


def expand_user(path: Path) -> Path:
    """``~`` expanded, or a ConfigError: with no HOME and no passwd entry there is no ``~``."""
    try:
        return path.expanduser()
    except RuntimeError:
        from mqchat.errors import ConfigError

        raise ConfigError(f"cannot expand {path}: set HOME, or name the path in full") from None


def _env_path(env: Mapping[str, str], name: str, xdg: str, fallback: str) -> Path:
    if env.get(name):
        return expand_user(Path(env[name]))
    base = env.get(xdg)
    return Path(base) / "mqchat" if base else expand_user(Path(fallback))


def runtime_dir(env: Mapping[str, str] = os.environ) -> Path:
    """$MQCHAT_RUNTIME_DIR, else $XDG_RUNTIME_DIR/mqchat, else /tmp/mqchat-<uid>."""
    return _env_path(env, "MQCHAT_RUNTIME_DIR", "XDG_RUNTIME_DIR", f"/tmp/mqchat-{os.getuid()}")  # noqa: S108 -- checked 0700 and owned before use, as ssh-agent does


def state_dir(env: Mapping[str, str] = os.environ) -> Path:
    """$MQCHAT_STATE_DIR, else $XDG_STATE_HOME/mqchat, else ~/.local/state/mqchat."""
    return _env_path(env, "MQCHAT_STATE_DIR", "XDG_STATE_HOME", "~/.local/state/mqchat")


def config_path(env: Mapping[str, str] = os.environ) -> tuple[Path, bool]:
    """(path, explicit): an explicit path must exist; the default one may be absent."""
    if env.get("MQCHAT_CONFIG"):
        return expand_user(Path(env["MQCHAT_CONFIG"])), True
    base = env.get("XDG_CONFIG_HOME") or str(expand_user(Path("~/.config")))
    return Path(base) / "mqchat" / "config.toml", False
