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
from typing import Any, NamedTuple

from mqchat.client import commands
from mqchat.client.commands import DEFAULT_TIMEOUT, Options, check_timeout, parse_count
from mqchat.errors import UsageError

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
            timeout = check_timeout(float(values["--timeout"]))
        except (ValueError, UsageError):  # typer gives the usage error
            return None
    if "--runtime-dir" in values:
        return Options(Path(values["--runtime-dir"]), timeout)
    from mqchat.paths import runtime_dir

    return Options(runtime_dir(), timeout)


def _is_option(arg: str) -> bool:
    return arg.startswith("-") and arg != "-"


class _Scan(NamedTuple):
    positional: list[str]
    flags: set[str]
    values: dict[str, str]


def _scan(args: Sequence[str], flags: Sequence[str], valued: Sequence[str]) -> _Scan | None:
    """Split a command's arguments; None for anything typer should judge.

    ``valued`` options take ``--opt VALUE`` or ``--opt=VALUE``; a value may not
    be empty or look like an option. Given twice, the last one counts, as in typer.
    """
    scan = _Scan([], set(), {})
    i = 0
    while i < len(args):
        arg = args[i]
        i += 1
        if arg in flags:
            scan.flags.add(arg)
            continue
        if not _is_option(arg):
            scan.positional.append(arg)
            continue
        name, eq, value = arg.partition("=") if arg.startswith("--") else (arg, "", "")
        if name not in valued:
            return None
        if not eq:
            if i == len(args):
                return None
            value = args[i]
            i += 1
        if not value or _is_option(value):
            return None
        scan.values[name] = value
    return scan


def _tail_args(args: Sequence[str]) -> dict[str, Any] | None:
    """``tail``'s arguments as commands.tail takes them, or None: let typer judge."""
    scan = _scan(args, ("--no-follow", "--json"), ("-n", "--lines", "--since", "--format"))
    if scan is None:
        return None
    numbers = {k: parse_count(v) for k, v in scan.values.items() if k != "--format"}
    if None in numbers.values():
        return None  # not a count: typer gives the usage error
    if "-n" in numbers and "--lines" in numbers:
        return None  # which came last is typer's to say
    return {
        "rooms": scan.positional or None,
        "lines": numbers.get("--lines", numbers.get("-n", 10)),
        "since": numbers.get("--since"),
        "follow": "--no-follow" not in scan.flags,
        "as_json": "--json" in scan.flags,
        "template": scan.values.get("--format"),
    }


def _join_args(args: Sequence[str]) -> dict[str, Any] | None:
    """``join``'s arguments as commands.join takes them, or None: let typer judge."""
    scan = _scan(args, ("--legacy", "--weak"), ("--passphrase-file", "--cipher"))
    if scan is None or len(scan.positional) != 1:
        return None
    cipher = scan.values.get("--cipher")  # None: chatd's default (aes-256-gcm)
    if cipher is not None and cipher not in commands.CIPHERS:
        return None
    passphrase_file = scan.values.get("--passphrase-file")
    return {
        "room": scan.positional[0],
        "passphrase_file": Path(passphrase_file) if passphrase_file else None,
        "cipher": cipher,
        "legacy": "--legacy" in scan.flags,
        "weak": "--weak" in scan.flags,
    }


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
