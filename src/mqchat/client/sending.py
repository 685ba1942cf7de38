"""Sending: one message, or a stream of stdin lines pipelined over one connection."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable

from mqchat.client.ipc_client import START_HINT, Client, result_of
from mqchat.errors import (
    DaemonRefused,
    DaemonUnavailable,
    MessageTooLong,
    MqchatError,
    UsageError,
)
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
    """The requests of one stream in flight, and what chatd has answered so far.

    chatd handles one client's sends in order, so replies come in the order of
    the lines, and ``accepted`` lines are always the first ones sent.
    """

    def __init__(self, c: Client, err: Callable[[str], None]) -> None:
        self.c = c
        self.err = err
        self.in_flight: deque[int] = deque()  # stdin line numbers, oldest first
        self.accepted = 0
        self.last_accepted_line = 0
        self.failure: MqchatError | None = None
        self.warned = False

    @property
    def outstanding(self) -> int:
        return len(self.in_flight)

    def submit(self, room: str, text: str, lineno: int) -> None:
        self.c.submit("send", {"room": room, "text": text})
        self.in_flight.append(lineno)

    def take(self, reply: Reply) -> None:
        lineno = self.in_flight.popleft()
        try:
            result = result_of(reply)
        except DaemonRefused as exc:
            self.failure = self.failure or DaemonRefused(f"line {lineno}: {exc.message}", exc.code)
            return
        self.accepted += 1
        self.last_accepted_line = lineno
        if isinstance(result, dict) and result.get("queued") and not self.warned:
            self.warned = True
            self.err(QUEUED_NOTE)

    def wait_one(self) -> None:
        reply = self.c.receive()
        if reply is None:
            raise self.stopped_answering()
        self.take(reply)

    def drain_ready(self) -> None:
        while self.outstanding:
            reply = self.c.receive(0)
            if reply is None:
                return
            self.take(reply)

    def stopped_answering(self) -> DaemonUnavailable:
        """chatd died or hung mid-stream: say where the confirmed part ends."""
        sent = self.accepted + self.outstanding
        where = f" (the last was stdin line {self.last_accepted_line})" if self.accepted else ""
        return DaemonUnavailable(
            f"chatd stopped answering after accepting {self.accepted} of the {sent} lines "
            f"sent to it{where}; the rest may not have been sent. Is it running? {START_HINT}"
        )


def send_lines(c: Client, room: str, lines: Iterable[str], err: Callable[[str], None]) -> int:
    """Send each non-blank line as one message, in order; return how many were sent.

    A line that cannot be sent (too long, not UTF-8) ends the stream there,
    after the lines before it were confirmed.
    """
    stream = _Stream(c, err)
    bad_line: MqchatError | None = None
    for lineno, raw in enumerate(lines, 1):
        text = raw.rstrip("\n").removesuffix("\r")
        if not text.strip():
            continue
        try:
            check_text(text)
        except MessageTooLong as exc:
            bad_line = MessageTooLong(f"line {lineno}: {exc.message}; nothing after it was sent")
            break
        except UsageError:  # stdin_text() turned bytes that are not UTF-8 into surrogates
            bad_line = UsageError(f"line {lineno} is not UTF-8 text; nothing after it was sent")
            break
        stream.submit(room, text, lineno)
        while stream.outstanding >= WINDOW:
            stream.wait_one()
        stream.drain_ready()
        if stream.failure is not None:
            break
    while stream.outstanding:
        stream.wait_one()
    if stream.failure is not None:
        raise stream.failure
    if bad_line is not None:
        raise bad_line
    return stream.accepted
