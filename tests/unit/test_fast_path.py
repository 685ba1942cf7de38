"""Issue 8: `chatctl send`, `status`, `join` and `tail` start without typer, cryptography or paho.

Imports are checked in a fresh interpreter, because this test process has
long since imported all of those for other reasons.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

import mqchat
from fresh_interpreter import SRC, imported_after
from mqchat.client.fast import parse

HEAVY = ("typer", "click", "rich", "cryptography", "paho", "asyncio", "textual")


@pytest.mark.parametrize(
    "statement",
    [
        "import mqchat.client.fast",
        # How both paths read option values.
        "import mqchat.client.cli_values",
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


def test_status_imports_no_hashing_dates_or_templates() -> None:
    """Issue 24: `chatctl status` only formats fingerprints and escapes text. hashlib
    (OpenSSL), datetime and string cost it ~3.5 ms of a cold start for nothing."""
    modules = imported_after(
        "import mqchat.client.cli, mqchat.client.fast, mqchat.client.ipc_client, "
        "mqchat.client.render, mqchat.protocol.fingerprints, mqchat.drop_reasons"
    )
    assert "mqchat" in modules
    assert modules.isdisjoint({"hashlib", "_hashlib", "datetime", "string"}), modules


def test_send_and_status_do_not_import_the_socket_or_queue_module() -> None:
    """Issue 24: the probe of ctl.sock is all they need of sockets; ``socket`` (with
    selectors, array and select) cost ~1.7 ms of each cold start. ``queue`` is for
    reading stdin only (~1 ms)."""
    modules = imported_after(
        "import mqchat.client.cli, mqchat.client.fast, mqchat.client.ipc_client, "
        "mqchat.client.sending, mqchat.client.render, mqchat.protocol.fingerprints"
    )
    assert "mqchat" in modules
    assert modules.isdisjoint({"socket", "queue"}), sorted(modules)


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
        ["join", "--invite"],
        ["join", "--invite-file", "/tmp/invite"],
    ],
)
def test_fast_commands_take_the_fast_path(argv: list[str]) -> None:
    assert parse(argv) is not None


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
def test_usage_errors_are_left_to_typer(argv: list[str]) -> None:
    """Typer's usage messages are the only ones (test_cli_paths checks that it refuses these)."""
    assert parse(argv) is None


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
    assert parse(argv) is None


def test_shell_completion_is_left_to_typer(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("_CHATCTL_COMPLETE", "complete_bash")
    assert parse(["status"]) is None


@pytest.mark.parametrize(
    "statement",
    [
        # The typer app with every command registered, `ui` included.
        "from mqchat.client.cli import build_app; build_app()",
        # `chatctl chat` shares the members lines with the interface.
        "import mqchat.client.chat_session",
        # What `chatctl ui` loads before it knows that Textual is there.
        "import mqchat.client.ui.launch, mqchat.client.ui.link, mqchat.client.ui.state",
    ],
)
def test_only_the_interface_imports_textual(statement: str) -> None:
    """Issue 17: Textual is an optional extra, imported by `chatctl ui` alone."""
    modules = imported_after(statement)
    assert "mqchat" in modules and "textual" not in modules


def _run_chatctl(argv: list[str], prelude: str = "") -> tuple[int, str, set[str]]:
    """Run chatctl's entry point in a fresh interpreter: its exit status, stderr, and
    the top-level modules it had imported by then."""
    code = (
        f"import json, sys\n{prelude}\nsys.argv = ['chatctl', *{argv!r}]\n"
        "from mqchat.client.cli import main\n"
        "try:\n    main()\nexcept SystemExit as exc:\n    status = exc.code\n"
        "else:\n    status = 0\n"
        "print(json.dumps([status, sorted({m.split('.')[0] for m in sys.modules})]))\n"
    )
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(SRC), env.get("PYTHONPATH")]))
    result = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        stdin=subprocess.DEVNULL,
    )
    status, modules = json.loads(result.stdout.splitlines()[-1])
    return status, result.stderr, set(modules)


def test_chatctl_send_never_imports_textual() -> None:
    status, stderr, modules = _run_chatctl(["--runtime-dir", "/nonexistent/mq", "send", "r", "hi"])
    assert status == 3, stderr  # no chatd there: the send ran as far as it could
    assert "textual" not in modules


def test_chatctl_ui_without_the_extra_says_how_to_install_it() -> None:
    """Without Textual, `chatctl ui` is a usage error (2) that names the extra."""
    status, stderr, _ = _run_chatctl(
        ["--runtime-dir", "/nonexistent/mq", "ui", "lobby"],
        prelude="sys.modules['textual'] = None  # as if the extra were not installed",
    )
    assert status == 2
    assert "-m pip install 'textual>=8.2'" in stderr and "Traceback" not in stderr
    assert "mqchat[ui]" not in stderr  # not on PyPI: that line would fail


def test_chatctl_version_is_fast_and_plain() -> None:
    code = (
        "import sys; sys.argv = ['chatctl', '--version']\n"
        "from mqchat.client.cli import main; main()"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert (out.returncode, out.stdout) == (0, f"chatctl {mqchat.__version__}\n"), out.stderr
    status, _, modules = _run_chatctl(["--version"])
    assert status == 0 and "typer" not in modules and "zmq" not in modules
