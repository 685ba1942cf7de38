"""The interface's widgets: room list, message log, members panel, input line."""

from __future__ import annotations

import datetime as dt
from typing import Any, ClassVar

from rich.table import Table
from rich.text import Text
from textual import events
from textual.binding import Binding, BindingType
from textual.message import Message
from textual.widgets import Input, OptionList, RichLog
from textual.widgets.option_list import Option

from mqchat.client.ui.lines import WELCOME, entry_line, hanging_split, room_label
from mqchat.client.ui.state import ChatState, RoomView

INPUT_HISTORY = 500
"""Lines the input remembers for up and down."""


class RoomList(OptionList):
    """The joined rooms, with unread counts; selecting one shows it."""

    def show(self, state: ChatState) -> None:
        names = state.names()
        self.set_options(
            Option(room_label(state.rooms[n], n == state.current), id=f"room-{i}")
            for i, n in enumerate(names)
        )
        self.names = names
        if state.current in names:
            self.highlighted = names.index(state.current)

    names: list[str] = []  # noqa: RUF012 -- replaced, never mutated, per instance in show()


class MessageLog(RichLog):
    """One room's messages and notices, oldest at the top."""

    def __init__(self, *, id: str) -> None:
        # min_width: RichLog renders at least this wide, and crops what does not fit.
        super().__init__(
            wrap=True, markup=False, highlight=False, auto_scroll=True, min_width=10, id=id
        )
        self._shown: tuple[RoomView | None, dt.date] | None = None

    def show(self, room: RoomView | None, today: dt.date) -> None:
        self._shown = (room, today)
        self.clear()
        if room is None:
            for line in WELCOME:
                self.write(Text(line, style="" if line.startswith("  ") else "bold"))
            return
        if room.more_above:
            self.write(Text("-- PageUp at the top shows older messages", style="dim"))
        for entry in room.entries:
            self.add(entry, today)

    def add(self, event: dict[str, Any], today: dt.date) -> None:
        """One entry, its wrapped lines indented under its text (a hanging indent)."""
        prefix, body = hanging_split(entry_line(event, today), event)
        if not prefix:
            self.write(body)
            return
        grid = Table.grid()
        grid.add_column(no_wrap=True, width=prefix.cell_len)
        grid.add_column(overflow="fold")
        grid.add_row(prefix, body)
        self.write(grid)

    def on_resize(self, event: events.Resize) -> None:
        # Written lines keep the width they were wrapped at: wrap them again.
        if self._shown is not None and event.size.width != event.virtual_size.width:
            self.show(*self._shown)

    def plain_lines(self) -> list[str]:
        """What the log shows, as text (for tests and screen readers alike)."""
        return [strip.text.rstrip() for strip in self.lines]


class HistoryInput(Input):
    """The input line; up and down go through what was typed before.

    Enter posts a ``Line`` at once, in the order of the keys. Input's own Enter
    runs as a binding once the key has gone up to the app, and by then keys
    typed after it may be in the field: "a⏎b⏎" typed fast would send "ab".
    """

    class Line(Message):
        def __init__(self, value: str) -> None:
            super().__init__()
            self.value = value

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("up", "history(-1)", "Previous line", show=False),
        Binding("down", "history(1)", "Next line", show=False),
    ]

    def __init__(self, *, id: str, placeholder: str) -> None:
        super().__init__(id=id, placeholder=placeholder)
        self._history: list[str] = []
        self._at = 0
        self._draft = ""

    held = False
    """After ``/join``, keys are dropped until its dialog closes (the app says so):
    typed ahead of the passphrase field, a passphrase would be sent as a line."""

    async def _on_key(self, event: events.Key) -> None:
        if self.held and (event.is_printable or event.key == "enter"):
            event.stop()
            event.prevent_default()
            return
        if event.key != "enter":
            await super()._on_key(event)
            return
        event.stop()
        event.prevent_default()
        line = self.value
        self.value = ""
        self.remember(line)
        self.held = line.lstrip().startswith("/join")
        self.post_message(self.Line(line))

    def insert_text_at_cursor(self, text: str) -> None:
        if not self.held:
            super().insert_text_at_cursor(text)

    def remember(self, line: str) -> None:
        if line and (not self._history or self._history[-1] != line):
            self._history.append(line)
            del self._history[:-INPUT_HISTORY]
        self._at = len(self._history)
        self._draft = ""

    def action_history(self, step: int) -> None:
        if not self._history:
            return
        if self._at == len(self._history):
            self._draft = self.value
        self._at = max(0, min(len(self._history), self._at + step))
        self.value = self._history[self._at] if self._at < len(self._history) else self._draft
        self.cursor_position = len(self.value)
