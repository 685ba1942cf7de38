"""Sending: one message, or a stream of stdin lines pipelined over one connection."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from mqchat.client.ipc_client import Client, result_of
from mqchat.errors import DaemonRefused, MessageTooLong, MqchatError, UsageError
from mqchat.protocol.ipc import Reply
from mqchat.protocol.limits import check_text

WINDOW = 512
"""Requests in flight at once. chatd handles one client's sends in order."""

QUEUED_NOTE = "queued: the broker is not reachable now; chatd will send when it is"


def send_one(c: Client, room: str, text: str, err: Callable[[str], None]) -> None:
    if not text.strip():
        raise UsageError("the message is empty")
    check_text(text)
    result = c.call("send", {"room": room, "text": text})
    if result.get("queued"):
        err(QUEUED_NOTE)


class _Stream:
    def __init__(self, c: Client, err: Callable[[str], None]) -> None:
        self.c = c
        self.err = err
        self.outstanding = 0
        self.failure: MqchatError | None = None
        self.warned = False

    def take(self, reply: Reply) -> None:
        self.outstanding -= 1
        try:
            result = result_of(reply)
        except DaemonRefused as exc:
            self.failure = self.failure or exc
            return
        if isinstance(result, dict) and result.get("queued") and not self.warned:
            self.warned = True
            self.err(QUEUED_NOTE)

    def wait_one(self) -> None:
        reply = self.c.receive()
        if reply is None:
            raise self.c.unavailable()
        self.take(reply)

    def drain_ready(self) -> None:
        while self.outstanding:
            reply = self.c.receive(0)
            if reply is None:
                return
            self.take(reply)


def send_lines(c: Client, room: str, lines: Iterable[str], err: Callable[[str], None]) -> int:
    """Send each non-blank line as one message, in order; return how many were sent."""
    stream = _Stream(c, err)
    sent = 0
    too_long: MqchatError | None = None
    for lineno, raw in enumerate(lines, 1):
        text = raw.rstrip("\n").removesuffix("\r")
        if not text.strip():
            continue
        try:
            check_text(text)
        except MessageTooLong as exc:
            too_long = MessageTooLong(f"line {lineno}: {exc.message}; nothing after it was sent")
            break
        c.submit("send", {"room": room, "text": text})
        stream.outstanding += 1
        sent += 1
        while stream.outstanding >= WINDOW:
            stream.wait_one()
        stream.drain_ready()
        if stream.failure is not None:
            break
    while stream.outstanding:
        stream.wait_one()
    if stream.failure is not None:
        raise stream.failure
    if too_long is not None:
        raise too_long
    return sent
