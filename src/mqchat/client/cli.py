"""chatctl: the command-line client of chatd (console script ``chatctl``).

``main`` first offers the command line to the fast path (mqchat.client.fast),
which runs the usual forms of ``send``, ``status``, ``join`` and ``tail``
without importing typer; anything else goes to the typer app
(mqchat.client.typer_app). This module stays small: it is loaded on every call.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from mqchat.client.commands import err, quiet_broken_pipe
from mqchat.errors import MqchatError

if TYPE_CHECKING:
    import typer


def build_app() -> typer.Typer:
    """The typer app: every command, with its help and usage errors."""
    from mqchat.client.typer_app import app

    return app


def main() -> None:
    from mqchat.client.fast import run

    try:
        code = run(sys.argv[1:])
        if code is not None:
            sys.exit(code)
        build_app()(prog_name="chatctl")
    except MqchatError as exc:
        err(f"ERROR: {exc.message}")
        sys.exit(exc.exit_code)
    except BrokenPipeError:
        quiet_broken_pipe()
        sys.exit(0)
    except KeyboardInterrupt:
        sys.exit(130)
