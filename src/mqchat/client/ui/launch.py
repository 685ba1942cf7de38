"""``chatctl ui [ROOM]``: check for Textual, check chatd, then run the app.

Imports no Textual itself: without the ``ui`` extra, the command says how to
install it and exits 2, as for any other usage error.
"""

from __future__ import annotations

import sys
from pathlib import Path

from mqchat.client.commands import Options
from mqchat.errors import UsageError
from mqchat.protocol.limits import normalize_room

TEXTUAL = "'textual>=8.2'"
"""The ui extra of pyproject.toml. mqchat is not on PyPI: `pip install 'mqchat[ui]'`
would fail, so the hint installs the extra's one package where chatctl runs."""


def install_hint(prefix: str | None = None, python: str | None = None) -> str:
    """How to add the ui extra to the installation this chatctl runs from."""
    prefix = prefix or sys.prefix
    python = python or sys.executable
    if "pipx" in Path(prefix).parts:
        how = f"`pipx inject mqchat {TEXTUAL}` (or, in mqchat's source tree, "
        how += "`pipx install --force '.[ui]'`)"
    else:
        how = f"`{python} -m pip install {TEXTUAL}` (or, in mqchat's source tree, "
        how += "`pip install '.[ui]'` into the same Python or venv)"
    return f"chatctl ui needs Textual, the optional ui extra: install it with {how}"


def run_ui(opts: Options, room: str | None) -> None:
    try:
        import textual  # noqa: F401 -- only to know whether the extra is installed
    except ImportError:
        raise UsageError(install_hint()) from None
    if not (sys.stdin is not None and sys.stdin.isatty() and sys.stdout.isatty()):
        raise UsageError("chatctl ui needs a terminal; `chatctl tail` and `send` suit pipes")
    name = normalize_room(room) if room is not None else None
    from mqchat.client.ui.app import ChatApp
    from mqchat.client.ui.link import ChatdLink

    opts.client().close()  # the runtime dir's checks, and exit 3 if chatd is not running
    link = ChatdLink(opts.runtime_dir, opts.timeout)
    try:
        ChatApp(link, room=name).run()
    finally:
        link.close()
