"""``chatctl chat`` on a terminal: incoming messages above, your line below."""

from __future__ import annotations

import sys
import threading

from mqchat.client.ipc_client import Client
from mqchat.client.render import Renderer
from mqchat.client.room_feed import RoomFeed
from mqchat.client.sending import send_one
from mqchat.errors import MqchatError

HISTORY_LINES = 20
QUIT = "/quit"


class _Screen:
    """Prints lines above the input line and redraws what the user was typing."""

    def __init__(self, prompt: str) -> None:
        self.prompt = prompt
        self.lock = threading.Lock()
        try:
            import readline

            self._buffer = readline.get_line_buffer
        except ImportError:  # pragma: no cover - readline is missing on some builds
            self._buffer = lambda: ""

    def above(self, line: str) -> None:
        with self.lock:
            sys.stdout.write(f"\r\x1b[K{line}\n{self.prompt}{self._buffer()}")
            sys.stdout.flush()


def run_chat(c: Client, room: str, renderer: Renderer) -> None:
    prompt = f"{room}> "
    screen = _Screen(prompt)
    # The receiving thread gets its own connection: it asks for history to fill
    # gaps while this thread sends, and a ZeroMQ socket is not for two threads.
    listener = Client(c.runtime_dir, c.timeout)
    listener.subscribe([room], notices=True)
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
                line = input(prompt)
            except EOFError:
                sys.stdout.write("\n")
                break
            with screen.lock:
                sys.stdout.write("\x1b[1A\x1b[2K")  # the echo of our own line replaces it
            if line.strip() == QUIT:
                break
            if not line.strip():
                continue
            try:
                send_one(c, room, line, lambda m: screen.above(f"-- {m}"))
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
