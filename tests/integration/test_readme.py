"""Issue 13 item 5: every command in README's ```sh blocks runs as written.

Each line runs under bash against test daemons: you are "bob", and "alice" is a
peer in the same rooms. The README's room names are swapped for names no other
test uses, its placeholder fingerprint for alice's, its broker URL for the test
broker's; the passphrase comes from $PASS or stdin, and ~ is a scratch home.
The chatctl (or chatd) in each line must end with status 0, or the status the
README documents for it. A command that follows (`tail`) is ended as a person
would: Ctrl-C, or the end of the pipe. What cannot run in a test is skipped
with its reason, listed below; a script it names must still exist.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from harness import (
    PASSPHRASE,
    Broker,
    Daemon,
    stop_process,
    wait_until,
)

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
ROOMS = ("lobby", "ops", "build")
"""The room names README uses; each becomes a name of this test's own."""
PLACEHOLDER_FINGERPRINT = "3f2a9c01…"
README_BROKER = "mqtt://localhost:1883"

SKIPPED = [
    (r"^\./scripts/demo\.sh\b", "sets up the machine (apt-get, pip) and runs its own daemons"),
    (r"^\./scripts/test\.sh\b", "runs this test suite"),
    (r"\bpytest\b", "runs this test suite"),
    (r"^pipx? install\b", "installs mqchat for the user"),
    (r"^pipx inject\b", "installs mqchat's ui extra for the user"),
    (r"^python3 -m (pip|venv)\b", "installs mqchat for the user"),
    (r"^sudo ", "installs system packages"),
    (r"^chatctl ui\b", "takes over a terminal: tests/integration/test_ui.py drives it with Pilot"),
    (r"^(systemctl|journalctl|loginctl) ", "acts on the user's systemd manager"),
]
EXPECTED_STATUS = [
    # README: "a name not in `members`: exit 1" (the test's team has no carol).
    (r"^chatctl rekey team --remove carol\b", 1),
    # The test's team has no dave either.
    (r"^chatctl role team dave\b", 1),
]
CHAT_INPUT = "hello from the README test\n"


def sh_lines(text: str) -> list[str]:
    """The command lines of every ```sh block (comment-only and blank lines left out)."""
    lines: list[str] = []
    for block in re.findall(r"^```sh\n(.*?)^```", text, flags=re.MULTILINE | re.DOTALL):
        for line in block.replace("\\\n", " ").splitlines():
            if line.strip() and not line.lstrip().startswith("#"):
                lines.append(line.strip())
    return lines


def stages(line: str) -> list[list[str]]:
    """The words of each stage of a pipeline, comments and redirections aside."""
    lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
    lexer.commenters = "#"
    result: list[list[str]] = [[]]
    for token in lexer:
        if token == "|":
            result.append([])
        else:
            result[-1].append(token)
    return result


def program_stage(line: str) -> int:
    """Which stage of the pipeline runs chatctl or chatd: its status is the one checked."""
    for i, words in enumerate(stages(line)):
        if words and words[0] in ("chatctl", "chatd"):
            return i
    raise AssertionError(f"no chatctl or chatd in {line!r}")


LINES = sh_lines(README.read_text())


@dataclass
class World:
    bob: Daemon
    alice: Daemon
    spare: Daemon
    rooms: dict[str, str]
    home: Path
    env: dict[str, str]

    def substitute(self, line: str) -> str:
        for word, room in self.rooms.items():
            line = re.sub(rf"\b{word}\b", room, line)
        fingerprint = self.alice.status()["fingerprint"]
        line = line.replace(PLACEHOLDER_FINGERPRINT, fingerprint)
        return line.replace(README_BROKER, self.bob.broker.url)


@pytest.fixture(scope="module")
def world(broker: Broker) -> Iterator[World]:
    suffix = uuid.uuid4().hex[:8]
    rooms = {word: f"{word}-{suffix}" for word in ROOMS}
    bob, alice = Daemon(broker, "bob"), Daemon(broker, "alice")
    spare = Daemon(broker, "carol")  # for README's own `chatd ... &`
    try:
        bob.start()
        alice.start()
        for room in rooms.values():
            bob.join(room)
        alice.join(rooms["lobby"])
        # alice speaks first, so bob has seen her key (README's `trust` lines).
        alice.ok("send", rooms["lobby"], "hello from alice")
        wait_until(
            lambda: (
                "hello from alice"
                in bob.ok("tail", rooms["lobby"], "--no-follow", "--format", "{text}")
            ),
            "alice's message at bob's",
        )
        home = bob.home / "home"
        secret = home / ".config" / "mqchat" / f"{rooms['lobby']}.pass"
        secret.parent.mkdir(parents=True)
        secret.write_text(PASSPHRASE + "\n")
        secret.chmod(0o600)
        (home / "notes.txt").write_text("first note\n\nsecond note\n")
        path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
        env = dict(bob.env, HOME=str(home), PASS=PASSPHRASE, PATH=path)
        yield World(bob, alice, spare, rooms, home, env)
    finally:
        for daemon in (spare, alice, bob):
            daemon.cleanup()


def skip_reason(line: str, path: str) -> str | None:
    for pattern, reason in SKIPPED:
        if re.search(pattern, line):
            return reason
    for words in stages(line):
        if words and not words[0].startswith("./") and shutil.which(words[0], path=path) is None:
            return f"{words[0]} is not installed"
    return None


def expected_status(line: str) -> int:
    return next((status for pattern, status in EXPECTED_STATUS if re.search(pattern, line)), 0)


def with_status(line: str) -> list[str]:
    """bash running ``line``, then printing each stage's exit status on stderr."""
    return ["bash", "-c", f'{line}\necho "__status__ ${{PIPESTATUS[*]}}" >&2']


def status_of(line: str, stderr: str) -> int:
    marks = [s for s in stderr.splitlines() if s.startswith("__status__ ")]
    assert marks, f"bash did not finish {line!r}: {stderr}"
    return int(marks[-1].split()[1:][program_stage(line)])


def process_of(shell_pid: int) -> int | None:
    """The chatctl process that the shell started, by its pid."""
    try:
        children = Path(f"/proc/{shell_pid}/task/{shell_pid}/children").read_text().split()
    except OSError:
        return None
    for child in map(int, children):
        try:
            argv = Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if any(Path(os.fsdecode(a)).name == "chatctl" for a in argv):
            return child
    return None


def threads(pid: int) -> int:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    return int(re.search(r"^Threads:\s+(\d+)", status, re.MULTILINE)[1])  # type: ignore[index]


def run_to_the_end(world: World, line: str) -> tuple[int, str]:
    stdin = None
    if re.search(r"\bchatctl join\b", line) and "--passphrase-file" not in line:
        stdin = PASSPHRASE + "\n"  # what a person types at the hidden prompt
    if re.search(r"\bchatctl chat\b", line):
        stdin = CHAT_INPUT
    result = subprocess.run(
        with_status(line),
        input=stdin or "",
        capture_output=True,
        text=True,
        env=world.env,
        cwd=world.home,
        timeout=60,
        check=False,
    )
    return status_of(line, result.stderr), result.stdout + result.stderr


class Running:
    """A line started under bash, its output (stdout and stderr) going to a file."""

    def __init__(self, world: World, line: str) -> None:
        self.line = line
        self.output = world.home / f"output-{uuid.uuid4().hex[:8]}"
        with self.output.open("wb") as sink:
            self.shell = subprocess.Popen(
                with_status(line),
                env=world.env,
                cwd=world.home,
                stdin=subprocess.DEVNULL,
                stdout=sink,
                stderr=subprocess.STDOUT,
            )

    def ended(self) -> bool:
        return self.shell.poll() is not None

    def result(self) -> tuple[int, str]:
        stop_process(self.shell)  # ended already, or stuck: the output says where
        text = self.output.read_text(errors="replace")
        return status_of(self.line, text), text


def interrupt(world: World, line: str) -> tuple[int, str]:
    """A command that follows: once chatctl runs, Ctrl-C it, as a person would."""
    running = Running(world, line)
    # chatctl has started its ZeroMQ thread: it is past start-up, inside main's
    # handling of Ctrl-C. Or it has already ended (a usage error, say).
    found: list[int] = []

    def started() -> bool:
        pid = process_of(running.shell.pid)
        if pid is not None and threads(pid) >= 2:
            found.append(pid)
            return True
        return running.ended()

    wait_until(started, f"chatctl running for {line!r}")
    if found:
        os.kill(found[0], signal.SIGINT)
    wait_until(running.ended, f"{line!r} to end after Ctrl-C")
    return running.result()


def until_the_pipe_ends(world: World, line: str, room: str) -> tuple[int, str]:
    """A tail piped into `head`: new messages come until head, then tail, ends."""
    running = Running(world, line)

    def over() -> bool:
        if running.ended():
            return True
        world.bob.ok("send", room, "the next message")
        return False

    wait_until(over, f"{line!r} to end")
    return running.result()


def in_background(world: World, line: str) -> tuple[int, str]:
    """`chatd ... &`: started as written (in its own dirs), serving, then stopped."""
    words = shlex.split(line, comments=True)
    assert words[-1] == "&", line
    spare = world.spare
    env = dict(spare.env, PATH=world.env["PATH"], MQCHAT_BROKER="")
    log = (spare.home / "chatd.log").open("ab")
    spare.proc = subprocess.Popen(
        words[:-1], env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log
    )
    wait_until(
        lambda: ended_early(spare) or spare.ctl("status", timeout=5).returncode == 0,
        f"{line!r} to serve",
    )
    status = stop_process(spare.proc)
    spare.proc = None
    return status, spare.log()


def ended_early(daemon: Daemon) -> bool:
    return daemon.proc is not None and daemon.proc.poll() is not None


@pytest.mark.parametrize("line", LINES)
def test_readme_command_runs(world: World, line: str) -> None:
    reason = skip_reason(line, world.env["PATH"])
    if reason is not None:
        script = stages(line)[0][0]
        if script.startswith("./"):
            assert os.access(REPO / script, os.X_OK), f"README names {script}, which is missing"
        pytest.skip(reason)
    command = world.substitute(line)
    words = stages(line)[program_stage(line)]
    follows = words[:2] == ["chatctl", "tail"] and "--no-follow" not in words
    if stages(line)[-1][-1:] == ["&"]:
        status, output = in_background(world, command)
    elif follows and re.search(r"\|\s*head\b", line):
        status, output = until_the_pipe_ends(world, command, world.rooms[words[2]])
    elif follows:
        status, output = interrupt(world, command)
        # Ctrl-C ends a tail with 0 while it follows, 130 if it came during the history.
        status = 0 if status == 130 else status
    else:
        status, output = run_to_the_end(world, command)
    if words[:2] == ["chatctl", "leave"]:
        world.bob.join(world.rooms[words[2]])  # for the lines after it
    assert "Traceback" not in output, output
    assert status == expected_status(line), f"{command!r} exited {status}:\n{output}"


def test_every_sh_block_was_found() -> None:
    """The parser sees README's commands (an edit that hides them would pass silently)."""
    assert len(LINES) >= 30, LINES
    assert any(line.startswith("chatctl join") for line in LINES)
    assert any(line.startswith("chatd ") for line in LINES)
