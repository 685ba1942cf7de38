"""``chatctl chat`` on a terminal: incoming messages above, your line below."""

from __future__ import annotations

import sys
import threading

from mqchat.client.ipc_client import Client
from mqchat.client.render import Renderer
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
    c.subscribe([room], notices=True)
    history = c.call("history", {"room": room, "limit": HISTORY_LINES})
    for event in history["messages"]:
        sys.stdout.write(renderer.message(event) + "\n")
    last = {"seq": int(history["last_seq"])}
    stop = threading.Event()

    def receive() -> None:
        for event in c.events(timeout=0.2):
            if stop.is_set():
                return
            if event is None:
                continue
            if event["type"] == "notice":
                screen.above(renderer.notice(event))
            elif event["seq"] > last["seq"]:
                last["seq"] = event["seq"]
                screen.above(renderer.message(event))

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
