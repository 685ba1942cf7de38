"""The systemd user unit for chatd, written with the path of this installation.

systemd's user manager has none of the shell's MQCHAT_* variables, and the
chatd a user started by hand may have had ``--broker``: the unit's command line
carries the broker and name that chatd actually uses, where they differ from
what the config file alone gives (plan_unit).
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from mqchat.config import DEFAULT_BROKER, Settings

UNIT_NAME = "chatd.service"

UNIT_TEMPLATE = """\
# systemd user unit for chatd, the mqchat daemon.
# Install: chatctl service install   (writes this file with the right ExecStart)
[Unit]
Description=mqchat daemon: encrypted group chat over MQTT

[Service]
Type=notify
NotifyAccess=main
ExecStart={chatd}
Restart=on-failure
RestartSec=2s
TimeoutStopSec=15s
UMask=0077
NoNewPrivileges=yes
RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6
LockPersonality=yes
RestrictRealtime=yes
RestrictSUIDSGID=yes
SystemCallArchitectures=native
# A runaway client cannot take the machine: past MemoryHigh the kernel reclaims
# from chatd, past MemoryMax it kills it and systemd starts it again (its outbox
# and store are on disk, so nothing accepted is lost). chatd itself stays far
# below: ~45 MB, +64 MiB while a passphrase is derived (docs/security.md).
MemoryHigh=384M
MemoryMax=512M
OOMPolicy=stop
# chatd logs to stderr; the journal keeps it (journalctl --user -u chatd).

[Install]
WantedBy=default.target
"""

DEFAULT_CHATD = "%h/.local/bin/chatd"


def chatd_path() -> str:
    """The chatd of this installation: beside this Python (venv, pipx), else on PATH."""
    beside = Path(sys.executable).parent / "chatd"
    if beside.exists():
        return str(beside)
    found = shutil.which("chatd")
    return str(Path(found).resolve()) if found else DEFAULT_CHATD


def systemd_word(word: str) -> str:
    """``word`` as one word of an ExecStart= line (systemd.service(5), "Command lines")."""
    word = word.replace("%", "%%")
    if word and not any(c in word for c in " \t\"'\\;$"):
        return word
    return '"' + word.replace("\\", "\\\\").replace('"', '\\"').replace("$", "$$") + '"'


def render_unit(chatd: str | None = None, args: Sequence[str] = ()) -> str:
    # The path is a path (DEFAULT_CHATD's %h is meant as systemd's specifier); the
    # arguments are values, quoted and with % escaped.
    command = " ".join([chatd or chatd_path(), *(systemd_word(a) for a in args)])
    return UNIT_TEMPLATE.format(chatd=command)


def without_mqchat_env(env: Mapping[str, str]) -> dict[str, str]:
    """The environment as systemd's user manager gives it: none of the shell's MQCHAT_*."""
    return {k: v for k, v in env.items() if not k.startswith("MQCHAT_")}


class UnitPlan(NamedTuple):
    """What the unit adds to chatd's command line, and why, in words for the user."""

    args: list[str]
    notes: list[str]


def plan_unit(
    running: Mapping[str, Any] | None, here: Settings, under_systemd: Settings
) -> UnitPlan:
    """The flags that make chatd under systemd use the broker and name that the chatd
    running now uses (``running``: its status), else those a chatd started from this
    shell would use (``here``), where systemd alone (``under_systemd``) would differ."""
    url = str(running["broker"]["url"]) if running else str(here.broker)
    name = str(running["name"]) if running else here.name
    whose = f"the chatd running now (pid {running.get('pid')})" if running else "this shell"
    args: list[str] = []
    notes: list[str] = []
    if url != str(under_systemd.broker):
        args += ["--broker", url]
    if name != under_systemd.name:
        args += ["--name", name]
    if args:
        notes.append(f"broker {url} and name {name}, as {whose} uses them")
    else:
        source = under_systemd.sources.get("broker.url", "default")
        notes.append(f"broker {url} ({source}) and name {name}")
    if url == DEFAULT_BROKER:
        notes.append(
            "that is the public default broker: for your own, set [broker] url in "
            "config.toml (or start chatd with --broker) and run this again"
        )
    return UnitPlan(args, notes)


def user_unit_dir() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path("~/.config").expanduser())
    return Path(base) / "systemd" / "user"


def install_unit(chatd: str | None = None, args: Sequence[str] = ()) -> Path:
    """Write the unit to ~/.config/systemd/user/chatd.service and return its path."""
    directory = user_unit_dir()
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / UNIT_NAME
    tmp = path.with_suffix(".tmp")
    tmp.write_text(render_unit(chatd, args))
    tmp.replace(path)
    return path
