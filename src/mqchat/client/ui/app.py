"""``chatctl ui``: the Textual app.

Two worker threads talk to chatd through the link: one reads the event stream
(and fills its gaps from the store), one sends requests in the order they were
made, so that lines typed quickly arrive in order. Joins run in a thread of
their own: deriving a room key takes seconds. Neither thread touches a widget;
each posts to the app, whose handlers run on its event loop.

The app holds the state and the threads, and hands the rest to three parts made
in its constructor: what the screen shows (room_view.RoomView), what chatd said
(incoming.Incoming) and what is typed (input_line.InputLine).
"""

from __future__ import annotations

import datetime as dt
import queue
import threading
from collections.abc import Callable
from typing import Any, ClassVar

from textual import on
from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.widgets import Footer, OptionList, Static
from textual.worker import get_current_worker

from mqchat.client.ui.incoming import FromChatd, Incoming
from mqchat.client.ui.input_line import InputLine
from mqchat.client.ui.link import POLL_S, Link
from mqchat.client.ui.room_view import RoomView
from mqchat.client.ui.state import ChatState
from mqchat.client.ui.widgets import HistoryInput, MessageLog, RoomList
from mqchat.errors import MqchatError

__all__ = ["ChatApp", "FromChatd"]


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
        self.view = RoomView(self)
        self.typed = InputLine(self)
        self.incoming = Incoming(self)

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
        self.view.draw()
        self.run_worker(self._listen, name="chatd-events", group="chatd", thread=True)
        self.run_worker(self._serve, name="chatd-requests", group="chatd", thread=True)

    def on_unmount(self) -> None:
        self._stopping.set()

    # ------------------------------------------------------------------ workers (threads)
    def _stopped(self) -> bool:
        return self._stopping.is_set() or get_current_worker().is_cancelled

    def post_from_thread(self, kind: str, data: Any = None) -> None:
        """Hand what chatd said to the app's loop (Incoming.take), from any thread."""
        self.post_message(FromChatd(kind, data))

    def _listen(self) -> None:
        worker = get_current_worker()
        self.link.listen(
            self.post_from_thread, lambda: self._stopping.is_set() or worker.is_cancelled
        )

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
                self.post_from_thread("error", exc.message)

    def request(self, request: Callable[[], None]) -> None:
        """Run ``request`` in the request thread, after those made before it."""
        self._requests.put(request)

    def open_room(self, name: str) -> None:
        """Show ``name`` now if it is here, else as soon as the listener has it."""
        if name in self.state.rooms:
            self.view.select(name)
        else:
            self.joining = name

    def release_input(self, _: object = None) -> None:
        """The join dialog is gone: the input line takes keys again (HistoryInput.held)."""
        self.query_one("#input", HistoryInput).held = False

    # ------------------------------------------------------------------ messages and keys
    @on(FromChatd)
    def _from_chatd(self, message: FromChatd) -> None:
        if self._stopping.is_set() or not self.query("#log"):
            return  # the app is closing: its widgets are going or gone
        self.incoming.take(message.kind, message.data)

    @on(OptionList.OptionSelected, "#rooms")
    def _clicked_room(self, event: OptionList.OptionSelected) -> None:
        self.view.clicked(event.option_index)

    @on(HistoryInput.Line)
    def _submitted(self, event: HistoryInput.Line) -> None:
        self.typed.submitted(event.value)

    def draw(self) -> None:
        self.view.draw()

    def action_step(self, by: int) -> None:
        self.view.step(by)

    def action_who(self) -> None:
        self.view.who()

    def action_toggle_members(self) -> None:
        self.view.toggle_members()

    def action_page(self, step: int) -> None:
        self.view.page(step)

    def action_help(self) -> None:
        self.typed.help()

    def action_join(self, options: dict[str, Any] | None = None) -> None:
        self.typed.join(options)

    def action_leave(self, room: str | None = None) -> None:
        self.typed.leave(room)
