"""Issue 13 item 4 / issue 11 finding 7: chatctl's two command-line paths agree.

The fast path (client/fast.py) parses `send`, `status`, `join` and `tail`
without typer and leaves everything else to typer. Whatever it accepts, typer
must accept too, with the very same call; whatever it leaves, typer must turn
into a call or a usage error (exit 2), never a traceback. The action itself is
recorded instead of run: what is compared here is the parsing, not chatd.
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

from mqchat.client import commands, fast
from mqchat.client.cli import build_app

ACTIONS = ("send", "status", "join", "tail")
RUNTIME_DIR = "/tmp/mqchat-cli-paths"

# Values that have tripped one path or the other, and their neighbours.
NASTY = [
    "²", "\u0665", "5", "0", "-1", "+3", " 5", "5 ", "5_0", "0x10", "1e3", "1e308", "inf", "-inf",
    "nan", "NaN", "0.1", "0.01", "86400", "86401", "10", "2.5", "9223372036854775807",
    "9223372036854775808", "9" * 30, "9" * 5000, "", "-", "--", "x", "{text}", "{nope}",
    "fernet", "aes-256-gcm", "rot13", "/tmp/p", "\udcff", "a\udcffb",
]  # fmt: skip
OPTIONS = [
    "--timeout", "--runtime-dir", "-n", "--lines", "--since", "--format", "--no-follow",
    "--json", "--cipher", "--passphrase-file", "--legacy", "--weak", "--help", "--bogus", "-x",
]  # fmt: skip

words = st.one_of(
    st.sampled_from(NASTY),
    st.sampled_from(OPTIONS),
    st.builds(lambda o, v: f"{o}={v}", st.sampled_from(OPTIONS), st.sampled_from(NASTY)),
    st.text(max_size=8),
)
global_options = st.lists(
    st.tuples(st.sampled_from(["--timeout", "--runtime-dir"]), st.sampled_from(NASTY)).map(list),
    max_size=2,
).map(lambda pairs: [w for pair in pairs for w in pair])
command_lines = st.builds(
    lambda g, action, rest: [*g, action, *rest],
    global_options,
    st.sampled_from(ACTIONS),
    st.lists(words, max_size=6),
)


class Recorder:
    """Stands in for commands.send/status/join/tail: remembers the call it got."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def stand_in(self, name: str, real: Callable[..., None]) -> Callable[..., None]:
        signature = inspect.signature(real)

        def record(*args: Any, **kwargs: Any) -> None:
            bound = signature.bind(*args, **kwargs)
            bound.apply_defaults()
            call = dict(bound.arguments)
            if name == "send":
                call["text"] = list(call["text"] or [])  # typer gives None for no TEXT
            self.calls.append((name, call))

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
    """(what the fast path does, what typer does) with ``argv``."""
    recorder = Recorder()
    with pytest.MonkeyPatch.context() as mp:
        for name in ACTIONS:
            mp.setattr(commands, name, recorder.stand_in(name, getattr(commands, name)))
        command = fast.parse(argv)  # must never raise
        if command is not None:
            command()
        fast_outcome = recorder.calls[-1] if command is not None else None
        recorder.calls.clear()
        result = runner.invoke(app, argv, catch_exceptions=True)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise AssertionError(f"typer path raised for {argv!r}") from result.exception
    typer_outcome = recorder.calls[-1] if recorder.calls else ("exit", result.exit_code)
    return fast_outcome, typer_outcome


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(argv=command_lines)
@example(argv=["tail", "room", "--since", "²"])
@example(argv=["tail", "room", "-n", "²"])
@example(argv=["tail", "room", "--lines=\u0665"])
@example(argv=["--timeout", "inf", "status"])
@example(argv=["--timeout", "1e308", "status"])
@example(argv=["--timeout", "nan", "status"])
@example(argv=["--timeout", "86401", "send", "room", "hi"])
@example(argv=["tail", "room", "--since", "9223372036854775808"])
@example(argv=["tail", "room", "-n", "9" * 5000])
@example(argv=["join", "room", "--cipher", "rot13"])
def test_both_paths_reach_the_same_outcome(app: Any, runner: CliRunner, argv: list[str]) -> None:
    fast_outcome, typer_outcome = outcomes(app, runner, argv)
    if fast_outcome is None:
        # Left to typer: a call, help (exit 0), or a usage error, never a crash.
        assert typer_outcome[0] in ACTIONS or typer_outcome[1] in (0, 2), (argv, typer_outcome)
    else:
        assert fast_outcome == typer_outcome, argv


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
    ],
)
def test_bad_numbers_are_usage_errors_on_the_typer_path(
    app: Any, runner: CliRunner, argv: list[str]
) -> None:
    assert fast.parse(argv) is None
    result = runner.invoke(app, argv)
    assert result.exit_code == 2, result.output
    assert "Invalid value" in result.output


def test_the_largest_values_pass_on_both_paths(app: Any, runner: CliRunner) -> None:
    argv = ["--timeout", "86400", "tail", "r", "-n", "9223372036854775807", "--since", "0"]
    fast_outcome, typer_outcome = outcomes(app, runner, argv)
    assert fast_outcome == typer_outcome
    assert fast_outcome is not None
    _, call = fast_outcome
    assert call["opts"] == commands.Options(Path(RUNTIME_DIR), 86400.0)
    assert (call["lines"], call["since"]) == (2**63 - 1, 0)
