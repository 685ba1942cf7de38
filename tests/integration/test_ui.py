"""Issue 17: `chatctl ui` driven by Textual's Pilot against real chatd processes and mosquitto.

The app runs in this process (App.run_test), and talks to a real chatd over
its real sockets, as `chatctl ui` does; peers are other real chatd processes.
Waits are for what the app holds or shows, with a deadline.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from textual import events
from textual.pilot import Pilot
from textual.widgets import Input, Static

from harness import DEADLINE_S, PASSPHRASE, Broker, Daemon
from mqchat.client.ui.app import ChatApp
from mqchat.client.ui.link import HISTORY_LINES, ChatdLink
from mqchat.client.ui.screens import JoinScreen
from mqchat.client.ui.widgets import MessageLog, RoomList

MakeDaemon = Callable[..., Daemon]
MakeBroker = Callable[..., Broker]
SIZE = (120, 32)


async def until(
    pilot: Pilot[Any], check: Callable[[], Any], what: str, *, keys: tuple[str, ...] = ()
) -> Any:
    """Let the app run (pressing ``keys`` each time) until ``check()`` is truthy,
    or fail after the deadline."""
    deadline = time.monotonic() + DEADLINE_S
    while not (value := check()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {DEADLINE_S:g} s waiting for {what}")
        if keys:
            await pilot.press(*keys)
        await pilot.pause(0.05)  # the app runs meanwhile: a poll interval, not a synchronisation
    return value


def drive(d: Daemon, room: str | None, script: Callable[[ChatApp, Pilot[Any]], Awaitable[None]]):
    """Run ``script`` against a ChatApp on ``d``'s chatd, as `chatctl ui ROOM` would."""
    link = ChatdLink(d.runtime_dir, 10)
    app = ChatApp(link, room=room)

    async def run() -> None:
        async with app.run_test(size=SIZE) as pilot:
            await until(pilot, lambda: app.ready, "the rooms and their history")
            await script(app, pilot)

    try:
        asyncio.run(run())
    finally:
        link.close()
    return app


def log_lines(app: ChatApp) -> list[str]:
    return app.query_one("#log", MessageLog).plain_lines()


def shows(app: ChatApp, text: str) -> bool:
    return any(text in line for line in log_lines(app))


def room_labels(app: ChatApp) -> list[str]:
    rooms = app.query_one("#rooms", RoomList)
    return [str(rooms.get_option_at_index(i).prompt) for i in range(rooms.option_count)]


async def type_line(pilot: Pilot[Any], text: str) -> None:
    await pilot.press(*text, "enter")


def test_a_line_typed_in_the_ui_reaches_another_daemons_tail(
    make_daemon: MakeDaemon, room: str
) -> None:
    alice, bob = make_daemon("alice"), make_daemon("bob")
    alice.join(room)
    bob.join(room)
    bob_tail = bob.tail(room, "--since", "0")

    async def script(app: ChatApp, pilot: Pilot[Any]) -> None:
        assert app.state.current == room
        await type_line(pilot, "/bogus words")
        await until(pilot, lambda: shows(app, "unknown command /bogus"), "the hint")
        await type_line(pilot, "//x is not a command")
        await type_line(pilot, "hello from the ui")
        first, second = await asyncio.to_thread(bob_tail.messages, 2)
        # The first message to reach bob is the escaped one: /bogus went nowhere.
        assert (first["text"], first["sender"]) == ("/x is not a command", "alice")
        assert (second["text"], second["sender"], second["verified"]) == (
            "hello from the ui",
            "alice",
            True,
        )
        await until(pilot, lambda: shows(app, "<alice> hello from the ui"), "the own echo")
        # Up brings back what was typed.
        await pilot.press("up")
        assert app.query_one("#input", Input).value == "hello from the ui"
        # This chatd has no presence yet: the panel says so (chatd answers -32601).
        await until(pilot, lambda: app.state.presence is not None, "chatd's answer to who")
        members = str(app.query_one("#members", Static).render())
        if app.state.presence is False:
            assert "presence not available" in members
        else:
            assert "alice" in members

    drive(alice, room, script)


def test_incoming_messages_land_in_their_room_with_their_mark(
    make_daemon: MakeDaemon, room: str
) -> None:
    """A message under a pinned name with another key shows as <alice?> in its own room."""
    alice, bob = make_daemon("alice"), make_daemon("bob")
    forger = make_daemon("alice")  # same name and passphrase, another identity
    other = f"{room}-b"
    for d in (alice, bob, forger):
        d.join(room)
    bob.join(other)

    async def script(app: ChatApp, pilot: Pilot[Any]) -> None:
        assert app.state.current == other
        alice.ok("send", room, "the real alice")
        await until(pilot, lambda: app.state.rooms[room].unread == 1, "alice's message")
        forger.ok("send", room, "trust me, I am alice")
        await until(pilot, lambda: app.state.rooms[room].unread == 2, "the forged message")
        assert room_labels(app) == [f"{room} (2)", other]
        assert not shows(app, "alice")  # the room shown is the other one
        await pilot.press("ctrl+p")
        assert app.state.current == room
        # Switching to the room clears its unread count.
        assert app.state.rooms[room].unread == 0
        assert room_labels(app) == [room, other]
        lines = log_lines(app)
        real = next(i for i, line in enumerate(lines) if "<alice> the real alice" in line)
        forged = next(i for i, line in enumerate(lines) if "<alice?> trust me, I am alice" in line)
        assert real < forged
        assert shows(app, "now signs with another key")  # the key_changed notice
        await pilot.press("ctrl+n")
        assert app.state.current == other and not shows(app, "alice")

    drive(bob, other, script)


def test_switching_rooms_clears_the_unread_count(make_daemon: MakeDaemon, room: str) -> None:
    alice, bob = make_daemon("alice"), make_daemon("bob")
    second, third = f"{room}-2", f"{room}-3"
    for name in (room, second, third):
        alice.join(name)
        bob.join(name)

    async def script(app: ChatApp, pilot: Pilot[Any]) -> None:
        assert app.state.current == room  # no ROOM: the first joined room
        alice.ok("send", third, "one for the third room")
        alice.ok("send", third, "and another")
        alice.ok("send", second, "one for the second")
        await until(
            pilot,
            lambda: (app.state.rooms[second].unread, app.state.rooms[third].unread) == (1, 2),
            "the three messages",
        )
        assert room_labels(app) == [room, f"{second} (1)", f"{third} (2)"]
        await pilot.press("ctrl+n")
        assert room_labels(app) == [room, second, f"{third} (2)"]
        await pilot.press("ctrl+n")
        assert room_labels(app) == [room, second, third]
        assert shows(app, "<alice> one for the third room") and shows(app, "<alice> and another")
        # A message in the room shown is read as it comes: no count.
        alice.ok("send", third, "seen at once")
        await until(pilot, lambda: shows(app, "<alice> seen at once"), "the live message")
        assert app.state.rooms[third].unread == 0

    drive(bob, None, script)


def test_join_with_a_masked_passphrase_and_leave_from_inside(
    make_daemon: MakeDaemon, room: str
) -> None:
    alice, bob = make_daemon("alice"), make_daemon("bob")
    legacy = f"{room}-old"
    alice.join(legacy, PASSPHRASE, "--legacy")
    secret = "a passphrase nobody sees"

    async def script(app: ChatApp, pilot: Pilot[Any]) -> None:
        assert app.state.rooms == {} and app.state.current is None
        await type_line(pilot, f"/join {legacy} --legacy")
        await pilot.press(*PASSPHRASE, "enter", *PASSPHRASE, "enter")
        await until(pilot, lambda: app.state.current == legacy, "the joined legacy room")
        assert room_labels(app) == [f"{legacy} !legacy"]
        title = str(app.query_one("#title", Static).render())
        assert "legacy room" in title
        alice.ok("send", legacy, "from the old world")
        # Legacy messages are never verified: the same mark as an unknown key.
        await until(pilot, lambda: shows(app, "<alice?> from the old world"), "the legacy msg")

        # F2 asks for the room too; the passphrase is never on the screen.
        await pilot.press("f2", *room, "enter", *secret)
        screen = app.export_screenshot()
        assert secret not in screen and secret.replace(" ", "&#160;") not in screen
        await pilot.press("enter", *secret, "enter")
        await until(pilot, lambda: app.state.current == room, "the joined room")
        assert sorted(bob.status()["rooms"]) == sorted([room, legacy])

        await type_line(pilot, "/leave")
        await pilot.press("y")
        await until(pilot, lambda: room not in app.state.rooms, "the room to go")
        assert app.state.current == legacy
        assert bob.status()["rooms"] == [legacy]

    drive(bob, None, script)
    assert secret not in bob.log()


def test_scrollback_pages_older_messages_from_the_store(make_daemon: MakeDaemon, room: str) -> None:
    alice = make_daemon("alice")
    alice.join(room)
    count = HISTORY_LINES + 50
    alice.ok("send", room, input="".join(f"line {i:03d}\n" for i in range(count)))

    async def script(app: ChatApp, pilot: Pilot[Any]) -> None:
        held = app.state.rooms[room]
        assert held.oldest_seq == count - HISTORY_LINES + 1 and held.more_above
        assert not shows(app, "line 000") and shows(app, f"line {count - 1:03d}")
        await until(pilot, lambda: held.oldest_seq == 1, "the oldest page", keys=("pageup",))
        await until(pilot, lambda: shows(app, "line 000"), "the first message on screen")
        seqs = [e["seq"] for e in held.entries if e.get("type") == "message"]
        assert seqs == list(range(1, count + 1))

    drive(alice, room, script)


def _page_up(pilot: Pilot[Any]) -> bool:
    asyncio.get_running_loop().create_task(pilot.press("pageup"))
    return True


def test_broker_down_and_up_show_as_notices(
    make_broker: MakeBroker, make_daemon: MakeDaemon, room: str
) -> None:
    broker = make_broker()
    alice = make_daemon("alice", on=broker)
    alice.join(room)

    def status_line(app: ChatApp) -> str:
        return str(app.query_one("#status", Static).render())

    async def script(app: ChatApp, pilot: Pilot[Any]) -> None:
        assert "connected" in status_line(app) and "NOT" not in status_line(app)
        await asyncio.to_thread(broker.stop)
        await until(pilot, lambda: "NOT connected" in status_line(app), "the broker down")
        # chatd's broker_down notice, in the room shown
        assert any(e.get("kind") == "broker_down" for e in app.state.rooms[room].entries)
        assert any(line.startswith("-- ") and broker.url in line for line in log_lines(app))
        await asyncio.to_thread(broker.start)
        await until(pilot, lambda: app.state.broker_connected, "the broker up again")
        assert "NOT" not in status_line(app)

    drive(alice, room, script)


def burst(app: ChatApp, text: str) -> None:
    """Keys as a terminal delivers a fast typist's (or a script's): all at once,
    without waiting for the app between them ("\r" is Enter)."""
    for ch in text:
        app.post_message(events.Key("enter", "\r") if ch == "\r" else events.Key(ch, ch))


def test_lines_typed_ahead_stay_apart_and_a_passphrase_is_never_sent(
    make_daemon: MakeDaemon, room: str
) -> None:
    alice, bob = make_daemon("alice"), make_daemon("bob")
    alice.join(room)
    bob.join(room)
    bob_tail = bob.tail(room, "--since", "0")
    secret = "typedaheadsecret"

    async def script(app: ChatApp, pilot: Pilot[Any]) -> None:
        burst(app, "one\rtwo\r")
        first, second = await asyncio.to_thread(bob_tail.messages, 2)
        assert (first["text"], second["text"]) == ("one", "two")
        # Typed before the passphrase dialog has the focus: dropped, never sent or shown.
        burst(app, f"/join {room}-x\r{secret}\r{secret}\r")
        await until(pilot, lambda: isinstance(app.screen, JoinScreen), "the passphrase dialog")
        await pilot.press("escape")
        await type_line(pilot, "three")
        assert (await asyncio.to_thread(bob_tail.messages, 1))[0]["text"] == "three"
        assert secret not in app.export_screenshot()
        assert not any(secret in line for line in log_lines(app))

    drive(alice, room, script)
    assert secret not in alice.ok("tail", room, "--no-follow", "-n", "100")
