"""chatctl's fast path: ``join``, ``send``, ``status`` and ``tail`` without typer.

Scripts run ``chatctl send`` once per message, so its start-up is most of what
it costs; importing typer alone takes longer than the whole budget (issue 8:
at most twice ``python -c 'import zmq'``). A command line that is plainly one
of

    chatctl [--runtime-dir DIR] [--timeout SECONDS] send ROOM [TEXT...]
    chatctl [--runtime-dir DIR] [--timeout SECONDS] status [--json]
    chatctl [--runtime-dir DIR] [--timeout SECONDS] join ROOM [--passphrase-file FILE]
            [--cipher CIPHER] [--legacy] [--weak]
    chatctl [--runtime-dir DIR] [--timeout SECONDS] tail [ROOM...] [-n N] [--since SEQ]
            [--no-follow] [--json] [--format TEMPLATE]

is run here, through the functions the typer commands call too
(``mqchat.client.commands``). Anything else (help, an unknown or misplaced
option, a value typer would refuse, shell completion) is left to typer, so
that its usage errors and help stay the only ones.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

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


TAIL_FLAGS = ("--no-follow", "--json")
TAIL_VALUES = ("-n", "--lines", "--since", "--format")


def _tail_args(args: Sequence[str]) -> dict[str, Any] | None:
    """``tail``'s arguments as commands.tail takes them, or None: let typer judge."""
    kw: dict[str, Any] = {
        "lines": 10,
        "since": None,
        "follow": True,
        "as_json": False,
        "template": None,
    }
    rooms: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        i += 1
        if arg in TAIL_FLAGS:
            kw["follow" if arg == "--no-follow" else "as_json"] = arg != "--no-follow"
            continue
        if not _is_option(arg):
            rooms.append(arg)
            continue
        name, eq, value = arg.partition("=") if arg.startswith("--") else (arg, "", "")
        if name not in TAIL_VALUES:
            return None
        if not eq:
            if i == len(args):
                return None
            value = args[i]
            i += 1
        if _is_option(value):
            return None
        if name == "--format":
            kw["template"] = value
            continue
        if not value.isdigit():
            return None
        kw["since" if name == "--since" else "lines"] = int(value)
    kw["rooms"] = rooms or None
    return kw


JOIN_FLAGS = ("--legacy", "--weak")
JOIN_VALUES = ("--passphrase-file", "--cipher")


def _join_args(args: Sequence[str]) -> dict[str, Any] | None:
    """``join``'s arguments as commands.join takes them, or None: let typer judge."""
    kw: dict[str, Any] = {
        "passphrase_file": None,
        "cipher": "fernet",
        "legacy": False,
        "weak": False,
    }
    rooms: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        i += 1
        if arg in JOIN_FLAGS:
            kw[arg[2:]] = True
            continue
        if not _is_option(arg):
            rooms.append(arg)
            continue
        name, eq, value = arg.partition("=")
        if name not in JOIN_VALUES:
            return None
        if not eq:
            if i == len(args):
                return None
            value = args[i]
            i += 1
        if not value or _is_option(value):
            return None
        if name == "--cipher":
            if value not in commands.CIPHERS:
                return None
            kw["cipher"] = value
        else:
            kw["passphrase_file"] = Path(value)
    if len(rooms) != 1:
        return None
    kw["room"] = rooms[0]
    return kw


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
    tail_args = _tail_args(rest[1:]) if rest[:1] == ["tail"] else None
    join_args = _join_args(rest[1:]) if rest[:1] == ["join"] else None
    if not (is_send or is_status or tail_args is not None or join_args is not None):
        return None
    opts = _options(values)
    if opts is None:
        return None
    if join_args is not None:
        room = join_args.pop("room")
        passphrase_file = join_args.pop("passphrase_file")
        cipher = join_args.pop("cipher")
        return lambda: commands.join(opts, room, passphrase_file, cipher, **join_args)
    if tail_args is not None:
        rooms = tail_args.pop("rooms")
        return lambda: commands.tail(opts, rooms, **tail_args)
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
