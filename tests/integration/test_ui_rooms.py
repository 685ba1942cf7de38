"""Issue 25: a room joined in `chatctl ui` is the room `chatctl join` makes.

The defaults (cipher, passphrase checks, --weak) come from one place
(mqchat.client.room_options); these tests drive the interface against a real
chatd and read the result back with the real CLI, as a user would.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from textual.pilot import Pilot
from textual.widgets import Label

from harness import PASSPHRASE, Daemon
from integration.test_ui import burst, drive, type_line, until
from mqchat.client.ui.app import ChatApp
from mqchat.client.ui.screens import JoinScreen
from mqchat.protocol.ciphers import DEFAULT_CIPHER

MakeDaemon = Callable[..., Daemon]


def rooms_of(d: Daemon) -> dict[str, dict[str, Any]]:
    return {r["name"]: r for r in json.loads(d.ok("rooms", "--json"))}


def dialog_says(app: ChatApp) -> str:
    return str(app.screen.query_one("#join-error", Label).render())


def test_a_room_joined_in_the_ui_uses_the_cli_default_cipher_and_typed_fast_still_joins(
    make_daemon: MakeDaemon, room: str
) -> None:
    alice, bob = make_daemon("alice"), make_daemon("bob")
    alice.join(room)

    async def script(app: ChatApp, pilot: Pilot[Any]) -> None:
        await type_line(pilot, f"/join {room}")
        await until(pilot, lambda: isinstance(app.screen, JoinScreen), "the passphrase dialog")
        await until(
            pilot,
            lambda: app.focused is not None and app.focused.id == "join-passphrase",
            "the passphrase field to take keys",
        )
        # Both entries typed in one burst, faster than the focus moves.
        burst(app, f"{PASSPHRASE}\r{PASSPHRASE}\r")
        await until(pilot, lambda: app.state.current == room, "the joined room")

    drive(bob, None, script)
    assert rooms_of(bob)[room]["cipher"] == DEFAULT_CIPHER == rooms_of(alice)[room]["cipher"]
    alice.ok("send", room, "same room")
    assert "same room" in bob.ok("tail", room, "--no-follow")


def test_a_short_passphrase_is_refused_in_the_ui_in_its_words_and_f5_accepts_it(
    make_daemon: MakeDaemon, room: str
) -> None:
    bob = make_daemon("bob")
    short = "short"

    async def script(app: ChatApp, pilot: Pilot[Any]) -> None:
        await type_line(pilot, f"/join {room}")
        await until(pilot, lambda: isinstance(app.screen, JoinScreen), "the passphrase dialog")
        await pilot.press(*short, "enter", *short, "enter")
        await until(pilot, lambda: "F5" in dialog_says(app), "the dialog's refusal")
        assert "--weak" not in dialog_says(app)  # no flag to give in a dialog
        await pilot.press("f5", "enter")
        await until(pilot, lambda: app.state.current == room, "the joined weak room")

    drive(bob, None, script)
    assert rooms_of(bob)[room]["weak"] is True
