"""Issue 8: `chatctl send` and `status` start without typer, cryptography or paho.

Imports are checked in a fresh interpreter, because this test process has
long since imported all of those for other reasons.
"""

from __future__ import annotations

import pytest

from fresh_interpreter import imported_after
from mqchat.client.fast import parse

HEAVY = ("typer", "click", "rich", "cryptography", "paho", "asyncio")


@pytest.mark.parametrize(
    "statement",
    [
        "import mqchat.client.fast",
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
        ["status"],
        ["status", "--json"],
        ["--runtime-dir", "/tmp/x", "send", "room", "hi"],
        ["--runtime-dir=/tmp/x", "--timeout", "2.5", "status"],
        ["--timeout=3", "--runtime-dir", "/tmp/x", "--runtime-dir", "/tmp/y", "status"],
        ["tail"],
        ["tail", "room"],
        ["tail", "a", "b", "-n", "50", "--no-follow", "--json"],
        ["tail", "room", "--since=7", "--format", "{sender}: {text}"],
        ["tail", "room", "--lines=0"],
        ["join", "room"],
        ["join", "room", "--cipher", "aes-256-gcm", "--weak"],
        ["join", "room", "--legacy", "--passphrase-file=/tmp/p"],
    ],
)
def test_plain_send_and_status_take_the_fast_path(argv: list[str]) -> None:
    assert parse(argv) is not None


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["--help"],
        ["send"],
        ["send", "--help"],
        ["send", "room", "-h"],
        ["send", "room", "--", "-x"],
        ["send", "-room", "hi"],
        ["status", "--json", "--json"],
        ["status", "extra"],
        ["status", "--help"],
        ["tail", "room", "-n", "-1"],
        ["tail", "room", "-n"],
        ["tail", "room", "-n5"],
        ["tail", "room", "--since", "x"],
        ["tail", "room", "--help"],
        ["tail", "room", "--bogus"],
        ["join"],
        ["join", "a", "b"],
        ["join", "room", "--cipher", "rot13"],
        ["join", "room", "--passphrase", "secret"],
        ["join", "room", "--help"],
        ["identity"],
        ["--timeout", "0.01", "status"],
        ["--timeout", "soon", "status"],
        ["--timeout", "inf", "status"],
        ["--timeout", "nan", "status"],
        ["--runtime-dir", "status"],
        ["--runtime-dir"],
        ["--runtime-dir=", "status"],
        ["--runtime-dir", "-x", "status"],
        ["--bogus", "status"],
        ["--install-completion"],
        ["send", "room", "--runtime-dir", "/tmp/x"],
    ],
)
def test_anything_else_is_left_to_typer(argv: list[str]) -> None:
    assert parse(argv) is None


def test_shell_completion_is_left_to_typer(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("_CHATCTL_COMPLETE", "complete_bash")
    assert parse(["status"]) is None
