"""Gaps in a sender's stream: what a receiver lacks, holds back, asks for and gives up.

Pure, like mqchat.protocol.receiving: the daemon keeps one ``StreamGaps`` per
(sender key, room, stream) in its store, passes each text and heads record of
that stream through these functions, and does what comes back (docs/protocol.md
§20). Nothing here reads a clock: times are given by the caller, in ms.

- ``hw`` is the highest seq received (or announced by heads); ``missing`` the
  numbers at or below ``hw`` that have not arrived, as ranges, each with the
  time it was found.
- A text is *held back* while a number below it is missing, so that a sender's
  messages are shown in its order; it is released once everything below it has
  arrived or been given up.
- A number is *lost* when the sender's heads say it no longer holds it (its
  ``trail`` passed it), when it has been missing for longer than the caller's
  limit (24 hours by default), or when more than ``MAX_MISSING`` numbers of one
  stream are missing (the oldest go first).
"""

from __future__ import annotations

from typing import NamedTuple

MAX_MISSING = 4096
"""Numbers of one stream a receiver waits for at most; past that the oldest are lost."""
MAX_RANGES = 32
"""Ranges in one repair request (docs/protocol.md §14.3)."""


class Gap(NamedTuple):
    """Missing numbers ``first`` to ``last`` (inclusive), found at ``found_ms``."""

    first: int
    last: int
    found_ms: int

    @property
    def size(self) -> int:
        return self.last - self.first + 1


Range = tuple[int, int]


class StreamGaps(NamedTuple):
    """What a receiver knows of one sender's stream in one room.

    A NamedTuple: the receiver builds one for every text it shows (issue 24)."""

    hw: int
    missing: tuple[Gap, ...] = ()
    final: bool = False
    """The sender said the stream will never send again (heads, ``final``)."""

    @property
    def first_missing(self) -> int | None:
        return self.missing[0].first if self.missing else None

    @property
    def missing_count(self) -> int:
        return sum(g.size for g in self.missing)

    def is_missing(self, seq: int) -> bool:
        return any(g.first <= seq <= g.last for g in self.missing)

    def holds_back(self, seq: int) -> bool:
        """Whether a text at ``seq`` must wait: a number below it is missing."""
        first = self.first_missing
        return first is not None and first < seq

    @property
    def done(self) -> bool:
        """Final and complete: nothing more will come of this stream."""
        return self.final and not self.missing


class Step(NamedTuple):
    """What a text did to its stream.

    ``outcome``: ``"new"`` (above ``hw``), ``"fill"`` (a missing number) or
    ``"old"`` (at or below ``hw`` and not missing: a replay or a duplicate).
    ``lost``: ranges given up because too many were missing.
    """

    gaps: StreamGaps
    outcome: str
    lost: tuple[Range, ...] = ()


def start(seq: int, *, heard_before: bool) -> StreamGaps:
    """A stream first seen at ``seq``: from a sender heard before in this room, every
    number before it is missing; from a new sender, what came before is not wanted."""
    return StreamGaps(hw=0 if heard_before else seq - 1)


def receive(gaps: StreamGaps, seq: int, now_ms: int, *, limit: int = MAX_MISSING) -> Step:
    """A text at ``seq`` arrived."""
    if seq == gaps.hw + 1 and not gaps.missing:  # the usual case: the next one, no gap
        return Step(StreamGaps(seq, (), gaps.final), "new")
    if seq > gaps.hw:
        missing = gaps.missing
        if seq > gaps.hw + 1:
            missing = (*missing, Gap(gaps.hw + 1, seq - 1, now_ms))
        bounded, lost = _bounded(missing, limit)
        return Step(StreamGaps(seq, bounded, gaps.final), "new", lost)
    for i, gap in enumerate(gaps.missing):
        if gap.first <= seq <= gap.last:
            parts = tuple(
                Gap(first, last, gap.found_ms)
                for first, last in ((gap.first, seq - 1), (seq + 1, gap.last))
                if first <= last
            )
            missing = (*gaps.missing[:i], *parts, *gaps.missing[i + 1 :])
            return Step(StreamGaps(gaps.hw, missing, gaps.final), "fill")
    return Step(gaps, "old")


def heads(
    gaps: StreamGaps,
    *,
    trail: int,
    lead: int,
    final: bool,
    now_ms: int,
    limit: int = MAX_MISSING,
) -> tuple[StreamGaps, tuple[Range, ...]]:
    """The sender says it sent ``1..lead`` and still holds ``trail..lead``.

    Numbers above ``hw`` up to ``lead`` become missing; missing numbers below
    ``trail`` are lost (returned).
    """
    missing, hw = gaps.missing, gaps.hw
    if lead > hw:
        missing, hw = (*missing, Gap(hw + 1, lead, now_ms)), lead
    missing, gone = _below(missing, trail)
    missing, too_many = _bounded(missing, limit)
    return StreamGaps(hw, missing, gaps.final or final), gone + too_many


def start_from_heads(lead: int, *, heard_before: bool) -> StreamGaps:
    """A stream first seen in heads: as a text at ``lead + 1`` would start it."""
    return start(lead + 1, heard_before=heard_before)


def expire(
    gaps: StreamGaps, *, now_ms: int, give_up_ms: int
) -> tuple[StreamGaps, tuple[Range, ...]]:
    """Give up every gap found ``give_up_ms`` or longer ago."""
    kept = tuple(g for g in gaps.missing if now_ms - g.found_ms < give_up_ms)
    lost = tuple((g.first, g.last) for g in gaps.missing if now_ms - g.found_ms >= give_up_ms)
    return StreamGaps(gaps.hw, kept, gaps.final), lost


def give_up_first(gaps: StreamGaps) -> tuple[StreamGaps, tuple[Range, ...]]:
    """Give up the lowest gap (too much is held back behind it)."""
    if not gaps.missing:
        return gaps, ()
    first = gaps.missing[0]
    return StreamGaps(gaps.hw, gaps.missing[1:], gaps.final), ((first.first, first.last),)


def to_ask(gaps: StreamGaps, limit: int = MAX_RANGES) -> tuple[Range, ...]:
    """The ranges of one repair request: the lowest ``limit`` gaps, merged where they touch."""
    ranges: list[Range] = []
    for gap in gaps.missing:
        if ranges and ranges[-1][1] + 1 == gap.first:
            ranges[-1] = (ranges[-1][0], gap.last)
        elif len(ranges) < limit:
            ranges.append((gap.first, gap.last))
        else:
            break
    return tuple(ranges)


def covered(gap: Gap, ranges: tuple[Range, ...]) -> bool:
    """Whether every number of ``gap`` is in one range of ``ranges`` (a conservative
    test: a gap split over two touching ranges counts as not covered)."""
    return any(first <= gap.first and gap.last <= last for first, last in ranges)


def count(ranges: tuple[Range, ...]) -> int:
    return sum(last - first + 1 for first, last in ranges)


def _below(missing: tuple[Gap, ...], trail: int) -> tuple[tuple[Gap, ...], tuple[Range, ...]]:
    kept: list[Gap] = []
    gone: list[Range] = []
    for gap in missing:
        if gap.last < trail:
            gone.append((gap.first, gap.last))
        elif gap.first < trail:
            gone.append((gap.first, trail - 1))
            kept.append(Gap(trail, gap.last, gap.found_ms))
        else:
            kept.append(gap)
    return tuple(kept), tuple(gone)


def _bounded(missing: tuple[Gap, ...], limit: int) -> tuple[tuple[Gap, ...], tuple[Range, ...]]:
    """At most ``limit`` missing numbers: the oldest (lowest) beyond it are given up."""
    excess = sum(g.size for g in missing) - limit
    if excess <= 0:
        return missing, ()
    kept = list(missing)
    gone: list[Range] = []
    while excess > 0:
        gap = kept[0]
        if gap.size <= excess:
            gone.append((gap.first, gap.last))
            kept.pop(0)
            excess -= gap.size
        else:
            gone.append((gap.first, gap.first + excess - 1))
            kept[0] = Gap(gap.first + excess, gap.last, gap.found_ms)
            excess = 0
    return tuple(kept), tuple(gone)
