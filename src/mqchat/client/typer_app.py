"""The typer app, built from cli_spec: help, shell completion and usage errors.

Only command lines that the fast path (mqchat.client.fast) does not run come
here. Each parameter is declared from its cli_spec entry and read by the same
function the fast path uses, so the two paths accept the same values.
"""

from __future__ import annotations

import inspect
from enum import Enum
from typing import TYPE_CHECKING, Any, cast

from mqchat.client import cli_spec
from mqchat.client.cli_spec import Argument, Command, Option
from mqchat.client.commands import Options
from mqchat.errors import UsageError

if TYPE_CHECKING:
    import typer


def _typer_reader(kind: cli_spec.Kind) -> Any:
    """cli_spec's reader as a typer parser: the same rule, typer's usage error."""

    def read(text: Any) -> Any:
        if not isinstance(text, str):  # a default, already a value
            return text
        try:
            return kind.read(text)
        except UsageError as exc:
            raise typer.BadParameter(exc.message) from None

    return read


def _choices(kind: cli_spec.Kind) -> type[Enum]:
    # typer offers an Enum's values as click choices: shown in help, completed.
    members = [(c, c) for c in kind.choices]
    return cast(type[Enum], Enum("Choice", members, type=str))


def _parameter(param: Argument | Option) -> inspect.Parameter:
    """One typer parameter, declared in the old style (a typer.Option as default)."""
    annotation: Any
    info: Any
    if isinstance(param, Argument):
        annotation = list[str] if param.many else str
        if not param.required:
            annotation = annotation | None
        default = ... if param.required else None
        info = typer.Argument(
            default,
            metavar=param.metavar,
            help=param.help,
            show_default=False,
            autocompletion=_joined_rooms if param.joined_room else None,
        )
    elif param.kind is None:
        annotation = bool
        info = typer.Option(False, *param.flags, help=param.help, show_default=False)
    elif param.kind.choices:
        choice = _choices(param.kind)
        if param.default is None:
            annotation = choice | None
            info = typer.Option(None, *param.flags, help=param.help, show_default=False)
        else:
            annotation = choice
            info = typer.Option(choice(param.default), *param.flags, help=param.help)
    else:
        annotation = param.kind.python_type
        if param.default is None:
            annotation = annotation | None
        info = typer.Option(
            param.default,
            *param.flags,
            metavar=param.metavar,
            help=param.help,
            parser=_typer_reader(param.kind),
        )
    return inspect.Parameter(
        param.dest, inspect.Parameter.KEYWORD_ONLY, default=info, annotation=annotation
    )


def _with_signature(function: Any, params: list[inspect.Parameter]) -> Any:
    """Give ``function(ctx, **values)`` the signature typer reads its parameters from."""
    context = inspect.Parameter(
        "ctx", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=typer.Context
    )
    function.__signature__ = inspect.Signature([context, *params])
    function.__annotations__ = {p.name: p.annotation for p in [context, *params]}
    return function


def _plain(value: Any) -> Any:
    return value.value if isinstance(value, Enum) else value


def _typer_command(command: Command) -> Any:
    def run(ctx: typer.Context, **values: Any) -> None:
        given = {k: _plain(v) for k, v in values.items()}
        command.handler_function()(ctx.obj, **cli_spec.call_values(command.params, given))

    run.__name__ = command.name
    return _with_signature(run, [_parameter(p) for p in command.params])


COMPLETION_TIMEOUT_S = 1.0
"""A shell waits for completions: a chatd that does not answer at once gives none."""


def _joined_rooms(ctx: typer.Context, incomplete: str) -> list[str]:
    """The joined rooms that start with ``incomplete``, from chatd; none if it is not there."""
    from mqchat.errors import MqchatError

    runtime_dir = ctx.find_root().params.get("runtime_dir")
    opts = Options.from_flags(runtime_dir, COMPLETION_TIMEOUT_S)
    try:
        with opts.client() as c:
            rooms: list[dict[str, Any]] = c.call("rooms")
    except MqchatError:
        return []
    return [r["name"] for r in rooms if r["name"].startswith(incomplete)]


def _global_options() -> Any:
    def take(ctx: typer.Context, **values: Any) -> None:
        ctx.obj = Options.from_flags(**values)

    return _with_signature(take, [_parameter(o) for o in cli_spec.GLOBAL_OPTIONS])


def build_app() -> typer.Typer:
    """The typer app: every command of cli_spec, with its help and usage errors."""
    # The parameters' annotations name typer; importing it here keeps it out
    # of the fast path.
    global typer  # noqa: PLW0603 -- bound once, to the module typer itself
    import typer

    settings: dict[str, Any] = {"no_args_is_help": True}
    app = typer.Typer(
        name="chatctl",
        help="Encrypted group chat over MQTT: talk to chatd.\n\n"
        + cli_spec.EXIT_STATUS_HELP
        + "\n\n`chatctl --version` prints the version.",
        pretty_exceptions_enable=False,
        add_completion=True,
        context_settings={"help_option_names": list(cli_spec.HELP_OPTIONS)},
        **settings,
    )
    app.callback()(_global_options())
    groups = {name: typer.Typer(help=text, **settings) for name, text in cli_spec.GROUPS.items()}
    for command in cli_spec.COMMANDS:
        where = groups[command.group] if command.group else app
        where.command(command.name, help=command.help)(_typer_command(command))
    for name, group in groups.items():
        app.add_typer(group, name=name)
    return app
