"""Issue 22 item 10: the store's retention never removes what a following tail has
not shown yet (docs/store.md, "Retention and tails that follow").

A receiver with a small retention (1,000) takes a burst ten times that size;
its tail, following from the start, prints every line once, in order, and no
`skipped` notice; once the tail has read them, retention applies again.
"""

from __future__ import annotations

import json
from collections.abc import Callable

from harness import Daemon, wait_until

MakeDaemon = Callable[..., Daemon]
RETENTION = 1_000
BURST = 10_000


def test_a_following_tail_gets_a_burst_far_over_retention_whole(
    make_daemon: MakeDaemon, room: str
) -> None:
    alice = make_daemon("alice")
    bob = make_daemon("bob", start=False).write_config(f"[store]\nretention = {RETENTION}\n")
    bob.start()
    alice.join(room)
    bob.join(room)
    tail = bob.tail(room, "--since", "0")
    # The tail follows (and has told chatd how far it has read) before the burst:
    # what was pruned before a tail started is not its to show.
    alice.ok("send", room, "ready")
    assert tail.messages(1)[0]["text"] == "ready"
    alice.ok("send", room, input="".join(f"line {i:05d}\n" for i in range(BURST)))
    got = []
    while len(got) < BURST:
        event = tail.next_json(timeout=60)
        assert event.get("kind") != "skipped", event  # lines lost to retention
        if event["type"] == "message":
            got.append(event["text"])
    assert got == [f"line {i:05d}" for i in range(BURST)]
    tail.stop()
    alice.ok("send", room, "after")  # retention applies again with nobody following

    def kept() -> int:
        out = bob.ok("tail", room, "--no-follow", "--json", "-n", "100000")
        return len([json.loads(line) for line in out.splitlines() if line])

    wait_until(lambda: kept() == RETENTION, "retention to apply once the tail is gone")
