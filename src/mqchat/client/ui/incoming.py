"""What chatd said, as the interface takes it: each kind the link posts, on the app's loop.

The link's threads post ``FromChatd`` messages (kinds: see ChatdLink.listen);
``Incoming.take`` turns each into a change of ``ChatState`` and of the screen.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from textual.message import Message  # noqa: TID253 -- a part of the app: imported by chatctl ui only

from mqchat.client.render import escape
from mqchat.client.ui.lines import who_lines
from mqchat.client.ui.screens import JoinScreen

if TYPE_CHECKING:
    from mqchat.client.ui.app import ChatApp


class FromChatd(Message):
    """What a worker thread read from chatd (kinds: see ChatdLink.listen)."""

    def __init__(self, kind: str, data: Any) -> None:
        super().__init__()
        self.kind = kind
        self.data = data


class Incoming:
    """Takes what chatd said into the app's state, and redraws what changed."""

    def __init__(self, app: ChatApp) -> None:
        self.app = app
        self.state = app.state
        self.view = app.view

    def take(self, kind: str, data: Any) -> None:
        app, state, view = self.app, self.state, self.view
        if kind == "status":
            state.set_status(data)
        elif kind == "rooms":
            for info, messages in data:
                state.add_room(info, messages)
            self._opened()
        elif kind == "room_added":
            info, messages = data
            state.add_room(info, messages)
            if app.joining == info["name"]:
                view.select(info["name"])
        elif kind == "room_removed":
            state.remove_room(data)
            view.draw()
            view.say("note", f"left {escape(data)}")
            view.ask_who()
            return
        elif kind == "event":
            changed = state.take(data)
            if changed is not None:
                view.add(changed, data)
            return
        elif kind == "older":
            view.older(*data)
            return
        elif kind == "members":
            room, result = data
            state.presence = True
            if room in state.rooms:
                state.rooms[room].answered(result.get("members") or [])
        elif kind == "no_presence":
            state.presence = False
        elif kind == "who_said":
            room_name, result = data
            for line in who_lines(room_name, result, app.today()):
                view.say("note", line)
            return
        elif kind in ("error", "dropped", "lost", "note"):
            view.say(kind, data)
            if kind == "dropped" and data.get("count") is None:  # chatd restarted
                link, post = app.link, app.post_from_thread
                app.request(lambda: post("status", link.call("status")))
            return
        view.draw()

    def _opened(self) -> None:
        """The rooms are there: show the one asked for, or join it first."""
        app = self.app
        app.ready = True
        wanted = app.wanted
        if wanted is not None and wanted in self.state.rooms:
            self.state.select(wanted)
        elif wanted is not None:
            app.push_screen(JoinScreen(app.typed.join_with, wanted))
        self.view.ask_who()
