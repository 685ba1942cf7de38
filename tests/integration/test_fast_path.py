"""Issue 8: `chatctl send`, `status`, `join` and `tail` take a fast path past
typer; both paths behave alike, through the real `chatctl` entry point.

Every valid command line of those commands takes the fast path, so the typer
path is reached here with the fast path switched off (``TYPER_ONLY``).
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable

from harness import Daemon, command

MakeDaemon = Callable[..., Daemon]


# chatctl's entry point with the fast path declining every command line.
TYPER_ONLY = (
    "import sys, mqchat.client.fast as fast; fast.run = lambda argv: None; "
    "from mqchat.client.cli import main; main()"
)


def traced(
    d: Daemon,
    *args: str,
    env: dict[str, str] | None = None,
    input: str | None = None,
    typer_only: bool = False,
) -> tuple[subprocess.CompletedProcess[str], set[str]]:
    """Run chatctl under -X importtime: its result, and the top-level modules it imported."""
    program = ["-c", TYPER_ONLY] if typer_only else [command("chatctl")]
    result = subprocess.run(
        [sys.executable, "-X", "importtime", *program, *args],
        input=input,
        capture_output=True,
        text=True,
        env=env or d.env,
        timeout=30,
        check=False,
    )
    modules = set()
    stderr = []
    for line in result.stderr.splitlines():
        if line.startswith("import time:"):
            modules.add(line.rsplit("|", 1)[1].strip().split(".")[0])
        else:
            stderr.append(line)
    result.stderr = "".join(s + "\n" for s in stderr)
    return result, modules


def test_send_and_status_skip_typer_and_cryptography(make_daemon: MakeDaemon, room: str) -> None:
    alice = make_daemon("alice")
    alice.join(room)
    tail = alice.tail(room, "--since", "0")
    sent, modules = traced(alice, "send", room, "hello", "fast")
    assert sent.returncode == 0, sent.stderr
    assert modules.isdisjoint({"typer", "click", "cryptography", "paho"}), modules
    assert tail.messages(1)[0]["text"] == "hello fast"

    shown, modules = traced(alice, "status")
    assert shown.returncode == 0, shown.stderr
    assert modules.isdisjoint({"typer", "click", "cryptography", "paho"}), modules
    lines = shown.stdout.splitlines()
    assert [line.split(":")[0] for line in lines] == ["name", "broker", "rooms", "attention"]
    assert lines[0].startswith("name:     alice  (")
    assert room in lines[2]


def test_status_json_is_the_same_on_both_paths(make_daemon: MakeDaemon, room: str) -> None:
    alice = make_daemon("alice")
    alice.join(room)
    fast, modules = traced(alice, "status", "--json", "--json")
    assert "typer" not in modules
    slow, modules = traced(alice, "status", "--json", "--json", typer_only=True)
    assert "typer" in modules
    assert fast.returncode == slow.returncode == 0, (fast.stderr, slow.stderr)
    assert json.loads(fast.stdout) == json.loads(slow.stdout)
    assert json.loads(fast.stdout)["rooms"] == [room]


def test_typer_path_still_sends(make_daemon: MakeDaemon, room: str) -> None:
    alice = make_daemon("alice")
    alice.join(room)
    tail = alice.tail(room, "--since", "0")
    result, modules = traced(alice, "send", room, "--", "-dash", typer_only=True)
    assert result.returncode == 0, result.stderr
    assert "typer" in modules
    result, modules = traced(alice, "send", room, "--", "-dash", "fast")
    assert result.returncode == 0, result.stderr
    assert "typer" not in modules
    assert [m["text"] for m in tail.messages(2)] == ["-dash", "-dash fast"]


def test_runtime_dir_before_the_command(make_daemon: MakeDaemon, room: str) -> None:
    alice = make_daemon("alice")
    alice.join(room)
    tail = alice.tail(room, "--since", "0")
    env = dict(alice.env, MQCHAT_RUNTIME_DIR=str(alice.home / "elsewhere"))
    where = str(alice.runtime_dir)
    result, _ = traced(alice, "--runtime-dir", where, "send", room, "one", env=env)
    assert result.returncode == 0, result.stderr
    result, _ = traced(
        alice, f"--runtime-dir={where}", "--timeout", "5", "send", room, env=env, input="two\n"
    )
    assert result.returncode == 0, result.stderr
    assert [m["text"] for m in tail.messages(2)] == ["one", "two"]
    result, _ = traced(alice, "--runtime-dir", where, "status", "--json", env=env)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["name"] == "alice"
    result, _ = traced(alice, "status", env=env)
    assert result.returncode == 3


def test_no_daemon_exits_3_on_both_paths(make_daemon: MakeDaemon) -> None:
    nobody = make_daemon("nobody", start=False)
    fast, modules = traced(nobody, "send", "lobby", "hi")
    assert "typer" not in modules
    slow, modules = traced(nobody, "send", "lobby", "hi", typer_only=True)
    assert "typer" in modules
    assert fast.returncode == slow.returncode == 3
    assert fast.stderr == slow.stderr
    assert fast.stderr.startswith("ERROR: chatd is not running")
    assert nobody.ctl("status").returncode == 3


def test_too_long_exits_1(make_daemon: MakeDaemon, room: str) -> None:
    alice = make_daemon("alice")
    alice.join(room)
    long = "x" * (16 * 1024 + 1)
    result = alice.ctl("send", room, long)
    assert result.returncode == 1
    assert result.stderr == (
        "ERROR: message is 16385 bytes of UTF-8; the limit is 16384 (16 KiB)\n"
    )
    result = alice.ctl("send", room, input=f"fine\n{long}\n")
    assert result.returncode == 1
    assert result.stderr.startswith("ERROR: line 2: message is 16385 bytes")
    assert alice.ctl("send", room, "--", long).stderr == (
        "ERROR: message is 16385 bytes of UTF-8; the limit is 16384 (16 KiB)\n"
    )


def test_usage_errors_and_help_come_from_typer(make_daemon: MakeDaemon) -> None:
    nobody = make_daemon("nobody", start=False)
    assert "Usage: chatctl send" in nobody.ok("send", "--help")
    for args in (
        ["send"],
        ["send", "lobby", "-x"],
        ["status", "--bogus"],
        ["--timeout", "0", "status"],
    ):
        result = nobody.ctl(*args)
        assert result.returncode == 2, args
        assert "Usage: chatctl" in result.stderr, args
    bad_room = nobody.ctl("send", "a/b", "hi")
    assert bad_room.returncode == 2
    assert bad_room.stderr.startswith("ERROR: room name must not contain")


def test_tail_takes_the_fast_path_too(make_daemon: MakeDaemon, room: str) -> None:
    alice = make_daemon("alice")
    alice.join(room)
    alice.ok("send", room, "one")
    alice.ok("send", room, "two")
    shown, modules = traced(alice, "tail", room, "--no-follow", "-n", "1", "--format", "{text}")
    assert shown.returncode == 0, shown.stderr
    assert modules.isdisjoint({"typer", "click", "cryptography", "paho"}), modules
    assert shown.stdout == "two\n"
    bad, _ = traced(alice, "tail", room, "--no-follow", "--format", "{nope}")
    assert bad.returncode == 2 and "{nope}" in bad.stderr
    clustered, modules = traced(alice, "tail", room, "--no-follow", "-n1", "--json")
    assert "typer" not in modules
    assert json.loads(clustered.stdout)["text"] == "two"
    via_typer, modules = traced(
        alice, "tail", room, "--no-follow", "-n1", "--json", typer_only=True
    )
    assert "typer" in modules
    assert via_typer.stdout == clustered.stdout


def test_join_takes_the_fast_path_and_warns_alike(make_daemon: MakeDaemon, room: str) -> None:
    alice = make_daemon("alice")
    joined, modules = traced(
        alice, "join", room, "--cipher", "chacha20-poly1305", input="correct horse battery staple\n"
    )
    assert joined.returncode == 0, joined.stderr
    assert modules.isdisjoint({"typer", "click", "paho"}), modules
    assert joined.stdout == f"joined {room} (chacha20-poly1305)\n"
    short, _ = traced(alice, "join", room + "-x", input="short\n")
    assert short.returncode == 1 and "12 characters" in short.stderr
    legacy, _ = traced(alice, "join", room + "-old", "--legacy", input="abc\n")
    assert legacy.returncode == 0 and legacy.stderr.startswith("WARNING: legacy room")
