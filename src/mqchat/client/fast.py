"""chatctl's fast path: the command lines scripts run most, without importing typer.

Scripts run ``chatctl send`` once per message, so its start-up is most of what
it costs, and importing typer alone takes longer than the whole budget (issue
8). So ``parse`` takes a strict subset of what the typer app accepts, for
``send``, ``status``, ``join`` and ``tail``: the global options, then the
command, its words and its own options (``--lines 5``, ``--lines=5``, ``-n 5``,
``-n5``; the last one given counts), and ``--`` before words that start with a
dash. Values are read by the same functions as on the typer
path (mqchat.client.cli_values). Anything else, help, completion, a bad value
or a usage error included, is left to typer, whose messages stay the only ones.

tests/unit/test_cli_paths.py checks that typer makes the same call.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Collection, Sequence
from functools import partial
from typing import TypeVar

from mqchat.client import commands
from mqchat.client.cli_values import (
    DEFAULT_LINES,
    DEFAULT_TIMEOUT,
    read_cipher,
    read_count,
    read_path,
    read_seconds,
)
from mqchat.client.commands import Options
from mqchat.errors import UsageError

COMPLETION_VAR = "_CHATCTL_COMPLETE"
"""Set by the shell when it asks typer to complete a command line."""
ALIASES = {"-n": "--lines"}

Action = Callable[[], None]
T = TypeVar("T")


class _Words:
    """A command line's words, and its options' texts by long name (the last one given)."""

    def __init__(
        self, args: Sequence[str], flags: Collection[str], valued: Collection[str], *, rest: bool
    ) -> None:
        """Raise UsageError for any word the fast path does not take. ``rest``: stop at
        the first word (the global options end at the command) and keep what follows."""
        self.words: list[str] = []
        self.given: dict[str, str | None] = {}
        todo = iter(args)
        for arg in todo:
            if arg == "--":
                self.words += todo
            elif arg == "-" or not arg.startswith("-"):
                self.words.append(arg)
                if rest:
                    self.words += todo
            else:
                if arg.startswith("--"):
                    name, eq, value = arg.partition("=")
                else:  # -n5 is -n 5, as click reads it (and -n=5 is -n "=5": not a count)
                    name, eq, value = arg[:2], arg[2:], arg[2:]
                name = ALIASES.get(name, name)
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

    def maybe(self, name: str, read: Callable[[str], T]) -> T | None:
        text = self.given.get(name)
        return None if text is None else read(text)

    def between(self, least: int, most: int) -> list[str]:
        if not least <= len(self.words) <= most:
            raise UsageError(f"{len(self.words)} words")
        return self.words


def _send(opts: Options, args: Sequence[str]) -> Action:
    room, *text = _Words(args, (), (), rest=False).between(1, len(args))
    return partial(commands.send, opts, room, text)


def _status(opts: Options, args: Sequence[str]) -> Action:
    line = _Words(args, ("--json",), (), rest=False)
    line.between(0, 0)
    return partial(commands.status, opts, as_json=line.flag("--json"))


def _join(opts: Options, args: Sequence[str]) -> Action:
    flags = ("--invite", "--legacy", "--weak")
    line = _Words(args, flags, ("--invite-file", "--passphrase-file", "--cipher"), rest=False)
    return partial(
        commands.join,
        opts,
        next(iter(line.between(0, 1)), None),
        line.maybe("--passphrase-file", read_path),
        line.maybe("--cipher", read_cipher),
        legacy=line.flag("--legacy"),
        weak=line.flag("--weak"),
        invite=line.flag("--invite"),
        invite_file=line.maybe("--invite-file", read_path),
    )


def _tail(opts: Options, args: Sequence[str]) -> Action:
    flags = ("--no-follow", "--json")
    line = _Words(args, flags, ("--lines", "--since", "--format"), rest=False)
    return partial(
        commands.tail,
        opts,
        line.words,
        lines=line.value("--lines", read_count, DEFAULT_LINES),
        since=line.maybe("--since", read_count),
        no_follow=line.flag("--no-follow"),
        as_json=line.flag("--json"),
        template=line.maybe("--format", str),
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
        line = _Words(argv, (), ("--runtime-dir", "--timeout"), rest=True)
        if not line.words or line.words[0] not in COMMANDS:
            return None
        runtime_dir = line.maybe("--runtime-dir", read_path)
        opts = Options.from_flags(
            runtime_dir, line.value("--timeout", read_seconds, DEFAULT_TIMEOUT)
        )
        return COMMANDS[line.words[0]](opts, line.words[1:])
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
