"""Issue 13 item 4 / issue 26 item 4: chatctl's two command-line paths agree.

The fast path (client/fast.py) takes a strict subset of the command lines of
`send`, `status`, `join` and `tail`, without typer; the typer app
(client/typer_app.py) takes them all. For every generated command line that the
fast path takes, typer must make the very same call (handler and arguments);
what it declines is typer's to run or refuse. The forms scripts use must be
among those it takes (tests/unit/test_fast_path.py).

Handlers are replaced by recorders: what is compared is the parsing, not chatd.
Typer's click command is built once and called directly, which keeps each
example to about a millisecond.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import typer
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from mqchat.client import commands, fast
from mqchat.client.cli import build_app
from mqchat.protocol.ciphers import CIPHERS

RUNTIME_DIR = "/tmp/mqchat-cli-paths"
GROUP = typer.main.get_command(build_app())
FAST = sorted(fast.COMMANDS)

# Values that have tripped one path or the other, and their neighbours.
NASTY = [
    "²", "\u0665", "5", "0", "-1", "+3", " 5", "5 ", "5_0", "0x10", "1e3", "1e308", "inf", "-inf",
    "nan", "NaN", "0.1", "0.01", "86400", "86401", "10", "2.5", "9223372036854775807",
    "9223372036854775808", "9" * 5000, "", "-", "--", "=", "x", "room", "{text}",
    "fernet", "aes-256-gcm", "FERNET", "rot13", "/tmp/p", "\udcff", "--help", "-h",
]  # fmt: skip
GOOD_VALUES = {
    "N": ["0", "5", "10", "9223372036854775807"],
    "SEQ": ["0", "7"],
    "SECONDS": ["5", "0.1", "2.5", "86400"],
    "FILE": ["/tmp/p", "-x", "p q"],
    "DIR": ["/tmp/p", "-x"],
    "TEMPLATE": ["{text}", "", "-", "{sender}: {text}"],
}
STRANGERS = ["--bogus", "-x", "--jso", "--json-", "-nn", "-n-", "--lines-", "-h", "--help"]


def options_of(command: Any) -> list[Any]:
    return [p for p in command.params if p.opts[0].startswith("-") and "completion" not in p.name]


ALL_FLAGS = sorted(
    {f for name in FAST for o in options_of(GROUP.commands[name]) for f in o.opts}  # type: ignore[attr-defined]
)


def option_words(options: list[Any]) -> st.SearchStrategy[list[str]]:
    """One option as a command line may give it: flag, ``--o v``, ``--o=v``, ``-ov``."""

    def spelled(option: Any, flag: str, value: str, form: int) -> list[str]:
        if option.is_flag:
            return [flag]
        if form == 0 or (form == 2 and len(flag) != 2):
            return [flag, value]
        return [f"{flag}={value}"] if form == 1 else [f"{flag}{value}"]

    def one(option: Any) -> st.SearchStrategy[list[str]]:
        values = GOOD_VALUES.get(option.metavar, list(CIPHERS))
        return st.builds(
            spelled,
            st.just(option),
            st.sampled_from(option.opts),
            st.sampled_from([*values, *values, "²", "-1", "nan", ""]),
            st.integers(0, 2),
        )

    return st.one_of([one(o) for o in options])


plain_words = st.sampled_from(["room", "lobby", "-", "x y", "héllo"]).map(lambda w: [w])
global_junk = st.lists(
    st.one_of(
        st.tuples(st.sampled_from(["--timeout", "--runtime-dir"]), st.sampled_from(NASTY)).map(
            list
        ),
        st.sampled_from(NASTY + STRANGERS + ["--"]).map(lambda w: [w]),
    ),
    min_size=1,
    max_size=2,
).map(lambda groups: [w for group in groups for w in group])


def command_lines(name: str) -> st.SearchStrategy[list[str]]:
    """Command lines of ``name``: mostly well formed, with every kind of mistake mixed in."""
    options = options_of(GROUP.commands[name])  # type: ignore[attr-defined]
    positional = st.lists(plain_words, min_size=0, max_size=3)
    option_lists = st.lists(option_words(options), max_size=3) if options else st.just([])
    junk = st.one_of(
        st.sampled_from(NASTY + ALL_FLAGS + STRANGERS),
        st.builds(lambda o, v: f"{o}={v}", st.sampled_from(ALL_FLAGS), st.sampled_from(NASTY)),
    ).map(lambda w: [w])
    mistakes = st.one_of(st.just([]), st.just([]), st.lists(junk, min_size=1, max_size=2))
    groups = st.builds(
        lambda *parts: [g for p in parts for g in p], positional, option_lists, mistakes
    )
    global_options = options_of(GROUP)
    return st.builds(
        lambda g, ordered: [*g, name, *(w for group in ordered for w in group)],
        st.one_of(st.just([]), st.just([]), option_words(global_options), global_junk),
        groups.flatmap(st.permutations),
    )


class Recorder:
    """Stands in for the fast commands' handlers: remembers the calls it got."""

    def __init__(self, mp: pytest.MonkeyPatch) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []
        for name in FAST:
            mp.setattr(commands, name, self.stand_in(name, getattr(commands, name)))

    def stand_in(self, name: str, real: Callable[..., None]) -> Callable[..., None]:
        signature = inspect.signature(real)

        def record(*args: Any, **kwargs: Any) -> None:
            bound = signature.bind(*args, **kwargs)
            bound.apply_defaults()
            self.calls.append((name, dict(bound.arguments)))

        return record


@pytest.fixture(autouse=True, scope="module")
def recorder() -> Iterator[Recorder]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MQCHAT_RUNTIME_DIR", RUNTIME_DIR)
        mp.delenv(fast.COMPLETION_VAR, raising=False)
        yield Recorder(mp)


def typer_outcome(recorder: Recorder, argv: list[str]) -> Any:
    """The call typer makes for ``argv``, or ("exit", its exit status)."""
    recorder.calls.clear()
    try:
        GROUP.main(argv, prog_name="chatctl", standalone_mode=True)
    except SystemExit as exc:
        status = exc.code
    return recorder.calls.pop() if recorder.calls else ("exit", status)


def fast_outcome(recorder: Recorder, argv: list[str]) -> Any:
    """The call the fast path makes for ``argv``, or None: declined."""
    recorder.calls.clear()
    action = fast.parse(argv)  # must never raise
    if action is None:
        return None
    action()
    return recorder.calls.pop()


def assert_same_call(recorder: Recorder, argv: list[str]) -> None:
    taken = fast_outcome(recorder, argv)
    if taken is not None:
        assert taken == typer_outcome(recorder, argv), argv


@pytest.mark.parametrize("name", FAST)
@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_what_the_fast_path_takes_typer_calls_alike(
    recorder: Recorder, name: str, data: st.DataObject
) -> None:
    assert_same_call(recorder, data.draw(command_lines(name), label="argv"))


@settings(deadline=None)
@given(argv=st.just(["status"]))
@example(argv=["tail", "room", "-n", "5", "--lines", "7", "-n", "8"])
@example(argv=["tail", "--format", "--json"])
@example(argv=["tail", "--format=--json=1"])
@example(argv=["tail", "--format", "--help"])
@example(argv=["tail", "room", "--format", "--", "x"])
@example(argv=["tail", "--no-follow", "--json", "--", "-n", "a"])
@example(argv=["send", "-", "hi"])
@example(argv=["send", "room", "--", "-n", "--help"])
@example(argv=["--runtime-dir", "-x", "send", "room", "hi"])
@example(argv=["--", "send", "room", "--", "-x"])
@example(argv=["--timeout", "86400", "tail", "r", "-n", "9223372036854775807", "--since", "0"])
@example(argv=["join", "--invite-file", "f", "--cipher=fernet", "--legacy", "r"])
@example(argv=["status", "--json", "--json"])
@example(argv=["tail", "-n5", "room", "-n7"])
def test_known_command_lines_get_the_same_call(recorder: Recorder, argv: list[str]) -> None:
    assert fast_outcome(recorder, argv) is not None, argv
    assert_same_call(recorder, argv)


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
        ["join", "room", "--cipher", "rot13"],
    ],
)
def test_bad_values_are_declined_and_refused_by_typer(
    recorder: Recorder, argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert fast_outcome(recorder, argv) is None
    assert typer_outcome(recorder, argv) == ("exit", 2)
    assert "Invalid value" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv",
    [
        ["send"],
        ["send", "room", "-x"],
        ["send", "-room", "hi"],
        ["status", "extra"],
        ["status", "--json=1"],
        ["tail", "room", "-n"],
        ["tail", "room", "-n=5"],
        ["join", "a", "b"],
        ["join", "room", "--passphrase", "secret"],
        ["--runtime-dir"],
        ["--bogus", "status"],
        ["no-such-command"],
    ],
)
def test_usage_errors_are_declined_and_refused_by_typer(
    recorder: Recorder, argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert fast_outcome(recorder, argv) is None
    assert typer_outcome(recorder, argv) == ("exit", 2)
    said = capsys.readouterr().err
    assert "Error" in said and "Traceback" not in said


def test_the_largest_values_pass_on_both_paths(recorder: Recorder) -> None:
    argv = ["--timeout", "86400", "tail", "r", "-n", "9223372036854775807", "--since", "0"]
    name, call = fast_outcome(recorder, argv)
    assert (name, call) == typer_outcome(recorder, argv)
    assert call["opts"] == commands.Options(Path(RUNTIME_DIR), 86400.0)
    assert (call["lines"], call["since"]) == (2**63 - 1, 0)


def test_runtime_dir_flag_is_kept_for_config(recorder: Recorder) -> None:
    """`chatctl --runtime-dir DIR config` shows DIR as a flag, not as a default."""
    _, call = fast_outcome(recorder, ["--runtime-dir", "/tmp/elsewhere", "status"])
    assert call["opts"] == commands.Options(Path("/tmp/elsewhere"), 10.0, Path("/tmp/elsewhere"))
