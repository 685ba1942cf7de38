"""chatctl's fast path: ``send`` and ``status`` without typer.

Scripts run ``chatctl send`` once per message, so its start-up is most of what
it costs; importing typer alone takes longer than the whole budget (issue 8:
at most twice ``python -c 'import zmq'``). A command line that is plainly one
of

    chatctl [--runtime-dir DIR] [--timeout SECONDS] send ROOM [TEXT...]
    chatctl [--runtime-dir DIR] [--timeout SECONDS] status [--json]

is run here, through the functions the typer commands call too
(``mqchat.client.commands``). Anything else (help, an unknown or misplaced
option, a value typer would refuse, shell completion) is left to typer, so
that its usage errors and help stay the only ones.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

from mqchat.client import commands
from mqchat.client.commands import DEFAULT_TIMEOUT, MIN_TIMEOUT, Options

GLOBAL_OPTIONS = ("--runtime-dir", "--timeout")
COMPLETION_VAR = "_CHATCTL_COMPLETE"
"""Set by the shell when it asks typer to complete a command line."""

Command = Callable[[], None]


def _global_options(argv: Sequence[str]) -> tuple[dict[str, str], list[str]] | None:
    """The global options given before the command, and the rest; None if unsure."""
    values: dict[str, str] = {}
    i = 0
    while i < len(argv) and argv[i].startswith("-"):
        name, eq, value = argv[i].partition("=")
        if name not in GLOBAL_OPTIONS:
            return None
        if not eq:
            if i + 1 == len(argv):
                return None
            i += 1
            value = argv[i]
        if not value or value.startswith("-"):
            return None
        values[name] = value  # given twice, the last one counts, as in typer
        i += 1
    return values, list(argv[i:])


def _options(values: dict[str, str]) -> Options | None:
    timeout = DEFAULT_TIMEOUT
    if "--timeout" in values:
        try:
            timeout = float(values["--timeout"])
        except ValueError:
            return None
        if not MIN_TIMEOUT <= timeout < float("inf"):
            return None
    if "--runtime-dir" in values:
        return Options(Path(values["--runtime-dir"]), timeout)
    from mqchat.paths import runtime_dir

    return Options(runtime_dir(), timeout)


def _is_option(arg: str) -> bool:
    return arg.startswith("-") and arg != "-"


def parse(argv: Sequence[str]) -> Command | None:
    """The command to run for ``argv`` (without the program name), or None: use typer."""
    if os.environ.get(COMPLETION_VAR):
        return None
    split = _global_options(argv)
    if split is None:
        return None
    values, rest = split
    is_send = len(rest) >= 2 and rest[0] == "send" and not any(map(_is_option, rest[1:]))
    is_status = rest in (["status"], ["status", "--json"])
    if not (is_send or is_status):
        return None
    opts = _options(values)
    if opts is None:
        return None
    if is_send:
        return lambda: commands.send(opts, rest[1], rest[2:])
    return lambda: commands.status(opts, as_json=rest == ["status", "--json"])


def run(argv: Sequence[str]) -> int | None:
    """Run ``argv`` here and return its exit status, or return None: use typer.

    Failures end as on the typer path: an MqchatError or Ctrl-C propagates to
    ``cli.main``; a pipe closed under stderr is a quiet 1, as typer makes it.
    """
    command = parse(argv)
    if command is None:
        return None
    try:
        command()
    except BrokenPipeError:
        commands.quiet_broken_pipe()
        return 1
    return 0
