"""chatctl's fast path: the command lines scripts run most, without importing typer.

Scripts run ``chatctl send`` once per message, so its start-up is most of what
it costs, and importing typer alone takes longer than the whole budget (issue
8). So ``parse`` takes a strict subset of what the typer app accepts, for
``send``, ``status``, ``join`` and ``tail``: the global options, the command,
its words and options (``--lines 5``, ``--lines=5``, ``-n 5``, ``-n5``; the
last one given counts), and ``--`` before words that start with a dash. Values
are read as on the typer path (mqchat.client.cli_values). Anything else, help,
completion and every mistake included, is left to typer, whose messages stay
the only ones. tests/unit/test_cli_paths.py checks that typer makes the same call.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Collection, Iterator, Sequence
from functools import partial
from typing import TypeVar

from mqchat.client import cli_values as v
from mqchat.client import commands
from mqchat.client.commands import Options
from mqchat.errors import UsageError

COMPLETION_VAR = "_CHATCTL_COMPLETE"
"""Set by the shell when it asks typer to complete a command line."""

Action = Callable[[], None]
T = TypeVar("T")


class _Line:
    """A command line's words, and its options' texts by long name (the last one given).

    Raises UsageError for anything the fast path does not take. With ``rest``
    the options end at the first word (the global options end at the command).
    """

    def __init__(
        self, args: Sequence[str], flags: Collection[str], valued: Collection[str], *, rest: bool
    ) -> None:
        self.words: list[str] = []
        self.given: dict[str, str | None] = {}
        todo = iter(args)
        for arg in todo:
            if arg == "--":
                self.words += todo
            elif arg == "-" or not arg.startswith("-"):
                self.words += [arg, *todo] if rest else [arg]
            else:
                self._option(arg, todo, flags, valued)

    def _option(
        self, arg: str, todo: Iterator[str], flags: Collection[str], valued: Collection[str]
    ) -> None:
        if arg.startswith("--"):
            name, eq, value = arg.partition("=")
        else:  # -n5 is -n 5, as click reads it (and -n=5 is -n "=5": not a count)
            name, eq, value = {"-n": "--lines"}.get(arg[:2], arg[:2]), arg[2:], arg[2:]
        if name in flags and not eq:
            self.given[name] = None
        elif name in valued:
            self.given[name] = value if eq else next(todo, None)
            if self.given[name] is None:
                raise UsageError(f"{name} needs a value")
        else:
            raise UsageError(f"{arg!r} is typer's to judge")

    def flag(self, name: str) -> bool:
        return name in self.given

    def value(self, name: str, read: Callable[[str], T], default: T) -> T:
        text = self.given.get(name)
        return default if text is None else read(text)

    def words_between(self, least: int, most: int) -> list[str]:
        if not least <= len(self.words) <= most:
            raise UsageError(f"{len(self.words)} words")
        return self.words


def _send(opts: Options, args: Sequence[str]) -> Action:
    room, *text = _Line(args, (), (), rest=False).words_between(1, len(args))
    return partial(commands.send, opts, room, text)


def _status(opts: Options, args: Sequence[str]) -> Action:
    line = _Line(args, ("--json",), (), rest=False)
    line.words_between(0, 0)
    return partial(commands.status, opts, as_json=line.flag("--json"))


def _join(opts: Options, args: Sequence[str]) -> Action:
    flags = ("--invite", "--legacy", "--weak")
    line = _Line(args, flags, ("--invite-file", "--passphrase-file", "--cipher"), rest=False)
    room = next(iter(line.words_between(0, 1)), None)
    passphrase_file = line.value("--passphrase-file", v.read_path, None)
    cipher = line.value("--cipher", v.read_cipher, None)
    invite_file = line.value("--invite-file", v.read_path, None)
    invite, legacy, weak = map(line.flag, flags)
    return partial(
        commands.join,
        opts,
        room,
        passphrase_file,
        cipher,
        legacy=legacy,
        weak=weak,
        invite=invite,
        invite_file=invite_file,
    )


def _tail(opts: Options, args: Sequence[str]) -> Action:
    line = _Line(args, ("--no-follow", "--json"), ("--lines", "--since", "--format"), rest=False)
    lines = line.value("--lines", v.read_count, v.DEFAULT_LINES)
    since = line.value("--since", v.read_count, None)
    template = line.value("--format", str, None)
    no_follow, as_json = line.flag("--no-follow"), line.flag("--json")
    return partial(
        commands.tail,
        opts,
        line.words,
        lines=lines,
        since=since,
        no_follow=no_follow,
        as_json=as_json,
        template=template,
    )


COMMANDS: dict[str, Callable[[Options, Sequence[str]], Action]] = {
    "send": _send,
    "status": _status,
    "join": _join,
    "tail": _tail,
}


def parse(argv: Sequence[str]) -> Action | None:
    """What to run for ``argv`` (without the program name), or None: typer's to parse."""
    if os.environ.get(COMPLETION_VAR):
        return None
    try:
        line = _Line(argv, (), ("--runtime-dir", "--timeout"), rest=True)
        if not line.words or line.words[0] not in COMMANDS:
            return None
        runtime_dir = line.value("--runtime-dir", v.read_path, None)
        timeout = line.value("--timeout", v.read_seconds, v.DEFAULT_TIMEOUT)
        return COMMANDS[line.words[0]](Options.from_flags(runtime_dir, timeout), line.words[1:])
    except UsageError:
        return None


def run(argv: Sequence[str]) -> int | None:
    """Run ``argv`` here and return its exit status, or return None: use typer.

    Failures end as on the typer path: an MqchatError or Ctrl-C propagates to
    ``cli.main``; a pipe closed under stderr is a quiet 1, as typer makes it.
    """
    if list(argv) == ["--version"]:
        from mqchat import __version__

        commands.out(f"chatctl {__version__}")
        return 0
    action = parse(argv)
    if action is None:
        return None
    try:
        action()
    except BrokenPipeError:
        commands.quiet_broken_pipe()
        return 1
    return 0
