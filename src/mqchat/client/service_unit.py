"""The systemd user unit for chatd, written with the path of this installation."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

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


def render_unit(chatd: str | None = None) -> str:
    return UNIT_TEMPLATE.format(chatd=chatd or chatd_path())


def user_unit_dir() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path("~/.config").expanduser())
    return Path(base) / "systemd" / "user"


def install_unit(chatd: str | None = None) -> Path:
    """Write the unit to ~/.config/systemd/user/chatd.service and return its path."""
    directory = user_unit_dir()
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / UNIT_NAME
    tmp = path.with_suffix(".tmp")
    tmp.write_text(render_unit(chatd))
    tmp.replace(path)
    return path
