"""``chatctl ui``: the Textual app.

Two worker threads talk to chatd through the link: one reads the event stream
(and fills its gaps from the store), one sends requests in the order they were
made, so that lines typed quickly arrive in order. Joins run in a thread of
their own: deriving a room key takes seconds. Neither thread touches a widget;
each posts to the app, whose handlers run on its event loop.
"""

from __future__ import annotations

import datetime as dt
import queue
import threading
from collections.abc import Callable
from typing import Any, ClassVar

from rich.text import Text
from textual import on
from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.widgets import Footer, OptionList, Static
from textual.worker import get_current_worker

from mqchat.client.render import escape
from mqchat.client.sending import QUEUED_NOTE
from mqchat.client.ui import room_commands
from mqchat.client.ui.commands import ESCAPED_SLASH, parse_join, split_command, unknown_command
from mqchat.client.ui.lines import members_text, own_notice_text, room_title, who_lines
from mqchat.client.ui.link import PAGE, POLL_S, Link
from mqchat.client.ui.screens import ConfirmLeave, HelpScreen, JoinScreen, RoomPrompt
from mqchat.client.ui.state import ChatState
from mqchat.client.ui.widgets import HistoryInput, MessageLog, RoomList
from mqchat.errors import MqchatError
from mqchat.protocol.limits import check_text, normalize_room


class FromChatd(Message):
    """What a worker thread read from chatd (kinds: see ChatdLink.listen)."""

    def __init__(self, kind: str, data: Any) -> None:
        super().__init__()
        self.kind = kind
        self.data = data


class ChatApp(App[None]):
    CSS_PATH = "app.tcss"
    TITLE = "mqchat"
    ENABLE_COMMAND_PALETTE = False
    HORIZONTAL_BREAKPOINTS = [  # noqa: RUF012 -- Textual reads it; App declares it a list
        (0, "-tiny"),
        (64, "-narrow"),
        (110, "-wide"),
    ]
    """Screen classes by terminal width: app.tcss hides side panels on narrow ones."""
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("f1", "help", "Help"),
        Binding("ctrl+n", "step(1)", "Next room"),
        Binding("ctrl+p", "step(-1)", "Prev room"),
        Binding("f2", "join", "Join"),
        Binding("f3", "leave", "Leave"),
        Binding("f4", "toggle_members", "Members"),
        Binding("pageup", "page(-1)", "Older", show=False, priority=True),
        Binding("pagedown", "page(1)", "Newer", show=False, priority=True),
        Binding("ctrl+q", "quit", "Quit", priority=True),
    ]

    def __init__(
        self,
        link: Link,
        *,
        room: str | None = None,
        today: Callable[[], dt.date] = dt.date.today,
    ) -> None:
        super().__init__()
        self.link = link
        self.state = ChatState()
        self.wanted = room
        """The room to open with (``chatctl ui ROOM``); joined first if it is not."""
        self.today = today
        self.ready = False
        """True once the rooms and their last messages are shown."""
        self.joining: str | None = None
        """A room joined from here: shown as soon as chatd has it."""
        self._requests: queue.Queue[Callable[[], None]] = queue.Queue()
        self._stopping = threading.Event()
        self._loading_older: set[str] = set()

    # ------------------------------------------------------------------ layout
    def compose(self) -> ComposeResult:
        yield Static(id="status")
        with Horizontal(id="main"):
            yield RoomList(id="rooms")
            with Vertical(id="middle"):
                yield Static(id="title")
                yield MessageLog(id="log")
                yield HistoryInput(id="input", placeholder="a message, or /help")
            yield Static(id="members")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#input", HistoryInput).focus()
        self.draw()
        self.run_worker(self._listen, name="chatd-events", group="chatd", thread=True)
        self.run_worker(self._serve, name="chatd-requests", group="chatd", thread=True)

    def on_unmount(self) -> None:
        self._stopping.set()

    # ------------------------------------------------------------------ workers (threads)
    def _stopped(self) -> bool:
        return self._stopping.is_set() or get_current_worker().is_cancelled

    def _post(self, kind: str, data: Any = None) -> None:
        self.post_message(FromChatd(kind, data))

    def _listen(self) -> None:
        worker = get_current_worker()
        self.link.listen(self._post, lambda: self._stopping.is_set() or worker.is_cancelled)

    def _serve(self) -> None:
        """Run requests one at a time, in the order they were made."""
        while not self._stopped():
            try:
                request = self._requests.get(timeout=POLL_S)
            except queue.Empty:
                continue
            try:
                request()
            except MqchatError as exc:
                self._post("error", exc.message)

    def _request(self, request: Callable[[], None]) -> None:
        self._requests.put(request)

    # what mqchat.client.ui.room_commands uses
    request = _request
    post_from_thread = _post

    def open_room(self, name: str) -> None:
        """Show ``name`` now if it is here, else as soon as the listener has it."""
        if name in self.state.rooms:
            self._select(name)
        else:
            self.joining = name

    # ------------------------------------------------------------------ what chatd said
    @on(FromChatd)
    def _from_chatd(self, message: FromChatd) -> None:
        if self._stopping.is_set() or not self.query("#log"):
            return  # the app is closing: its widgets are going or gone
        kind, data = message.kind, message.data
        state = self.state
        if kind == "status":
            state.set_status(data)
        elif kind == "rooms":
            for info, messages in data:
                state.add_room(info, messages)
            self._opened()
        elif kind == "room_added":
            info, messages = data
            state.add_room(info, messages)
            if self.joining == info["name"]:
                self._select(info["name"])
        elif kind == "room_removed":
            state.remove_room(data)
            self.draw()
            self._say("note", f"left {escape(data)}")
            self._ask_who()
            return
        elif kind == "event":
            self._took(data)
            return
        elif kind == "older":
            room, messages = data
            self._loading_older.discard(room)
            if room in state.rooms:
                state.rooms[room].add_older(messages)
                if room == state.current:
                    self.query_one("#log", MessageLog).show(state.room, self.today())
                    self.query_one("#log", MessageLog).scroll_home(animate=False)
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
            for line in who_lines(room_name, result, self.today()):
                self._say("note", line)
            return
        elif kind in ("error", "dropped", "lost", "note"):
            self._say(kind, data)
            if kind == "dropped" and data.get("count") is None:  # chatd restarted
                link = self.link
                self._request(lambda: self._post("status", link.call("status")))
            return
        self.draw()

    def _opened(self) -> None:
        """The rooms are there: show the one asked for, or join it first."""
        self.ready = True
        wanted = self.wanted
        if wanted is not None and wanted in self.state.rooms:
            self.state.select(wanted)
        elif wanted is not None:
            self.push_screen(JoinScreen(self._join, wanted))
        self._ask_who()

    def _took(self, event: dict[str, Any]) -> None:
        state = self.state
        changed = state.take(event)
        if changed is None:
            return
        room = state.rooms.get(changed)
        if changed == state.current and room is not None and room.entries[-1:] == [event]:
            self.query_one("#log", MessageLog).add(event, self.today())
        if event.get("type") == "presence":
            self._draw_members()
        self.query_one("#rooms", RoomList).show(state)
        self._draw_status()

    def _say(self, kind: str, data: Any) -> None:
        """A notice of the interface's own, in the room shown."""
        text = own_notice_text(kind, data)
        notice = {"type": "notice", "room": self.state.current, "kind": kind, "text": text}
        if self.state.room is not None:
            self.state.room.add(notice)
        self.query_one("#log", MessageLog).add(notice, self.today())

    # ------------------------------------------------------------------ drawing
    def draw(self) -> None:
        self.query_one("#rooms", RoomList).show(self.state)
        self.query_one("#title", Static).update(room_title(self.state.room))
        self.query_one("#log", MessageLog).show(self.state.room, self.today())
        self._draw_members()
        self._draw_status()

    def _draw_members(self) -> None:
        self.query_one("#members", Static).update(
            members_text(self.state.room, self.state.presence, self.today())
        )

    def _draw_status(self) -> None:
        state = self.state
        if state.broker_connected is None:
            broker = "connecting to chatd…"
        else:
            up = "connected" if state.broker_connected else "NOT connected"
            broker = f"broker {escape(state.broker_url)} {up}"
        line = Text(f" mqchat · {escape(state.name)} · ")
        line.append(broker, style="" if state.broker_connected is not False else "bold red")
        self.query_one("#status", Static).update(line)

    # ------------------------------------------------------------------ rooms
    def _select(self, name: str) -> None:
        self.state.select(name)
        self.joining = None
        self.draw()
        self._ask_who()

    @on(OptionList.OptionSelected, "#rooms")
    def _clicked_room(self, event: OptionList.OptionSelected) -> None:
        names = self.query_one("#rooms", RoomList).names
        if 0 <= event.option_index < len(names):
            self._select(names[event.option_index])
        self.query_one("#input", HistoryInput).focus()

    def action_step(self, by: int) -> None:
        self.state.step(by)
        if self.state.current is not None:
            self._select(self.state.current)

    def _ask_who(self, *, again: bool = False) -> None:
        room = self.state.room
        if room is None or self.state.presence is False or (room.asked and not again):
            return
        name, link = room.name, self.link
        room.asking()

        def who() -> None:
            result = link.who(name)
            self._post("no_presence" if result is None else "members", (name, result))

        self._request(who)

    def action_who(self) -> None:
        """/who: the members, in the log (the panel may be hidden at this width)."""
        room = self.state.room
        if room is None:
            self._say("error", "no room here: /who lists the members of the room shown")
            return
        name, link = room.name, self.link

        def who() -> None:
            result = link.who(name)
            self._post("no_presence" if result is None else "members", (name, result))
            self._post("who_said", (name, result))

        self._request(who)

    def action_toggle_members(self) -> None:
        """F4: show the members panel, or hide it, whatever the width says."""
        main = self.query_one("#main")
        shown = self.query_one("#members").display
        main.set_class(not shown, "-members-shown")
        main.set_class(shown, "-members-hidden")

    def action_page(self, step: int) -> None:
        log = self.query_one("#log", MessageLog)
        room = self.state.room
        if step > 0:
            log.scroll_page_down(animate=False)
        elif log.scroll_y > 0 or room is None or not room.more_above:
            log.scroll_page_up(animate=False)
        elif room.name not in self._loading_older and room.oldest_seq is not None:
            self._loading_older.add(room.name)
            name, before, link = room.name, room.oldest_seq, self.link
            self._request(lambda: self._post("older", (name, link.older(name, before, PAGE))))

    # ------------------------------------------------------------------ join, leave, help
    def action_help(self) -> None:
        self.push_screen(HelpScreen())

    def action_join(self, options: dict[str, Any] | None = None) -> None:
        options = dict(options or {})
        if options.pop("invite", False):
            room_commands.join_by_invite(self)
            return
        room = options.pop("room", "")
        if room:
            self.push_screen(JoinScreen(self._join, room, **options), self.release_input)
            return

        def chosen(name: str | None) -> None:
            if name:
                self.push_screen(JoinScreen(self._join, name, **options), self.release_input)
            else:
                self.release_input()

        self.push_screen(RoomPrompt(), chosen)

    def release_input(self, _: object = None) -> None:
        """The join dialog is gone: the input line takes keys again (HistoryInput.held)."""
        self.query_one("#input", HistoryInput).held = False

    def _join(self, screen: JoinScreen, params: dict[str, Any]) -> None:
        link = self.link

        def join() -> None:
            try:
                result = link.join(params)
            except MqchatError as exc:
                self.call_from_thread(screen.say, exc.message)
                return
            self.call_from_thread(self._joined, screen, result)

        self.run_worker(join, name="chatd-join", group="join", thread=True)

    def _joined(self, screen: JoinScreen, result: dict[str, Any]) -> None:
        if screen.is_current:
            screen.dismiss(None)
        name = result["name"]
        if result.get("warning"):
            self._post("note", f"WARNING: {result['warning']}")
        if name in self.state.rooms:
            self._select(name)
        else:
            self.joining = name  # selected when the listener has read its history

    def action_leave(self, room: str | None = None) -> None:
        name = room or self.state.current
        if name is None:
            return
        link = self.link

        def answered(leave: bool | None) -> None:  # y, n or Escape
            if leave:
                self._request(lambda: link.call("leave", {"room": name}))

        held = self.state.rooms.get(name)
        self.push_screen(
            ConfirmLeave(name, by_invite=held is not None and held.by_invite), answered
        )

    # ------------------------------------------------------------------ the input line
    @on(HistoryInput.Line)
    def _submitted(self, event: HistoryInput.Line) -> None:
        line = event.value
        if not line.strip():
            return
        if line.lstrip().startswith(ESCAPED_SLASH):
            line = line.replace("/", "", 1)
        elif line.lstrip().startswith("/"):
            try:
                self._command(line)
            except MqchatError as exc:
                self.release_input()  # no dialog came
                self._say("error", exc.message)
            return
        self._send(line)

    def _send(self, text: str) -> None:
        room = self.state.current
        if room is None:
            self._say("error", "join a room first: /join ROOM (or F2)")
            return
        try:
            check_text(text)
        except MqchatError as exc:
            self._say("error", exc.message)
            return
        link = self.link

        def send() -> None:
            result = link.call("send", {"room": room, "text": text})
            if result.get("queued"):
                self._post("note", QUEUED_NOTE)

        self._request(send)

    def _command(self, line: str) -> None:
        name, args = split_command(line)
        if name == "/quit":
            self.exit()
        elif name == "/help":
            self.action_help()
        elif name == "/who":
            self.action_who()
        elif name == "/join":
            self.action_join(parse_join(args))
        elif name == "/leave":
            self.action_leave(normalize_room(args[0]) if args else None)
        elif name in room_commands.ROOM_COMMANDS:
            room_commands.run(self, name, args)
        else:
            raise unknown_command(name)
