"""Gaps in a sender's stream (mqchat.protocol.gaps), with no store and no clock.

Unit cases for each rule, and Hypothesis over arrivals in any order, duplicated,
with heads and expiries in between, for the invariants issue 12 names: every
number a receiver knows of is received, missing or lost, exactly one of them;
held-back messages are shown in the sender's order, each once; and once every
missing number has arrived, everything sent is shown.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from mqchat.protocol import gaps
from mqchat.protocol.gaps import Gap, StreamGaps


def test_a_new_sender_starts_where_it_is_first_heard() -> None:
    assert gaps.start(7, heard_before=False) == StreamGaps(hw=6)
    assert gaps.start(7, heard_before=True) == StreamGaps(hw=0)


def test_a_skip_makes_numbers_missing_and_a_repair_fills_them() -> None:
    g = StreamGaps(hw=2)
    step = gaps.receive(g, 6, now_ms=100)
    assert step.outcome == "new"
    assert step.gaps == StreamGaps(6, (Gap(3, 5, 100),))
    assert step.gaps.holds_back(6) and not step.gaps.holds_back(3)
    step = gaps.receive(step.gaps, 4, now_ms=200)
    assert step.outcome == "fill"
    assert step.gaps.missing == (Gap(3, 3, 100), Gap(5, 5, 100))
    assert gaps.receive(step.gaps, 4, now_ms=300).outcome == "old"
    assert gaps.receive(step.gaps, 1, now_ms=300).outcome == "old"


def test_heads_find_a_lost_tail_and_trail_gives_up_what_the_sender_purged() -> None:
    g, lost = gaps.heads(StreamGaps(hw=3), trail=1, lead=10, final=False, now_ms=5)
    assert g == StreamGaps(10, (Gap(4, 10, 5),)) and lost == ()
    g, lost = gaps.heads(g, trail=8, lead=10, final=True, now_ms=6)
    assert lost == ((4, 7),)
    assert g == StreamGaps(10, (Gap(8, 10, 5),), final=True)
    assert not g.done
    g = gaps.receive(gaps.receive(gaps.receive(g, 8, 7).gaps, 9, 7).gaps, 10, 7).gaps
    assert g.done


def test_gaps_expire_after_the_limit_from_when_each_was_found() -> None:
    g = StreamGaps(20, (Gap(2, 3, 1000), Gap(10, 12, 5000)))
    assert gaps.expire(g, now_ms=6000, give_up_ms=5000) == (
        StreamGaps(20, (Gap(10, 12, 5000),)),
        ((2, 3),),
    )


def test_at_most_max_missing_the_oldest_go_first() -> None:
    step = gaps.receive(StreamGaps(hw=0), 12, now_ms=1, limit=4)
    assert step.gaps.missing == (Gap(8, 11, 1),)
    assert step.lost == ((1, 7),)


def test_a_request_asks_for_the_lowest_ranges_merged() -> None:
    g = StreamGaps(100, tuple(Gap(i, i, 0) for i in range(1, 80, 2)))
    asked = gaps.to_ask(g)
    assert len(asked) == 32 and asked[0] == (1, 1) and asked[-1] == (63, 63)
    touching = StreamGaps(9, (Gap(1, 2, 0), Gap(3, 4, 5)))
    assert gaps.to_ask(touching) == ((1, 4),)


# ---------------------------------------------------------------- properties


class Receiver:
    """A stream's gaps as the daemon keeps them, plus what it holds back and shows."""

    def __init__(self, first_seq: int, heard_before: bool, limit: int) -> None:
        self.gaps = gaps.start(first_seq, heard_before=heard_before)
        self.limit = limit
        self.held: set[int] = set()
        self.shown: list[int] = []
        self.received: set[int] = set()
        self.lost: set[int] = set()

    def text(self, seq: int, now: int) -> None:
        step = gaps.receive(self.gaps, seq, now, limit=self.limit)
        self.gaps = step.gaps
        self._lose(step.lost)
        if step.outcome == "old":
            return
        self.received.add(seq)
        if self.gaps.holds_back(seq):
            self.held.add(seq)
        else:
            self.shown.append(seq)
        self._release()

    def heads(self, trail: int, lead: int, now: int) -> None:
        self.gaps, lost = gaps.heads(
            self.gaps, trail=trail, lead=lead, final=False, now_ms=now, limit=self.limit
        )
        self._lose(lost)
        self._release()

    def expire(self, now: int, give_up: int) -> None:
        self.gaps, lost = gaps.expire(self.gaps, now_ms=now, give_up_ms=give_up)
        self._lose(lost)
        self._release()

    def _lose(self, ranges: tuple[tuple[int, int], ...]) -> None:
        for first, last in ranges:
            numbers = set(range(first, last + 1))
            assert not numbers & self.lost, "a number lost twice"
            assert not numbers & self.received, "a received number lost"
            self.lost |= numbers

    def _release(self) -> None:
        first = self.gaps.first_missing
        ready = sorted(s for s in self.held if first is None or s < first)
        self.shown.extend(ready)
        self.held -= set(ready)

    def check(self, start: int) -> None:
        missing = {s for g in self.gaps.missing for s in range(g.first, g.last + 1)}
        known = set(range(start, self.gaps.hw + 1))
        assert missing | self.received | self.lost >= known
        assert not missing & self.received and not missing & self.lost
        assert len(missing) <= self.limit
        firsts = [g.first for g in self.gaps.missing]
        assert firsts == sorted(firsts)
        assert all(g.first <= g.last for g in self.gaps.missing)
        assert all(
            a.last < b.first for a, b in zip(self.gaps.missing, self.gaps.missing[1:], strict=False)
        )
        assert self.shown == sorted(self.shown), "shown out of the sender's order"
        assert len(self.shown) == len(set(self.shown)), "shown twice"


events = st.lists(
    st.one_of(
        st.tuples(st.just("text"), st.integers(1, 60)),
        st.tuples(st.just("heads"), st.integers(1, 60)),
        st.tuples(st.just("expire"), st.integers(0, 5)),
    ),
    max_size=80,
)


@settings(max_examples=300, deadline=None)
@given(
    first=st.integers(1, 60),
    heard=st.booleans(),
    limit=st.sampled_from([3, 10, 4096]),
    script=events,
)
def test_numbers_are_received_missing_or_lost_and_shown_in_order(
    first: int, heard: bool, limit: int, script: list[tuple[str, int]]
) -> None:
    r = Receiver(first, heard, limit)
    start = r.gaps.hw + 1
    r.text(first, 0)
    for now, (what, n) in enumerate(script, start=1):
        if what == "text":
            r.text(n, now)
        elif what == "heads":
            r.heads(trail=max(1, n // 3), lead=n, now=now)
        else:
            r.expire(now, give_up=n + 1)
        r.check(start)
    # Every missing number arrives at last (a repair): nothing stays held back, and
    # what was received is shown once, in order.
    for g in r.gaps.missing:
        for seq in range(g.first, g.last + 1):
            r.text(seq, 10_000)
    r.check(start)
    assert not r.gaps.missing and not r.held
    assert sorted(r.received) == r.shown


@settings(max_examples=200, deadline=None)
@given(order=st.permutations(list(range(1, 41))), dup=st.lists(st.integers(1, 40)))
def test_any_arrival_order_shows_the_whole_stream_in_order(
    order: list[int], dup: list[int]
) -> None:
    r = Receiver(1, True, 4096)
    for seq in order + dup:
        r.text(seq, 0)
        r.check(1)
    assert r.shown == list(range(1, 41))


def test_a_request_covers_a_gap_only_when_one_range_holds_all_of_it() -> None:
    """What lets another member's request postpone ours (PGM's NAK suppression)."""
    gap = gaps.Gap(5, 9, 0)
    assert gaps.covered(gap, ((1, 10),))
    assert not gaps.covered(gap, ((1, 7),))
    assert not gaps.covered(gap, ((1_000_000, 1_000_100),))
    assert not gaps.covered(gap, ((5, 6), (7, 9)))  # conservative: no suppression
