"""Answers to members left behind (mqchat.daemon.catch_up, docs/protocol.md §28)."""

from __future__ import annotations

from typing import Any, cast

from mqchat.daemon.catch_up import ANSWER_EVERY_S, ANSWERS_PER_EPOCH, CatchUp


class Loop:
    """The loop's clock and timers, by hand."""

    def __init__(self) -> None:
        self.now = 100.0
        self.timers: list[tuple[Any, ...]] = []

    def time(self) -> float:
        return self.now

    def call_later(self, _delay: float, *call: Any) -> None:
        self.timers.append(call)


class Room:
    name = "room"


def catch_up(loop: Loop) -> CatchUp:
    parts: Any = None
    return CatchUp(
        logs=parts, rooms=parts, keeper=parts, presence=parts, identity=parts, name="alice",
        clock_ms=lambda: 0, random=bytes, link=parts, loop=cast(Any, loop),
    )  # fmt: skip


def test_an_answer_to_one_member_does_not_silence_the_next_left_behind() -> None:
    """bob spoke in epoch 1 after the room moved on and was answered; carol, who
    reached epoch 1 a second later by an earlier answer, speaks there too: she is
    answered as well, not cut off for 5 s (two rekeys at once once left carol in
    epoch 1 for good)."""
    loop = Loop()
    answers = catch_up(loop)
    room = cast(Any, Room())
    answers.answer_later(room, "tag1", b"bob")
    loop.now += 1
    answers.answer_later(room, "tag1", b"carol")
    assert len(loop.timers) == 2


def test_one_member_speaking_again_and_again_is_answered_once_in_5_s() -> None:
    """A member (or a broker replaying its batches) cannot make the others answer
    more than once in 5 s per epoch it speaks in."""
    loop = Loop()
    answers = catch_up(loop)
    room = cast(Any, Room())
    for _ in range(50):
        answers.answer_later(room, "tag1", b"mallory")
        loop.now += 0.05
    assert len(loop.timers) == 1
    loop.now += ANSWER_EVERY_S
    answers.answer_later(room, "tag1", b"mallory")
    assert len(loop.timers) == 2


def test_many_keys_speaking_in_an_old_epoch_get_a_bounded_number_of_answers() -> None:
    """A member with throw-away keys (or a broker replaying batches of many members)
    cannot make the others answer more than 4 times per epoch in 5 s."""
    loop = Loop()
    answers = catch_up(loop)
    room = cast(Any, Room())
    for i in range(1000):
        answers.answer_later(room, "tag1", i.to_bytes(32, "big"))
    assert len(loop.timers) == ANSWERS_PER_EPOCH
    answers.answer_later(room, "tag2", b"carol")  # another epoch has its own budget
    assert len(loop.timers) == ANSWERS_PER_EPOCH + 1
    loop.now += ANSWER_EVERY_S
    answers.answer_later(room, "tag1", b"dave")
    assert len(loop.timers) == ANSWERS_PER_EPOCH + 2
