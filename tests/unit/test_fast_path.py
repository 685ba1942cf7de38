"""Issue 8: `chatctl send`, `status`, `join` and `tail` start without typer, cryptography or paho.

Imports are checked in a fresh interpreter, because this test process has
long since imported all of those for other reasons.
"""

from __future__ import annotations

import pytest

from fresh_interpreter import imported_after
from mqchat.client.fast import Action, Handover, parse

HEAVY = ("typer", "click", "rich", "cryptography", "paho", "asyncio")


@pytest.mark.parametrize(
    "statement",
    [
        "import mqchat.client.fast",
        # The command-line table both paths are built from.
        "import mqchat.client.cli_spec",
        # What the console script imports before main() picks a path.
        "import mqchat.client.cli",
        # What the fast path imports to send, and to print a status.
        "import mqchat.client.sending, mqchat.client.render, mqchat.protocol.fingerprints",
    ],
)
def test_fast_path_imports_nothing_heavy(statement: str) -> None:
    modules = imported_after(statement)
    assert "mqchat" in modules
    assert modules.isdisjoint(HEAVY), sorted(modules & set(HEAVY))


@pytest.mark.parametrize(
    "argv",
    [
        ["send", "room", "hello", "world"],
        ["send", "room"],
        ["send", "room", "-"],
        ["send", "room", "--", "-x"],
        ["send", "--", "-room", "hi"],
        ["status"],
        ["status", "--json"],
        ["status", "--json", "--json"],
        ["--runtime-dir", "/tmp/x", "send", "room", "hi"],
        ["--runtime-dir=/tmp/x", "--timeout", "2.5", "status"],
        ["--timeout=3", "--runtime-dir", "/tmp/x", "--runtime-dir", "/tmp/y", "status"],
        ["--runtime-dir", "-x", "status"],
        ["--", "status"],
        ["tail"],
        ["tail", "room"],
        ["tail", "a", "b", "-n", "50", "--no-follow", "--json"],
        ["tail", "room", "--since=7", "--format", "{sender}: {text}"],
        ["tail", "room", "--lines=0"],
        ["tail", "room", "-n5"],
        ["tail", "room", "--format", "--json"],
        ["join", "room"],
        ["join", "room", "--cipher", "aes-256-gcm", "--weak"],
        ["join", "room", "--legacy", "--passphrase-file=/tmp/p"],
    ],
)
def test_fast_commands_take_the_fast_path(argv: list[str]) -> None:
    assert isinstance(parse(argv), Action)


@pytest.mark.parametrize(
    "argv",
    [
        ["send"],
        ["send", "room", "-x"],
        ["send", "-room", "hi"],
        ["send", "room", "--runtime-dir", "/tmp/x"],
        ["status", "extra"],
        ["status", "--json=1"],
        ["tail", "room", "-n", "-1"],
        ["tail", "room", "-n"],
        ["tail", "room", "-n=5"],
        ["tail", "room", "--since", "x"],
        ["tail", "room", "--since", "\u0665"],
        ["tail", "room", "--bogus"],
        ["join"],
        ["join", "a", "b"],
        ["join", "room", "--cipher", "rot13"],
        ["join", "room", "--passphrase", "secret"],
        ["--timeout", "0.01", "status"],
        ["--timeout", "soon", "status"],
        ["--timeout", "inf", "status"],
        ["--timeout", "nan", "status"],
        ["--runtime-dir", "status"],
        ["--runtime-dir"],
        ["--runtime-dir=", "status"],
        ["--bogus", "status"],
        ["no-such-command"],
    ],
)
def test_usage_errors_are_recognised_and_left_to_typer(argv: list[str]) -> None:
    parsed = parse(argv)
    assert isinstance(parsed, Handover) and parsed.usage_error, parsed


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["--help"],
        ["-h"],
        ["send", "--help"],
        ["send", "room", "-h"],
        ["status", "--help"],
        ["tail", "room", "--help"],
        ["join", "room", "--help"],
        ["identity"],
        ["rooms", "--json"],
        ["service", "print"],
        ["--install-completion"],
        ["--show-completion"],
    ],
)
def test_help_completion_and_other_commands_go_to_typer(argv: list[str]) -> None:
    parsed = parse(argv)
    assert isinstance(parsed, Handover) and not parsed.usage_error, parsed


def test_shell_completion_is_left_to_typer(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("_CHATCTL_COMPLETE", "complete_bash")
    parsed = parse(["status"])
    assert isinstance(parsed, Handover) and not parsed.usage_error
