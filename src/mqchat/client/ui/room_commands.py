"""The interface's room commands: /create, /invite, /join --invite, /members, /rekey, /trust.

Each makes its request through mqchat.client.room_requests, as chatctl does,
in the app's request thread, and shows what the request says in the log. An
invite goes to its own dialog only (invite_screens), never to the log.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mqchat.client import room_requests
from mqchat.client.render import escape
from mqchat.client.ui.invite_screens import PasteInvite, ShowInvite
from mqchat.errors import MqchatError, UsageError
from mqchat.protocol.ciphers import CIPHERS
from mqchat.protocol.limits import normalize_room

if TYPE_CHECKING:
    from mqchat.client.ui.app import ChatApp

ROOM_COMMANDS = ("/create", "/invite", "/members", "/rekey", "/trust")
USAGE = {
    "/create": f"/create ROOM [--cipher {'|'.join(CIPHERS)}]",
    "/invite": "/invite [ROOM]",
    "/members": "/members [ROOM]",
    "/rekey": "/rekey [--remove NAME...]",
    "/trust": "/trust NAME [FINGERPRINT]",
}


def _show(app: ChatApp, said: room_requests.Said) -> None:
    """Post what a request said, from the request thread."""
    for line in [*said.out, *said.err]:
        app.post_from_thread("note", line)
    if said.refusal:
        app.post_from_thread("error", said.refusal)


def _here(app: ChatApp, args: list[str], name: str) -> str:
    if args:
        return normalize_room(args[0])
    if app.state.current is None:
        raise UsageError(f"no room here: {USAGE[name]} names one")
    return app.state.current


def run(app: ChatApp, name: str, args: list[str]) -> None:
    """Run one of ROOM_COMMANDS (UsageError: a line that is not one)."""
    link = app.link
    if name == "/create":
        room, cipher = _create_words(args)

        def create() -> None:
            _show(app, room_requests.create_room(link, room, cipher))
            app.post_from_thread("note", f"next: /invite prints an invite for {escape(room)}")

        app.joining = room
        app.request(create)
    elif name == "/invite":
        room = _here(app, args[:1], name)

        def invite() -> None:
            line, warning = room_requests.fetch_invite(link, room)
            app.call_from_thread(app.push_screen, ShowInvite(line, warning))

        app.request(invite)
    elif name == "/members":
        room = _here(app, args[:1], name)
        app.request(lambda: _show(app, room_requests.list_members(link, room)[1]))
    elif name == "/rekey":
        room = _here(app, [], name)
        remove = _rekey_words(args)
        app.request(lambda: _show(app, room_requests.rekey_room(link, room, remove)[1]))
    elif name == "/trust":
        room = _here(app, [], name)
        if not args:
            raise UsageError(f"{USAGE[name]}: whose key?")
        who, fingerprint = args[0], "".join(args[1:]) or None
        app.request(lambda: _show(app, room_requests.trust_key(link, room, who, fingerprint)))


def _create_words(args: list[str]) -> tuple[str, str | None]:
    rest, room, cipher = list(args), "", None
    while rest:
        word = rest.pop(0)
        if word == "--cipher" and rest and rest[0] in CIPHERS:
            cipher = rest.pop(0)
        elif not word.startswith("--") and not room:
            room = normalize_room(word)
        else:
            raise UsageError(f"{USAGE['/create']}, not {escape(word)}")
    if not room:
        raise UsageError(f"{USAGE['/create']}: name the new room")
    return room, cipher


def _rekey_words(args: list[str]) -> list[str]:
    if not args:
        return []
    if args[0] != "--remove" or len(args) < 2:
        raise UsageError(f"{USAGE['/rekey']}, not {escape(' '.join(args))}")
    return args[1:]


def join_by_invite(app: ChatApp) -> None:
    """/join --invite: the invite is pasted into a masked field, then joined."""
    link = app.link

    def submit(screen: PasteInvite, text: str) -> None:
        def join() -> None:
            try:
                room, said = room_requests.join_by_invite(link, text)
            except MqchatError as exc:
                app.call_from_thread(screen.say, exc.message)
                return
            _show(app, said)
            app.call_from_thread(_joined, app, screen, room)

        app.request(join)

    app.push_screen(PasteInvite(submit), app.release_input)


def _joined(app: ChatApp, screen: PasteInvite, room: str) -> None:
    if screen.is_current:
        screen.dismiss(None)
    app.open_room(room)
