"""``chatctl ui [ROOM]``: check for Textual, check chatd, then run the app.

Imports no Textual itself: without the ``ui`` extra, the command says how to
install it and exits 2, as for any other usage error.
"""

from __future__ import annotations

import sys

from mqchat.client.commands import Options
from mqchat.errors import UsageError
from mqchat.protocol.limits import normalize_room

INSTALL_HINT = "chatctl ui needs Textual, an optional extra: pip install 'mqchat[ui]'"


def run_ui(opts: Options, room: str | None) -> None:
    try:
        import textual  # noqa: F401 -- only to know whether the extra is installed
    except ImportError:
        raise UsageError(INSTALL_HINT) from None
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
