"""What ``chatctl create``, ``invite``, ``join --invite``, ``rekey`` and ``members`` do.

Called as ``handler(Options, **values)`` with the values cli_spec declares. An
invite is a secret: it is printed on stdout only (so it can be piped or
redirected to a 0600 file), and read from a hidden prompt, one line of stdin or
a 0600 file, never from the command line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mqchat.client.commands import Options, err, out, stdin_text
from mqchat.errors import UsageError


def _room(name: str) -> str:
    from mqchat.protocol.limits import normalize_room

    return normalize_room(name)


def create(opts: Options, room: str, cipher: str | None) -> None:
    name = _room(room)
    with opts.client() as c:
        result: dict[str, Any] = c.call("create", {"room": name, "cipher": cipher})
    out(f"created {name} ({result.get('cipher')}, random key)")
    err(f"next: `chatctl invite {name}` prints an invite for each person who should join")


def invite(opts: Options, room: str) -> None:
    name = _room(room)
    with opts.client() as c:
        result: dict[str, Any] = c.call("invite", {"room": name})
    out(result["invite"])
    err(
        f"This invite is a SECRET: whoever has it can read {name} (epoch {result['epoch']}). "
        "Pass it privately (not in a public channel, not on a command line); the invitee runs "
        "`chatctl join --invite` and pastes it, or `chatctl join --invite-file FILE` with a "
        "0600 file. A later `chatctl rekey` makes it useless."
    )


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
    from mqchat.protocol.fingerprints import format_fingerprint
    from mqchat.protocol.invite import parse_invite

    text = read_invite(invite_file)
    try:
        text.encode()
    except UnicodeEncodeError:
        raise UsageError("the invite is not valid UTF-8 text") from None
    parsed = parse_invite(text)  # InvalidInvite (exit 1) says what is wrong with it
    with opts.client() as c:
        result: dict[str, Any] = c.call("join_invite", {"invite": text.strip()})
    verb = "joined" if result.get("joined") else "already in"
    out(f"{verb} {parsed.room} ({result.get('cipher')}, epoch {parsed.epoch}, by invite)")
    if result.get("joined"):
        out(f"inviter's key: {format_fingerprint(parsed.inviter_fingerprint)}")


def rekey(opts: Options, room: str, *, remove: bool, names: list[str], as_json: bool) -> None:
    from mqchat.client.render import escape, safe_json

    name = _room(room)
    if names and not remove:
        raise UsageError(f"unexpected extra argument {names[0]!r} (to remove members: --remove)")
    if remove and not names:
        raise UsageError("--remove needs the NAMEs to leave out")
    with opts.client() as c:
        result: dict[str, Any] = c.call("rekey", {"room": name, "remove": names})
    if as_json:
        out(safe_json(result))
        return
    sent = ", ".join(escape(m["name"]) for m in result["sent_to"])
    out(f"rekeyed {escape(name)}: epoch {result['epoch']}, key sent to {sent}")
    if result["removed"]:
        out(f"removed: {', '.join(escape(n) for n in result['removed'])}")
    if result["unreachable"]:
        who = ", ".join(escape(n) for n in result["unreachable"])
        out(
            f"not sent to (no member key seen from them): {who}; "
            f"invite them again with `chatctl invite {escape(name)}`"
        )


def members(opts: Options, room: str, *, as_json: bool) -> None:
    from mqchat.client.render import escape, safe_json
    from mqchat.protocol.fingerprints import short_fingerprint

    with opts.client() as c:
        result: dict[str, Any] = c.call("members", {"room": _room(room)})
    if as_json:
        out(safe_json(result))
        return
    out(f"{escape(result['room'])}: epoch {result['epoch']}; the next rekey is sealed to:")
    for m in result["members"]:
        you = "  (you)" if m.get("you") else ""
        key = "" if m["member_key"] else "\tNO MEMBER KEY: cannot be sent the next key"
        out(f"  {escape(m['name'])}\t{short_fingerprint(m['fingerprint'])}{key}{you}")
