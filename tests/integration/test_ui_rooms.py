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
from textual.widgets import Input, Label, Static

from harness import PASSPHRASE, Daemon
from integration.test_ui import burst, drive, log_lines, shows, type_line, until
from mqchat.client.ui.app import ChatApp
from mqchat.client.ui.invite_screens import PasteInvite, ShowInvite
from mqchat.client.ui.screens import ConfirmLeave, JoinScreen
from mqchat.protocol.ciphers import DEFAULT_CIPHER

MakeDaemon = Callable[..., Daemon]


def rooms_of(d: Daemon) -> dict[str, dict[str, Any]]:
    return {r["name"]: r for r in json.loads(d.ok("rooms", "--json"))}


def bob_keyed(d: Daemon, room: str) -> bool:
    listed = json.loads(d.ok("members", room, "--json"))["members"]
    return any(m["name"] == "bob" and m["member_key"] for m in listed)


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


def test_create_invite_members_rekey_and_trust_from_the_ui(
    make_daemon: MakeDaemon, room: str
) -> None:
    alice, bob = make_daemon("alice"), make_daemon("bob")
    shown: dict[str, str] = {}

    async def script(app: ChatApp, pilot: Pilot[Any]) -> None:
        await type_line(pilot, f"/create {room}")
        await until(pilot, lambda: app.state.current == room, "the created room")
        await type_line(pilot, "/invite")
        screen = await until(
            pilot, lambda: isinstance(app.screen, ShowInvite) and app.screen, "the invite"
        )
        assert "SECRET" in screen.warning
        await pilot.press("c")
        assert app.clipboard == screen.invite  # copied (OSC 52)
        shown["invite"] = screen.invite
        await pilot.press("escape")
        assert not any(screen.invite in line for line in log_lines(app))  # shown once only
        bob.ok("join", "--invite", input=screen.invite + "\n")
        await until(pilot, lambda: bob_keyed(alice, room), "bob's member key")
        await type_line(pilot, "/members")
        bob_fp = json.loads(bob.ok("identity", "--json"))["fingerprint"]
        grouped = " ".join(bob_fp[i : i + 4] for i in range(0, 32, 4))
        await until(pilot, lambda: shows(app, grouped), "bob's fingerprint in /members")
        await type_line(pilot, "/rekey")
        await until(pilot, lambda: shows(app, f"rekeyed {room}: epoch 1"), "the rekey")
        bob.ok("send", room, "hello alice")  # a key trust can name has spoken
        await until(pilot, lambda: shows(app, "<bob> hello alice"), "bob's message")
        await type_line(pilot, f"/trust bob {grouped}")
        await until(pilot, lambda: shows(app, "trusted bob"), "the trust")

    drive(alice, None, script)
    assert json.loads(bob.ok("members", room, "--json"))["epoch"] == 1


def test_join_by_invite_pasted_into_a_masked_field(make_daemon: MakeDaemon, room: str) -> None:
    alice, carol = make_daemon("alice"), make_daemon("carol")
    alice.ok("create", room)
    line = alice.ok("invite", room).strip()

    async def script(app: ChatApp, pilot: Pilot[Any]) -> None:
        await type_line(pilot, "/join --invite")
        await until(pilot, lambda: isinstance(app.screen, PasteInvite), "the invite dialog")
        app.screen.query_one("#invite-in", Input).insert_text_at_cursor(line)  # a paste
        assert line not in app.export_screenshot()
        await pilot.press("enter")
        await until(pilot, lambda: app.state.current == room, "the room joined by invite")
        assert not any(line in shown for shown in log_lines(app))

    drive(carol, None, script)
    alice.ok("send", room, "welcome, carol")
    assert "welcome, carol" in carol.ok("tail", room, "--no-follow")


def test_leaving_an_invite_room_in_the_ui_names_a_new_invite_as_the_way_back(
    make_daemon: MakeDaemon, room: str
) -> None:
    alice = make_daemon("alice")
    alice.ok("create", room)

    async def script(app: ChatApp, pilot: Pilot[Any]) -> None:
        await pilot.press("f3")
        screen = await until(
            pilot, lambda: isinstance(app.screen, ConfirmLeave) and app.screen, "the dialog"
        )
        said = str(screen.query_one(Static).render())
        assert "a new invite" in said and "passphrase" not in said
        await pilot.press("n")

    drive(alice, room, script)
