"""What the main screen shows, and which room: the room list, title, log, members and status.

Drawing reads ``ChatState`` only; choosing a room, paging back through its
history and asking chatd who is in it go through the app's request thread.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rich.text import Text
from textual.widgets import Static  # noqa: TID253 -- a part of the app: imported by chatctl ui only

from mqchat.client.render import escape
from mqchat.client.ui.lines import members_text, own_notice_text, room_title
from mqchat.client.ui.link import PAGE
from mqchat.client.ui.widgets import HistoryInput, MessageLog, RoomList

if TYPE_CHECKING:
    from mqchat.client.ui.app import ChatApp


class RoomView:
    """The main screen's panels, drawn from the app's state."""

    def __init__(self, app: ChatApp) -> None:
        self.app = app
        self.state = app.state
        self._loading_older: set[str] = set()

    # ------------------------------------------------------------------ drawing
    def draw(self) -> None:
        app, state = self.app, self.state
        app.query_one("#rooms", RoomList).show(state)
        app.query_one("#title", Static).update(room_title(state.room))
        app.query_one("#log", MessageLog).show(state.room, app.today())
        self.draw_members()
        self.draw_status()

    def draw_members(self) -> None:
        state = self.state
        text = members_text(state.room, state.presence, self.app.today())
        self.app.query_one("#members", Static).update(text)

    def draw_status(self) -> None:
        state = self.state
        if state.broker_connected is None:
            broker = "connecting to chatd…"
        else:
            up = "connected" if state.broker_connected else "NOT connected"
            broker = f"broker {escape(state.broker_url)} {up}"
        line = Text(f" mqchat · {escape(state.name)} · ")
        line.append(broker, style="" if state.broker_connected is not False else "bold red")
        self.app.query_one("#status", Static).update(line)

    def add(self, changed: str, event: dict[str, Any]) -> None:
        """Show ``event``, just taken into room ``changed``: in the log if it is the newest
        of the room shown."""
        state = self.state
        room = state.rooms.get(changed)
        if changed == state.current and room is not None and room.entries[-1:] == [event]:
            self.app.query_one("#log", MessageLog).add(event, self.app.today())
        if event.get("type") == "presence":
            self.draw_members()
        self.app.query_one("#rooms", RoomList).show(state)
        self.draw_status()

    def say(self, kind: str, data: Any) -> None:
        """A notice of the interface's own, in the room shown."""
        text = own_notice_text(kind, data)
        notice = {"type": "notice", "room": self.state.current, "kind": kind, "text": text}
        if self.state.room is not None:
            self.state.room.add(notice)
        self.app.query_one("#log", MessageLog).add(notice, self.app.today())

    # ------------------------------------------------------------------ rooms
    def select(self, name: str) -> None:
        self.state.select(name)
        self.app.joining = None
        self.draw()
        self.ask_who()

    def clicked(self, index: int) -> None:
        names = self.app.query_one("#rooms", RoomList).names
        if 0 <= index < len(names):
            self.select(names[index])
        self.app.query_one("#input", HistoryInput).focus()

    def step(self, by: int) -> None:
        self.state.step(by)
        if self.state.current is not None:
            self.select(self.state.current)

    def ask_who(self, *, again: bool = False) -> None:
        room = self.state.room
        if room is None or self.state.presence is False or (room.asked and not again):
            return
        name, link, post = room.name, self.app.link, self.app.post_from_thread
        room.asking()

        def who() -> None:
            result = link.who(name)
            post("no_presence" if result is None else "members", (name, result))

        self.app.request(who)

    def who(self) -> None:
        """/who: the members, in the log (the panel may be hidden at this width)."""
        room = self.state.room
        if room is None:
            self.say("error", "no room here: /who lists the members of the room shown")
            return
        name, link, post = room.name, self.app.link, self.app.post_from_thread

        def who() -> None:
            result = link.who(name)
            post("no_presence" if result is None else "members", (name, result))
            post("who_said", (name, result))

        self.app.request(who)

    def toggle_members(self) -> None:
        """F4: show the members panel, or hide it, whatever the width says."""
        main = self.app.query_one("#main")
        shown = self.app.query_one("#members").display
        main.set_class(not shown, "-members-shown")
        main.set_class(shown, "-members-hidden")

    def page(self, step: int) -> None:
        log = self.app.query_one("#log", MessageLog)
        room = self.state.room
        if step > 0:
            log.scroll_page_down(animate=False)
        elif log.scroll_y > 0 or room is None or not room.more_above:
            log.scroll_page_up(animate=False)
        elif room.name not in self._loading_older and room.oldest_seq is not None:
            self._loading_older.add(room.name)
            name, before, link, post = (
                room.name,
                room.oldest_seq,
                self.app.link,
                self.app.post_from_thread,
            )
            self.app.request(lambda: post("older", (name, link.older(name, before, PAGE))))

    def older(self, room: str, messages: list[dict[str, Any]]) -> None:
        """A page of history before what ``room`` shows, as asked by ``page``."""
        self._loading_older.discard(room)
        if room in self.state.rooms:
            self.state.rooms[room].add_older(messages)
            if room == self.state.current:
                log = self.app.query_one("#log", MessageLog)
                log.show(self.state.room, self.app.today())
                log.scroll_home(animate=False)
