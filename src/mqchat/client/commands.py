"""What ``chatctl join``, ``send``, ``status`` and ``tail`` do, and how chatctl prints lines.

Both front ends run these: the typer app (cli.py) and the fast path (fast.py),
so that their output, messages and exit statuses cannot drift apart. Nothing
slow to import is imported at module level: the fast path exists to keep
typer and cryptography out of ``chatctl send`` (issue 8).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    from mqchat.client.ipc_client import Client
    from mqchat.client.render import Renderer

DEFAULT_TIMEOUT = 10.0
MIN_TIMEOUT = 0.1


class Options(NamedTuple):
    """chatctl's global options."""

    runtime_dir: Path
    timeout: float

    def client(self) -> Client:
        from mqchat.client.ipc_client import Client

        return Client(self.runtime_dir, self.timeout)


def out(line: str) -> None:
    """Print one line and flush it, so that pipes see each line as it comes."""
    try:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()
    except BrokenPipeError:
        quiet_broken_pipe()
        raise SystemExit(0) from None


def err(line: str) -> None:
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


def quiet_broken_pipe() -> None:
    # The reader went away (`chatctl tail | head -1`): end quietly, as cat does.
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())


def send(opts: Options, room: str, text: Sequence[str] | None) -> None:
    """Send TEXT's words as one message to ROOM; with no TEXT (or -), each stdin line."""
    from mqchat.client.sending import send_lines, send_one
    from mqchat.protocol.limits import normalize_room

    name = normalize_room(room)
    with opts.client() as c:
        if not text or list(text) == ["-"]:
            send_lines(c, name, sys.stdin, err)
        else:
            send_one(c, name, " ".join(text), err)


def status(opts: Options, *, as_json: bool) -> None:
    """Print chatd's name, broker connection, rooms and counters."""
    from mqchat.client.render import escape, safe_json
    from mqchat.protocol.fingerprints import format_fingerprint

    with opts.client() as c:
        s: dict[str, Any] = c.call("status")
    if as_json:
        out(safe_json(s))
        return
    broker = s["broker"]
    state = "connected" if broker["connected"] else "NOT connected"
    out(f"name:     {escape(s['name'])}  ({format_fingerprint(s['fingerprint'])})")
    out(f"broker:   {broker['url']}  {state}, outbox {broker['outbox']}")
    out(f"rooms:    {', '.join(escape(r) for r in s['rooms']) or '(none)'}")
    dropped = ", ".join(f"{k} {v}" for k, v in sorted(s.get("dropped", {}).items()))
    out(f"dropped:  {dropped or 'nothing'}")


def colour() -> bool:
    """Colour only on a terminal, and never with NO_COLOR set (no-color.org)."""
    return sys.stdout.isatty() and not os.environ.get("NO_COLOR")


def renderer(*, as_json: bool, template: str | None, show_room: bool) -> Renderer:
    from mqchat.client.render import Renderer

    return Renderer(
        as_json=as_json, template=template, colour=colour() and not as_json, show_room=show_room
    )


def tail(
    opts: Options,
    rooms: Sequence[str] | None,
    *,
    lines: int,
    since: int | None,
    follow: bool,
    as_json: bool,
    template: str | None,
) -> None:
    """Print messages of ROOMs: the last N, then new ones as they arrive."""
    from mqchat.client.tailing import run_tail
    from mqchat.protocol.limits import normalize_room

    names = [normalize_room(r) for r in rooms] if rooms else None
    shown = renderer(as_json=as_json, template=template, show_room=names is None or len(names) > 1)
    with opts.client() as c:
        run_tail(c, names, shown, lines=lines, since=since, follow=follow, out=out, err=err)


CIPHERS = ("fernet", "aes-256-gcm", "chacha20-poly1305")


def read_passphrase(passphrase_file: Path | None, *, confirm: bool) -> str:
    """From the 0600 file, else a hidden prompt on a terminal, else one line of stdin."""
    if passphrase_file is not None:
        from mqchat.secret_file import read_secret_file

        return read_secret_file(passphrase_file, "passphrase file")
    if sys.stdin.isatty():
        import getpass

        first = getpass.getpass("Passphrase: ")
        if confirm and getpass.getpass("Repeat passphrase: ") != first:
            from mqchat.errors import UsageError

            raise UsageError("the two passphrases differ")
        return first
    line = sys.stdin.readline()
    return line.rstrip("\r\n")


def join(
    opts: Options,
    room: str,
    passphrase_file: Path | None,
    cipher: str,
    *,
    legacy: bool,
    weak: bool,
) -> None:
    """Join ROOM with a passphrase: hidden prompt on a terminal, else one line of stdin."""
    from mqchat.errors import UsageError
    from mqchat.protocol.limits import normalize_room

    name = normalize_room(room)
    passphrase = read_passphrase(passphrase_file, confirm=True)
    if not passphrase:
        raise UsageError("the passphrase is empty")
    with opts.client() as c:
        result = c.call(
            "join",
            {
                "room": name,
                "passphrase": passphrase,
                "cipher": cipher,
                "legacy": legacy,
                "weak": weak,
            },
        )
    if result.get("warning"):
        err(f"WARNING: {result['warning']}")
    verb = "joined" if result.get("joined") else "already in"
    out(f"{verb} {name} ({result.get('cipher')}{', legacy' if result.get('legacy') else ''})")
