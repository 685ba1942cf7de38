"""Issue 13 item 4 / issue 11 finding 7: chatctl's two command-line paths agree.

Both are built from one declaration (client/cli_spec.py): the fast path
(client/fast.py) parses `send`, `status`, `join` and `tail` without typer; the
typer app parses everything. For every generated command line of a fast-path
command, the two must reach the same outcome:

- the fast path runs it: typer makes the very same call (handler and arguments);
- the fast path calls it a usage error: typer refuses it with exit status 2;
- the fast path hands it over without judging it: only for help and completion.

The action itself is recorded instead of run: what is compared here is the
parsing, not chatd.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from mqchat.client import cli_spec, commands, fast
from mqchat.client.cli import build_app

FAST = sorted(cli_spec.FAST_COMMANDS)
RUNTIME_DIR = "/tmp/mqchat-cli-paths"

# Values that have tripped one path or the other, and their neighbours.
NASTY = [
    "²", "\u0665", "5", "0", "-1", "+3", " 5", "5 ", "5_0", "0x10", "1e3", "1e308", "inf", "-inf",
    "nan", "NaN", "0.1", "0.01", "86400", "86401", "10", "2.5", "9223372036854775807",
    "9223372036854775808", "9" * 30, "9" * 5000, "", "-", "--", "=", "x", "room", "{text}",
    "{nope}", "fernet", "aes-256-gcm", "chacha20-poly1305", "FERNET", "rot13", "/tmp/p",
    "\udcff", "a\udcffb",
]  # fmt: skip
ALL_FLAGS = sorted(
    {f for c in cli_spec.COMMANDS for o in c.options for f in o.flags}
    | {f for o in cli_spec.GLOBAL_OPTIONS for f in o.flags}
)
STRANGERS = ["--bogus", "-x", "--jso", "--json-", "-nn", "-n-", "--lines-"]
HELP = ["-h", "--help", "-hn", "--help=1", "--install-completion", "--show-completion"]


def asks_typer_only(argv: list[str]) -> bool:
    """Help or completion somewhere in ``argv``: typer's to answer, not the fast path's."""
    return any(
        a.startswith("--help")
        or (a.startswith("-h") and not a.startswith("--"))
        or a.startswith(("--install-completion", "--show-completion"))
        for a in argv
    )


GOOD_VALUES = {
    cli_spec.COUNT: ["0", "5", "10", "9223372036854775807"],
    cli_spec.SECONDS: ["5", "0.1", "2.5", "86400"],
    cli_spec.PATH: ["/tmp/p", "-x", "p q"],
    cli_spec.TEXT: ["{text}", "", "-", "{sender}: {text}"],
    cli_spec.CIPHER: list(cli_spec.CIPHERS),
}
plain_words = st.sampled_from(["room", "lobby", "-", "x y", "héllo"])


def option_words(options: tuple[cli_spec.Option, ...]) -> st.SearchStrategy[list[str]]:
    """One option as a command line may give it: flag, ``--o v``, ``--o=v``, ``-ov``."""

    def spelled(option: cli_spec.Option, flag: str, value: str, form: int) -> list[str]:
        if option.kind is None:
            return [flag]
        if form == 0 or (form == 2 and len(flag) != 2):
            return [flag, value]
        return [f"{flag}={value}"] if form == 1 else [f"{flag}{value}"]

    def one(option: cli_spec.Option) -> st.SearchStrategy[list[str]]:
        values = GOOD_VALUES.get(option.kind, [""]) if option.kind else [""]
        return st.builds(
            spelled,
            st.just(option),
            st.sampled_from(option.flags),
            st.sampled_from([*values, *values, "²", "-1", "nan", ""]),
            st.integers(0, 2),
        )

    return st.one_of([one(o) for o in options])


global_junk = st.lists(
    st.one_of(
        st.tuples(st.sampled_from(["--timeout", "--runtime-dir"]), st.sampled_from(NASTY)).map(
            list
        ),
        st.sampled_from(NASTY + STRANGERS + ["--"]).map(lambda w: [w]),
    ),
    min_size=1,
    max_size=3,
).map(lambda groups: [w for group in groups for w in group])


def command_lines(name: str) -> st.SearchStrategy[list[str]]:
    """Command lines of ``name``: mostly well formed, with every kind of mistake mixed in."""
    command = cli_spec.FAST_COMMANDS[name]
    needed = sum(a.required for a in command.arguments)
    most = needed + (3 if any(a.many for a in command.arguments) else 0)
    positional = st.lists(plain_words.map(lambda w: [w]), min_size=needed, max_size=most)
    options = (
        st.lists(option_words(command.options), max_size=3) if command.options else st.just([])
    )
    junk = st.one_of(
        st.sampled_from(NASTY + ALL_FLAGS + STRANGERS + HELP + ["--"]),
        st.builds(lambda o, v: f"{o}={v}", st.sampled_from(ALL_FLAGS), st.sampled_from(NASTY)),
        st.text(max_size=6),
    ).map(lambda w: [w])
    mistakes = st.one_of(
        st.just([]),
        st.just([]),
        st.lists(st.one_of(junk, plain_words.map(lambda w: [w])), min_size=1, max_size=2),
    )
    groups = st.builds(
        lambda *parts: [g for part in parts for g in part], positional, options, mistakes
    )
    return st.builds(
        lambda g, ordered: [*g, name, *(w for group in ordered for w in group)],
        st.one_of(st.just([]), st.just([]), option_words(cli_spec.GLOBAL_OPTIONS), global_junk),
        groups.flatmap(st.permutations),
    )


class Recorder:
    """Stands in for the fast commands' handlers: remembers the call it got."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def stand_in(self, name: str, real: Callable[..., None]) -> Callable[..., None]:
        signature = inspect.signature(real)

        def record(*args: Any, **kwargs: Any) -> None:
            bound = signature.bind(*args, **kwargs)
            bound.apply_defaults()
            self.calls.append((name, dict(bound.arguments)))

        return record


@pytest.fixture(scope="module")
def app() -> Any:
    return build_app()


@pytest.fixture(scope="module")
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture(autouse=True, scope="module")
def environment() -> Iterator[None]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MQCHAT_RUNTIME_DIR", RUNTIME_DIR)
        mp.delenv(fast.COMPLETION_VAR, raising=False)
        yield


def outcomes(app: Any, runner: CliRunner, argv: list[str]) -> tuple[Any, Any]:
    """(what the fast path decides, what typer does) with ``argv``.

    Each is a recorded call ("send", {...}), or for typer ("exit", status),
    or for the fast path its Handover.
    """
    recorder = Recorder()
    with pytest.MonkeyPatch.context() as mp:
        for command in cli_spec.FAST_COMMANDS.values():
            module, function = command.handler.split(":")
            assert module == "commands"
            mp.setattr(
                commands, function, recorder.stand_in(command.name, getattr(commands, function))
            )
        parsed = fast.parse(argv)  # must never raise
        if isinstance(parsed, fast.Action):
            parsed.run()
            fast_outcome: Any = recorder.calls.pop()
        else:
            fast_outcome = parsed
        result = runner.invoke(app, argv, catch_exceptions=True)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise AssertionError(f"typer path raised for {argv!r}") from result.exception
    typer_outcome = recorder.calls[-1] if recorder.calls else ("exit", result.exit_code)
    return fast_outcome, typer_outcome


def assert_same_outcome(app: Any, runner: CliRunner, argv: list[str]) -> None:
    fast_outcome, typer_outcome = outcomes(app, runner, argv)
    if isinstance(fast_outcome, fast.Handover):
        if fast_outcome.usage_error:
            assert typer_outcome == ("exit", 2), (argv, fast_outcome, typer_outcome)
        else:
            # Not judged by the fast path: allowed only where typer alone can answer.
            assert asks_typer_only(argv), (argv, fast_outcome)
    else:
        assert fast_outcome == typer_outcome, argv


@pytest.mark.parametrize("name", FAST)
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_both_paths_reach_the_same_outcome(
    app: Any, runner: CliRunner, name: str, data: st.DataObject
) -> None:
    argv = data.draw(command_lines(name), label="argv")
    assert_same_outcome(app, runner, argv)


@settings(deadline=None)
@given(argv=st.just(["status"]))
@example(argv=["tail", "room", "--since", "²"])
@example(argv=["tail", "room", "-n", "²"])
@example(argv=["tail", "room", "--lines=\u0665"])
@example(argv=["tail", "room", "-n=5"])
@example(argv=["tail", "-n5", "room"])
@example(argv=["tail", "-n", "-5"])
@example(argv=["tail", "room", "-n", "5", "--lines", "7", "-n8"])
@example(argv=["tail", "--format", "--json"])
@example(argv=["tail", "--format=--json=1"])
@example(argv=["send", "-", "hi"])
@example(argv=["send", "room", "--", "-n", "--help"])
@example(argv=["tail", "room", "--format", "--", "x"])
@example(argv=["tail", "--no-follow", "--json", "--", "-n", "a"])
@example(argv=["--timeout", "inf", "status"])
@example(argv=["--timeout", "1e308", "status"])
@example(argv=["--timeout", "nan", "status"])
@example(argv=["--timeout", "86401", "send", "room", "hi"])
@example(argv=["--runtime-dir", "-x", "send", "room", "hi"])
@example(argv=["--runtime-dir=", "status"])
@example(argv=["--", "send", "room", "--", "-x"])
@example(argv=["--bogus", "rooms"])
@example(argv=["--timeout", "nan", "rooms"])
@example(argv=["tail", "room", "--since", "9223372036854775808"])
@example(argv=["tail", "room", "-n", "9" * 5000])
@example(argv=["join", "room", "--cipher", "rot13"])
@example(argv=["join", "room", "--cipher=FERNET"])
@example(argv=["join", "room", "--weak=1"])
@example(argv=["join", "a", "b"])
@example(argv=["status", "--json", "--json"])
@example(argv=["status", "extra"])
@example(argv=["send"])
def test_known_command_lines_reach_the_same_outcome(
    app: Any, runner: CliRunner, argv: list[str]
) -> None:
    assert_same_outcome(app, runner, argv)


@pytest.mark.parametrize(
    "argv",
    [
        ["tail", "room", "--since", "²"],
        ["tail", "room", "-n", "²"],
        ["tail", "room", "-n", "9223372036854775808"],
        ["tail", "room", "--since", "-1"],
        ["--timeout", "inf", "status"],
        ["--timeout", "-inf", "status"],
        ["--timeout", "1e308", "status"],
        ["--timeout", "nan", "status"],
        ["--timeout", "nan", "rooms"],
        ["--timeout", "0.01", "status"],
        ["--timeout", "86401", "tail"],
        ["--runtime-dir=", "status"],
        ["join", "room", "--passphrase-file="],
    ],
)
def test_bad_values_are_usage_errors_on_both_paths(
    app: Any, runner: CliRunner, argv: list[str]
) -> None:
    parsed = fast.parse(argv)
    assert isinstance(parsed, fast.Handover) and parsed.usage_error, parsed
    result = runner.invoke(app, argv)
    assert result.exit_code == 2, result.output
    assert "Invalid value" in result.output


def test_the_largest_values_pass_on_both_paths(app: Any, runner: CliRunner) -> None:
    argv = ["--timeout", "86400", "tail", "r", "-n", "9223372036854775807", "--since", "0"]
    fast_outcome, typer_outcome = outcomes(app, runner, argv)
    assert fast_outcome == typer_outcome
    _, call = fast_outcome
    assert call["opts"] == commands.Options(Path(RUNTIME_DIR), 86400.0)
    assert (call["lines"], call["since"]) == (2**63 - 1, 0)


def test_runtime_dir_flag_is_kept_for_config(app: Any, runner: CliRunner) -> None:
    """`chatctl --runtime-dir DIR config` shows DIR as a flag, not as a default."""
    parsed = fast.parse(["--runtime-dir", "/tmp/elsewhere", "status"])
    assert isinstance(parsed, fast.Action)
    assert commands.Options.from_flags(**parsed.global_values) == commands.Options(
        Path("/tmp/elsewhere"), 10.0, Path("/tmp/elsewhere")
    )


def test_the_table_is_well_formed() -> None:
    for command in cli_spec.COMMANDS:
        # A positional argument after a `many` one could never get a word.
        assert not any(a.many for a in command.arguments[:-1]), command.name
        flags = [f for o in command.options for f in o.flags]
        assert len(flags) == len(set(flags)), command.name
        dests = [p.dest for p in command.params]
        assert len(dests) == len(set(dests)), command.name
        handler = command.handler_function()
        # Called as handler(Options, **values): every value has a parameter, and back.
        opts, *parameters = inspect.signature(handler).parameters
        assert (opts, sorted(parameters)) == ("opts", sorted(dests)), command.name
    names = [(c.group, c.name) for c in cli_spec.COMMANDS]
    assert len(names) == len(set(names))
