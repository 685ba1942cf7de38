"""What the broker link keeps across reconnects, and how it delivers
(daemon/broker_session.py)."""

from __future__ import annotations

import asyncio

from mqchat.daemon.broker_session import Delivery, Echoes, Incoming, LinkSinks, Subscriptions


def test_topics_are_sent_at_each_connack_and_a_drop_while_away_once() -> None:
    topics = Subscriptions()
    topics.want("a", 1)
    topics.want("b", 0)
    topics.drop("b", at_next_connack=True)  # left while disconnected
    topics.drop("c", at_next_connack=True)  # an ended epoch the session may hold
    assert topics.at_connack() == ([("a", 1)], ["b", "c"])
    assert topics.at_connack() == ([("a", 1)], [])  # unsubscribed once
    topics.drop("a", at_next_connack=False)  # unsubscribed at once, while up
    topics.want("c", 1)
    assert topics.at_connack() == ([("c", 1)], [])


def test_an_echo_is_recognised_by_its_first_bytes_once() -> None:
    echoes = Echoes(memory=2, prefix=4)
    echoes.sent(b"ABCDtail")
    assert echoes.is_echo(b"ABCDother tail")
    assert not echoes.is_echo(b"ABCDtail")  # once
    for payload in (b"1111", b"2222", b"3333"):
        echoes.sent(payload)
    assert not echoes.is_echo(b"1111")  # forgotten: the memory is bounded
    assert echoes.is_echo(b"3333")


def test_delivery_waits_for_the_loop_and_keeps_paho_s_order() -> None:
    seen: list[object] = []
    fatal: list[str] = []
    out = Delivery(fatal.append)
    out.state(True, "before start: dropped")  # nothing happens before the link starts
    one, two, three = (Incoming("t", bytes([i]), i, 1) for i in (1, 2, 3))

    async def main() -> None:
        out.attach(
            asyncio.get_running_loop(),
            LinkSinks(
                on_messages=lambda row: seen.append(list(row)),
                on_state=lambda up, why: seen.append((up, why)),
                on_published=lambda mid, refusal: seen.append((mid, refusal)),
            ),
        )
        out.message(one)
        out.message(two)  # in a row: delivered together
        out.published(7, None)
        out.message(three)  # after the PUBACK: delivered after it
        out.state(False, "gone")
        out.fatal("bug")
        assert seen == []  # never inside paho's callback: on a later pass of the loop
        await asyncio.sleep(0)

    asyncio.run(main())
    assert seen == [[one, two], (7, None), [three], (False, "gone")]
    assert fatal == ["bug"]
