"""chatctl's fast path: the commands of cli_spec marked ``fast``, without typer.

Scripts run ``chatctl send`` once per message, so its start-up is most of what
it costs; importing typer alone takes longer than the whole budget (issue 8:
at most twice ``python -c 'import zmq'``). So ``send``, ``status``, ``join``
and ``tail`` command lines are parsed here, from the same declarations
(mqchat.client.cli_spec) that the typer app is built from, with the rules of
click's parser (which typer uses): options and arguments in any order, ``--``,
``--opt=VALUE``, ``-n5``, the last of a repeated option wins, a value may
start with a dash.

``parse`` decides every such command line one of three ways:

- an ``Action``: the handler and its arguments, exactly the call typer would make;
- a ``Handover(usage_error=True)``: typer would refuse it (exit 2); it is left
  to typer, so that its usage messages stay the only ones;
- a ``Handover(usage_error=False)``: help, shell completion, or another command.

tests/unit/test_cli_paths.py checks that typer agrees on each.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from mqchat.client import cli_spec
from mqchat.client.cli_spec import Command, Option
from mqchat.errors import UsageError

COMPLETION_VAR = "_CHATCTL_COMPLETE"
"""Set by the shell when it asks typer to complete a command line."""
TYPER_ONLY_OPTIONS = ("--install-completion", "--show-completion")
VERSION_OPTION = "--version"
"""``chatctl --version``: answered here, before anything else is imported."""


class Action:
    """A command line the fast path runs itself."""

    __slots__ = ("command", "global_values", "values")

    def __init__(
        self, command: Command, global_values: dict[str, Any], values: dict[str, Any]
    ) -> None:
        self.command = command
        self.global_values = global_values
        """The values of cli_spec.GLOBAL_OPTIONS."""
        self.values = values
        """The handler's keyword arguments (cli_spec.call_values)."""

    def __repr__(self) -> str:
        return f"Action({self.command.name}, {self.global_values}, {self.values})"

    def run(self) -> None:
        from mqchat.client.commands import Options

        handler = self.command.handler_function()
        handler(Options.from_flags(**self.global_values), **self.values)


class Handover:
    """A command line left to typer, and why."""

    __slots__ = ("reason", "usage_error")

    def __init__(self, *, usage_error: bool, reason: str) -> None:
        self.usage_error = usage_error
        """True when typer will refuse it with a usage error (exit 2)."""
        self.reason = reason

    def __repr__(self) -> str:
        return f"Handover(usage_error={self.usage_error}, reason={self.reason!r})"


def _for_typer_only(arg: str) -> bool:
    """Help and completion: typer's to answer, wherever they appear."""
    name = arg.partition("=")[0]
    return (
        name == "--help"
        or (arg.startswith("-h") and not arg.startswith("--"))
        or name in TYPER_ONLY_OPTIONS
    )


def _take_option(
    arg: str, rest: list[str], options: Sequence[Option], raw: dict[str, str | bool]
) -> None:
    """Read the option ``arg`` (and its value from ``rest``) into ``raw``, as click does.

    A long option may carry its value after ``=``; a short one right after its
    letter (``-n5``), or a cluster of short flags (``-ab``). A value is the next
    word, whatever it looks like.
    """
    name, eq, explicit = arg.partition("=")
    by_long = {f: o for o in options for f in o.flags if f.startswith("--") or len(f) > 2}
    option = by_long.get(name)
    if option is not None:
        if option.is_flag:
            if eq:
                raise UsageError(f"option {name} does not take a value")
            raw[option.dest] = True
            return
        if eq:
            rest.insert(0, explicit)
        if not rest:
            raise UsageError(f"option {name} requires an argument")
        raw[option.dest] = rest.pop(0)
        return
    if arg.startswith("--"):
        raise UsageError(f"no such option: {name}")
    by_short = {f: o for o in options for f in o.flags if len(f) == 2 and f[1] != "-"}
    for i, letter in enumerate(arg[1:], start=2):
        short = by_short.get(f"-{letter}")
        if short is None:
            raise UsageError(f"no such option: -{letter}")
        if short.is_flag:
            raw[short.dest] = True
            continue
        if i < len(arg):
            rest.insert(0, arg[i:])
        if not rest:
            raise UsageError(f"option -{letter} requires an argument")
        raw[short.dest] = rest.pop(0)
        return


def _is_option(arg: str) -> bool:
    return arg.startswith("-") and arg != "-"


def _read(options: Sequence[Option], raw: dict[str, str | bool]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for option in options:
        given = raw.get(option.dest)
        if given is None:
            continue
        if option.kind is None:
            values[option.dest] = True
        else:
            values[option.dest] = cli_spec.read_value(option.kind, str(given))
    return values


def _global_options(argv: Sequence[str]) -> tuple[dict[str, Any], list[str]]:
    """The global options' values, and the words from the command on."""
    raw: dict[str, str | bool] = {}
    rest = list(argv)
    while rest:
        if rest[0] == "--":
            rest.pop(0)
            break
        if not _is_option(rest[0]):
            break
        _take_option(rest.pop(0), rest, cli_spec.GLOBAL_OPTIONS, raw)
    return cli_spec.call_values(cli_spec.GLOBAL_OPTIONS, _read(cli_spec.GLOBAL_OPTIONS, raw)), rest


def _command_values(command: Command, args: Sequence[str]) -> dict[str, Any]:
    """``command``'s handler arguments from its words, or UsageError."""
    raw: dict[str, str | bool] = {}
    words: list[str] = []
    rest = list(args)
    while rest:
        arg = rest.pop(0)
        if arg == "--":
            words += rest
            break
        if _is_option(arg):
            _take_option(arg, rest, command.options, raw)
        else:
            words.append(arg)
    given = _read(command.options, raw)
    for argument in command.arguments:
        if argument.many:
            given[argument.dest], words = words, []
        elif words:
            given[argument.dest] = words.pop(0)
        elif argument.required:
            raise UsageError(f"missing argument {argument.metavar}")
    if words:
        raise UsageError(f"unexpected extra argument {words[0]!r}")
    return cli_spec.call_values(command.params, given)


def parse(argv: Sequence[str]) -> Action | Handover:
    """What to do with ``argv`` (without the program name)."""
    if os.environ.get(COMPLETION_VAR):
        return Handover(usage_error=False, reason="shell completion")
    if any(map(_for_typer_only, argv)):
        return Handover(usage_error=False, reason="help or completion")
    try:
        global_values, rest = _global_options(argv)
    except UsageError as exc:
        return Handover(usage_error=True, reason=exc.message)
    if not argv:
        return Handover(usage_error=False, reason="no arguments: typer shows the help")
    if not rest:
        return Handover(usage_error=True, reason="missing command")
    command = cli_spec.FAST_COMMANDS.get(rest[0])
    if command is None:
        known = rest[0] in cli_spec.TOP_LEVEL_WORDS
        return Handover(usage_error=not known, reason=f"{rest[0]!r} is typer's to parse")
    try:
        values = _command_values(command, rest[1:])
    except UsageError as exc:
        return Handover(usage_error=True, reason=exc.message)
    return Action(command, global_values, values)


def run(argv: Sequence[str]) -> int | None:
    """Run ``argv`` here and return its exit status, or return None: use typer.

    Failures end as on the typer path: an MqchatError or Ctrl-C propagates to
    ``cli.main``; a pipe closed under stderr is a quiet 1, as typer makes it.
    """
    if list(argv) == [VERSION_OPTION]:
        from mqchat import __version__
        from mqchat.client.commands import out

        out(f"chatctl {__version__}")
        return 0
    parsed = parse(argv)
    if isinstance(parsed, Handover):
        return None
    try:
        parsed.run()
    except BrokenPipeError:
        from mqchat.client.commands import quiet_broken_pipe

        quiet_broken_pipe()
        return 1
    return 0
