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

from harness import Broker, Daemon, command, short_tmpdir
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


def test_ready_reaches_notify_socket(make_daemon: MakeDaemon) -> None:
    where = short_tmpdir("mqn-")
    path = where / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        sock.settimeout(20)
        daemon = make_daemon("alice", start=False, extra_env={"NOTIFY_SOCKET": str(path)})
        daemon.start()
        messages = []
        while not any("READY=1" in m for m in messages):
            messages.append(sock.recv(4096).decode())
        while not any(m.startswith("STATUS=connected") for m in messages):
            messages.append(sock.recv(4096).decode())
    ready = next(m for m in messages if "READY=1" in m)
    assert (daemon.runtime_dir / "ctl.sock").exists()  # READY came after the bind
    assert f"MAINPID={daemon.proc.pid}" in ready  # type: ignore[union-attr]
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
    assert out == "1|alice|templated|True\n"
    bad = alice.ctl("tail", room, "--no-follow", "--format", "{nope}")
    assert bad.returncode == 2 and "{nope}" in bad.stderr


def test_piped_output_has_no_colour(make_daemon: MakeDaemon, room: str) -> None:
    alice = make_daemon("alice", extra_env={"NO_COLOR": ""})
    alice.join(room)
    alice.ok("send", room, "plain")
    assert "\x1b" not in alice.ok("tail", room, "--no-follow")


def test_every_command_has_help(make_daemon: MakeDaemon) -> None:
    ghost = make_daemon("ghost", start=False)
    top = ghost.ok("--help")
    assert "Exit status" in top
    for cmd in (
        "join",
        "leave",
        "rooms",
        "send",
        "tail",
        "chat",
        "status",
        "identity",
        "trust",
        "config",
        "service",
    ):
        assert cmd in top
        result = ghost.ctl(cmd, "--help")
        assert result.returncode == 0 and "Usage" in result.stdout, cmd
    assert ghost.ctl("no-such-command").returncode == 2
    chatd_help = subprocess.run(
        [command("chatd"), "--help"], capture_output=True, text=True, check=True
    )
    assert "--broker" in chatd_help.stdout and "Exit status" in chatd_help.stdout


def test_service_install_writes_a_working_unit(make_daemon: MakeDaemon) -> None:
    ghost = make_daemon("ghost", start=False)
    out = ghost.ok("service", "install")
    unit = ghost.home / "config" / "systemd" / "user" / "chatd.service"
    assert str(unit) in out
    text = unit.read_text()
    exec_start = next(line for line in text.splitlines() if line.startswith("ExecStart="))
    assert Path(exec_start.removeprefix("ExecStart=")).exists()
    for line in (
        "Type=notify",
        "Restart=on-failure",
        "UMask=0077",
        "NoNewPrivileges=yes",
        "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6",
        "LockPersonality=yes",
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
