"""Issue 25: every message that tells a user what to do next is right where it is printed.

One test per hint, each in the situation it is printed in, with real chatd
processes, a real mosquitto and the real chatctl.
"""

from __future__ import annotations

import os
import select
import shutil
import subprocess
import sys
from collections.abc import Callable

from harness import PASSPHRASE, Broker, Daemon, Terminal, command, wait_until
from mqchat.client.man_pages import commands
from mqchat.client.ui.launch import install_hint
from mqchat.drop_reasons import describe, is_routine
from rawmqtt import RawClient, first_payload, text_topic

MakeDaemon = Callable[..., Daemon]


def invite_line(d: Daemon, room: str) -> str:
    return d.ok("invite", room).strip()


def test_after_leaving_an_invite_room_the_hint_asks_for_a_new_invite_not_a_passphrase_join(
    make_daemon: MakeDaemon, room: str
) -> None:
    alice, bob = make_daemon("alice"), make_daemon("bob")
    alice.ok("create", room)
    bob.ok("join", "--invite", input=invite_line(alice, room) + "\n")
    bob.ok("leave", room)
    # Also after a restart: chatd keeps what it needs for the hint.
    bob.stop()
    bob.start()
    refused = bob.ctl("send", room, "hello?")
    assert refused.returncode == 1
    assert "new invite" in refused.stderr and "chatctl join --invite" in refused.stderr
    assert "another room" in refused.stderr  # the passphrase join is named as a trap
    # Doing it anyway is no longer silent.
    joined = bob.ctl("join", room, input="a passphrase for a new room\n")
    assert joined.returncode == 0
    assert "WARNING" in joined.stderr and "another room of that name" in joined.stderr


def test_a_room_never_joined_names_both_ways_in(make_daemon: MakeDaemon, room: str) -> None:
    alice = make_daemon("alice")
    refused = alice.ctl("send", room, "hello?")
    assert refused.returncode == 1
    assert "chatctl join --invite" in refused.stderr and f"chatctl join {room}" in refused.stderr


def unit_exec_start(d: Daemon) -> list[str]:
    text = (d.home / "config" / "systemd" / "user" / "chatd.service").read_text()
    line = next(line for line in text.splitlines() if line.startswith("ExecStart="))
    return line.removeprefix("ExecStart=").split()[1:]


def test_service_install_uses_the_broker_and_name_of_the_running_chatd(
    make_daemon: MakeDaemon,
) -> None:
    alice = make_daemon("alice", start=False)
    alice.start(args=["--name", "zed"])
    out = alice.ok("service", "install")
    assert unit_exec_start(alice) == ["--broker", alice.broker.url, "--name", "zed"]
    assert f"kill {alice.pid}" in out  # the hand-started chatd holds the runtime dir


def test_not_running_hints_follow_the_broker_setting_and_the_installed_unit(
    make_daemon: MakeDaemon,
) -> None:
    ghost = make_daemon("ghost", start=False)
    # MQCHAT_BROKER names a broker: plain chatd uses it.
    hint = ghost.ctl("status").stderr
    assert "chatd is not running" in hint and "`chatd &`" in hint and "public" not in hint
    # Nothing names one: plain chatd would go to the public broker, and the hint says so.
    env = {k: v for k, v in ghost.env.items() if k != "MQCHAT_BROKER"}
    bare = subprocess.run(
        [command("chatctl"), "status"], env=env, capture_output=True, text=True, check=False
    )
    assert bare.returncode == 3
    assert "--broker mqtt://localhost:1883 &" in bare.stderr and "public broker" in bare.stderr
    # With the unit installed, systemctl is the way.
    ghost.ok("service", "install")
    hint = ghost.ctl("status").stderr
    assert "systemctl --user start chatd" in hint and "chatd &" not in hint


def test_the_ui_install_hint_gives_commands_that_work_without_pypi(
    make_daemon: MakeDaemon,
) -> None:
    ghost = make_daemon("ghost", start=False)
    no_textual = (
        "import sys; sys.modules['textual'] = None; sys.argv = ['chatctl', 'ui'];"
        "from mqchat.client.cli import main; main()"
    )
    result = subprocess.run(
        [sys.executable, "-c", no_textual],
        env=ghost.env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 2
    assert "mqchat[ui]" not in result.stderr  # not on PyPI: that line fails
    assert f"{sys.executable} -m pip install 'textual>=8.2'" in result.stderr
    assert "pipx inject" not in result.stderr  # this chatctl is not a pipx one
    assert "pipx inject mqchat" in install_hint(prefix="/home/u/.local/pipx/venvs/mqchat")


def test_trust_counts_every_message_and_takes_the_fingerprint_who_prints(
    make_daemon: MakeDaemon, room: str
) -> None:
    alice, bob = make_daemon("alice"), make_daemon("bob")
    alice.join(room)
    bob.join(room)
    tail = bob.tail(room)
    alice.ok("send", room, input="".join(f"line {i}\n" for i in range(7)))
    tail.messages(7)
    listing = bob.ctl("trust", room, "alice")
    # alice's key is pinned on first use: nothing to do, and no error.
    assert listing.returncode == 0, listing.stderr
    assert "pinned: shown as verified; 7 messages" in listing.stdout
    assert "nothing to do" in listing.stdout and "ERROR" not in listing.stderr
    # who prints as much of the fingerprint as trust takes, and trust takes it as pasted.
    row = next(line for line in bob.ok("who", room).splitlines() if line.startswith("alice"))
    printed = row.split("\t")[1]
    assert len(printed.replace(" ", "")) == 32
    trusted = bob.ok("trust", room, "alice", *printed.split())
    assert trusted.startswith("trusted alice")
    members = bob.ok("members", room)
    assert printed in members


def test_status_puts_a_redelivered_copy_under_routine_and_logs_it_below_warning(
    broker: Broker, make_daemon: MakeDaemon, room: str
) -> None:
    alice, bob = make_daemon("alice"), make_daemon("bob")
    with RawClient(broker) as raw:
        _, payload = first_payload(raw, alice, bob, room, "once")
        raw.publish(text_topic(room, PASSPHRASE), payload)  # as a broker redelivers it
        wait_until(lambda: sum(bob.status()["dropped"].values()) == 1, "bob to drop the copy")
    reason = next(iter(bob.status()["dropped"]))
    assert is_routine(reason), reason
    status = bob.ok("status")
    assert "attention: nothing" in status
    assert f"1 {describe(reason)}" in status and "routine: nothing to do" in status
    dropped_lines = [line for line in bob.log().splitlines() if "dropped" in line]
    assert dropped_lines and not any("WARNING" in line for line in dropped_lines)


def test_tail_says_when_chatd_goes_away_and_when_it_is_back(
    make_daemon: MakeDaemon, room: str
) -> None:
    alice = make_daemon("alice")
    alice.join(room)
    tail = alice.tail(room)
    alice.ok("send", room, "before")
    assert tail.messages(1)[0]["text"] == "before"  # the tail is following
    alice.stop()
    away = tail.wait_for(lambda e: e["type"] == "notice" and e.get("kind") == "chatd_away")
    assert "waiting for it to come back" in away["text"]
    alice.start()
    alice.ok("send", room, "after the restart")
    back = tail.wait_for(lambda e: e["type"] == "notice" and e.get("kind") == "chatd_back")
    assert "is back" in back["text"]
    assert tail.messages(1)[0]["text"] == "after the restart"
    # The plain format says it on stderr, in the same words.
    plain = Terminal([command("chatctl"), "tail", room], alice.env)
    try:
        plain.read_until(b"after the restart")
        alice.stop()
        plain.read_until(b"-- chatd went away")
    finally:
        plain.wait()


def _read_more(term: Terminal) -> bytes:
    """What the terminal shows, with whatever arrived since the last read."""
    if select.select([term.fd], [], [], 0.05)[0]:
        term.screen += os.read(term.fd, 4096)
    return term.screen


def test_chat_prints_one_prompt_after_a_commands_output(make_daemon: MakeDaemon, room: str) -> None:
    alice = make_daemon("alice")
    alice.join(room)
    prompt = f"{room}> ".encode()
    term = Terminal([command("chatctl"), "chat", room], alice.env)
    try:
        term.read_until(prompt)
        term.type("/help\n")
        help_end = term.read_until(b"send /text").rindex(b"send /text")
        # Type only once the prompt is back, so that the echo comes after it.
        wait_until(lambda: prompt in _read_more(term)[help_end:], "the prompt after /help")
        term.type("/marker\n")
        screen = term.read_until(b"unknown command /marker")
        between = screen[help_end : screen.index(b"/marker", help_end)]
        assert between.count(prompt) == 1, between
        term.type("/quit\n")
        term.read_until(None)
    finally:
        assert term.wait() == 0


def test_the_shell_completes_joined_room_names(make_daemon: MakeDaemon, room: str) -> None:
    alice = make_daemon("alice")
    alice.join(room)
    alice.join(f"{room}-two")
    alice.join("other-room")

    def complete(words: str) -> list[str]:
        env = {
            **alice.env,
            "_CHATCTL_COMPLETE": "complete_bash",
            "COMP_WORDS": words,
            "COMP_CWORD": str(len(words.split()) - 1),
        }
        result = subprocess.run(
            [command("chatctl")], env=env, capture_output=True, text=True, check=False
        )
        assert result.returncode == 0, result.stderr
        return sorted(result.stdout.split())

    assert complete(f"chatctl send {room[:6]}") == sorted([room, f"{room}-two"])
    assert complete("chatctl tail oth") == ["other-room"]
    assert complete(f"chatctl trust {room}-t") == [f"{room}-two"]


def test_man_pages_are_made_from_the_command_definitions(make_daemon: MakeDaemon) -> None:
    ghost = make_daemon("ghost", start=False)
    data = ghost.home / "data"
    env = {**ghost.env, "XDG_DATA_HOME": str(data)}
    made = subprocess.run(
        [command("chatctl"), "man-pages"], env=env, capture_output=True, text=True, check=False
    )
    assert made.returncode == 0, made.stderr
    pages = data / "man" / "man1"
    chatctl_page = (pages / "chatctl.1").read_text()
    for words, _ in commands():
        assert f"\\fB{' '.join(words)}\\fR" in chatctl_page, words
    chatd_page = (pages / "chatd.1").read_text()
    for flag in ("--broker", "--name", "--runtime-dir", "--state-dir", "--log-level"):
        assert f"\\fB{flag}\\fR" in chatd_page
    if shutil.which("man"):
        shown = subprocess.run(
            ["man", "-l", str(pages / "chatctl.1")],
            env={**env, "MANWIDTH": "80", "MANPAGER": "cat", "PAGER": "cat"},
            capture_output=True,
            text=True,
            check=False,
        )
        assert shown.returncode == 0 and "rekey" in shown.stdout, shown.stderr
