"""chatctl: the command-line client of chatd (console script ``chatctl``).

The command line is declared once, in mqchat.client.cli_spec. ``main`` first
offers it to the fast path (mqchat.client.fast), which runs ``send``,
``status``, ``join`` and ``tail`` without importing typer; anything else goes
to the typer app (mqchat.client.typer_app) built from the same declarations.
This module stays small: it is compiled and loaded on every call.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from mqchat.client.commands import err, quiet_broken_pipe
from mqchat.errors import MqchatError

if TYPE_CHECKING:
    import typer


def build_app() -> typer.Typer:
    """The typer app: every command of cli_spec, with its help and usage errors."""
    from mqchat.client import typer_app

    return typer_app.build_app()


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
