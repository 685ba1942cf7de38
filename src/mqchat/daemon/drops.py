"""Counted, rate-limited log lines for input that is dropped.

A hostile peer can send thousands of bad payloads a second; each is counted
(``status`` shows the counters) but at most one line per reason is logged per
interval, with the number suppressed since the last line.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable

from mqchat.drop_reasons import is_routine

log = logging.getLogger(__name__)


class DropCounter:
    def __init__(self, interval_s: float = 10.0, clock: Callable[[], float] = time.monotonic):
        self.counts: Counter[str] = Counter()
        self._interval = interval_s
        self._clock = clock
        self._last_logged: dict[str, float] = {}
        self._suppressed: Counter[str] = Counter()

    def drop(self, reason: str, detail: str = "") -> bool:
        """Count one dropped item; log it unless this reason logged recently.

        True when a line was logged: a caller with more to say (a traceback) says
        it then, and so as rarely."""
        self.counts[reason] += 1
        now = self._clock()
        last = self._last_logged.get(reason)
        if last is not None and now - last < self._interval:
            self._suppressed[reason] += 1
            return False
        self._last_logged[reason] = now
        more = self._suppressed.pop(reason, 0)
        # Routine drops (a broker's redelivery, a repaired copy) are part of normal
        # operation: a WARNING for each would teach users to ignore the log.
        log.log(
            logging.INFO if is_routine(reason) else logging.WARNING,
            "dropped %s%s%s",
            reason.replace("_", " "),
            f" ({detail})" if detail else "",
            f"; {more} more since the last report" if more else "",
        )
        return True

    def mark(self) -> dict[str, int]:
        """The counts now, for ``undo``."""
        return dict(self.counts)

    def undo(self, mark: dict[str, int]) -> None:
        """The counts as they were at ``mark``: what was counted since is counted again.

        (Its log lines are not taken back: they are rate-limited anyway.)"""
        self.counts.clear()
        self.counts.update(mark)

    def as_dict(self) -> dict[str, int]:
        return dict(self.counts)
