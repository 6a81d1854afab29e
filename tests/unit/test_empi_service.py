"""The patient index's use cases against in-memory fakes: registration and matching,
search, reads, links and merges, the review queue, access rules and auditing."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from tests.fakes import (
    CONSORTIUM,
    FakeAuditSink,
    FakeDirectory,
    FakeIdempotency,
    FakePersonsStore,
    FakeProtector,
    make_id_number,
    registration,
)
from yilian.api.fhir_patient import patient_resource
from yilian.domain.audit import AuditAction, AuditOutcome
from yilian.domain.clock import CHINA_TZ
from yilian.domain.errors import Conflict, DomainError, Forbidden, InvalidInput, NotFound
from yilian.domain.person import Lookup, PersonStatus, ReviewStatus
from yilian.domain.principal import Principal, Role
from yilian.services.empi import EmpiService

DOCTOR = Principal("doc-wangfang", Role.DOCTOR, CONSORTIUM, "qiaotou", name="王芳")
ADMIN = Principal("doc-admin", Role.CONSORTIUM_ADMIN, CONSORTIUM, "county-hospital")
OUTSIDER = Principal("doc-x", Role.DOCTOR, "other-county", "other-hospital")
READS = ("BatchGetItem", "Query", "GetItem")


def resident(person_id: str) -> Principal:
    return Principal(f"resident-{person_id}", Role.RESIDENT, CONSORTIUM, person_id=person_id)


class Ticking:
    """A clock that moves 1 ms per reading, so history has an order."""

    def __init__(self) -> None:
        self.t = datetime(2026, 6, 1, 9, 0, tzinfo=CHINA_TZ)

    def __call__(self) -> datetime:
        self.t += timedelta(milliseconds=1)
        return self.t


@pytest.fixture
def store() -> FakePersonsStore:
    return FakePersonsStore()


@pytest.fixture
def audit() -> FakeAuditSink:
    return FakeAuditSink()


@pytest.fixture
def svc(store, audit) -> EmpiService:
    return EmpiService(
        store, FakeProtector(), FakeDirectory.demo(), audit,
        idempotency=FakeIdempotency(), now=Ticking(), sleep=lambda s: None,
    )  # fmt: skip


def register(svc: EmpiService, body: dict, who: Principal = DOCTOR, key: str | None = None):
    status, out = svc.register(who, body, key)
    return status, out["person"], out["match"]


def error(fn, *args) -> DomainError:
    with pytest.raises(DomainError) as exc:
        fn(*args)
    return exc.value


# ------------------------------------------------------------------------ registration


def test_a_new_person_is_created_with_masked_identifiers(svc, store, audit):
    # Given an empty index
    # When a village doctor registers a resident
    status, person, match = register(svc, registration())
    # Then a person is created, with nothing to match
    assert status == 201
    assert match == {"outcome": "NO_MATCH", "score": 0.0, "candidates": []}
    assert person["name"] == "张伟" and person["pinyin"] == "zhang wei"
    # and identifiers are shown masked, never in clear
    id_card = make_id_number("1985-03-12", "male", 1)
    shown = {i["type"]: i["value"] for i in person["identifiers"]}
    assert shown["id_card"] == id_card[:4] + "*" * 10 + id_card[-4:]
    assert person["phone"] == "139****1234"
    assert id_card not in repr(store.persons)  # stored as blind index + sealed value
    # and the registration is in the history and the audit trail
    assert [h.action for h in store.histories[person["person_id"]]] == ["registered"]
    assert audit.events[-1].action is AuditAction.CREATE


def test_the_same_id_card_at_another_institution_matches_and_attaches_the_local_number(svc, store):
    # Given a person registered at a village clinic
    _, first, _ = register(svc, registration())
    # When the township centre registers the same ID card with its own patient number
    status, person, match = register(svc, registration(local=("T00042", "qiaotou")))
    # Then it is the same person, now holding both local numbers
    assert status == 200
    assert match["outcome"] == "MATCH" and match["score"] == 1.0
    assert person["person_id"] == first["person_id"]
    assert {i.get("assigner") for i in person["identifiers"]} == {None, "qiaotou-lijia", "qiaotou"}
    assert len(store.persons) == 1
    attached = store.histories[first["person_id"]][-1]
    assert attached.action == "identifiers_attached"
    assert attached.details["score"] == 1.0 and attached.details["deterministic"] is True


def test_registering_the_same_record_again_changes_nothing(svc, store):
    _, first, _ = register(svc, registration())
    items = store.item_count()
    status, again, match = register(svc, registration())
    assert (status, match["outcome"]) == (200, "MATCH")
    assert again == first  # same version: nothing written
    assert store.item_count() == items


def test_a_homophone_name_without_id_card_is_linked_automatically(svc, store):
    # Given 王丽, registered with her ID card
    _, first, _ = register(svc, registration("王丽", "female", "1990-07-15"))
    # When the township centre writes her name by ear as 王莉 and has no ID card
    body = registration("王莉", "female", "1990-07-15", id_card=None, local=("T1", "qiaotou"))
    status, person, match = register(svc, body)
    # Then the engine links the record to her (score above the match threshold)
    assert (status, match["outcome"]) == (200, "MATCH")
    assert match["score"] >= svc.match_threshold
    assert person["person_id"] == first["person_id"]
    assert len(store.persons) == 1


def test_a_transposed_birth_date_creates_a_person_and_a_review_item(svc, store):
    _, first, _ = register(svc, registration("王丽", "female", "1990-07-05"))
    body = registration("王丽", "female", "1990-05-07", id_card=None, local=("T1", "qiaotou"))
    status, person, match = register(svc, body)
    assert (status, match["outcome"]) == (201, "POSSIBLE_MATCH")
    assert match["candidates"][0]["person_id"] == first["person_id"]
    assert person["person_id"] != first["person_id"]
    (review,) = store.open_reviews(CONSORTIUM)
    assert (review.person_id, review.candidate_id) == (person["person_id"], first["person_id"])


def test_matching_costs_at_most_three_dynamodb_requests(svc, store):
    # Given an index with a few hundred people, some sharing blocks with the probe
    for i in range(300):
        name = "张伟" if i % 50 == 0 else f"李{chr(0x4E00 + i)}"
        register(svc, registration(name, "male", f"19{50 + i % 40}-0{1 + i % 9}-1{i % 10}",
                                   seq=i, local=(f"L{i:05d}", "qiaotou-lijia")))  # fmt: skip
    probes = [
        registration(),  # identifier hits and block members
        registration("张玮", id_card=None, local=("T9", "qiaotou")),  # blocks only
        registration("赵敏", "female", "2001-01-01", seq=7, local=None),  # nothing at all
    ]
    for body in probes:
        # When only the matching step runs
        store.requests.clear()
        svc.match(DOCTOR, body)
        # Then it costs at most three reads
        assert sum(store.requests[op] for op in READS) <= 3, store.requests


def test_an_identifier_hit_outside_the_blocks_costs_one_more_read(svc, store):
    # Given a person, and a record with her local number but a changed name and birth date
    register(svc, registration("王丽", "female", "1990-07-15", id_card=None))
    body = registration("王莉莉", "female", "1990-07-16", id_card=None)
    store.requests.clear()
    plan = svc.match(DOCTOR, body)
    assert plan.outcome.value == "MATCH" and plan.deterministic
    assert sum(store.requests[op] for op in READS) == 2


def test_a_local_number_held_by_someone_else_with_another_id_card_is_a_conflict(svc, store):
    register(svc, registration())
    items = store.item_count()
    # Same local number, but another man's ID card: not the same person
    other = registration("李强", birth_date="1970-01-01", seq=9)
    exc = error(svc.register, DOCTOR, other)
    assert (type(exc), exc.code) == (Conflict, "IDENTIFIER_CONFLICT")
    assert store.item_count() == items


def test_a_concurrent_duplicate_registration_ends_as_a_match_to_the_winner(svc, store):
    # Given the winner registered the ID card first...
    _, winner, _ = register(svc, registration())
    # ...while the loser's matching read the index before that write landed
    real_lookup = store.lookup
    calls = []

    def stale_then_real(*args, **kwargs):
        calls.append(kwargs.get("consistent"))
        return Lookup() if len(calls) == 1 else real_lookup(*args, **kwargs)

    store.lookup = stale_then_real
    # When the loser commits, the identifier condition fails; it plans again (consistently)
    status, person, match = register(svc, registration(local=("T7", "qiaotou")))
    # Then it ends as a MATCH to the winner, and nobody is duplicated
    assert (status, match["outcome"], person["person_id"]) == (200, "MATCH", winner["person_id"])
    assert calls == [False, True]
    assert len(store.persons) == 1


def test_a_replayed_request_returns_the_same_result(svc, store):
    body = registration()
    first = svc.register(DOCTOR, body, "key-1")
    again = svc.register(DOCTOR, body, "key-1")
    assert again == first and first[0] == 201
    assert len(store.persons) == 1
    exc = error(svc.register, DOCTOR, registration("李强", seq=3, local=None), "key-1")
    assert exc.code == "IDEMPOTENCY_KEY_REUSED"


def test_a_registration_waits_while_a_bulk_job_holds_the_write_fence(store, audit):
    # Given a bulk job's lease that expires in one second
    now = [1_000.0]
    store._clock = lambda: now[0]
    store.acquire_fence(CONSORTIUM, "job-1", lease_seconds=1)
    slept = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    svc = EmpiService(store, FakeProtector(), FakeDirectory.demo(), audit, sleep=sleep)
    # When a doctor registers meanwhile
    status, _, _ = register(svc, registration())
    # Then the write waited for the fence, and then happened
    assert status == 201 and sum(slept) >= 1
    assert len(store.persons) == 1


# ---------------------------------------------------------------------------- bad inputs


def _wrong_check_digit() -> str:
    number = make_id_number("1985-03-12", "male", 1)
    return number[:17] + ("1" if number[17] != "1" else "2")


BAD = [
    ("ID_CHECK_DIGIT", registration(id_card=_wrong_check_digit())),
    ("ID_BIRTH_DATE_MISMATCH", {**registration(), "birth_date": "1985-12-03"}),
    ("ID_SEX_MISMATCH", {**registration(), "sex": "female"}),
    ("ID_FORMAT", registration(id_card="33012219850312")),
    ("NAME_REQUIRED", registration(name="  ")),
    ("BIRTH_DATE_IN_FUTURE", registration(birth_date="2031-01-01", id_card=None)),
    ("BIRTH_DATE_FORMAT", registration(birth_date="1985-02-30", id_card=None)),
    ("UNKNOWN_INSTITUTION", registration(local=("V1", "no-such-clinic"))),
    ("UNKNOWN_INSTITUTION", registration(local=("V1", "other-hospital"))),  # other consortium
    ("SEX_INVALID", registration(sex="unknown", id_card=None)),
    ("PHONE_FORMAT", registration(phone="12-34")),
    ("DUPLICATE_IDENTIFIER_TYPE", registration(health_card="HC123456", id_card=None) | {
        "identifiers": [{"type": "health_card", "value": "HC123456"},
                        {"type": "health_card", "value": "HC654321"}]}),
]  # fmt: skip


@pytest.mark.parametrize(("code", "body"), BAD, ids=[c for c, _ in BAD])
def test_a_bad_registration_is_refused_with_its_reason_and_nothing_is_stored(
    svc, store, code, body
):
    # Given an index with one person
    register(svc, registration("李强", birth_date="1970-01-01", seq=9, local=("X1", "qiaotou")))
    before = (store.item_count(), dict(store.persons))
    # When a bad registration comes in
    exc = error(svc.register, DOCTOR, body)
    # Then it is refused with a machine-readable reason, and nothing was written
    assert (type(exc), exc.code) == (InvalidInput, code)
    assert (store.item_count(), dict(store.persons)) == before


# ------------------------------------------------------------------------------ access


def test_residents_read_only_their_own_person_and_a_refusal_is_audited(svc, store, audit):
    _, mine, _ = register(svc, registration())
    _, other, _ = register(svc, registration("李强", birth_date="1970-01-01", seq=9, local=None))
    me = resident(mine["person_id"])
    assert svc.get(me, mine["person_id"])["person_id"] == mine["person_id"]
    assert svc.history(me, mine["person_id"])["items"]
    exc = error(svc.get, me, other["person_id"])
    assert (type(exc), exc.code) == (Forbidden, "NOT_YOUR_RECORD")
    refused = audit.events[-1]
    assert (refused.outcome, refused.person_ids) == (AuditOutcome.DENIED, (other["person_id"],))


def test_residents_cannot_register_search_or_administer(svc):
    me = resident("p-1")
    for call in (
        lambda: svc.register(me, registration()),
        lambda: svc.search(me, {"name": "张伟"}),
        lambda: svc.link(me, "a", "b", "same"),
        lambda: svc.reviews(me),
    ):
        with pytest.raises(Forbidden) as exc:
            call()
        assert exc.value.code == "ROLE_NOT_ALLOWED"


def test_another_consortiums_person_is_refused_not_hidden(svc, audit):
    _, person, _ = register(svc, registration())
    exc = error(svc.get, OUTSIDER, person["person_id"])
    assert (type(exc), exc.code) == (Forbidden, "CROSS_CONSORTIUM")
    assert audit.events[-1].outcome is AuditOutcome.DENIED
    assert error(svc.get, DOCTOR, "no-such-person").code == "PERSON_NOT_FOUND"


def test_administration_needs_a_consortium_admin_and_a_reason(svc):
    _, a, _ = register(svc, registration())
    _, b, _ = register(svc, registration("李强", birth_date="1970-01-01", seq=9, local=None))
    assert error(svc.link, DOCTOR, a["person_id"], b["person_id"], "x").code == "ROLE_NOT_ALLOWED"
    assert error(svc.link, ADMIN, a["person_id"], b["person_id"], " ").code == "REASON_REQUIRED"
    assert error(svc.merge, ADMIN, a["person_id"], a["person_id"], "x").code == "SAME_PERSON"


# ------------------------------------------------------------------------------ search


def test_search_by_id_card_name_pinyin_phone_and_birth_date(svc, audit):
    _, wang, _ = register(
        svc, registration("王芳", "female", "1988-08-08", seq=2, phone="13800000001")
    )
    _, homophone, _ = register(
        svc,
        registration(
            "汪方", "female", "1960-01-02", seq=3, local=("V9", "qiaotou-lijia"), phone=None
        ),
    )
    _, other, _ = register(svc, registration("李强", birth_date="1970-01-01", seq=9, local=None))

    def ids(criteria):
        return [p["person_id"] for p in svc.search(DOCTOR, criteria)["items"]]

    assert ids({"id_card": make_id_number("1988-08-08", "female", 2)}) == [wang["person_id"]]
    assert ids({"name": "王芳"}) == [wang["person_id"], homophone["person_id"]]  # exact first
    assert set(ids({"name": "wangfang"})) == {wang["person_id"], homophone["person_id"]}
    assert ids({"pinyin": "wang fang", "birth_date": "1960-01-02"}) == [homophone["person_id"]]
    assert ids({"phone": "138 0000 0001"}) == [wang["person_id"]]
    assert ids({"birth_date": "1970-01-01"}) == [other["person_id"]]
    assert ids({"local": "V9", "assigner": "qiaotou-lijia"}) == [homophone["person_id"]]
    assert ids({"name": "王芳", "phone": "13800000009"}) == []
    # every search is audited with the persons it returned
    assert audit.events[-2].action is AuditAction.SEARCH
    assert audit.events[-2].person_ids == (homophone["person_id"],)
    assert error(svc.search, DOCTOR, {}).code == "SEARCH_CRITERIA_REQUIRED"


def test_search_never_returns_another_consortiums_persons(svc):
    register(svc, registration("王芳", "female", "1988-08-08", seq=2, local=None))
    assert svc.search(OUTSIDER, {"name": "王芳"})["items"] == []


def test_name_search_costs_two_reads(svc, store):
    for i in range(20):
        register(svc, registration("王芳", "female", f"1980-01-{i + 1:02d}", seq=i, local=None))
    store.requests.clear()
    assert svc.search(DOCTOR, {"name": "王芳"})["count"] == 20
    assert sum(store.requests[op] for op in READS) == 2


# ---------------------------------------------------------------- link, merge, unmerge


@pytest.fixture
def pair(svc):
    _, a, _ = register(svc, registration("王丽", "female", "1990-07-15", seq=4))
    _, b, _ = register(svc, registration("王丽", "female", "1990-07-15", id_card=None,
                                         local=("T1", "qiaotou"), phone="13700000000",
                                         address="示范县石门镇"))  # fmt: skip
    return a["person_id"], b["person_id"]


def test_link_keeps_both_records_and_unlink_records_not_a_match(svc, store, pair):
    a, b = pair
    svc.link(ADMIN, a, b, "同一人：身份证复印件核对")
    assert store.persons[a].links == (b,) and store.persons[b].links == (a,)
    assert error(svc.link, ADMIN, a, b, "again").code == "ALREADY_LINKED"
    svc.unlink(ADMIN, b, a, "核对有误")
    assert store.persons[a].links == () and store.persons[a].distinct_from == (b,)
    assert store.persons[b].distinct_from == (a,)
    actions = [h.action for h in store.histories[a]]
    assert actions[-2:] == ["linked", "unlinked"]
    assert store.histories[a][-1].reason == "核对有误"
    assert store.histories[a][-1].actor == ADMIN.subject


def test_merge_moves_identifiers_and_unmerge_restores_exactly_them(svc, store, pair):
    a, b = pair
    b_keys = store.persons[b].identifier_keys()
    a_keys = store.persons[a].identifier_keys()
    # When b is merged into a
    view = svc.merge(ADMIN, a, b, "重复建档")
    # Then b's identifiers are a's; b is retired, pointing at a
    assert store.persons[a].identifier_keys() == a_keys | b_keys
    assert store.persons[b].status is PersonStatus.MERGED
    assert store.persons[b].merged_into == a and view["replaces"] == [b]
    assert all(store.owners[(CONSORTIUM, k)] == a for k in b_keys)
    assert all(b not in m for m in store.heads.values())  # a retired person is no candidate
    # and a registration with b's local number now finds a
    _, found, match = register(svc, registration("王丽", "female", "1990-07-15", id_card=None,
                                                  local=("T1", "qiaotou")))  # fmt: skip
    assert (found["person_id"], match["outcome"]) == (a, "MATCH")
    # When the merge is undone
    svc.unmerge(ADMIN, b, "合并错误")
    # Then exactly what moved goes back, and the pair is marked not-a-match
    assert store.persons[b].identifier_keys() == b_keys
    assert store.persons[a].identifier_keys() == a_keys
    assert store.persons[b].status is PersonStatus.ACTIVE and store.persons[b].merged_into is None
    assert store.persons[a].distinct_from == (b,)
    assert all(store.owners[(CONSORTIUM, k)] == b for k in b_keys)
    assert store.merges == {}
    assert [h.action for h in store.histories[b]][-2:] == ["merged_into", "unmerged"]


def test_merge_refuses_two_different_id_cards_and_merged_persons(svc, store, pair):
    a, b = pair
    _, c, _ = register(svc, registration("王丽", "female", "1990-07-15", seq=8, local=None))
    exc = error(svc.merge, ADMIN, a, c["person_id"], "x")
    assert exc.code == "MERGE_IDENTIFIER_CONFLICT"
    svc.merge(ADMIN, a, b, "重复建档")
    assert error(svc.merge, ADMIN, c["person_id"], b, "x").code == "PERSON_MERGED"
    assert error(svc.unmerge, ADMIN, a, "x").code == "NOT_MERGED"


def test_unmerge_is_blocked_once_the_survivor_was_merged_on(svc, pair):
    a, b = pair
    _, c, _ = register(svc, registration("赵敏", "female", "2001-01-01", id_card=None, local=None))
    svc.merge(ADMIN, a, b, "重复建档")
    svc.merge(ADMIN, c["person_id"], a, "再次合并")
    assert error(svc.unmerge, ADMIN, b, "x").code == "UNMERGE_BLOCKED"


# -------------------------------------------------------------------------- review queue


@pytest.fixture
def review(svc, store):
    _, first, _ = register(svc, registration("王丽", "female", "1990-07-05"))
    _, second, _ = register(svc, registration("王丽", "female", "1990-05-07", id_card=None,
                                              local=("T1", "qiaotou")))  # fmt: skip
    (item,) = store.open_reviews(CONSORTIUM)
    return item, first["person_id"], second["person_id"]


def test_the_review_queue_lists_open_items_with_both_persons(svc, review):
    item, first, second = review
    listed = svc.reviews(ADMIN)
    assert listed["count"] == 1
    entry = listed["items"][0]
    assert (entry["person"]["person_id"], entry["candidate"]["person_id"]) == (second, first)
    assert entry["breakdown"]["birth_date"] == 0.2
    assert error(svc.reviews, DOCTOR).code == "ROLE_NOT_ALLOWED"


def test_not_a_match_closes_the_item_and_the_pair_is_never_proposed_again(svc, store, review):
    item, first, second = review
    out = svc.decide(ADMIN, item.review_id, "not_a_match", "双胞胎，非同一人")
    assert out["status"] == "decided" and out["decision"] == "not_a_match"
    assert store.open_reviews(CONSORTIUM) == []
    assert first in store.persons[second].distinct_from
    # When the same record is registered again
    register(svc, registration("王丽", "female", "1990-05-07", id_card=None,
                               local=("T1", "qiaotou")))  # fmt: skip
    # Then it is the second person again, and nothing new is proposed
    assert store.open_reviews(CONSORTIUM) == []
    assert len(store.persons) == 2
    assert error(svc.decide, ADMIN, item.review_id, "link", "x").code == "REVIEW_CLOSED"


def test_a_link_decision_links_the_pair(svc, store, review):
    item, first, second = review
    svc.decide(ADMIN, item.review_id, "link", "核对身份证")
    assert store.persons[first].links == (second,)
    assert store.reviews[item.review_id].decided_by == ADMIN.subject


def test_a_merge_decision_keeps_the_older_record_by_default(svc, store, review):
    item, first, second = review
    svc.decide(ADMIN, item.review_id, "merge", "重复建档")
    assert store.persons[second].merged_into == first
    assert error(svc.decide, ADMIN, "nope", "merge", "x").code == "REVIEW_NOT_FOUND"


def test_an_unknown_decision_is_refused(svc, review):
    item, _, _ = review
    assert error(svc.decide, ADMIN, item.review_id, "maybe", "x").code == "DECISION_INVALID"


# --------------------------------------------------------------------------------- FHIR


def test_the_fhir_patient_shows_identifiers_names_and_links(svc, store, pair, audit):
    a, b = pair
    svc.merge(ADMIN, a, b, "重复建档")
    person = svc.read_person(DOCTOR, a, "Person.fhir")
    patient = patient_resource(person)
    assert patient["resourceType"] == "Patient" and patient["id"] == a
    systems = {i["system"] for i in patient["identifier"]}
    assert "urn:oid:2.16.156.10011.1.3" in systems
    assert "https://yilian.example/fhir/sid/local/qiaotou" in systems
    assert all("*" in i["value"] for i in patient["identifier"])
    assert patient["meta"]["security"][0]["code"] == "MASKED"
    chars, latin = patient["name"]
    assert (chars["family"], chars["given"]) == ("王", ["丽"])
    assert (latin["family"], latin["given"], latin["text"]) == ("Wang", ["Li"], "Wang Li")
    assert patient["gender"] == "female" and patient["birthDate"] == "1990-07-15"
    assert patient["link"] == [{"other": {"reference": f"Patient/{b}"}, "type": "replaces"}]
    retired = patient_resource(store.persons[b])
    assert retired["active"] is False
    assert retired["link"][0]["type"] == "replaced-by"
    assert audit.events[-1].what == "Person.fhir"


def test_reads_are_audited(svc, audit, pair):
    a, _ = pair
    svc.get(DOCTOR, a)
    svc.history(DOCTOR, a)
    reads = [e for e in audit.events if e.action is AuditAction.READ]
    assert [e.what for e in reads] == ["Person.read", "Person.history"]
    assert all(e.person_ids == (a,) and e.actor_subject == DOCTOR.subject for e in reads)


def test_unknown_persons_and_reviews_are_not_found(svc):
    assert isinstance(error(svc.history, DOCTOR, "nobody"), NotFound)


def test_review_items_are_closed_when_the_pair_is_linked_directly(svc, store, review):
    item, first, second = review
    svc.link(ADMIN, first, second, "核对身份证")
    assert store.reviews[item.review_id].status is ReviewStatus.DECIDED
