"""The interface's invite dialogs: one shows an invite once, one takes an invite pasted.

An invite is a secret (it holds a room's key): it is never written to the log,
shown only in the dialog that asked for it, and typed or pasted into a masked
field, as `chatctl invite` and `chatctl join --invite` treat it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, Label, Static


class ShowInvite(ModalScreen[None]):
    """The invite, its SECRET warning, and C to copy it (OSC 52, where the terminal allows)."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("c", "copy", "Copy"),
        Binding("escape,enter", "close", "Close"),
    ]

    def __init__(self, invite: str, warning: str) -> None:
        super().__init__()
        self.invite = invite
        self.warning = warning

    def compose(self) -> ComposeResult:
        with Vertical(id="join-box"):
            yield Label(Text(self.warning, style="bold"))
            yield Static(Text(self.invite), id="invite-text")
            yield Label("", id="invite-said")
            yield Label(
                Text("C: copy to the clipboard   Escape: close (it is not kept)", style="dim")
            )

    def action_copy(self) -> None:
        self.app.copy_to_clipboard(self.invite)
        said = "copied (if your terminal passes OSC 52 on; else select it with the mouse)"
        self.query_one("#invite-said", Label).update(Text(said, style="dim"))

    def action_close(self) -> None:
        if self.is_current:
            self.dismiss(None)


class PasteInvite(ModalScreen[None]):
    """An invite pasted into a masked field, handed to ``submit``; the screen stays
    until the app dismisses it, so that a refusal is shown where it was pasted."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, submit: Callable[[PasteInvite, str], None]) -> None:
        super().__init__()
        self.submit = submit
        self.busy = False

    def compose(self) -> ComposeResult:
        with Vertical(id="join-box"):
            yield Label(Text("Join a room by invite (the mqchat:invite? line you were given)"))
            yield Input(placeholder="paste the invite (hidden)", password=True, id="invite-in")
            yield Label("", id="join-error")
            yield Label(Text("Enter: join   Escape: cancel", style="dim"))

    def on_mount(self) -> None:
        self.query_one("#invite-in", Input).focus()

    def say(self, problem: str, *, busy: bool = False) -> None:
        self.busy = busy
        self.query_one("#join-error", Label).update(Text(problem, "dim" if busy else "bold red"))

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        if self.busy:
            return
        if not event.value.strip():
            self.say("nothing pasted yet")
            return
        self.say("joining…", busy=True)
        self.submit(self, event.value)

    def action_cancel(self) -> None:
        if self.is_current:
            self.dismiss(None)
