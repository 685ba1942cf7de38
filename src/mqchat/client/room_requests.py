"""The room requests of ``chatctl`` and ``chatctl ui``, and what each says back.

create, invite, join by invite, members, rekey and trust: each function makes
chatd's request (docs/ipc.md) through anything with ``call`` (the CLI's Client,
the interface's ChatdLink) and returns what to show, so the command line and
the interface send the same params and say the same words, and follow together
when a request changes. Nothing heavy at module level.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Protocol


class Caller(Protocol):
    def call(self, method: str, params: dict[str, Any] | None = None) -> Any: ...


class Said(NamedTuple):
    """What a request's answer says: ``out`` for stdout (or the log), ``err`` for
    stderr (warnings, next steps), ``refusal`` when the command must end in an error."""

    out: list[str]
    err: list[str]
    refusal: str | None = None


def create_room(c: Caller, room: str, cipher: str | None) -> Said:
    result: dict[str, Any] = c.call("create", {"room": room, "cipher": cipher})
    return Said(
        [f"created {room} ({result.get('cipher')}, random key)"],
        [f"next: `chatctl invite {room}` prints an invite for each person who should join"],
    )


def invite_warning(room: str, epoch: object) -> str:
    return (
        f"This invite is a SECRET: whoever has it can read {room} (epoch {epoch}). "
        "Pass it privately (not in a public channel, not on a command line); the invitee runs "
        "`chatctl join --invite` and pastes it, or `chatctl join --invite-file FILE` with a "
        "0600 file. A later `chatctl rekey` makes it useless."
    )


def fetch_invite(c: Caller, room: str) -> tuple[str, str]:
    """(the invite line, the warning that goes with it)."""
    result: dict[str, Any] = c.call("invite", {"room": room})
    return str(result["invite"]), invite_warning(room, result["epoch"])


def join_by_invite(c: Caller, text: str) -> tuple[str, Said]:
    """Check the invite here (InvalidInvite says what is wrong), then ask chatd:
    (the room joined, what to say)."""
    from mqchat.errors import UsageError
    from mqchat.protocol.fingerprints import format_fingerprint
    from mqchat.protocol.invite import parse_invite

    try:
        text.encode()
    except UnicodeEncodeError:
        raise UsageError("the invite is not valid UTF-8 text") from None
    parsed = parse_invite(text)
    result: dict[str, Any] = c.call("join_invite", {"invite": text.strip()})
    verb = "joined" if result.get("joined") else "already in"
    lines = [f"{verb} {parsed.room} ({result.get('cipher')}, epoch {parsed.epoch}, by invite)"]
    errors: list[str] = []
    if result.get("joined"):
        lines.append(f"inviter's key: {format_fingerprint(parsed.inviter_fingerprint)}")
        if parsed.admission is not None:
            said = _wait_for_admission(c, parsed.room)
            lines += said.out
            errors += said.err
    return parsed.room, Said(lines, errors)


ADMISSION_WAIT_S = 5.0
"""How long joining by invite waits for a member to answer with the room's state."""


def _wait_for_admission(c: Caller, room: str) -> Said:
    """A member answers a join with the room's state (docs/protocol.md §26), or with
    the commit that shows the invite is stale: say which; NotAMember (exit 1) for
    the latter."""
    import time

    from mqchat.errors import NotAMember

    deadline = time.monotonic() + ADMISSION_WAIT_S
    while True:
        state: dict[str, Any] = c.call("members", {"room": room})
        if state.get("out"):
            raise NotAMember(f"{state['out']}; run `chatctl leave {room}` to forget it")
        if state.get("state"):
            admins = [m["name"] for m in state["members"] if m.get("role") == "admin"]
            return Said([f"admitted: you can send now; {room}'s admins: {', '.join(admins)}"], [])
        if time.monotonic() > deadline:
            return Said(
                [],
                [
                    f"no member of {room} has answered yet: you can read and send, and will "
                    "see who is in the room once one is online"
                ],
            )
        time.sleep(0.1)  # a poll of chatd with a deadline, for a person at a prompt


def rekey_room(c: Caller, room: str, remove: list[str]) -> tuple[dict[str, Any], Said]:
    from mqchat.client.render import escape

    result: dict[str, Any] = c.call("rekey", {"room": room, "remove": remove})
    sent = ", ".join(escape(m["name"]) for m in result["sent_to"])
    lines = [f"rekeyed {escape(room)}: epoch {result['epoch']}, key sent to {sent}"]
    if result["removed"]:
        lines.append(f"removed: {', '.join(escape(n) for n in result['removed'])}")
    if result["unreachable"]:
        who = ", ".join(escape(n) for n in result["unreachable"])
        lines.append(
            f"not sent to (no member key seen from them): {who}; "
            f"invite them again with `chatctl invite {escape(room)}`"
        )
    return result, Said(lines, [])


def list_members(c: Caller, room: str) -> tuple[dict[str, Any], Said]:
    from mqchat.client.render import escape
    from mqchat.protocol.fingerprints import short_fingerprint

    result: dict[str, Any] = c.call("members", {"room": room})
    errors = [escape(result["out"])] if result.get("out") else []
    if result.get("state") is None:
        lines = [
            f"{escape(result['room'])}: epoch {result['epoch']}; no admin yet (every holder of "
            "the key is equal until the first rekey); the next rekey is sealed to:"
        ]
    else:
        lines = [f"{escape(result['room'])}: epoch {result['epoch']}; members:"]
    for m in result["members"]:
        you = "  (you)" if m.get("you") else ""
        key = "" if m["member_key"] else "\tNO MEMBER KEY: cannot be sent the next key"
        role, since = m.get("role"), m.get("since_epoch")
        what = "" if role is None else f"\t{role}"
        if role is not None and since is not None and role != "pending":
            what += f" since epoch {since}"
        fp = short_fingerprint(m["fingerprint"])
        lines.append(f"  {escape(m['name'])}\t{fp}{what}{key}{you}")
    return result, Said(lines, errors)


def change_role(c: Caller, room: str, name: str, role: str) -> tuple[dict[str, Any], Said]:
    """Make NAME an admin or a member again: an admin's commit (docs/protocol.md §25.2)."""
    from mqchat.client.render import escape
    from mqchat.errors import UsageError

    if role not in ("admin", "member"):
        raise UsageError(f"{role!r} is not a role: admin or member")
    key = "admins" if role == "admin" else "members"
    result: dict[str, Any] = c.call("rekey", {"room": room, key: [name]})
    now = "an admin" if role == "admin" else "a member"
    admins = ", ".join(escape(n) for n in result["admins"])
    line = (
        f"{escape(name)} is now {now} of {escape(room)} (epoch {result['epoch']}); admins: {admins}"
    )
    return result, Said([line], [])


def trust_key(c: Caller, room: str, name: str, fingerprint: str | None) -> Said:
    """Pin NAME's key with ``fingerprint``, or (None) list the keys seen as NAME."""
    from mqchat.client.render import escape
    from mqchat.protocol.fingerprints import format_fingerprint

    params = {"room": room, "name": name, "fingerprint": fingerprint}
    result: dict[str, Any] = c.call("trust", params)
    who, where = escape(result["name"]), escape(result["room"])
    if result.get("trusted"):
        return Said([f"trusted {who} in {where}: {format_fingerprint(result['trusted'])}"], [])
    candidates = result.get("candidates") or []
    if not candidates:
        return Said([], [], f"no key has spoken as {who} in {where} yet")
    lines = [f"keys seen as {who} in {where}:"]
    for key in candidates:
        lines.append(f"  {format_fingerprint(key['fingerprint'])}  ({_key_state(who, key)})")
    waiting = [key for key in candidates if not key.get("pinned")]
    if not waiting:
        lines.append(f"nothing to do: {who}'s messages in {where} show as verified")
        return Said(lines, [])
    return Said(
        lines,
        [],
        f"{len(waiting)} key{'s' if len(waiting) > 1 else ''} not trusted: ask {who} to read "
        f"you their fingerprint (`chatctl identity`), then run "
        f"`chatctl trust {where} {who} FINGERPRINT` with the key that matches",
    )


def _key_state(who: str, key: dict[str, Any]) -> str:
    """``pinned: shown as verified; 7 messages, first ..., last ...``."""
    from mqchat.client.render import local_date, local_time

    mark = "pinned: shown as verified" if key.get("pinned") else f"not pinned: shown as {who}?"
    count = key.get("messages") or 0
    if not count:
        return f"{mark}; no message of it is stored"
    first, last = key["first_seen"], key["last_seen"]
    span = f"{local_date(first)} {local_time(first)}"
    if last != first:
        span = f"first {span}, last {local_date(last)} {local_time(last)}"
    return f"{mark}; {count} message{'s' if count != 1 else ''}, {span}"
