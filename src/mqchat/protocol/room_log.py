"""A room's membership log: every valid commit seen, and the one chain all follow (§27).

The log holds the states a member knows (its anchor and what valid commits lead
to), the commits of each state, commits whose state has not arrived yet
(orphans), and the joins admitted into each state. Its head is a function of
the *set* of commits it was offered, never of their order: from the anchor it
follows, state by state, the commit ``membership.winner`` picks. So every
member that has seen the same records is in the same state. Pure: no I/O, no
clock; every collection is bounded (docs/security.md, "Bounds").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from mqchat.protocol.membership import (
    Candidate,
    Commit,
    Refused,
    Usable,
    apply_commit,
    winner,
)
from mqchat.protocol.roster import NO_STATE, Member, RoomState

MAX_COMMITS_PER_AUTHOR: Final = 2
"""Commits of one state kept per author: the two lowest ids (a flood is bounded, and
every member keeps the same two)."""
MAX_STATES: Final = 512
"""States a room's log holds (the anchor, and where each valid commit leads)."""
MAX_ORPHANS: Final = 64
"""Commits a newcomer keeps while the state they change (its invite's) has not arrived;
at most two of them per author."""
MAX_PENDING_JOINS: Final = 64
"""Newcomers admitted into one state before a commit adds them."""


@dataclass(frozen=True, slots=True)
class Offered:
    """A commit as it arrived, before it is judged."""

    id: bytes
    author: bytes
    commit: Commit
    new_epoch: int
    recipients: tuple[bytes, ...]


class RoomLog:
    """``anchor`` None: the room has no membership state yet (a passphrase room, or
    one made before the membership model); ``expect``: the state hash a newcomer
    waits for (its invite's), before which no commit is followed."""

    def __init__(
        self, anchor: RoomState | None, usable: Usable, *, expect: bytes | None = None
    ) -> None:
        self.anchor = anchor
        self.expect = expect if anchor is None else None
        self._usable = usable
        self._states: dict[bytes, RoomState] = {}
        self._children: dict[bytes, dict[bytes, Candidate]] = {}
        self._orphans: dict[bytes, Offered] = {}
        self._pending: dict[bytes, dict[bytes, Member]] = {}
        self.version = 0
        """Grows with every change: a reader may cache what it derives from the head."""
        self._head: tuple[int, list[Candidate]] | None = None
        if anchor is not None:
            self._states[anchor.hash] = anchor

    @property
    def root(self) -> bytes:
        return self.anchor.hash if self.anchor is not None else NO_STATE

    @property
    def anchored(self) -> bool:
        return self.anchor is not None or bool(self._children.get(NO_STATE))

    def state(self, state_hash: bytes) -> RoomState | None:
        return self._states.get(state_hash)

    def knows(self, commit_id: bytes) -> bool:
        return commit_id in self._orphans or any(
            commit_id in children for children in self._children.values()
        )

    # ------------------------------------------------------------------ commits
    def offer(self, offered: Offered) -> Candidate | None:
        """Judge a commit: its ``Candidate`` when valid, None while its state is unknown
        (kept as an orphan), ``Refused`` when the rules or a bound refuse it."""
        for children in self._children.values():
            if offered.id in children:
                return children[offered.id]
        commit = offered.commit
        if commit.genesis:
            if self.anchor is not None or self.expect is not None:
                raise Refused("unknown_state", "a first commit in a room that has a state")
            prev: RoomState | None = None
        else:
            prev = self._states.get(commit.prev)
            if prev is None:
                self._keep_orphan(offered)
                return None
        siblings = self._children.get(commit.prev, {})
        own = sorted(c.id for c in siblings.values() if c.author == offered.author)
        if len(own) >= MAX_COMMITS_PER_AUTHOR:
            # Keep the lowest ids of one author's commits of a state: which are kept is a
            # function of the set, so every member keeps the same ones, in any order.
            if offered.id > own[-1]:
                raise Refused("too_many", "more commits of one state by one author than allowed")
            del siblings[own[-1]]
            self.version += 1
        if len(self._states) >= MAX_STATES:
            raise Refused("too_many", f"a room's log holds at most {MAX_STATES} states")
        new = apply_commit(
            prev,
            author=offered.author,
            commit=commit,
            new_epoch=offered.new_epoch,
            recipients=offered.recipients,
            usable=self._usable,
        )
        author = prev.member(offered.author) if prev is not None else None
        seniority = author.seniority if author is not None else (0, offered.author)
        candidate = Candidate(offered.id, offered.author, commit.prev, new, seniority)
        self._children.setdefault(commit.prev, {})[offered.id] = candidate
        self._states[new.hash] = new
        self.version += 1
        self._adopt_orphans(new.hash)
        return candidate

    def _keep_orphan(self, offered: Offered) -> None:
        """Only a newcomer keeps commits of a state it does not hold yet: those of the
        state it waits for (its invite's), at most two per author, so that a member who
        floods them cannot push out an admin's. A member holds every state it can be
        sent a commit of (it followed the commit that made it first)."""
        if offered.id in self._orphans:
            return
        if self.expect is None or offered.commit.prev != self.expect:
            raise Refused("unknown_state", "a commit of a state this member does not hold")
        own = sum(o.author == offered.author for o in self._orphans.values())
        if own >= MAX_COMMITS_PER_AUTHOR or len(self._orphans) >= MAX_ORPHANS:
            raise Refused("too_many", f"more than {MAX_ORPHANS} commits of unknown states")
        self._orphans[offered.id] = offered

    def _adopt_orphans(self, state_hash: bytes) -> None:
        for orphan in [o for o in self._orphans.values() if o.commit.prev == state_hash]:
            del self._orphans[orphan.id]
            try:
                self.offer(orphan)
            except Refused:
                continue  # judged now, and refused: it changes nothing

    def path(self) -> list[Candidate]:
        """The winning commits from the anchor on, oldest first (cached until a change)."""
        if self._head is None or self._head[0] != self.version:
            self._head = (self.version, self._walk())
        return list(self._head[1])

    def _walk(self) -> list[Candidate]:
        out: list[Candidate] = []
        at = self.root
        while True:
            best = winner(self._children.get(at, {}).values())
            if best is None:
                return out
            out.append(best)
            at = best.state.hash

    def head(self) -> RoomState | None:
        path = self.path()
        return path[-1].state if path else self.anchor

    def commits_of(self, state_hash: bytes) -> list[Candidate]:
        return list(self._children.get(state_hash, {}).values())

    # ------------------------------------------------------------------ anchors
    def anchor_on(self, state: RoomState) -> bool:
        """A newcomer's roster: anchor on it if it is the state the invite named."""
        if self.anchor is not None or state.hash != self.expect:
            return False
        self.anchor = state
        self.expect = None
        self._states[state.hash] = state
        self.version += 1
        self._adopt_orphans(state.hash)
        return True

    def settle(self, state_hash: bytes) -> bool:
        """Make a state of the path the anchor, forgetting what led to it and every
        branch beside it: its epochs are closed, nothing can change them any more."""
        path = self.path()
        at = next((i for i, c in enumerate(path) if c.state.hash == state_hash), None)
        if at is None:
            return False
        anchor = path[at].state
        keep = {anchor.hash}
        grew = True
        while grew:
            grew = False
            for prev, children in self._children.items():
                if prev in keep:
                    for c in children.values():
                        if c.state.hash not in keep:
                            keep.add(c.state.hash)
                            grew = True
        self._children = {p: c for p, c in self._children.items() if p in keep}
        self._states = {h: s for h, s in self._states.items() if h in keep}
        self._pending = {h: j for h, j in self._pending.items() if h in keep}
        self._orphans = {}
        self.anchor = anchor
        self.expect = None
        self.version += 1
        return True

    def commit_ids(self) -> set[bytes]:
        return {i for children in self._children.values() for i in children}

    # ------------------------------------------------------------------ joins
    def admit(self, state_hash: bytes, member: Member) -> bool:
        """Keep a newcomer admitted into a state (pending until a commit adds it)."""
        joins = self._pending.setdefault(state_hash, {})
        if member.sign_key in joins:
            return False
        if len(joins) >= MAX_PENDING_JOINS:
            raise Refused("too_many", f"more than {MAX_PENDING_JOINS} joins into one state")
        joins[member.sign_key] = member
        self.version += 1
        return True

    def pending(self, state_hash: bytes) -> list[Member]:
        head = self._states.get(state_hash)
        joins = self._pending.get(state_hash, {}).values()
        return [m for m in joins if head is None or head.member(m.sign_key) is None]
