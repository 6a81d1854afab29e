"""One contract, two implementations: the in-memory fake and the DynamoDB adapter (moto,
tables from template.yaml) store, find, move and fence the patient index alike."""

from __future__ import annotations

from dataclasses import replace
from datetime import date

import pytest

from tests.fakes import (
    CONSORTIUM,
    FakeDirectory,
    FakePersonsStore,
    FakeProtector,
    registration,
)
from yilian.domain.errors import Conflict
from yilian.domain.matching import Outcome
from yilian.domain.person import (
    Change,
    HistoryEntry,
    IdentifierTaken,
    MergeRecord,
    Person,
    PersonStatus,
    ReviewStatus,
    StaleVersion,
    WriteFenceHeld,
)
from yilian.services.empi import Plan, RecordPreparer, new_person_change

AT = "2026-06-01T09:00:00.000+08:00"
READS = ("BatchGetItem", "Query", "GetItem")


class Clock:
    def __init__(self) -> None:
        self.t = 1_780_000_000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture(params=["fake", "dynamodb"])
def store(request, monkeypatch, clock):
    if request.param == "fake":
        yield FakePersonsStore(clock=clock)
        return
    from moto import mock_aws

    monkeypatch.setenv("AWS_DEFAULT_REGION", "cn-northwest-1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    with mock_aws():
        import boto3

        from tests.support.template_tables import create_tables
        from yilian.adapters.persons_store import DynamoPersonsStore

        db = boto3.client("dynamodb")
        names = create_tables(db)
        yield DynamoPersonsStore(db, names["PersonsTable"], clock=clock)


PREP = RecordPreparer(CONSORTIUM, FakeProtector(), FakeDirectory.demo(), date(2026, 6, 1), AT)


def new_change(body: dict, outcome=Outcome.NO_MATCH, candidates=()) -> Change:
    record = PREP.prepare(body, source="register")
    plan = Plan(outcome, 0.8 if candidates else 0.0, None, candidates)
    return new_person_change(CONSORTIUM, record, plan, AT, actor="doc-1", actor_role="doctor")


def created(change: Change) -> Person:
    return change.persons[0][1]


def test_a_new_person_is_found_by_its_identifiers_and_blocks_in_one_read(store):
    # Given a person committed
    change = new_change(registration())
    store.commit(change)
    person = created(change)
    # When its identifiers and blocks are looked up
    store.requests.clear()
    found = store.lookup(CONSORTIUM, [i.key for i in person.identifiers], person.block_keys())
    # Then one BatchGetItem brings the holder of each identifier and the block members
    assert sum(store.requests[op] for op in READS) == 1
    assert found.owners == {i.key: person.person_id for i in person.identifiers}
    assert set(found.blocks) == set(person.block_keys())
    assert found.members() == {person.person_id: person.candidate()}
    assert store.get_person(person.person_id) == person
    assert store.get_persons([person.person_id, "nobody"]) == {person.person_id: person}
    assert [h.action for h in store.history(person.person_id)] == ["registered"]
    # and another consortium sees none of it
    assert (
        store.lookup("other", [i.key for i in person.identifiers], person.block_keys()).owners == {}
    )


def test_an_identifier_is_held_by_one_person_only(store):
    first = new_change(registration())
    store.commit(first)
    # Given a second registration of the same ID card (a concurrent duplicate)
    second = new_change(registration(local=("T1", "qiaotou")))
    # When it is committed
    with pytest.raises(IdentifierTaken) as exc:
        store.commit(second)
    # Then the holder is named, and none of the second person was written
    assert created(first).person_id in exc.value.owners.values()
    assert store.get_person(created(second).person_id) is None
    blocks = store.lookup(CONSORTIUM, [], created(first).block_keys()).members()
    assert set(blocks) == {created(first).person_id}
    assert store.history(created(second).person_id) == []


def test_a_stale_version_is_refused_and_nothing_changes(store):
    change = new_change(registration())
    store.commit(change)
    person = created(change)
    updated = person.bumped(AT, links=("x",))
    store.commit(Change(persons=[(person, updated)]))
    with pytest.raises(StaleVersion):
        store.commit(Change(persons=[(person, person.bumped(AT, links=("y",)))]))
    assert store.get_person(person.person_id).links == ("x",)


def test_a_merge_moves_identifiers_blocks_and_keeps_its_record(store):
    a_change = new_change(registration("王丽", "female", "1990-07-15", seq=4))
    b_change = new_change(registration("王丽", "female", "1990-07-15", id_card=None,
                                       local=("T1", "qiaotou")))  # fmt: skip
    store.commit(a_change)
    store.commit(b_change)
    a, b = created(a_change), created(b_change)
    moved = b.identifiers
    a2 = a.bumped(AT, identifiers=a.identifiers + moved, replaces=(b.person_id,))
    b2 = b.bumped(AT, identifiers=(), status=PersonStatus.MERGED, merged_into=a.person_id)
    record = MergeRecord(b.person_id, a.person_id, CONSORTIUM, moved, AT, "admin", "重复建档")
    store.commit(
        Change(
            persons=[(a, a2), (b, b2)],
            history=[HistoryEntry(b.person_id, AT, "merged_into", "admin", "consortium_admin")],
            merges_put=[record],
        )
    )
    keys = [i.key for i in moved]
    found = store.lookup(CONSORTIUM, keys, a.block_keys())
    assert set(found.owners.values()) == {a.person_id}
    assert set(found.members()) == {a.person_id}  # the retired person left its blocks
    assert found.members()[a.person_id] == a2.candidate()
    assert store.get_merge(b.person_id) == record
    # unmerge: back exactly
    a3 = a2.bumped(AT, identifiers=a.identifiers, replaces=())
    b3 = b2.bumped(AT, identifiers=moved, status=PersonStatus.ACTIVE, merged_into=None)
    store.commit(Change(persons=[(b2, b3), (a2, a3)], merges_deleted=[record]))
    found = store.lookup(CONSORTIUM, keys, a.block_keys())
    assert set(found.owners.values()) == {b.person_id}
    assert set(found.members()) == {a.person_id, b.person_id}
    assert store.get_merge(b.person_id) is None


def test_review_items_are_queued_until_decided(store):
    first = new_change(registration("王丽", "female", "1990-07-05"))
    store.commit(first)
    candidates = ((created(first).person_id, 0.8, {"name": 0.35}),)
    second = new_change(
        registration("王丽", "female", "1990-05-07", id_card=None, local=("T1", "qiaotou")),
        Outcome.POSSIBLE_MATCH,
        candidates,
    )
    store.commit(second)
    (item,) = store.open_reviews(CONSORTIUM)
    assert item == second.reviews[0][1]
    assert store.get_review(item.review_id) == item
    assert store.open_reviews("other") == []
    decided = replace(item, status=ReviewStatus.DECIDED, decision="link", decided_by="admin")
    store.commit(Change(reviews=[(item, decided)]))
    assert store.open_reviews(CONSORTIUM) == []
    assert store.get_review(item.review_id).decision == "link"
    with pytest.raises(Conflict):
        store.commit(Change(reviews=[(item, decided)]))


def test_persons_are_found_by_phone(store):
    change = new_change(registration(phone="13800000001"))
    store.commit(change)
    phone_hash = created(change).phone_hash
    assert [p.person_id for p in store.persons_by_phone(CONSORTIUM, phone_hash)] == [
        created(change).person_id
    ]
    assert store.persons_by_phone("other", phone_hash) == []


def test_the_write_fence_stops_transactions_and_lets_the_bulk_writer_through(store, clock):
    # Given a bulk job holding the fence
    fence = store.acquire_fence(CONSORTIUM, "job-1", lease_seconds=30)
    with pytest.raises(WriteFenceHeld):
        store.acquire_fence(CONSORTIUM, "job-2", lease_seconds=30)
    # Then a transaction waits its turn...
    change = new_change(registration())
    with pytest.raises(WriteFenceHeld):
        store.commit(change)
    assert store.get_person(created(change).person_id) is None
    # ...while the job writes in batches
    bulk = new_change(registration("李强", birth_date="1970-01-01", seq=9, local=("B1", "qiaotou")))
    written = store.bulk_write(fence, bulk, {})
    assert written == 1 + 2 + 2 + 1  # profile, 2 identifiers, 2 blocks, history
    assert store.get_person(created(bulk).person_id) == created(bulk)
    # After release, transactions pass again
    store.release_fence(fence)
    store.commit(change)
    assert store.get_person(created(change).person_id) is not None


def test_an_expired_lease_is_taken_over_and_cannot_be_renewed(store, clock):
    fence = store.acquire_fence(CONSORTIUM, "job-1", lease_seconds=30)
    clock.t += 31
    store.acquire_fence(CONSORTIUM, "job-2", lease_seconds=30)
    with pytest.raises(WriteFenceHeld):
        store.renew_fence(fence, 30)
    with pytest.raises(WriteFenceHeld):
        store.bulk_write(fence, new_change(registration()), {})


def test_bulk_writes_rewrite_blocks_from_what_was_read(store):
    # Given a person registered by a transaction, and a bulk job that read its block
    existing = new_change(registration("王芳", "female", "1988-08-08", seq=2, local=None))
    store.commit(existing)
    person = created(existing)
    fence = store.acquire_fence(CONSORTIUM, "job-1", lease_seconds=30)
    read = store.lookup(CONSORTIUM, [], person.block_keys(), consistent=True)
    # When the job writes a namesake born the same day
    twin = new_change(registration("王芳", "female", "1988-08-08", seq=3, local=("B1", "qiaotou")))
    store.bulk_write(fence, twin, read.blocks)
    store.release_fence(fence)
    # Then both are members of both blocks
    members = store.lookup(CONSORTIUM, [], person.block_keys()).members()
    assert set(members) == {person.person_id, created(twin).person_id}
    assert members[created(twin).person_id] == created(twin).candidate()
