"""Issue 7: a good desktop citizen — systemd readiness, config file, pipes, signals."""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from harness import DEADLINE_S, Broker, Daemon, command, short_tmpdir, wait_until
from mqchat.client.service_unit import DEFAULT_CHATD, render_unit

MakeDaemon = Callable[..., Daemon]
REPO = Path(__file__).resolve().parents[2]


def run_chatd(daemon: Daemon) -> subprocess.CompletedProcess[str]:
    """Run chatd in the foreground for a start-up that is expected to fail."""
    return subprocess.run(
        [command("chatd")],
        env=daemon.env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def fill_datagram_queue(path: Path) -> int:
    """Queue datagrams at ``path`` until the kernel takes no more; how many it took.

    Each comes from a fresh socket, so that what stops them is the receiver's
    full queue, not one sender's buffer: from then on a blocking sender to
    ``path`` (chatd's sd_notify) waits until the receiver reads.
    """
    queued = 0
    while True:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sender:
            sender.setblocking(False)
            try:
                sender.sendto(b"FILLER=1", str(path))
            except BlockingIOError:
                return queued
        queued += 1


def connects(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        return probe.connect_ex(str(path)) == 0


def test_ready_comes_only_after_the_sockets_are_bound(make_daemon: MakeDaemon) -> None:
    """READY=1 must mean "clients can connect now" (systemd starts them on it).

    The notify socket's queue is full when chatd starts, so its READY waits,
    and chatd with it, until the test reads: whatever chatd has bound by then,
    it bound before READY. A chatd that sent READY before binding would stay
    stuck in that send with its sockets missing, and the wait below fails.
    """
    where = short_tmpdir("mqn-")
    path = where / "notify"
    daemon = make_daemon("alice", start=False, extra_env={"NOTIFY_SOCKET": str(path)})
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as listener:
        listener.bind(str(path))
        assert fill_datagram_queue(path) > 0
        log = (daemon.home / "chatd.log").open("ab")
        daemon.proc = subprocess.Popen(
            [command("chatd")], env=daemon.env, stdin=subprocess.DEVNULL, stdout=log, stderr=log
        )
        sockets = [daemon.runtime_dir / "ctl.sock", daemon.runtime_dir / "events.sock"]
        wait_until(lambda: all(map(connects, sockets)), "chatd's sockets, bound before READY")
        listener.settimeout(DEADLINE_S)
        messages: list[str] = []
        while not any("READY=1" in m for m in messages):
            messages.append(listener.recv(4096).decode())
        # READY has come: a client connecting now is answered.
        status = daemon.ctl("status", "--json", timeout=DEADLINE_S)
        assert status.returncode == 0, status.stderr
        while not any(m.startswith("STATUS=connected") for m in messages):
            messages.append(listener.recv(4096).decode())
    ready = next(m for m in messages if "READY=1" in m)
    assert f"MAINPID={daemon.pid}" in ready
    assert json.loads(status.stdout)["name"] == "alice"
    shutil.rmtree(where)


def test_config_file_alone_gives_name_and_broker(broker: Broker, make_daemon: MakeDaemon) -> None:
    daemon = make_daemon("unused", start=False)
    config = daemon.home / "chatd.toml"
    config.write_text(
        f'name = "from-file"\n[broker]\nurl = "{broker.url}"\nkeepalive = 30\n'
        "[store]\nretention = 500\n"
    )
    daemon.extra_env = {"MQCHAT_NAME": "", "MQCHAT_BROKER": "", "MQCHAT_CONFIG": str(config)}
    daemon.start()
    status = daemon.status()
    assert status["name"] == "from-file"
    assert status["broker"]["url"] == broker.url
    shown = json.loads(daemon.ok("config", "--json"))
    assert shown["name"] == "from-file"
    assert shown["sources"]["name"] == "config file"
    assert shown["store"]["retention"] == 500


def test_flag_beats_environment_beats_file(broker: Broker, make_daemon: MakeDaemon) -> None:
    daemon = make_daemon("envname", start=False)
    config = daemon.home / "chatd.toml"
    config.write_text('name = "filename"\n')
    daemon.extra_env = {"MQCHAT_CONFIG": str(config)}
    daemon.start()
    assert daemon.status()["name"] == "envname"
    daemon.stop()
    daemon.start(args=["--name", "flagname"])
    assert daemon.status()["name"] == "flagname"


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        ("name = \n", "not valid TOML"),
        ('[broker]\nurl = "http://example.org"\n', "must start with"),
        ('colour = "blue"\n', "unknown setting 'colour'"),
        ('[broker]\nkeepalive = "soon"\n', "broker.keepalive must be an integer"),
    ],
)
def test_bad_config_file_is_named_clearly(
    make_daemon: MakeDaemon, content: str, needle: str
) -> None:
    daemon = make_daemon("alice", start=False)
    config = daemon.home / "bad.toml"
    config.write_text(content)
    daemon.extra_env = {"MQCHAT_CONFIG": str(config), "MQCHAT_BROKER": ""}
    result = run_chatd(daemon)
    assert result.returncode == 2
    assert needle in result.stderr and "Traceback" not in result.stderr
    shown = daemon.ctl("config")
    assert shown.returncode == 2 and needle in shown.stderr


def test_missing_explicit_config_file_is_an_error(make_daemon: MakeDaemon) -> None:
    daemon = make_daemon("alice", start=False)
    daemon.extra_env = {"MQCHAT_CONFIG": str(daemon.home / "nope.toml")}
    result = run_chatd(daemon)
    assert result.returncode == 2
    assert "does not exist" in result.stderr


def test_tail_into_head_ends_quietly(make_daemon: MakeDaemon, room: str) -> None:
    alice = make_daemon("alice")
    alice.join(room)
    alice.ok("send", room, "first")
    pipeline = subprocess.Popen(
        ["bash", "-c", f"set -o pipefail; {command('chatctl')} tail {room} -n 1 | head -1"],
        env=alice.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert pipeline.stdout is not None
    first = pipeline.stdout.readline()
    assert "first" in first
    # head has exited; the next line tail writes meets a closed pipe.
    alice.ok("send", room, "second")
    _, stderr = pipeline.communicate(timeout=20)
    assert pipeline.returncode == 0
    assert stderr == ""


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_stops_cleanly(make_daemon: MakeDaemon, sig: signal.Signals) -> None:
    alice = make_daemon("alice")
    assert alice.stop(sig) == 0
    assert not (alice.runtime_dir / "ctl.sock").exists()
    assert "Traceback" not in alice.log()


def test_format_template_and_bad_template(make_daemon: MakeDaemon, room: str) -> None:
    alice = make_daemon("alice")
    alice.join(room)
    alice.ok("send", room, "templated")
    out = alice.ok("tail", room, "--no-follow", "--format", "{seq}|{sender}|{text}|{verified}")
    assert out == "1|alice|templated|true\n"  # as in --json, not Python's True
    bad = alice.ctl("tail", room, "--no-follow", "--format", "{nope}")
    assert bad.returncode == 2 and "{nope}" in bad.stderr


def test_piped_output_has_no_colour(make_daemon: MakeDaemon, room: str) -> None:
    alice = make_daemon("alice", extra_env={"NO_COLOR": ""})
    alice.join(room)
    alice.ok("send", room, "plain")
    assert "\x1b" not in alice.ok("tail", room, "--no-follow")


COMMANDS = [
    ["join"], ["leave"], ["rooms"], ["send"], ["tail"], ["chat"], ["status"], ["identity"],
    ["trust"], ["who"], ["ui"], ["config"], ["service"], ["service", "install"],
    ["service", "print"], ["create"], ["invite"], ["rekey"], ["members"], ["role"],
    ["man-pages"],
]  # fmt: skip


def test_every_command_has_help() -> None:
    """Each command's help through typer's CliRunner in this process; the real
    entry point once, for the top-level help."""
    from typer.testing import CliRunner

    from mqchat.client.cli import build_app
    from mqchat.client.man_pages import commands

    app, runner = build_app(), CliRunner()
    for words in COMMANDS:
        shown = runner.invoke(app, [*words, "--help"])
        assert shown.exit_code == 0 and "Usage: chatctl" in shown.output, words
    for words, declared in commands():  # and every option declared is offered
        assert words in COMMANDS, words
        shown = runner.invoke(app, [*words, "--help"])
        assert declared.help and declared.help[:30] in " ".join(shown.output.split()), words
        for option in declared.params:
            assert option.opts[-1] in shown.output or option.metavar in shown.output, words
    assert runner.invoke(app, ["no-such-command"]).exit_code == 2
    top = subprocess.run(
        [command("chatctl"), "--help"], capture_output=True, text=True, check=True, timeout=30
    )
    assert "Exit status" in top.stdout
    for words in COMMANDS:
        assert words[0] in top.stdout, words
    chatd_help = subprocess.run(
        [command("chatd"), "--help"], capture_output=True, text=True, check=True, timeout=30
    )
    assert "--broker" in chatd_help.stdout and "Exit status" in chatd_help.stdout


def test_service_install_writes_a_working_unit(make_daemon: MakeDaemon) -> None:
    ghost = make_daemon("ghost", start=False)
    out = ghost.ok("service", "install")
    unit = ghost.home / "config" / "systemd" / "user" / "chatd.service"
    assert str(unit) in out
    text = unit.read_text()
    exec_start = next(line for line in text.splitlines() if line.startswith("ExecStart="))
    chatd, *args = exec_start.removeprefix("ExecStart=").split()
    assert Path(chatd).exists()
    # systemd has none of the shell's MQCHAT_*: the unit names the broker and name itself.
    assert args == ["--broker", ghost.broker.url, "--name", "ghost"]
    assert ghost.broker.url in out and "now run: systemctl --user daemon-reload" in out
    for line in (
        "Type=notify",
        "Restart=on-failure",
        "UMask=0077",
        "NoNewPrivileges=yes",
        "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6",
        "LockPersonality=yes",
        "MemoryMax=512M",
    ):
        assert line in text
    verify = shutil.which("systemd-analyze")
    if verify is None:
        pytest.skip("systemd-analyze is not installed")
    result = subprocess.run(
        [verify, "verify", str(unit)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr


def test_shipped_unit_matches_the_generated_one() -> None:
    assert (REPO / "systemd" / "chatd.service").read_text() == render_unit(DEFAULT_CHATD)
