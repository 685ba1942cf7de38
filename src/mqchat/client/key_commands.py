"""What ``chatctl create``, ``invite``, ``join --invite``, ``rekey`` and ``members`` do.

Called by the typer app (typer_app.py) with the values it parsed. An
invite is a secret: it is printed on stdout only (so it can be piped or
redirected to a 0600 file), and read from a hidden prompt, one line of stdin or
a 0600 file, never from the command line.
"""

from __future__ import annotations

from pathlib import Path

from mqchat.client.commands import Options, err, out, stdin_text
from mqchat.client.room_requests import (
    Said,
    change_role,
    create_room,
    fetch_invite,
    join_by_invite,
    list_members,
    rekey_room,
)
from mqchat.errors import UsageError


def _room(name: str) -> str:
    from mqchat.protocol.limits import normalize_room

    return normalize_room(name)


def _show(said: Said) -> None:
    for line in said.out:
        out(line)
    for line in said.err:
        err(line)


def create(opts: Options, room: str, cipher: str | None) -> None:
    name = _room(room)
    with opts.client() as c:
        _show(create_room(c, name, cipher))


def invite(opts: Options, room: str) -> None:
    name = _room(room)
    with opts.client() as c:
        line, warning = fetch_invite(c, name)
    out(line)
    err(warning)


def read_invite(invite_file: Path | None) -> str:
    """From the 0600 file, else a hidden prompt on a terminal, else one line of stdin."""
    if invite_file is not None:
        from mqchat.secret_file import read_secret_file

        return read_secret_file(invite_file, "invite file")
    stdin = stdin_text()
    if stdin.isatty():
        import getpass

        try:
            return getpass.getpass("Invite: ")
        except EOFError:
            raise UsageError("no invite given") from None
        except UnicodeDecodeError:
            raise UsageError("the invite is not valid UTF-8 text") from None
    line = stdin.readline()
    if not line.strip():
        raise UsageError("no invite given on stdin")
    return line


def join_invite(opts: Options, invite_file: Path | None) -> None:
    text = read_invite(invite_file)
    with opts.client() as c:
        _show(join_by_invite(c, text)[1])


def rekey(opts: Options, room: str, *, remove: bool, names: list[str], as_json: bool) -> None:
    from mqchat.client.render import safe_json

    name = _room(room)
    if names and not remove:
        raise UsageError(f"unexpected extra argument {names[0]!r} (to remove members: --remove)")
    if remove and not names:
        raise UsageError("--remove needs the NAMEs to leave out")
    with opts.client() as c:
        result, said = rekey_room(c, name, names)
    if as_json:
        out(safe_json(result))
        return
    _show(said)


def members(opts: Options, room: str, *, as_json: bool) -> None:
    from mqchat.client.render import safe_json

    with opts.client() as c:
        result, said = list_members(c, _room(room))
    if as_json:
        out(safe_json(result))
        return
    _show(said)


def role(opts: Options, room: str, name: str, role: str, *, as_json: bool) -> None:
    from mqchat.client.render import safe_json

    with opts.client() as c:
        result, said = change_role(c, _room(room), name, role)
    if as_json:
        out(safe_json(result))
        return
    _show(said)
