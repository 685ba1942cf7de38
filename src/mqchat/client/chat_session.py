"""``chatctl chat`` on a terminal: incoming messages above, your line below.

A line that starts with ``/`` is a command, never a message: a typo such as
``/qiut`` must not reach the room. ``//text`` sends ``/text``.
"""

from __future__ import annotations

import sys
import threading

from mqchat.client.ipc_client import Client
from mqchat.client.render import Renderer, escape
from mqchat.client.room_feed import RoomFeed
from mqchat.client.sending import send_one
from mqchat.client.ui.commands import ESCAPED_SLASH
from mqchat.client.ui.members import ask_who, member_line, sorted_members
from mqchat.errors import MqchatError

HISTORY_LINES = 20
QUIT = "/quit"
COMMANDS = {
    "/help": "list these commands",
    "/who": "list the room's members",
    QUIT: "leave the chat (Ctrl-D too)",
    f"{ESCAPED_SLASH}text": "send /text",
}


class _Screen:
    """Prints lines above the input line and redraws what the user was typing."""

    def __init__(self, prompt: str) -> None:
        self.prompt = prompt
        self.lock = threading.Lock()
        self.reading = False
        """input() shows the prompt now: a line printed above must redraw it. Between
        two input() calls (a command's output) it must not, or input() adds a second."""
        try:
            import readline

            self._buffer = readline.get_line_buffer
        except ImportError:  # pragma: no cover - readline is missing on some builds
            self._buffer = lambda: ""

    def above(self, line: str) -> None:
        with self.lock:
            redraw = f"{self.prompt}{self._buffer()}" if self.reading else ""
            sys.stdout.write(f"\r\x1b[K{line}\n{redraw}")
            sys.stdout.flush()


def _command_lines(c: Client, room: str, line: str) -> list[str] | None:
    """What a command line prints; None for ``/quit``."""
    name = line.split(maxsplit=1)[0]
    if name == QUIT:
        return None
    if name == "/help":
        width = max(map(len, COMMANDS))
        return [f"-- {usage:<{width}}  {what}" for usage, what in COMMANDS.items()]
    if name == "/who":
        result = ask_who(c, room)
        if result is None:
            return ["-- /who is not available yet: this chatd does not report presence"]
        members = sorted_members(result.get("members") or [])
        return [f"-- members of {escape(room)}: {len(members)}"] + [
            f"--   {member_line(m)}" for m in members
        ]
    return [
        f"-- unknown command {escape(name)}: nothing was sent; /help lists the commands, "
        f"and {ESCAPED_SLASH} at the start sends a line that starts with /"
    ]


def _take_line(c: Client, room: str, line: str, screen: _Screen) -> bool:
    """Send the line, or run the command it is; False to end the chat."""
    if line.lstrip().startswith(ESCAPED_SLASH):
        line = line.replace("/", "", 1)
    elif line.lstrip().startswith("/"):
        printed = _command_lines(c, room, line)
        for shown in printed or []:
            screen.above(shown)
        return printed is not None
    send_one(c, room, line, lambda m: screen.above(f"-- {m}"))
    return True


def _read_line(screen: _Screen) -> str:
    """input() with the prompt, telling the screen while the prompt is shown."""
    try:
        with screen.lock:
            screen.reading = True
        return input(screen.prompt)
    finally:
        with screen.lock:
            screen.reading = False


def run_chat(c: Client, room: str, renderer: Renderer) -> None:
    prompt = f"{room}> "
    screen = _Screen(prompt)
    # The receiving thread gets its own connection: it asks for history to fill
    # gaps while this thread sends, and a ZeroMQ socket is not for two threads.
    listener = Client(c.runtime_dir, c.timeout)
    listener.subscribe([room], notices=True, say_away=True)
    feed = RoomFeed(listener, [room])
    for event in feed.history(lines=HISTORY_LINES, since=None):
        sys.stdout.write(renderer.message(event) + "\n")
    stop = threading.Event()

    def receive() -> None:
        try:
            for event in feed.follow(timeout=0.2):
                if stop.is_set():
                    return
                if event is None:
                    continue
                if event["type"] == "notice":
                    screen.above(renderer.notice(event))
                elif event["type"] == "message":
                    screen.above(renderer.message(event))
        except MqchatError as exc:  # the stream ended (chatd closed it, or is gone)
            screen.above(f"-- ERROR: {exc.message}; no more incoming messages")

    receiver = threading.Thread(target=receive, name="chat-events", daemon=True)
    receiver.start()
    try:
        while True:
            try:
                line = _read_line(screen)
            except EOFError:
                sys.stdout.write("\n")
                break
            with screen.lock:
                sys.stdout.write("\x1b[1A\x1b[2K")  # the echo of our own line replaces it
            if not line.strip():
                continue
            try:
                if not _take_line(c, room, line, screen):
                    break
            except MqchatError as exc:
                if exc.exit_code == 3:
                    raise
                screen.above(f"-- ERROR: {exc.message}")
    except KeyboardInterrupt:
        sys.stdout.write("\n")
    finally:
        stop.set()
        receiver.join(1.0)
        if not receiver.is_alive():
            listener.close()
