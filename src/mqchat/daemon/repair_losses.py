"""Numbers that cannot be repaired: told to the room's tails as a ``lost`` notice,
and logged at most once per ``LOG_LOST_EVERY_S`` (a member's heads can give
numbers up again and again)."""

from __future__ import annotations

import logging
from collections.abc import Callable

from mqchat.daemon.store.gaps import StreamId
from mqchat.daemon.store.memory import ReceiverMemory
from mqchat.daemon.unit_of_work import UnitOfWork
from mqchat.protocol import gaps
from mqchat.protocol.ipc_events import notice_event
from mqchat.protocol.signing import fingerprint, format_fingerprint

log = logging.getLogger("mqchat.daemon.repair")

LOG_LOST_EVERY_S = 10.0


class LossNotices:
    def __init__(
        self,
        memory: ReceiverMemory,
        work: UnitOfWork,
        counts: dict[str, int],
        monotonic: Callable[[], float],
    ) -> None:
        self._memory = memory
        self._work = work
        self.counts = counts
        self._monotonic = monotonic
        self._lost_logged_at, self._lost_unlogged = float("-inf"), 0

    def lost(self, sid: StreamId, name: str, ranges: tuple[gaps.Range, ...]) -> None:
        if not ranges:
            return
        room, key, stream = sid
        n = gaps.count(ranges)
        self.counts["lost"] += n
        fp = fingerprint(key)
        what = "message" if n == 1 else "messages"
        pin = self._memory.pin(room, name)
        verified = pin is not None and pin.key == key
        # A key not pinned to the name it claims must not put a loss under that
        # name unmarked (issue 22 item 4).
        who = name if verified else f"{name}? (key {format_fingerprint(fp)}, not pinned to {name})"
        now = self._monotonic()
        self._lost_unlogged += n
        if now - self._lost_logged_at >= LOG_LOST_EVERY_S:
            # A member's heads can give numbers up again and again: one line per 10 s.
            log.warning("%d messages could not be repaired; shown as lost", self._lost_unlogged)
            self._lost_logged_at, self._lost_unlogged = now, 0
        self._work.publish(
            room,
            notice_event(
                room,
                "lost",
                f"{n} {what} from {who} in {room} could not be repaired and are lost "
                f"(the sender no longer has them, or did not answer in time)",
                sender=name,
                fingerprint=fp,
                verified=verified,
                count=n,
                stream=stream,
                ranges=[list(r) for r in ranges],
            ),
        )
