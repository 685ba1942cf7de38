"""The receiving rules (mqchat.protocol.receiving), with no store and no sockets.

Unit cases for each rule, and Hypothesis over sequences of arrivals for the
invariants issue 13 names: a message is never shown twice; a pinned name never
shows verified under another key; and which messages are shown does not depend
on the order they arrive in (within the replay window).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hypothesis import given, settings
from hypothesis import strategies as st

from mqchat.protocol.receiving import (
    JOIN_SKEW_MS,
    REPLAY_WINDOW,
    Arrival,
    Pin,
    Verdict,
    judge,
)

OWN = b"o" * 32
ALICE, BOB, MALLORY = b"a" * 32, b"b" * 32, b"m" * 32
JOINED = 1_800_000_000_000


@dataclass
class DictMemory:
    """What the daemon's store remembers, in dicts; ``apply`` records a verdict as
    the daemon does (docs/protocol.md §6)."""

    ids: set[bytes] = field(default_factory=set)
    seqs: set[tuple[bytes, int]] = field(default_factory=set)
    high: dict[bytes, int] = field(default_factory=dict)
    pins: dict[tuple[str, str], Pin] = field(default_factory=dict)

    def seen_id(self, message_id: bytes) -> bool:
        return message_id in self.ids

    def seen_seq(self, sender_key: bytes, seq: int) -> bool:
        return (sender_key, seq) in self.seqs

    def highest_seq(self, sender_key: bytes) -> int | None:
        return self.high.get(sender_key)

    def pin(self, room: str, name: str) -> Pin | None:
        return self.pins.get((room, name))

    def receive(self, arrival: Arrival) -> Verdict:
        verdict = judge(arrival, self, own_key=OWN)
        if verdict.dropped is not None:
            return verdict
        self.ids.add(arrival.message_id)
        if arrival.sender_key is not None and arrival.seq is not None:
            self.seqs.add((arrival.sender_key, arrival.seq))
            self.high[arrival.sender_key] = max(self.high.get(arrival.sender_key, 0), arrival.seq)
        where = (arrival.room, arrival.sender_name)
        if verdict.pin is not None:
            self.pins[where] = Pin(verdict.pin, None)
        if verdict.pending is not None:
            self.pins[where] = self.pins[where]._replace(pending=verdict.pending)
        return verdict


def arrival(
    key: bytes | None = ALICE,
    seq: int | None = 1,
    *,
    name: str = "alice",
    room: str = "lobby",
    ts: int = JOINED,
    mid: bytes | None = None,
) -> Arrival:
    message_id = mid if mid is not None else (seq or 0).to_bytes(8, "big") + (key or b"-")[:1] * 8
    return Arrival(room, JOINED, name, key, message_id, seq, ts)


# -- each rule -----------------------------------------------------------------


def test_first_key_under_a_name_is_pinned_and_verified() -> None:
    verdict = DictMemory().receive(arrival())
    assert verdict == Verdict(None, verified=True, pin=ALICE, key_seen=ALICE)


def test_another_key_under_a_pinned_name_is_unverified_and_reported_once() -> None:
    memory = DictMemory()
    memory.receive(arrival(ALICE, 1))
    first = memory.receive(arrival(MALLORY, 1))
    again = memory.receive(arrival(MALLORY, 2))
    assert first.dropped is None and not first.verified and first.key_changed
    assert first.pending == MALLORY and first.key_seen == MALLORY
    assert not again.verified and not again.key_changed and again.key_seen == MALLORY


def test_our_own_messages_from_the_broker_are_duplicates_and_pin_nothing() -> None:
    """Stored when sent: an echo or a replay of ours is never shown, also under a
    fresh id and seq, and remembers nothing."""
    memory = DictMemory()
    for seq, mid in ((1, b"o" * 16), (1, b"o" * 16), (REPLAY_WINDOW * 3, b"p" * 16)):
        assert memory.receive(arrival(OWN, seq, name="me", mid=mid)).dropped == "duplicate"
    assert not memory.ids and not memory.seqs and not memory.pins


def test_a_seen_id_is_a_duplicate_and_a_seen_seq_a_replay() -> None:
    memory = DictMemory()
    memory.receive(arrival(ALICE, 5, mid=b"x" * 16))
    assert memory.receive(arrival(ALICE, 6, mid=b"x" * 16)).dropped == "duplicate"
    assert memory.receive(arrival(ALICE, 5, mid=b"y" * 16)).dropped == "replay"


def test_a_version_2_text_is_not_judged_by_its_id() -> None:
    """Its stream's state judges it (mqchat.daemon.repair): an id seen before, maybe
    taken first by another member, does not make it a duplicate."""
    memory = DictMemory()
    memory.receive(arrival(MALLORY, 1, name="mallory", mid=b"x" * 16))
    v2 = arrival(ALICE, 1, mid=b"x" * 16)._replace(seq_key=b"s" * 32)
    assert memory.receive(v2).dropped is None


def test_a_seq_below_the_window_is_a_replay() -> None:
    memory = DictMemory()
    memory.receive(arrival(ALICE, REPLAY_WINDOW + 10))
    assert memory.receive(arrival(ALICE, 10)).dropped == "replay"
    assert memory.receive(arrival(ALICE, 11)).dropped is None


def test_a_message_stamped_before_joining_is_dropped_within_the_skew_it_is_not() -> None:
    memory = DictMemory()
    assert memory.receive(arrival(ts=JOINED - JOIN_SKEW_MS - 1)).dropped == "before_join"
    assert memory.receive(arrival(ts=JOINED - JOIN_SKEW_MS, seq=2)).dropped is None


def test_legacy_messages_are_judged_by_id_and_time_and_never_verified() -> None:
    memory = DictMemory()
    legacy = arrival(None, None, mid=b"t" * 16)
    assert memory.receive(legacy) == Verdict(None)
    assert memory.receive(legacy).dropped == "duplicate"


# -- invariants over sequences --------------------------------------------------

keys = st.sampled_from([ALICE, BOB, MALLORY, OWN])
names = st.sampled_from(["alice", "bob"])
arrivals = st.builds(
    arrival,
    keys,
    st.integers(1, 40),
    name=names,
    room=st.sampled_from(["lobby", "ops"]),
    ts=st.integers(JOINED - 2 * JOIN_SKEW_MS, JOINED + 10),
    mid=st.binary(min_size=1, max_size=1).map(lambda b: b * 16),
)
FUZZ = settings(max_examples=400, deadline=None, database=None)


@FUZZ
@given(st.lists(arrivals, max_size=60))
def test_nothing_is_shown_twice(sequence: list[Arrival]) -> None:
    memory = DictMemory()
    shown = [a for a in sequence if memory.receive(a).dropped is None]
    assert len({a.message_id for a in shown}) == len(shown)
    keyed = [(a.sender_key, a.seq) for a in shown]
    assert len(set(keyed)) == len(keyed)


@FUZZ
@given(st.lists(arrivals, max_size=60))
def test_a_pinned_name_is_never_verified_under_another_key(sequence: list[Arrival]) -> None:
    memory = DictMemory()
    first_key: dict[tuple[str, str], bytes] = {}
    for a in sequence:
        verdict = memory.receive(a)
        if verdict.dropped is not None or a.sender_key is None:
            continue
        pinned = first_key.setdefault((a.room, a.sender_name), a.sender_key)
        assert verdict.verified == (a.sender_key == pinned)


@FUZZ
@given(st.lists(arrivals, max_size=40, unique_by=lambda a: a.message_id), st.randoms())
def test_what_is_shown_does_not_depend_on_arrival_order(
    sequence: list[Arrival], rng: object
) -> None:
    # Distinct ids and (key, seq) pairs, all within the replay window: the
    # documented conditions under which order must not matter.
    unique = list({(a.sender_key, a.seq): a for a in sequence}.values())
    shuffled = list(unique)
    rng.shuffle(shuffled)  # type: ignore[attr-defined]
    first, second = DictMemory(), DictMemory()
    shown_first = {a.message_id for a in unique if first.receive(a).dropped is None}
    shown_second = {a.message_id for a in shuffled if second.receive(a).dropped is None}
    assert shown_first == shown_second
