"""A wake-up at the earliest of the times asked for: work that is due later is
woken when it is due, not found by a polling tick."""

from __future__ import annotations

import asyncio
from collections.abc import Callable


class Deadline:
    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        monotonic: Callable[[], float],
        wake: Callable[[], None],
    ) -> None:
        self._loop = loop
        self._monotonic = monotonic
        self._wake = wake
        self._timer: asyncio.TimerHandle | None = None
        self._at = float("inf")

    def at(self, when: float) -> None:
        """Wake at ``when`` (on ``monotonic``'s clock), unless a wake-up is due before."""
        if self._timer is not None and self._at <= when:
            return
        self.cancel()
        self._at = when
        self._timer = self._loop.call_later(max(0.0, when - self._monotonic()), self._due)

    def _due(self) -> None:
        self._timer, self._at = None, float("inf")
        self._wake()

    def cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer, self._at = None, float("inf")
