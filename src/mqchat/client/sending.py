"""Sending: one message, or a stream of stdin lines, many lines a request, pipelined.

A stream sends lines as soon as it can and batches only what is already
waiting: while no request is in flight, a line goes out at once, alone; while
requests are in flight, the lines that arrive meanwhile gather into the next
request (up to ``MAX_SEND_TEXTS`` texts and 256 KiB), which leaves when it is
full or when a reply comes. No timer is involved, so an idle stream (``tail -f
log | chatctl send ROOM``) sends each line with no delay, and a file is sent
in a few hundred requests rather than one per line.
"""

from __future__ import annotations

import json
import threading
from collections import deque
from collections.abc import Callable, Iterable
from typing import NamedTuple

from mqchat.client.ipc_client import Client, result_of, start_hint
from mqchat.errors import (
    DaemonRefused,
    DaemonUnavailable,
    MessageTooLong,
    MqchatError,
    UsageError,
)
from mqchat.protocol.ipc import MAX_REQUEST_BYTES, MAX_SEND_TEXTS, Reply
from mqchat.protocol.limits import check_text

WINDOW_LINES = 4096
"""Lines in flight at once (in requests sent, not yet answered). chatd handles one
client's requests in order."""
WINDOW_BYTES = 8 * 1024 * 1024
"""And text of at most about this many bytes in flight: chatd's memory watchdog
(docs/ipc.md, "Requests") takes 32 MiB of growth for a request that never ends, and
a stream of 16 KiB lines must stay well below that."""
REQUEST_BYTES = MAX_REQUEST_BYTES - 1024
"""The texts of one request, as JSON; the rest of the request fits in what is left."""
READ_AHEAD = 2 * WINDOW_LINES
"""Lines read from stdin ahead of what was sent, at most."""

QUEUED_NOTE = "queued: the broker is not reachable now; chatd will send when it is"


def send_one(c: Client, room: str, text: str, err: Callable[[str], None]) -> None:
    if not text.strip():
        raise UsageError("the message is empty")
    check_text(text)
    result = c.call("send", {"room": room, "text": text})
    if result.get("queued"):
        err(QUEUED_NOTE)


class _Sent(NamedTuple):
    first_line: int
    last_line: int
    how_many: int
    size: int


class _Stream:
    """The requests of one stream in flight, and what chatd has answered so far.

    chatd handles one client's sends in order, so replies come in the order of
    the lines, and ``accepted`` lines are always the first ones sent.
    """

    def __init__(self, c: Client, err: Callable[[str], None]) -> None:
        self.c = c
        self.err = err
        self.in_flight: deque[_Sent] = deque()  # oldest first
        self.lines_in_flight = 0
        self.bytes_in_flight = 0
        self.accepted = 0
        self.last_accepted_line = 0
        self.failure: MqchatError | None = None
        self.warned = False

    @property
    def outstanding(self) -> int:
        return len(self.in_flight)

    def submit(self, room: str, lines: list[tuple[int, str]]) -> None:
        texts = [text for _, text in lines]
        if len(texts) == 1:  # as any chatd takes it
            self.c.submit("send", {"room": room, "text": texts[0]})
        else:
            self.c.submit("send", {"room": room, "texts": texts})
        size = sum(len(text) for text in texts)
        self.in_flight.append(_Sent(lines[0][0], lines[-1][0], len(lines), size))
        self.lines_in_flight += len(lines)
        self.bytes_in_flight += size

    def take(self, reply: Reply) -> None:
        sent = self.in_flight.popleft()
        self.lines_in_flight -= sent.how_many
        self.bytes_in_flight -= sent.size
        try:
            result = result_of(reply)
        except DaemonRefused as exc:
            refused = DaemonRefused(f"line {sent.first_line}: {exc.message}", exc.code)
            self.failure = self.failure or refused
            return
        self.accepted += sent.how_many
        self.last_accepted_line = sent.last_line
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
        sent = self.accepted + self.lines_in_flight
        where = f" (the last was stdin line {self.last_accepted_line})" if self.accepted else ""
        return DaemonUnavailable(
            f"chatd stopped answering after accepting {self.accepted} of the {sent} lines "
            f"sent to it{where}; the rest may not have been sent. Is it running? "
            f"{start_hint(self.c.runtime_dir)}"
        )


class _Pending:
    """The lines of the next request, and what their texts weigh as JSON."""

    def __init__(self) -> None:
        self.lines: list[tuple[int, str]] = []
        self.size = 0

    def fits(self, size: int) -> bool:
        return len(self.lines) < MAX_SEND_TEXTS and self.size + size <= REQUEST_BYTES

    def add(self, lineno: int, text: str, size: int) -> None:
        self.lines.append((lineno, text))
        self.size += size

    @property
    def full(self) -> bool:
        return len(self.lines) >= MAX_SEND_TEXTS

    def take(self) -> list[tuple[int, str]]:
        lines, self.lines, self.size = self.lines, [], 0
        return lines


_json_ascii = json.encoder.encode_basestring_ascii
"""What json.dumps(text) does for a string, in C, without the encoder around it."""


def json_size(text: str) -> int:
    """What ``text`` adds to a request's list of texts (json.dumps escapes non-ASCII)."""
    return len(_json_ascii(text)) + 1  # and a comma


class _ReadAhead:
    """The lines of ``lines``, numbered, read by a thread of this stream's own.

    The thread lets the stream ask "are lines waiting?" of any iterable (stdin
    blocks) and take all that wait at once: the hand-over costs a lock a line in
    the thread and one a batch in the stream (a queue's get and put cost ~4 µs a
    line: issue 24). It ends at the end of the input. A stream that stops early
    leaves it blocked on stdin until chatctl exits (it is a daemon thread).
    """

    def __init__(self, lines: Iterable[str]) -> None:
        self.ended = False
        self._ready = threading.Condition()
        self._lines: list[tuple[int, str]] = []
        self._done = False
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._read, args=(lines,), name="stdin", daemon=True)
        self._thread.start()

    def _read(self, lines: Iterable[str]) -> None:
        ready = self._ready
        error: BaseException | None = None
        try:
            for numbered in enumerate(lines, 1):
                with ready:
                    while len(self._lines) >= READ_AHEAD:
                        ready.wait()
                    self._lines.append(numbered)
                    if len(self._lines) == 1:
                        ready.notify()  # the stream may wait for a first line
        except BaseException as exc:  # handed to the stream, which raises it
            error = exc
        with ready:
            self._done, self._error = True, error
            ready.notify()

    def take(self, *, wait: bool) -> list[tuple[int, str]]:
        """Every (line number, line) read since the last take, oldest first; waits for
        one if ``wait``. Empty at the end (then ``ended``) or when none waits. An error
        reading the input is raised after the lines read before it were taken."""
        if self.ended:
            return []
        with self._ready:
            while wait and not self._lines and not self._done:
                self._ready.wait()
            lines, self._lines = self._lines, []
            if lines:
                self._ready.notify()  # the thread may wait for room
                return lines
            if not self._done:
                return []
        self.ended = True
        if self._error is not None:
            raise self._error
        return []


def send_lines(c: Client, room: str, lines: Iterable[str], err: Callable[[str], None]) -> int:
    """Send each non-blank line as one message, in order; return how many were sent.

    A line that cannot be sent (too long, not UTF-8) ends the stream there,
    after the lines before it were sent and confirmed.
    """
    stream = _Stream(c, err)
    pending = _Pending()
    source = _ReadAhead(lines)

    def send_pending() -> None:
        while stream.lines_in_flight >= WINDOW_LINES or stream.bytes_in_flight >= WINDOW_BYTES:
            stream.wait_one()
        stream.submit(room, pending.take())

    bad_line: MqchatError | None = None
    while stream.failure is None and bad_line is None:
        idle = not stream.outstanding and not pending.lines
        taken = source.take(wait=idle)
        if not taken:
            if source.ended:
                break
            # Nothing waits: send what has gathered if chatd is idle, else wait for
            # a reply (more lines may gather meanwhile).
            if not stream.outstanding:
                send_pending()
            else:
                stream.wait_one()
            continue
        for lineno, raw in taken:
            text = raw.rstrip("\n").removesuffix("\r")
            if not text.strip():
                continue
            bad_line = _unsendable(lineno, text)
            if bad_line is not None:
                break
            size = json_size(text)
            if not pending.fits(size):
                send_pending()
            pending.add(lineno, text, size)
            if pending.full:
                send_pending()
            if stream.failure is not None:
                break
        stream.drain_ready()
    if pending.lines and stream.failure is None:
        send_pending()
    while stream.outstanding:
        stream.wait_one()
    if stream.failure is not None:
        raise stream.failure
    if bad_line is not None:
        raise bad_line
    return stream.accepted


def _unsendable(lineno: int, text: str) -> MqchatError | None:
    """Why a line cannot be sent (it ends the stream there), or None."""
    try:
        check_text(text)
    except MessageTooLong as exc:
        return MessageTooLong(f"line {lineno}: {exc.message}; nothing after it was sent")
    except UsageError:  # stdin_text() turned bytes that are not UTF-8 into surrogates
        return UsageError(f"line {lineno} is not UTF-8 text; nothing after it was sent")
    return None
