"""What ``chatctl join``, ``send``, ``status`` and ``tail`` do, and how chatctl prints lines.

Both front ends call these, with the same arguments: the typer app
(typer_app.py) and the fast path (fast.py), so that their output, messages and
exit statuses cannot drift apart. Nothing slow to import is imported at
module level: the fast path exists to keep typer and cryptography out of
``chatctl send`` (issue 8).
"""

from __future__ import annotations

import io
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, TextIO

from mqchat.errors import UsageError
from mqchat.paths import CTL_SOCKET, SUN_PATH_MAX
from mqchat.paths import runtime_dir as default_runtime_dir

if TYPE_CHECKING:
    from mqchat.client.ipc_client import Client
    from mqchat.client.render import Renderer


class Options(NamedTuple):
    """chatctl's global options, given before the command."""

    runtime_dir: Path
    timeout: float
    runtime_dir_flag: Path | None = None
    """``--runtime-dir`` as given, else None: what a chatd started here would be told."""

    @classmethod
    def from_flags(cls, runtime_dir: Path | None, timeout: float) -> Options:
        if runtime_dir is None:
            return cls(default_runtime_dir(), timeout)
        return cls(runtime_dir, timeout, runtime_dir)

    def client(self) -> Client:
        from mqchat.client.ipc_client import Client

        _check_runtime_dir_path(self.runtime_dir / CTL_SOCKET)
        return Client(self.runtime_dir, self.timeout)


def _check_runtime_dir_path(socket_path: Path) -> None:
    try:
        size = len(str(socket_path).encode())
    except UnicodeEncodeError:
        # ZeroMQ takes endpoints as UTF-8 text: bytes that are not UTF-8 cannot reach it.
        raise UsageError(
            f"the runtime directory {socket_path.parent} is not a UTF-8 path; chatd cannot use it"
        ) from None
    if size > SUN_PATH_MAX:
        raise UsageError(
            f"the runtime directory {socket_path.parent} is too long: a socket path in it "
            f"would have {size} bytes, and the limit is {SUN_PATH_MAX}"
        )


def out(line: str) -> None:
    """Print one line and flush it, so that pipes see each line as it comes."""
    stdout = sys.stdout
    if stdout is None:  # started with stdout closed (`>&-`)
        raise UsageError("stdout is closed: nowhere to print")
    try:
        try:
            stdout.write(line + "\n")
        except UnicodeEncodeError:  # a path that is not UTF-8, or a locale that is not
            stdout.write(line.encode("ascii", "backslashreplace").decode() + "\n")
        stdout.flush()
    except BrokenPipeError:
        quiet_broken_pipe()
        raise SystemExit(0) from None


def err(line: str) -> None:
    if sys.stderr is not None:
        sys.stderr.write(line + "\n")
        sys.stderr.flush()


def quiet_broken_pipe() -> None:
    # The reader went away (`chatctl tail | head -1`): end quietly, as cat does.
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())


def stdin_text() -> TextIO:
    """stdin, decoded so that bytes that are not UTF-8 become lone surrogates.

    Strict decoding would end a stream in a traceback at the first bad byte;
    this way the checks of each line (check_text) name the line instead.
    """
    stdin = sys.stdin
    if stdin is None:  # started with stdin closed (`<&-`)
        raise UsageError("stdin is closed: nothing to read")
    if isinstance(stdin, io.TextIOWrapper):
        stdin.reconfigure(errors="surrogateescape")
    return stdin


def send(opts: Options, room: str, text: Sequence[str] | None) -> None:
    """Send TEXT's words as one message to ROOM; with no TEXT (or -), each stdin line."""
    from mqchat.client.sending import send_lines, send_one
    from mqchat.protocol.limits import normalize_room

    name = normalize_room(room)
    with opts.client() as c:
        if not text or list(text) == ["-"]:
            send_lines(c, name, stdin_text(), err)
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
    refused = broker.get("refused") or 0
    last = broker.get("last_refusal") or {}
    refusal = f", {refused} refused by the broker ({escape(str(last.get('reason')))})"
    outbox = f"outbox {broker['outbox']}{refusal if refused else ''}"
    mqtt = f" (MQTT {broker['protocol']})" if broker.get("protocol") else ""
    out(f"broker:   {broker['url']}{mqtt}  {state}, {outbox}")
    error = broker.get("last_error")
    if error and not broker["connected"]:
        since = broker.get("failing_since") or error.get("at")
        out(f"          failing since {since}: {escape(str(error.get('reason')))}")
    out(f"rooms:    {', '.join(escape(r) for r in s['rooms']) or '(none)'}")
    _print_dropped(s.get("dropped") or {})
    repair = s.get("repair") or {}
    if any(repair.values()):  # only once something went missing or was repaired
        out(
            f"repair:   {repair['lost']} lost, {repair['missing']} missing "
            f"({repair['held']} held back); asked {repair['asked']}, "
            f"repaired {repair['repaired']}, republished {repair['republished']}"
        )


def _print_dropped(dropped: dict[str, int]) -> None:
    """What chatd dropped: what needs attention first, then the routine, in words."""
    from mqchat.drop_reasons import describe, is_routine

    counted = sorted((reason, n) for reason, n in dropped.items() if n)
    attention = [f"{n} {describe(r)} ({r})" for r, n in counted if not is_routine(r)]
    routine = [f"{n} {describe(r)}" for r, n in counted if is_routine(r)]
    if not attention:
        attention = ["nothing"]
    if routine:
        routine[0] += "  (routine: nothing to do)"
    for label, lines in (("attention:", attention), ("dropped:", routine)):
        for i, line in enumerate(lines):
            out(f"{label if i == 0 else '':<11}{line}")


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
    no_follow: bool,
    as_json: bool,
    template: str | None,
) -> None:
    """Print messages of ROOMs: the last N, then new ones as they arrive."""
    from mqchat.client.tailing import run_tail
    from mqchat.protocol.limits import normalize_room

    names = [normalize_room(r) for r in rooms] if rooms else None
    shown = renderer(as_json=as_json, template=template, show_room=names is None or len(names) > 1)
    with opts.client() as c:
        run_tail(c, names, shown, lines=lines, since=since, follow=not no_follow, out=out, err=err)


def read_passphrase(passphrase_file: Path | None, *, confirm: bool) -> str:
    """From the 0600 file, else a hidden prompt on a terminal, else one line of stdin."""
    if passphrase_file is not None:
        from mqchat.secret_file import read_secret_file

        return read_secret_file(passphrase_file, "passphrase file")
    if (stdin := stdin_text()).isatty():
        first = _prompt("Passphrase: ")
        if confirm and _prompt("Repeat passphrase: ") != first:
            raise UsageError("the two passphrases differ")
        return first
    # Universal newlines, as before: a line ends at \n, \r\n or \r.
    return stdin.readline().rstrip("\r\n")


def _prompt(prompt: str) -> str:
    import getpass

    try:
        return getpass.getpass(prompt)
    except EOFError:  # Ctrl-D at the prompt
        raise UsageError("no passphrase given") from None
    except UnicodeDecodeError:
        raise UsageError("the passphrase is not valid UTF-8 text") from None


def join(
    opts: Options,
    room: str | None,
    passphrase_file: Path | None,
    cipher: str | None,
    *,
    legacy: bool,
    weak: bool,
    invite: bool = False,
    invite_file: Path | None = None,
) -> None:
    """Join ROOM with a passphrase, or (--invite) the room an invite names."""
    from mqchat.protocol.limits import normalize_room

    if invite or invite_file is not None:
        from mqchat.client.key_commands import join_invite

        if room is not None:
            raise UsageError(
                "join --invite takes no ROOM: the invite names the room, and it is read "
                "from a prompt, stdin or --invite-file, never from the command line"
            )
        if passphrase_file is not None or cipher is not None or legacy or weak:
            raise UsageError(
                "--invite does not go with --passphrase-file, --cipher, --legacy or --weak"
            )
        join_invite(opts, invite_file)
        return
    if room is None:
        raise UsageError("missing argument ROOM (or --invite, to join by invite)")
    if room.startswith("mqchat:"):
        raise UsageError(
            "that looks like an invite, and an invite must never be on the command line "
            "(other users can read it there): run `chatctl join --invite` and paste it"
        )
    from mqchat.client.room_options import check_passphrase, join_params

    name = normalize_room(room)
    passphrase = read_passphrase(passphrase_file, confirm=True)
    check_passphrase(passphrase, weak=weak or legacy)
    with opts.client() as c:
        params = join_params(name, passphrase, cipher=cipher, legacy=legacy, weak=weak)
        result = c.call("join", params)
    if result.get("warning"):
        err(f"WARNING: {result['warning']}")
    verb = "joined" if result.get("joined") else "already in"
    out(f"{verb} {name} ({result.get('cipher')}{', legacy' if result.get('legacy') else ''})")
