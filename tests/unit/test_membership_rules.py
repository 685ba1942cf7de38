"""The membership rules, pure (docs/protocol.md §25-§27): properties and attacks.

Any order of the same commits gives the same head; nothing a removed member signs
after its removal changes the state; a commit that is not an admin's, or that seals
to anyone but the members, is refused; a removal wins over what the removed does
at the same point; seniority, not a number an author picks, orders the rest.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mqchat.errors import ProtocolError
from mqchat.protocol.keybox import MemberKeyPair, usable_member_key
from mqchat.protocol.membership import (
    Commit,
    Join,
    Op,
    OpKind,
    Refused,
    admission_message,
    apply_commit,
    apply_ops,
    check_join,
    commit_body,
    decode_commit,
    decode_join,
    join_body,
    join_message,
)
from mqchat.protocol.records import decode_record, encode_record
from mqchat.protocol.room_log import MAX_COMMITS_PER_AUTHOR, Offered, RoomLog
from mqchat.protocol.roster import (
    NO_STATE,
    Member,
    Role,
    RoomState,
    commitment,
    decode_roster,
)
from mqchat.protocol.signing import SigningIdentity


def person(n: int) -> tuple[SigningIdentity, bytes]:
    ident = SigningIdentity.from_private_bytes(bytes([n]) * 32)
    return ident, MemberKeyPair.from_identity(ident).public_key


PEOPLE = [person(n) for n in range(1, 7)]
NAMES = ["alice", "bob", "carol", "dave", "erin", "frank"]


def genesis_state(admins: int = 1, members: int = 3) -> RoomState:
    people = [
        Member(PEOPLE[i][0].public_key, PEOPLE[i][1], Role.ADMIN if i < admins else Role.MEMBER,
               NAMES[i], 0)
        for i in range(members)
    ]  # fmt: skip
    return RoomState(0, NO_STATE, commitment(b"\x00" * 32, 0), tuple(sorted(people)))


def make_commit(state: RoomState, author: int, ops: list[Op], salt: int = 0) -> Offered:
    secret = hashlib.sha256(bytes([author, salt])).digest()
    commit = Commit(
        state.hash,
        commitment(secret, state.epoch + 1),
        tuple(sorted(ops, key=lambda o: o.sign_key)),
    )
    members = apply_ops(state, commit.ops, state.epoch + 1, usable_member_key)
    cid = hashlib.sha256(commit_body(commit) + bytes([author, salt])).digest()
    recipients = tuple(m.x25519_key for m in members)
    return Offered(cid, PEOPLE[author][0].public_key, commit, state.epoch + 1, recipients)


def remove(i: int) -> Op:
    return Op(OpKind.REMOVE, PEOPLE[i][0].public_key)


def test_a_roster_has_one_encoding_and_round_trips() -> None:
    state = genesis_state(admins=2, members=4)
    assert decode_roster(state.encode()) == state
    with pytest.raises(ProtocolError):
        decode_roster(state.encode() + b"\x00")
    with pytest.raises(ProtocolError):  # no admin
        RoomState(
            0,
            NO_STATE,
            NO_STATE,
            (Member(PEOPLE[0][0].public_key, PEOPLE[0][1], Role.MEMBER, "a", 0),),
        )


def test_commit_and_join_records_round_trip_through_the_record_codec() -> None:
    state = genesis_state()
    offered = make_commit(
        state,
        0,
        [remove(2), Op(OpKind.ADD, PEOPLE[3][0].public_key, PEOPLE[3][1], Role.MEMBER, "dave")],
    )
    assert decode_commit(commit_body(offered.commit)) == offered.commit
    assert decode_record(8, encode_record(offered.commit)[3:]) == offered.commit
    join = Join(state.hash, PEOPLE[0][0].public_key, PEOPLE[4][0].public_key, Role.MEMBER,
                bytes(64), PEOPLE[3][1], bytes(64))  # fmt: skip
    assert decode_join(join_body(join)) == join


def test_a_commit_by_a_member_who_is_no_admin_is_refused() -> None:
    state = genesis_state()
    offered = make_commit(state, 1, [remove(0)])
    with pytest.raises(Refused) as refused:
        apply_commit(state, author=offered.author, commit=offered.commit, new_epoch=1,
                     recipients=offered.recipients, usable=usable_member_key)  # fmt: skip
    assert refused.value.reason == "not_admin"


@pytest.mark.parametrize("change", ["missing", "extra", "repeated"])
def test_a_rekey_sealed_to_anyone_but_exactly_the_members_is_refused(change: str) -> None:
    state = genesis_state()
    offered = make_commit(state, 0, [remove(2)])
    recipients = list(offered.recipients)
    if change == "missing":
        recipients.pop()
    elif change == "extra":
        recipients.append(PEOPLE[2][1])  # the removed one
    else:
        recipients.append(recipients[0])
    with pytest.raises(Refused) as refused:
        apply_commit(state, author=offered.author, commit=offered.commit, new_epoch=1,
                     recipients=recipients, usable=usable_member_key)  # fmt: skip
    assert refused.value.reason == "bad_recipients"


def test_an_unusable_member_key_is_refused_when_added() -> None:
    state = genesis_state()
    bad = Op(OpKind.ADD, PEOPLE[4][0].public_key, bytes(32), Role.MEMBER, "erin")
    with pytest.raises(Refused) as refused:
        apply_ops(state, [bad], 1, usable_member_key)
    assert refused.value.reason == "unusable_key"


def test_a_removal_wins_over_what_the_removed_admin_does_at_the_same_point() -> None:
    """bob, an admin, is removed by alice; bob's own commit of the same state (which
    removes alice) would win by no number bob could pick: both exclude the other, and
    then alice, the senior, wins; bob's commit that keeps alice loses to the removal."""
    state = genesis_state(admins=2)
    alice_removes_bob = make_commit(state, 0, [remove(1)])
    bob_key = PEOPLE[1][0].public_key
    senior = min(PEOPLE[0][0].public_key, bob_key)  # both entered at epoch 0
    for bob_ops in ([remove(0)], [], [remove(2)]):
        for salt in range(20):  # bob grinds his commit id: it does not help
            bobs = make_commit(state, 1, bob_ops, salt)
            heads = set()
            for order in ((alice_removes_bob, bobs), (bobs, alice_removes_bob)):
                log = RoomLog(state, usable_member_key)
                for o in order:
                    log.offer(o)
                head = log.head()
                assert head is not None
                heads.add(head.hash)
                if bob_ops != [remove(0)] or senior != bob_key:
                    assert head.member(bob_key) is None
            assert len(heads) == 1


def test_nothing_the_removed_sign_after_their_removal_changes_the_state() -> None:
    state = genesis_state(admins=2)
    log = RoomLog(state, usable_member_key)
    removal = make_commit(state, 0, [remove(1)])
    log.offer(removal)
    after = log.head()
    assert after is not None
    with pytest.raises(Refused):
        log.offer(make_commit(after, 1, [remove(0)]))
    assert log.head() == after


def test_one_author_keeps_at_most_two_commits_of_one_state_the_same_two_everywhere() -> None:
    state = genesis_state()
    offers = [make_commit(state, 0, [], salt) for salt in range(8)]
    kept = set()
    for order in (offers, offers[::-1]):
        log = RoomLog(state, usable_member_key)
        for o in order:
            with contextlib.suppress(Refused):
                log.offer(o)
        ids = {c.id for c in log.commits_of(state.hash)}
        assert len(ids) == MAX_COMMITS_PER_AUTHOR
        kept.add(frozenset(ids))
    assert len(kept) == 1


def test_a_join_needs_an_admins_admission_and_the_tickets_signature() -> None:
    state = genesis_state()
    ticket = SigningIdentity.from_private_bytes(b"\x09" * 32)
    alice = PEOPLE[0][0]
    newcomer, x = PEOPLE[4]
    good = Join(state.hash, alice.public_key, ticket.public_key, Role.MEMBER,
                alice.sign(admission_message(state.hash, ticket.public_key, Role.MEMBER)), x,
                ticket.sign(join_message(state.hash, newcomer.public_key, x, "erin")))  # fmt: skip
    member = check_join(state, joiner=newcomer.public_key, name="erin", join=good,
                        usable=usable_member_key)  # fmt: skip
    assert member.name == "erin" and member.since == 1
    bob = PEOPLE[1][0]  # not an admin
    by_member = Join(state.hash, bob.public_key, ticket.public_key, Role.MEMBER,
                     bob.sign(admission_message(state.hash, ticket.public_key, Role.MEMBER)), x,
                     good.ticket_signature)  # fmt: skip
    for join, name, reason in (
        (by_member, "erin", "not_admin"),
        (good, "mallory", "bad_join"),  # the ticket signed another name
        (dataclasses.replace(good, role=Role.ADMIN), "erin", "bad_join"),  # not what was given
    ):  # fmt: skip
        with pytest.raises(Refused) as refused:
            check_join(
                state, joiner=newcomer.public_key, name=name, join=join, usable=usable_member_key
            )
        assert refused.value.reason == reason


def deliver(log: RoomLog, order: list[Offered]) -> None:
    """``order`` as a member can receive it: a commit only once it holds the state the
    commit changes (it follows the commit that gave it that epoch's key first); the
    rest keeps its relative order."""
    waiting = list(order)
    while waiting:
        later = [o for o in waiting if log.state(o.commit.prev) is None]
        for o in waiting:
            if o not in later:
                with contextlib.suppress(Refused):
                    log.offer(o)
        if len(later) == len(waiting):
            return
        waiting = later


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_any_order_of_the_same_commits_gives_the_same_head(data: st.DataObject) -> None:
    """Commits of several states by several admins, delivered in any order a member
    can receive them: every member that has seen the same set ends in the same state."""
    state = genesis_state(admins=3, members=5)
    offers: list[Offered] = []
    frontier = [state]
    for _ in range(data.draw(st.integers(1, 6))):
        base = data.draw(st.sampled_from(frontier))
        admins = [i for i in range(5) if base.is_admin(PEOPLE[i][0].public_key)]
        author = data.draw(st.sampled_from(admins))
        others = [i for i in range(5) if i != author and base.member(PEOPLE[i][0].public_key)]
        gone = (
            data.draw(st.lists(st.sampled_from(others), unique=True, max_size=1)) if others else []
        )
        try:
            offered = make_commit(
                base, author, [remove(i) for i in gone], data.draw(st.integers(0, 3))
            )
            new = apply_commit(base, author=offered.author, commit=offered.commit,
                               new_epoch=offered.new_epoch, recipients=offered.recipients,
                               usable=usable_member_key)  # fmt: skip
        except Refused:
            continue
        if any(o.id == offered.id for o in offers):
            continue
        offers.append(offered)
        frontier.append(new)
    heads = set()
    for _ in range(4):
        order = data.draw(st.permutations(offers))
        log = RoomLog(state, usable_member_key)
        deliver(log, order)
        head = log.head()
        heads.add(head.hash if head else None)
    assert len(heads) == 1


def test_commit_ids_do_not_decide_between_authors() -> None:
    """Of two admins' commits that exclude nobody, seniority decides (both entered at
    epoch 0: the lower key), whatever ids the junior grinds."""
    state = genesis_state(admins=2)
    seen = set()
    for salt in range(30):
        log = RoomLog(state, usable_member_key)
        junior = make_commit(state, 1, [], salt)
        senior = make_commit(state, 0, [], 0)
        log.offer(junior)
        log.offer(senior)
        path = log.path()
        seen.add(path[0].author)
    assert seen == {min(PEOPLE[0][0].public_key, PEOPLE[1][0].public_key)}


# The vectors of docs/protocol.md §29: alice (seed 00..1f) creates a room with
# epoch 0 secret 40..5f, admits bob (seed 20..3f) with ticket seed 80..9f, and
# commits epoch 1 (secret 60..7f) adding him.
VECTORS = {
    "commitment(s0,0)": ("562304060c4eeeeb07ff8136b6151d8647a66ffe469bef8f359cd7781cd0aacb"),
    "roster S0": (
        "0000000000000000000000000000000000000000000000000000000000000000"
        "0000000000000000562304060c4eeeeb07ff8136b6151d8647a66ffe469bef8f"
        "359cd7781cd0aacb000103a107bff3ce10be1d70dd18e74bc09967e4d6309ba5"
        "0d5f1ddc8664125531b8a5e77d1d655875683b7f53d35ed061e012199522f2d1"
        "55f9d58717e12fc2cd3702000000000000000005616c696365"
    ),
    "hash S0": ("03b6fc97ef35456a6658a3600a9127ab83dfe4d29e6c373d586a62b440ef49a9"),
    "tag0": "vcz2lxf2glbulp53kub7lfitdi",
    "ticket pub": ("cd14b37f956e953194ff7fb73b3d81dcc561d61a7538094b7c3e1a643ee5f3aa"),
    "admission sig": (
        "8a640f91da20c65c9149fd385bc1d786d9cc611a9647de1b53209dd6c63bbace"
        "af177abb28f63e6b408e0e142c89f4d4631fd43374d9e4db633cd1c74580500e"
    ),
    "join record": (
        "09010103b6fc97ef35456a6658a3600a9127ab83dfe4d29e6c373d586a62b440"
        "ef49a903a107bff3ce10be1d70dd18e74bc09967e4d6309ba50d5f1ddc866412"
        "5531b8cd14b37f956e953194ff7fb73b3d81dcc561d61a7538094b7c3e1a643e"
        "e5f3aa018a640f91da20c65c9149fd385bc1d786d9cc611a9647de1b53209dd6"
        "c63bbaceaf177abb28f63e6b408e0e142c89f4d4631fd43374d9e4db633cd1c7"
        "4580500ed35a2ff8f0af0d859c2cbf153399e69662be8ad63e44169745e63541"
        "8ed51f53853d77063f0be9fd0846599cc2d6322558b63abf66b894b1008309e2"
        "ba08d18797cc79a1cd2c8e7fd0568fb28092674a7a3b5ac28bfcf238df2620dc"
        "f580f507"
    ),
    "commitment(s1,1)": ("2e6bbddbdc0251a21cca3aabe8c0b724d757596fafc65621745a9293c707f7dc"),
    "commit record": (
        "08008803b6fc97ef35456a6658a3600a9127ab83dfe4d29e6c373d586a62b440"
        "ef49a92e6bbddbdc0251a21cca3aabe8c0b724d757596fafc65621745a9293c7"
        "07f7dc00010129acbae141bccaf0b22e1a94d34d0bc7361e526d0bfe12c89794"
        "bc9322966dd7d35a2ff8f0af0d859c2cbf153399e69662be8ad63e44169745e6"
        "35418ed51f530103626f62"
    ),
    "commit id": ("21496155264d31186c8e45ae6b11e322593c3e68d91767ba809848b01a693ef7"),
    "hash S1": ("48115fd0bed87f75098c5c1b93d34eda5031a4eee04b02cc645a6caa7beaac8c"),
    "roster S1": (
        "000000000000000103b6fc97ef35456a6658a3600a9127ab83dfe4d29e6c373d"
        "586a62b440ef49a92e6bbddbdc0251a21cca3aabe8c0b724d757596fafc65621"
        "745a9293c707f7dc000203a107bff3ce10be1d70dd18e74bc09967e4d6309ba5"
        "0d5f1ddc8664125531b8a5e77d1d655875683b7f53d35ed061e012199522f2d1"
        "55f9d58717e12fc2cd3702000000000000000005616c69636529acbae141bcca"
        "f0b22e1a94d34d0bc7361e526d0bfe12c89794bc9322966dd7d35a2ff8f0af0d"
        "859c2cbf153399e69662be8ad63e44169745e635418ed51f5301000000000000"
        "000103626f62"
    ),
    "tag1": "s6p2ulv6rmerpri5s67ce5jbtm",
}


def test_the_membership_vectors_of_the_protocol_doc() -> None:
    alice = SigningIdentity.from_private_bytes(bytes(range(32)))
    bob = SigningIdentity.from_private_bytes(bytes(range(32, 64)))
    ax = MemberKeyPair.from_identity(alice).public_key
    bx = MemberKeyPair.from_identity(bob).public_key
    s0, s1 = bytes(range(0x40, 0x60)), bytes(range(0x60, 0x80))
    me = Member(alice.public_key, ax, Role.ADMIN, "alice", 0)
    state0 = RoomState(0, NO_STATE, commitment(s0, 0), (me,))
    assert state0.encode().hex() == VECTORS["roster S0"]
    assert state0.hash.hex() == VECTORS["hash S0"]
    ticket = SigningIdentity.from_private_bytes(bytes(range(0x80, 0xA0)))
    admission = alice.sign(admission_message(state0.hash, ticket.public_key, Role.MEMBER))
    assert admission.hex() == VECTORS["admission sig"]
    ticket_sig = ticket.sign(join_message(state0.hash, bob.public_key, bx, "bob"))
    join = Join(state0.hash, alice.public_key, ticket.public_key, Role.MEMBER, admission, bx,
                ticket_sig)  # fmt: skip
    assert encode_record(join).hex() == VECTORS["join record"]
    commit = Commit(
        state0.hash, commitment(s1, 1), (Op(OpKind.ADD, bob.public_key, bx, Role.MEMBER, "bob"),)
    )
    assert encode_record(commit).hex() == VECTORS["commit record"]
    state1 = apply_commit(state0, author=alice.public_key, commit=commit, new_epoch=1,
                          recipients=[ax, bx], usable=usable_member_key)  # fmt: skip
    assert state1.hash.hex() == VECTORS["hash S1"]
    assert state1.encode().hex() == VECTORS["roster S1"]


def test_a_newcomer_keeps_only_commits_of_the_state_it_waits_for_two_per_author() -> None:
    """Before its roster, a newcomer keeps commits of its invite's state (judged once the
    roster comes), at most two per author; any other commit of an unknown state, and a
    member's flood, are refused: they cannot push an admin's commit out."""
    state = genesis_state()
    log = RoomLog(None, usable_member_key, expect=state.hash)
    flood = [make_commit(state, 1, [], salt) for salt in range(5)]  # bob, no admin
    refused = 0
    for o in flood:
        try:
            log.offer(o)
        except Refused:
            refused += 1
    assert refused == 3
    elsewhere = make_commit(genesis_state(admins=2), 0, [])
    with pytest.raises(Refused):
        log.offer(elsewhere)
    admins = make_commit(state, 0, [remove(2)])
    assert log.offer(admins) is None  # kept until the roster comes
    assert log.anchor_on(state)
    head = log.head()
    assert head is not None and head.member(PEOPLE[2][0].public_key) is None
