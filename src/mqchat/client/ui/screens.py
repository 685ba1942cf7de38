"""The interface's dialogs: join (masked passphrase), leave, help."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

from rich.text import Text
from textual import events
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Input, Label, Static

from mqchat.client.render import escape
from mqchat.client.room_options import (
    MIN_PASSPHRASE_CHARS,
    check_passphrase,
    join_params,
    room_label,
)
from mqchat.errors import MqchatError, WeakPassphrase
from mqchat.protocol.limits import normalize_room

KEYS = (
    ("Enter", "send the line (or run a /command)"),
    ("Up / Down", "earlier lines you typed"),
    ("Ctrl+N / Ctrl+P", "next / previous room (or click one)"),
    ("PageUp / PageDown", "scroll; PageUp at the top reads older messages"),
    ("F2", "join a room"),
    ("F3", "leave this room"),
    ("F4", "show or hide the members panel (hidden below 110 columns)"),
    ("F1", "this help"),
    ("Ctrl+Q", "quit"),
)
COMMANDS = (
    ("/create ROOM", "a new room with a random key (option: --cipher C)"),
    ("/invite", "an invite to this room, shown once: a SECRET, pass it privately"),
    ("/join --invite", "join with an invite you were given (pasted, hidden)"),
    ("/join ROOM", "join a passphrase room (options: --legacy, --weak, --cipher C)"),
    ("/members", "who the next rekey is sealed to, with fingerprints"),
    ("/rekey", "a new key for this room (--remove NAME... leaves them out)"),
    ("/trust NAME FP", "accept NAME's key with fingerprint FP (no FP: list their keys)"),
    ("/leave", "leave this room: chatd forgets its key"),
    ("/who", "list the members here, with fingerprints"),
    ("/help", "this help"),
    ("/quit", "quit"),
    ("//text", "send /text"),
)
MARKS = (
    ("<alice?>", "a key other than the one pinned: see `chatctl trust`"),
    ("!legacy", "a legacy room: anyone with its passphrase reads and forges"),
)


class HelpScreen(ModalScreen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,f1,q", "dismiss", "Close"),
    ]

    def compose(self) -> ComposeResult:
        text = Text()
        for title, rows in (("Keys", KEYS), ("Commands", COMMANDS), ("Marks", MARKS)):
            text.append(f"{title}\n", style="bold")
            width = max(len(k) for k, _ in rows)
            for key, what in rows:
                text.append(f"  {key:<{width}}  ", style="bold")
                text.append(f"{what}\n")
        text.append("\nEscape closes this help.", style="dim")
        with VerticalScroll(id="help-box"):
            yield Static(text)

    async def action_dismiss(self, result: Any = None) -> None:
        if self.is_current:
            self.dismiss(None)


class ConfirmLeave(ModalScreen[bool]):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("y", "answer(True)", "Leave"),
        Binding("n,escape", "answer(False)", "Stay"),
    ]

    def __init__(self, room: str, *, by_invite: bool = False) -> None:
        super().__init__()
        self.room = room
        self.by_invite = by_invite

    def compose(self) -> ComposeResult:
        back = "a new invite from a member" if self.by_invite else "the passphrase"
        yield Static(
            Text(
                f"Leave {escape(self.room)}? chatd stops receiving it and forgets its key: "
                f"you need {back} to come back.\n\n[y] leave   [n] stay",
            ),
            id="confirm-text",
        )

    def action_answer(self, leave: bool) -> None:
        if self.is_current:
            self.dismiss(leave)


class _RoomInput(Input):
    """The room field: after Enter it takes no more text, until told otherwise.

    Keys that arrive before the passphrase field has the focus (typed fast, or
    a burst from a terminal without bracketed paste) would otherwise land here,
    in plain sight; this way a passphrase typed ahead is dropped, never shown.
    """

    closed = False

    async def _on_key(self, event: events.Key) -> None:
        # Here, and not in the Enter binding: keys reach this method in the
        # order typed, while the binding's action runs after the keys behind it.
        if event.key == "enter":
            self.closed = True
        await super()._on_key(event)

    def insert_text_at_cursor(self, text: str) -> None:
        if not self.closed:
            super().insert_text_at_cursor(text)

    def replace(self, text: str, start: int, end: int) -> None:
        if not self.closed:
            super().replace(text, start, end)


class RoomPrompt(ModalScreen[str | None]):
    """Which room to join (F2): asked alone, so that the passphrase is only
    ever typed into a masked field (see _RoomInput)."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "cancel", "Cancel")]

    def compose(self) -> ComposeResult:
        with Vertical(id="join-box"):
            yield Label(Text("Join a room"))
            yield _RoomInput(placeholder="room", id="join-room")
            yield Label("", id="join-error")
            yield Label(Text("Enter: next   Escape: cancel", style="dim"))

    def on_mount(self) -> None:
        self.query_one("#join-room", Input).focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        field = self.query_one("#join-room", _RoomInput)
        try:
            name = normalize_room(event.value)
        except MqchatError as exc:
            self.query_one("#join-error", Label).update(Text(exc.message, "bold red"))
            field.closed = False
            return
        if self.is_current:  # a second Enter before the screen closed
            self.dismiss(name)

    def action_cancel(self) -> None:
        if self.is_current:
            self.dismiss(None)


class _PassphraseInput(Input):
    """The first passphrase field: after Enter, what is typed goes to ``hand_on``.

    Typed fast, the keys after Enter reach this field before the focus has moved
    (the Enter binding's action runs after them); they belong to the repeat field.
    """

    hand_on: Input | None = None
    closed = False

    async def _on_key(self, event: events.Key) -> None:
        if event.key == "enter" and self.closed and self.hand_on is not None:
            # The repeat field's Enter, typed before it had the focus.
            event.stop()
            event.prevent_default()
            await self.hand_on.action_submit()
            return
        if event.key == "enter":
            self.closed = True
        await super()._on_key(event)

    def insert_text_at_cursor(self, text: str) -> None:
        if not self.closed:
            super().insert_text_at_cursor(text)
        elif self.hand_on is not None:
            self.hand_on.insert_text_at_cursor(text)

    def replace(self, text: str, start: int, end: int) -> None:
        if not self.closed:
            super().replace(text, start, end)


class JoinScreen(ModalScreen[None]):
    """The passphrase of a room, typed twice and masked, handed to ``submit`` with
    ``join``'s other params, built as `chatctl join` builds them (room_options).

    The screen stays until the app dismisses it, so that chatd's refusal is
    shown where the passphrase was typed. F5 accepts a short passphrase
    (``--weak``), with the same checks and words as the command line.
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "cancel", "Cancel"),
        Binding("f5", "toggle_weak", "Weak", priority=True),
    ]

    def __init__(
        self,
        submit: Callable[[JoinScreen, dict[str, Any]], None],
        room: str,
        *,
        cipher: str | None = None,
        legacy: bool = False,
        weak: bool = False,
    ) -> None:
        super().__init__()
        self.submit = submit
        self.room = room
        self.cipher = cipher
        self.legacy = legacy
        self.weak = weak
        self.busy = False

    def _title(self) -> Text:
        label = room_label(self.cipher, legacy=self.legacy, weak=self.weak)
        return Text(f"Join {escape(self.room)} with a passphrase ({label})")

    def compose(self) -> ComposeResult:
        with Vertical(id="join-box"):
            yield Label(self._title(), id="join-title")
            yield _PassphraseInput(placeholder="passphrase", password=True, id="join-passphrase")
            yield Input(placeholder="passphrase again", password=True, id="join-repeat")
            yield Label("", id="join-error")
            yield Label(
                Text(
                    f"Enter: next / join   F5: accept a passphrase under "
                    f"{MIN_PASSPHRASE_CHARS} characters (weak)   Escape: cancel",
                    style="dim",
                )
            )

    def on_mount(self) -> None:
        first = self.query_one("#join-passphrase", _PassphraseInput)
        first.hand_on = self.query_one("#join-repeat", Input)
        first.focus()

    def action_toggle_weak(self) -> None:
        self.weak = not self.weak
        self.query_one("#join-title", Label).update(self._title())

    def say(self, problem: str, *, busy: bool = False) -> None:
        """Show why the join did not happen (also after chatd refused it), or that it runs."""
        self.busy = busy
        self.query_one("#join-error", Label).update(Text(problem, "dim" if busy else "bold red"))

    def _edit_first(self) -> None:
        first = self.query_one("#join-passphrase", _PassphraseInput)
        first.closed = False
        first.focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        repeat = self.query_one("#join-repeat", Input)
        if self.busy:
            return
        if event.input.id == "join-passphrase":
            # Only the repeat field's Enter joins: typed fast, it may hold part
            # of the repetition already when this Enter is handled.
            repeat.focus()
            return
        passphrase = self.query_one("#join-passphrase", Input).value
        try:
            check_passphrase(passphrase, weak=self.weak or self.legacy, weak_hint="F5 (weak)")
        except WeakPassphrase as exc:
            self.say(exc.message)  # the focus stays: F5 then Enter accepts it
            return
        except MqchatError as exc:
            self.say(exc.message)
            self._edit_first()
            return
        if passphrase != repeat.value:
            self.say("the two passphrases differ")
            repeat.value = ""
            repeat.focus()
            return
        self.say(f"joining {escape(self.room)}: deriving its key takes a few seconds…", busy=True)
        params = join_params(
            self.room, passphrase, cipher=self.cipher, legacy=self.legacy, weak=self.weak
        )
        self.submit(self, params)

    def action_cancel(self) -> None:
        if self.is_current:
            self.dismiss(None)
