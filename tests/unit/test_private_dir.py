"""Issue 11 finding 6: chatctl connects only through a runtime directory that is private.

In a directory that another user owns or can write, a socket may be theirs: a
``chatctl join`` would hand them its passphrase. chatctl must refuse (exit 3,
one line) before it connects to anything. The sockets here are plain listening
Unix sockets standing in for chatd, so that a connection attempt shows up.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness import command, short_tmpdir
from mqchat.errors import RuntimeDirError
from mqchat.private_dir import check_private_dir

SOCKETS = ("ctl.sock", "events.sock")


@pytest.fixture
def home() -> Iterator[Path]:
    path = short_tmpdir("mqpd-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


def make_private(path: Path) -> Path:
    path.mkdir(mode=0o700)
    path.chmod(0o700)
    return path


def nobody_uid() -> int:
    try:
        return pwd.getpwnam("nobody").pw_uid
    except KeyError:
        pytest.skip("no user 'nobody' on this machine")


def test_a_private_directory_passes(home: Path) -> None:
    check_private_dir(make_private(home / "run"))


@pytest.mark.parametrize("mode", [0o750, 0o710, 0o705, 0o701, 0o777])
def test_any_group_or_other_bit_is_refused(home: Path, mode: int) -> None:
    run = make_private(home / "run")
    run.chmod(mode)
    with pytest.raises(RuntimeDirError, match=f"{mode:04o}.*chmod 700"):
        check_private_dir(run)


def test_a_symlink_is_refused_even_to_a_private_dir(home: Path) -> None:
    target = make_private(home / "real")
    (home / "run").symlink_to(target)
    with pytest.raises(RuntimeDirError, match="symbolic link"):
        check_private_dir(home / "run")


def test_another_owner_is_refused(home: Path) -> None:
    run = make_private(home / "run")
    if os.geteuid() != 0:
        pytest.skip("giving a directory away needs root")
    os.chown(run, nobody_uid(), -1)
    with pytest.raises(RuntimeDirError, match="belongs to uid"):
        check_private_dir(run)


def test_a_file_is_refused_and_a_missing_dir_is_reported_as_missing(home: Path) -> None:
    (home / "file").write_text("")
    with pytest.raises(RuntimeDirError, match="not a directory"):
        check_private_dir(home / "file")
    with pytest.raises(FileNotFoundError):
        check_private_dir(home / "absent")


# ---------------------------------------------------------------------- chatctl


class FakeChatd:
    """Listening sockets where chatd's would be; they count who connected."""

    def __init__(self, run: Path) -> None:
        self.listeners = []
        for name in SOCKETS:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.bind(str(run / name))
            s.listen(16)
            s.setblocking(False)
            self.listeners.append(s)

    def connections(self) -> int:
        n = 0
        for s in self.listeners:
            while True:
                try:
                    conn, _ = s.accept()
                except BlockingIOError:
                    break
                conn.close()
                n += 1
        return n

    def close(self) -> None:
        for s in self.listeners:
            s.close()


def chatctl(run: Path, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MQCHAT_")}
    return subprocess.run(
        [command("chatctl"), "--runtime-dir", str(run), "--timeout", "0.5", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
        check=False,
    )


COMMANDS = [
    ("status",),
    ("send", "lobby", "hi"),
    ("tail", "lobby", "--no-follow"),
    ("rooms",),
    ("join", "lobby"),
]


def unsafe_dirs(home: Path) -> Iterator[tuple[str, Path]]:
    group = make_private(home / "group")
    group.chmod(0o750)
    yield "open to group", group
    other = make_private(home / "other")
    other.chmod(0o701)
    yield "open to others", other
    real = make_private(home / "real")
    (home / "link").symlink_to(real)
    yield "a symlink", home / "link"
    if os.geteuid() == 0:
        owned = make_private(home / "owned")
        os.chown(owned, nobody_uid(), -1)
        yield "owned by nobody", owned


@pytest.mark.parametrize("args", COMMANDS, ids=[c[0] for c in COMMANDS])
def test_chatctl_refuses_an_unsafe_runtime_dir_before_connecting(
    home: Path, args: tuple[str, ...]
) -> None:
    for what, run in unsafe_dirs(home):
        fake = FakeChatd(run.resolve())
        try:
            result = chatctl(run, *args, stdin="correct horse battery staple\n")
            assert result.returncode == 3, (what, result.stderr)
            lines = result.stderr.strip().splitlines()
            assert len(lines) == 1, (what, result.stderr)
            assert lines[0].startswith("ERROR: ") and "refusing to connect" in lines[0], what
            assert str(run) in lines[0], what
            assert fake.connections() == 0, f"chatctl connected through a dir {what}"
        finally:
            fake.close()


def test_the_fake_would_see_a_connection_through_a_private_dir(home: Path) -> None:
    """The control for the test above: its way of seeing connections works."""
    run = make_private(home / "run")
    fake = FakeChatd(run)
    try:
        result = chatctl(run, "status")
        assert result.returncode == 3  # the fake never answers
        assert "did not answer" in result.stderr
        assert fake.connections() >= 1
    finally:
        fake.close()
