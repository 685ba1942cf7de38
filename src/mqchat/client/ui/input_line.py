"""What a line typed in the interface does: a message to the room shown, or a /command;
and the join and leave dialogs that commands and keys open.

Requests go through the app's request thread, in the order they were typed; a
join runs in a thread of its own (deriving a room key takes seconds).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mqchat.client.sending import QUEUED_NOTE
from mqchat.client.ui import room_commands
from mqchat.client.ui.commands import ESCAPED_SLASH, parse_join, split_command, unknown_command
from mqchat.client.ui.screens import ConfirmLeave, HelpScreen, JoinScreen, RoomPrompt
from mqchat.errors import MqchatError
from mqchat.protocol.limits import check_text, normalize_room

if TYPE_CHECKING:
    from mqchat.client.ui.app import ChatApp


class InputLine:
    """Runs what is typed, and the dialogs it opens."""

    def __init__(self, app: ChatApp) -> None:
        self.app = app
        self.state = app.state
        self.view = app.view

    def submitted(self, line: str) -> None:
        if not line.strip():
            return
        if line.lstrip().startswith(ESCAPED_SLASH):
            line = line.replace("/", "", 1)
        elif line.lstrip().startswith("/"):
            try:
                self._command(line)
            except MqchatError as exc:
                self.app.release_input()  # no dialog came
                self.view.say("error", exc.message)
            return
        self._send(line)

    def _send(self, text: str) -> None:
        room = self.state.current
        if room is None:
            self.view.say("error", "join a room first: /join ROOM (or F2)")
            return
        try:
            check_text(text)
        except MqchatError as exc:
            self.view.say("error", exc.message)
            return
        link, post = self.app.link, self.app.post_from_thread

        def send() -> None:
            result = link.call("send", {"room": room, "text": text})
            if result.get("queued"):
                post("note", QUEUED_NOTE)

        self.app.request(send)

    def _command(self, line: str) -> None:
        name, args = split_command(line)
        if name == "/quit":
            self.app.exit()
        elif name == "/help":
            self.help()
        elif name == "/who":
            self.view.who()
        elif name == "/join":
            self.join(parse_join(args))
        elif name == "/leave":
            self.leave(normalize_room(args[0]) if args else None)
        elif name in room_commands.ROOM_COMMANDS:
            room_commands.run(self.app, name, args)
        else:
            raise unknown_command(name)

    # ------------------------------------------------------------------ dialogs
    def help(self) -> None:
        self.app.push_screen(HelpScreen())

    def join(self, options: dict[str, Any] | None = None) -> None:
        app = self.app
        options = dict(options or {})
        if options.pop("invite", False):
            room_commands.join_by_invite(app)
            return
        room = options.pop("room", "")
        if room:
            app.push_screen(JoinScreen(self.join_with, room, **options), app.release_input)
            return

        def chosen(name: str | None) -> None:
            if name:
                app.push_screen(JoinScreen(self.join_with, name, **options), app.release_input)
            else:
                app.release_input()

        app.push_screen(RoomPrompt(), chosen)

    def join_with(self, screen: JoinScreen, params: dict[str, Any]) -> None:
        """What the join dialog does with what was typed in it."""
        app, link = self.app, self.app.link

        def join() -> None:
            try:
                result = link.join(params)
            except MqchatError as exc:
                app.call_from_thread(screen.say, exc.message)
                return
            app.call_from_thread(self._joined, screen, result)

        app.run_worker(join, name="chatd-join", group="join", thread=True)

    def _joined(self, screen: JoinScreen, result: dict[str, Any]) -> None:
        if screen.is_current:
            screen.dismiss(None)
        name = result["name"]
        if result.get("warning"):
            self.app.post_from_thread("note", f"WARNING: {result['warning']}")
        if name in self.state.rooms:
            self.view.select(name)
        else:
            self.app.joining = name  # selected when the listener has read its history

    def leave(self, room: str | None = None) -> None:
        name = room or self.state.current
        if name is None:
            return
        link, request = self.app.link, self.app.request

        def answered(leave: bool | None) -> None:  # y, n or Escape
            if leave:
                request(lambda: link.call("leave", {"room": name}))

        held = self.state.rooms.get(name)
        by_invite = held is not None and held.by_invite
        self.app.push_screen(ConfirmLeave(name, by_invite=by_invite), answered)
