"""Issue 11 finding 7: bad input to chatctl and to chatd's configuration ends in one
clear line and the documented exit status, never a traceback.

Every case runs the real `chatctl` / `chatd` entry points, with a real chatd
running where the failure used to need one (a timeout of 1e308 only overflowed
once chatd answered).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import threading
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from harness import Daemon, command, short_tmpdir, wait_until

MakeDaemon = Callable[..., Daemon]
Arg = str | bytes

USAGE, REFUSED, UNAVAILABLE = 2, 1, 3


def chatctl(
    d: Daemon,
    *args: Arg,
    input: bytes | None = None,
    env: dict[str, str] | None = None,
    **kw: Any,
) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [command("chatctl"), *args],
        input=input,
        capture_output=True,
        env={**d.env, **(env or {})},
        timeout=30,
        check=False,
        **kw,
    )


def assert_one_clear_line(
    result: subprocess.CompletedProcess[bytes], status: int, says: str, *, usage: bool = False
) -> None:
    stderr = result.stderr.decode(errors="backslashreplace")
    assert "Traceback" not in stderr, stderr
    assert result.returncode == status, (result.returncode, stderr)
    if usage:  # typer's usage error: its box, with the reason wrapped in it
        flat = " ".join(re.sub("[│╭╮╰╯─]", " ", stderr).split())
        assert "Usage: chatctl" in flat and says in flat, stderr
        return
    assert stderr.startswith("ERROR: ") and stderr.count("\n") == 1, stderr
    assert says in stderr, stderr


@pytest.fixture
def alice(make_daemon: MakeDaemon, room: str) -> Daemon:
    d = make_daemon("alice")
    d.join(room)
    return d


def secret_file(where: Path, name: str, content: bytes, mode: int = 0o600) -> Path:
    path = where / name
    path.write_bytes(content)
    path.chmod(mode)
    return path


def test_bad_numbers_are_usage_errors_with_chatd_running(alice: Daemon, room: str) -> None:
    for args, says in [
        (["tail", room, "--since", "²"], "'²' is not a valid"),
        (["tail", room, "-n", "²"], "'²' is not a valid"),
        (["tail", room, "--lines=²", "--no-follow"], "'²' is not a valid"),
        (["tail", room, "-n", "9" * 5000, "--no-follow"], "is not a valid"),
        (["tail", room, "--since", str(2**63), "--no-follow"], "Invalid value for '--since'"),
        (["--timeout", "inf", "status"], "must be between 0.1 and 86400 seconds"),
        (["--timeout", "1e308", "status"], "must be between 0.1 and 86400 seconds"),
        (["--timeout", "nan", "status"], "must be between 0.1 and 86400 seconds"),
        (["--timeout", "nan", "rooms"], "must be between 0.1 and 86400 seconds"),
        (["--timeout", "1e308", "send", room, "hi"], "must be between 0.1 and 86400"),
        (["--timeout=inf", "tail", room, "--no-follow"], "must be between 0.1 and 86400"),
    ]:
        assert_one_clear_line(chatctl(alice, *args), USAGE, says, usage=True)
    # The largest timeout still works.
    assert chatctl(alice, "--timeout", "86400", "status").returncode == 0


def test_bad_templates_are_refused_before_anything_is_printed(alice: Daemon, room: str) -> None:
    alice.ok("send", room, "one")
    for template, says in [
        ("{text:99999999999}", "width or precision over 9999"),
        ("{text:{sender}}", "a format spec may not hold a field"),
        ("{seq:.99999f}", "width or precision over 9999"),
    ]:
        result = chatctl(alice, "tail", room, "--no-follow", "--format", template)
        assert_one_clear_line(result, USAGE, says)
        assert result.stdout == b""


def test_passphrase_files_that_cannot_be_used(alice: Daemon, room: str) -> None:
    where = short_tmpdir("mqpf-")
    fifo = where / "fifo"
    os.mkfifo(fifo, 0o600)
    link = where / "link"
    link.symlink_to(secret_file(where, "real", b"correct horse battery staple\n"))
    cases: list[tuple[Path, int, str]] = [
        (where, REFUSED, "is a directory, not a file"),
        (fifo, REFUSED, "is not a regular file"),  # and it must not wait for a writer
        (where / "missing", REFUSED, "does not exist"),
        (where / "real" / "below", REFUSED, "a part of its path is not a directory"),
        (link, REFUSED, "is a symbolic link"),
        (secret_file(where, "loose", b"correct horse battery staple\n", 0o644), REFUSED, "chmod"),
        (secret_file(where, "latin1", b"caf\xe9 au lait 12345\n"), REFUSED, "is not UTF-8 text"),
        (secret_file(where, "blank", b" \t \n"), USAGE, "the passphrase is only white space"),
        (secret_file(where, "empty", b""), USAGE, "the passphrase is empty"),
        (secret_file(where, "long", b"x" * (64 * 1024 + 1)), REFUSED, "is over 65536 bytes"),
    ]
    for path, status, says in cases:
        result = chatctl(alice, "join", f"{room}-x", "--passphrase-file", str(path))
        assert_one_clear_line(result, status, says)
    assert alice.status()["rooms"] == [room]  # none of them reached chatd


def test_unreadable_passphrase_file(alice: Daemon, room: str) -> None:
    if os.geteuid() == 0:
        pytest.skip("root reads a 0000 file: cannot make one unreadable")
    where = short_tmpdir("mqpf-")
    path = secret_file(where, "locked", b"correct horse battery staple\n", 0o000)
    result = chatctl(alice, "join", f"{room}-x", "--passphrase-file", str(path))
    assert_one_clear_line(result, REFUSED, "cannot be read by you")


def test_bad_passphrases_on_stdin(alice: Daemon, room: str) -> None:
    for given, says in [
        (b"   \n", "the passphrase is only white space"),
        (b"\t\r\n", "the passphrase is only white space"),
        (b"\n", "the passphrase is empty"),
        (b"", "the passphrase is empty"),
        (b"caf\xe9 au lait, long enough\n", "the passphrase is not valid UTF-8 text"),
    ]:
        for legacy in ([], ["--legacy"]):
            result = chatctl(alice, "join", f"{room}-x", *legacy, input=given)
            assert_one_clear_line(result, USAGE, says)
    closed = subprocess.run(  # stdin closed, not empty: sys.stdin is None
        ["sh", "-c", 'exec "$0" join "$1" <&-', command("chatctl"), f"{room}-x"],
        capture_output=True,
        env=alice.env,
        timeout=30,
        check=False,
    )
    assert_one_clear_line(closed, USAGE, "stdin is closed: nothing to read")
    assert alice.status()["rooms"] == [room]


def test_names_that_are_not_utf8(alice: Daemon, room: str) -> None:
    says = "room name is not valid UTF-8 text"
    for args in [
        ["join", b"caf\xe9"],
        ["join", b"a\xffb", "--cipher", "aes-256-gcm", "--weak"],
        ["send", b"\xff", "hi"],
        ["send", b"\xff", "--", "hi"],
        ["leave", b"x\xfe"],
        ["tail", b"\xff", "--no-follow"],
        ["tail", room, b"\xff", "--no-follow", "--json"],
        ["chat", b"\xff"],
    ]:
        result = chatctl(alice, *args, input=b"correct horse battery staple\n")
        assert_one_clear_line(result, USAGE, says)
    bad_text = chatctl(alice, "send", room, b"caf\xe9")
    assert_one_clear_line(bad_text, USAGE, "message is not valid Unicode text")


def test_stdin_lines_that_are_not_utf8_stop_the_stream_there(alice: Daemon, room: str) -> None:
    for how in (["send", room], ["chat", room]):
        result = chatctl(alice, *how, input=b"first\nsecond\ncaf\xe9\nfourth\n")
        assert_one_clear_line(result, USAGE, "line 3 is not UTF-8 text; nothing after it was sent")
    history = alice.ok("tail", room, "--no-follow", "-n", "10", "--format", "{text}")
    assert history.splitlines() == ["first", "second"] * 2


def test_runtime_dirs_chatctl_cannot_use(alice: Daemon) -> None:
    long_dir = "/tmp/" + "x" * 110
    assert_one_clear_line(chatctl(alice, "--runtime-dir", long_dir, "status"), USAGE, "is too long")
    assert_one_clear_line(
        chatctl(alice, "--runtime-dir", b"/tmp/\xff", "send", "r", "hi"), USAGE, "not a UTF-8 path"
    )
    env = {"MQCHAT_RUNTIME_DIR": "/tmp/caf\udce9"}
    assert_one_clear_line(chatctl(alice, "status", env=env), USAGE, "not a UTF-8 path")


def test_chatd_refuses_the_same_names_and_passphrases_over_json_rpc(
    alice: Daemon, room: str
) -> None:
    """What chatctl refuses, chatd refuses too, for any other client of ctl.sock."""
    from mqchat.client.ipc_client import Client
    from mqchat.errors import DaemonRefused
    from mqchat.protocol.ipc import BAD_PASSPHRASE, INVALID_PARAMS

    def refusal(method: str, params: dict[str, Any]) -> tuple[int, str]:
        with Client(alice.runtime_dir, 10) as c, pytest.raises(DaemonRefused) as info:
            c.call(method, params)
        return info.value.code, info.value.message

    for blank in ("   ", "\t \u3000"):
        for legacy in (False, True):
            params = {"room": f"{room}-x", "passphrase": blank, "legacy": legacy, "weak": True}
            assert refusal("join", params) == (BAD_PASSPHRASE, "the passphrase is empty")
    for name in ("\udcff", f"{room}\udcff", "a\ud800b"):
        for method, params in (
            ("send", {"room": name, "text": "hi"}),
            ("history", {"room": name}),
            ("leave", {"room": name}),
            ("join", {"room": name, "passphrase": "correct horse battery"}),
        ):
            code, message = refusal(method, params)
            assert code == INVALID_PARAMS and "not valid" in message, (method, message)
    assert refusal("trust", {"room": room, "name": "bob\udcff"})[0] == INVALID_PARAMS
    assert alice.status()["rooms"] == [room]


# ---------------------------------------------------------------------- chatd's configuration


BAD_CONFIGS: list[tuple[bytes, str]] = [
    (b'name = "caf\xe9"\n', "is not UTF-8 text"),
    (b"a = " + b"[" * 5000 + b"]" * 5000, "nests arrays or tables too deeply"),
    (b"[store]\nretention = " + b"9" * 5000, "is not valid TOML"),
    (b"[store]\nretention = " + b"9" * 30, "store.retention must be between"),
    (b"broker = 5", "[broker] must be a table"),
    (b'[broker]\ntopic_prefix = "mqchat\\u0000v1"', "holds the control character '\\x00'"),
    (b'[broker]\ntopic_prefix = "mqchat/+"', "must not hold the wildcards"),
    (b'[broker]\ntopic_prefix = "a//b"', "has an empty level"),
    (b'[broker]\ntopic_prefix = "' + b"p" * 201 + b'"', "the limit is 200"),
]


def test_bad_config_files_stop_chatd_and_chatctl_config(make_daemon: MakeDaemon) -> None:
    d = make_daemon("carol", start=False)
    for content, says in BAD_CONFIGS:
        path = d.home / "config.toml"
        path.write_bytes(content)
        env = {**d.env, "MQCHAT_CONFIG": str(path)}
        chatd = subprocess.run(
            [command("chatd")], env=env, capture_output=True, timeout=30, check=False
        )
        stderr = chatd.stderr.decode(errors="backslashreplace")
        assert chatd.returncode == 2, (says, stderr)
        assert stderr.startswith("chatd: error: config file ") and stderr.count("\n") == 1
        assert str(path) in stderr and says in stderr, stderr
        assert not (d.runtime_dir / "ctl.sock").exists()
        shown = chatctl(d, "config", env={"MQCHAT_CONFIG": str(path)})
        assert_one_clear_line(shown, USAGE, says)


@pytest.mark.parametrize(
    ("variable", "value", "says"),
    [
        ("MQCHAT_NAME", "a\x1b[2Jb", "MQCHAT_NAME: name must not contain control characters"),
        ("MQCHAT_NAME", "caf\udce9", "MQCHAT_NAME: name is not valid UTF-8 text"),
        ("MQCHAT_BROKER", "garbage", "MQCHAT_BROKER: 'garbage' must start with one of"),
        ("MQCHAT_BROKER", "mqtt://127.0.0.1:70000", "Port out of range"),
        ("MQCHAT_BROKER", "mqtt://127.0.0.1:0", "the port must be 1 to 65535"),
        ("MQCHAT_BROKER_USERNAME", "bob\x07", "the user name holds the control character"),
        ("MQCHAT_STATE_DIR", "/tmp/caf\udce9", "MQCHAT_STATE_DIR: the path"),
    ],
)
def test_bad_environment_stops_chatd(
    make_daemon: MakeDaemon, variable: str, value: str, says: str
) -> None:
    d = make_daemon("dave", start=False)
    chatd = subprocess.run(
        [command("chatd")],
        env={**d.env, variable: value},
        capture_output=True,
        timeout=30,
        check=False,
    )
    stderr = chatd.stderr.decode(errors="backslashreplace")
    assert chatd.returncode == 2, stderr
    assert stderr.startswith("chatd: error: ") and stderr.count("\n") == 1, stderr
    assert says in stderr


def test_bad_flags_stop_chatd(make_daemon: MakeDaemon) -> None:
    d = make_daemon("erin", start=False)
    for args, says in [
        ([b"--name", b"caf\xe9"], "--name: name is not valid UTF-8 text"),
        (["--name", "tab\there"], "--name: name must not contain control characters"),
        (["--broker", "mqtt://[::1"], "--broker: 'mqtt://[::1' is not valid"),
    ]:
        chatd = subprocess.run(
            [command("chatd"), *args], env=d.env, capture_output=True, timeout=30, check=False
        )
        stderr = chatd.stderr.decode(errors="backslashreplace")
        assert chatd.returncode == 2, stderr
        assert stderr.count("\n") == 1 and says in stderr, stderr


def test_chatctl_config_names_environment_and_runtime_dir_flag(make_daemon: MakeDaemon) -> None:
    d = make_daemon("frank", start=False)
    shown = d.ok("config")
    assert f'runtime_dir = "{d.runtime_dir}"  # environment' in shown
    assert f'state_dir = "{d.state_dir}"  # environment' in shown
    flagged = d.ok("--runtime-dir", "/tmp/elsewhere", "config")
    assert 'runtime_dir = "/tmp/elsewhere"  # flag' in flagged
    # What config prints is a config file: tomllib reads it back, values and all.
    parsed = tomllib.loads(shown)
    view = json.loads(d.ok("config", "--json"))
    assert parsed["name"] == view["name"] == "frank"
    assert parsed["broker"]["url"] == view["broker"]["url"]
    assert parsed["broker"]["tls_insecure"] is False
    assert "username" not in parsed["broker"]  # not set: a comment, not None


# ---------------------------------------------------------------------- chatd dies mid-stream


ACCEPTED = re.compile(
    r"^ERROR: chatd stopped answering after accepting (\d+) of the (\d+) lines sent to it"
    r"(?: \(the last was stdin line (\d+)\))?; the rest may not have been sent\."
)


def test_killed_chatd_mid_stream_says_how_many_lines_it_accepted(
    make_daemon: MakeDaemon, room: str
) -> None:
    alice = make_daemon("alice")
    alice.join(room)
    watcher = alice.tail(room, "--since", "0")
    alice.ok("send", room, "ready")
    watcher.messages(1)  # subscribed before the flood, which keeps chatd from syncing a new one
    lines = [f"line {i}" for i in range(1, 200_001)]
    sender = subprocess.Popen(
        [command("chatctl"), "--timeout", "2", "send", room],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=alice.env,
    )

    def feed() -> None:
        assert sender.stdin is not None
        try:
            for start in range(0, len(lines), 1000):
                sender.stdin.write("".join(f"{t}\n" for t in lines[start : start + 1000]).encode())
            sender.stdin.close()
        except (BrokenPipeError, ValueError):
            # chatctl ended, as it should, before reading it all (ValueError: the
            # main thread's communicate() closed stdin first).
            pass

    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()
    watcher.messages(300)  # mid-stream: chatd has stored and published hundreds
    assert alice.stop(signal.SIGKILL) == -signal.SIGKILL
    try:
        _, err = sender.communicate(timeout=30)
    finally:
        if sender.poll() is None:
            sender.kill()
    stderr = err.decode()
    assert "Traceback" not in stderr, stderr
    assert sender.returncode == UNAVAILABLE, stderr
    assert stderr.count("\n") == 1, stderr
    match = ACCEPTED.match(stderr)
    assert match, stderr
    accepted, sent = int(match[1]), int(match[2])
    # Replies chatd had not yet written when it died are lost: chatctl may count
    # fewer than chatd stored (the watcher saw 300), never more.
    assert 0 < accepted <= sent < len(lines)
    assert match[3] == str(accepted)  # no blank lines: line n is message n

    # What chatctl called accepted is there after a restart, in order, from line 1.
    alice.start(wait_connected=False)
    wait_until(lambda: alice.ctl("status").returncode == 0, "chatd to serve again")
    texts = alice.ok("tail", room, "--no-follow", "--since", "1", "--format", "{text}").splitlines()
    assert len(texts) >= max(accepted, 300)
    assert texts == lines[: len(texts)]
