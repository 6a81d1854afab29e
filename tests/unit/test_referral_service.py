"""The referral use cases against in-memory fakes: apply, act (optimistic lock, task
tokens), the workflow's waits and timeouts, worklists, read rules with auditing,
statistics, the stream relay and who is notified."""

from __future__ import annotations

import random
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

import pytest

from tests.fakes import FakeAuditSink, FakeIdempotency
from tests.support.fake_referrals import (
    CENTRE,
    COLLEAGUE,
    CONSORTIUM_ADMIN,
    COUNTY_DOCTOR,
    LIMITS,
    OTHER_RESIDENT,
    OTHER_TOWNSHIP,
    OUTSIDER,
    PATIENT_ID,
    PATIENT_SNAPSHOT,
    RECEIVER,
    RECEIVER_ADMIN,
    REFERRER,
    RESIDENT,
    SOURCE_ADMIN,
    T0,
    C,
    Clock,
    FakeCallbacks,
    FakePatients,
    FakePublisher,
    FakeReferralStore,
    FakeStarter,
    application,
    county_directory,
    person,
)
from yilian.domain.audit import AuditAction, AuditOutcome
from yilian.domain.clock import CHINA_TZ
from yilian.domain.errors import Conflict, Forbidden, InvalidInput, NotFound
from yilian.domain.person import PersonStatus
from yilian.domain.principal import Principal, Role
from yilian.domain.referral import (
    COUNTERS,
    Action,
    Referral,
    Stage,
    Status,
    iso,
    parse_time,
    summarise,
)
from yilian.services.notifications import (
    CENTRE_RECIPIENT,
    Notifier,
    notifications_for,
    recipients_of,
)
from yilian.services.referral_events import (
    ACCEPTED,
    APPLIED,
    STATUS_CHANGED,
    ReferralEventRelay,
    event_detail,
    events_for,
)
from yilian.services.referrals import MAX_ATTEMPTS, ReferralService, _split

A = Action
S = Status
ARN = "arn:aws-cn:states:cn-northwest-1:123456789012:stateMachine:yilian-demo-referral"


@dataclass
class World:
    service: ReferralService
    store: FakeReferralStore
    callbacks: FakeCallbacks
    audit: FakeAuditSink
    clock: Clock
    patients: FakePatients
    ids: list[str]

    def apply(self, who: Principal = REFERRER, **kw: Any) -> str:
        return self.service.apply(who, application(**kw))["referral_id"]

    def stored(self, referral_id: str) -> Referral:
        found = self.store.get(referral_id)
        assert found is not None
        return found[0]

    def wait(self, referral_id: str, stage: Stage, token: str) -> bool:
        """The workflow enters a wait: Step Functions issues the token, the service keeps it."""
        return self.service.await_stage(referral_id, stage, self.callbacks.issue(token))

    def later(self, **delta: float) -> None:
        self.clock.t += timedelta(**delta)


@pytest.fixture
def w() -> World:
    store, callbacks, audit, clock = (
        FakeReferralStore(),
        FakeCallbacks(),
        FakeAuditSink(),
        Clock(T0),
    )
    patients = FakePatients(
        person(),
        person("p-other", name="李娜", sex="female"),
        person("p-old", status=PersonStatus.MERGED, merged_into=PATIENT_ID),
        person("p-elsewhere", consortium_id="other-county"),
    )
    ids: list[str] = []

    def new_id(now):
        ids.append(f"ZZ{now:%y%m%d}{len(ids):07d}")
        return ids[-1]

    service = ReferralService(
        store, patients, county_directory(), audit, callbacks, limits=LIMITS, clock=clock,
        idempotency=FakeIdempotency(), new_id=new_id,
    )  # fmt: skip
    return World(service, store, callbacks, audit, clock, patients, ids)


def events(w: World, action: AuditAction | None = None) -> list:
    return [e for e in w.audit.events if action is None or e.action is action]


# ------------------------------------------------------------------------------ apply
def test_apply_stores_the_referral_counts_it_and_audits_it(w):
    # When the village doctor refers the patient up, urgently
    out = w.service.apply(REFERRER, application(urgency="urgent", target_doctor_id="doc-wang"))
    # Then the referral is stored pending review, with the patient's snapshot from the index
    r = w.stored(out["referral_id"])
    assert out == w.service.view(r, REFERRER)
    assert r.status is S.PENDING_REVIEW and r.version == 1
    assert r.patient == PATIENT_SNAPSHOT
    assert r.target_doctor == {"doctor_id": "doc-wang", "name": "王芳"}
    assert parse_time(r.due_at) == T0 + timedelta(seconds=300)
    assert out["actions"] == ["cancel"] and out["overdue"] is False
    # And counted once in the day's rollup
    rows = w.store.rollups(C, "2026-06-01", "2026-06-01")
    assert [(x["source"], x["target"], x["applied"], x["up"], x["in_county"]) for x in rows] == [
        ("qiaotou-lijia", "qiaotou", 1, 1, 1),
    ]  # fmt: skip
    # And one CREATE audit event names the person and the referral
    (event,) = w.audit.events
    assert (event.action, event.what, event.person_ids) == (
        AuditAction.CREATE, "Referral", (PATIENT_ID,),
    )  # fmt: skip
    assert event.actor_subject == "doc-li" and event.actor_institution == "qiaotou-lijia"
    assert event.detail == {"referral_id": r.referral_id, "action": "apply"}


@pytest.mark.parametrize(
    "who,changes,error,code",
    [
        (REFERRER, {"patient_id": "p-nobody"}, InvalidInput, "UNKNOWN_PATIENT"),
        (REFERRER, {"patient_id": "p-elsewhere"}, InvalidInput, "UNKNOWN_PATIENT"),
        (REFERRER, {"patient_id": "p-old"}, InvalidInput, "PATIENT_MERGED"),
        (REFERRER, {"target_institution_id": "nowhere"}, InvalidInput, "UNKNOWN_TARGET"),
        (REFERRER, {"target_institution_id": "old-clinic"}, InvalidInput, "TARGET_INACTIVE"),
        (REFERRER, {"target_doctor_id": "doc-nobody"}, InvalidInput, "UNKNOWN_DOCTOR"),
        # a real doctor, but at another institution than the target
        (REFERRER, {"target_doctor_id": "doc-xia"}, InvalidInput, "UNKNOWN_DOCTOR"),
        (replace(REFERRER, institution_id="gone"), {}, InvalidInput, "UNKNOWN_INSTITUTION"),
        (REFERRER, {"target_institution_id": "qiaotou-lijia"}, InvalidInput, "REFERRAL_TO_SELF"),
        (RESIDENT, {}, Forbidden, "ROLE_NOT_ALLOWED"),
        (CENTRE, {}, Forbidden, "ROLE_NOT_ALLOWED"),
        (CONSORTIUM_ADMIN, {}, Forbidden, "ROLE_NOT_ALLOWED"),
    ],
)  # fmt: skip
def test_apply_refusals_store_nothing(w, who, changes, error, code):
    with pytest.raises(error) as exc:
        w.service.apply(who, application(**changes))
    assert exc.value.code == code
    assert w.store.items == {} and w.store.stats == {} and w.audit.events == []


def test_a_merged_patient_names_the_survivor(w):
    with pytest.raises(InvalidInput) as exc:
        w.apply(patient_id="p-old")
    assert exc.value.details == {"survivor_id": PATIENT_ID}


def test_the_same_idempotency_key_and_body_return_the_same_referral(w):
    first = w.service.apply(REFERRER, application(), "key-1")
    again = w.service.apply(REFERRER, application(), "key-1")
    assert again == first and len(w.store.items) == 1 and len(events(w)) == 1
    # the same key with another body is a conflict; another key is another referral
    with pytest.raises(Conflict) as exc:
        w.service.apply(REFERRER, application(urgency="urgent"), "key-1")
    assert exc.value.code == "IDEMPOTENCY_KEY_REUSED"
    w.service.apply(REFERRER, application(), "key-2")
    assert len(w.store.items) == 2


def test_a_reference_collision_draws_another_and_counts_once(w):
    # Given a referral whose reference the next draw repeats
    taken = w.apply()
    draws = iter([taken, "ZZ260601XYZ0001"])
    w.service.new_id = lambda now: next(draws)
    # When another referral is applied
    out = w.service.apply(REFERRER, application(patient_id="p-other"))
    # Then it gets a fresh reference; the first is untouched; statistics count two
    assert out["referral_id"] == "ZZ260601XYZ0001"
    assert w.stored(taken).person_id == PATIENT_ID
    (row,) = w.store.rollups(C, "2026-06-01", "2026-06-01")
    assert row["applied"] == 2


# -------------------------------------------------------------------------------- act
def test_act_spends_the_workflow_token_with_the_outcome(w):
    # Given a referral whose workflow waits for the review
    rid = w.apply()
    assert w.wait(rid, Stage.REVIEW, "tok-review") is True
    assert w.store.token_of(rid) == "tok-review"
    # When the receiver accepts it ten minutes later
    w.later(minutes=10)
    out = w.service.act(RECEIVER, rid, A.ACCEPT, {"note": "请空腹", "doctor_id": "doc-wang"})
    # Then the wait is completed with the new status and the arrival wait
    assert w.callbacks.calls == [
        ("tok-review", {"status": "ACCEPTED", "direction": "up", "wait_seconds": 7000}, True),
    ]
    # And the token is spent: not stored, not usable again
    assert w.store.token_of(rid) is None
    assert w.callbacks.resume("tok-review", {}) is False
    assert out["status"] == "ACCEPTED" and out["actions"] == ["arrive"]
    assert out["decision"]["note"] == "请空腹"
    assert out["target_doctor"] == {"doctor_id": "doc-wang", "name": "王芳"}
    update = events(w, AuditAction.UPDATE)
    assert [e.detail for e in update] == [{"referral_id": rid, "action": "accept"}]


def test_act_between_waits_resumes_nothing(w):
    rid = w.apply()
    w.service.act(REFERRER, rid, A.CANCEL, {"reason": "患者拒绝转诊"})
    assert w.callbacks.calls == [] and w.stored(rid).status is S.CANCELLED


def test_a_token_registered_between_read_and_write_is_picked_up(w):
    # Given the workflow registers its wait just after the receiver's read
    rid = w.apply()
    w.store.before_next_save(lambda: w.wait(rid, Stage.REVIEW, "tok-late"))
    # When the receiver rejects
    w.service.act(RECEIVER, rid, A.REJECT, {"reason_code": "NO_CAPACITY"})
    # Then the stale write is retried with the new token, which is spent
    assert w.store.save_attempts == 2
    assert [(t, o["status"], ok) for t, o, ok in w.callbacks.calls] == [
        ("tok-late", "REJECTED", True),
    ]
    assert w.store.token_of(rid) is None


def test_a_referral_that_keeps_changing_is_a_409_after_retries(w):
    # Given a referral that something rewrites before each of our writes
    rid = w.apply()

    def touch():
        r, token = w.store.get(rid)
        w.store.put(replace(r, version=r.version + 1), token)

    for _ in range(MAX_ATTEMPTS):
        w.store.before_next_save(touch)
    # When the receiver accepts
    with pytest.raises(Conflict) as exc:
        w.service.act(RECEIVER, rid, A.ACCEPT, {})
    # Then it retried each time, then gave up; our change was never written
    assert exc.value.code == "VERSION_CONFLICT"
    assert w.store.save_attempts == MAX_ATTEMPTS
    assert w.stored(rid).status is S.PENDING_REVIEW
    assert events(w, AuditAction.UPDATE) == []


def test_of_two_concurrent_decisions_the_first_wins_and_the_second_is_a_409(w):
    # Given the referral centre accepts while the receiver's rejection is in flight
    rid = w.apply()
    w.wait(rid, Stage.REVIEW, "tok")
    w.store.before_next_save(lambda: w.service.act(CENTRE, rid, A.ACCEPT, {}))
    # When the receiver's write lands
    with pytest.raises(Conflict) as exc:
        w.service.act(RECEIVER, rid, A.REJECT, {"reason_code": "NO_CAPACITY"})
    # Then the rejection is refused on the re-read; the acceptance stands, told once
    assert exc.value.code == "INVALID_TRANSITION"
    r = w.stored(rid)
    assert r.status is S.ACCEPTED and [h["action"] for h in r.history] == ["apply", "accept"]
    assert [(t, ok) for t, _, ok in w.callbacks.calls] == [("tok", True)]
    (row,) = w.store.rollups(C, "2026-06-01", "2026-06-01")
    assert (row["accepted"], row["decided"], row.get("rejected", 0)) == (1, 1, 0)


@pytest.mark.parametrize(
    "who,rid,code",
    [(RECEIVER, "ZZ-nope", "REFERRAL_NOT_FOUND"), (OUTSIDER, None, "REFERRAL_NOT_FOUND"),
     (RECEIVER, "", "REFERRAL_NOT_FOUND")],
)  # fmt: skip
def test_act_on_a_referral_nobody_here_has_is_404(w, who, rid, code):
    real = w.apply()
    with pytest.raises(NotFound) as exc:
        w.service.act(who, real if rid is None else rid, A.ACCEPT, {})
    assert exc.value.code == code


@pytest.mark.parametrize(
    "who,action,data,code",
    [
        (RECEIVER, A.ACCEPT, {"doctor_id": "doc-nobody"}, "UNKNOWN_DOCTOR"),
        (CENTRE, A.REASSIGN, {"target_institution_id": "nowhere", "reason": "x"},
         "UNKNOWN_TARGET"),
        (CENTRE, A.REASSIGN, {"reason": "x"}, "TARGET_REQUIRED"),
        # the new target's doctor must work there
        (CENTRE, A.REASSIGN,
         {"target_institution_id": "xiadu", "target_doctor_id": "doc-wang", "reason": "x"},
         "UNKNOWN_DOCTOR"),
        (RECEIVER, A.REJECT, {"reason_code": "BUSY"}, "INVALID_REASON_CODE"),
    ],
)  # fmt: skip
def test_act_input_errors(w, who, action, data, code):
    rid = w.apply()
    with pytest.raises(InvalidInput) as exc:
        w.service.act(who, rid, action, data)
    assert exc.value.code == code
    assert w.stored(rid).version == 1


def test_reassign_through_the_service(w):
    rid = w.apply()
    out = w.service.act(
        CENTRE, rid, A.REASSIGN,
        {"target_institution_id": "xiadu", "target_doctor_id": "doc-xia", "reason": "无床位",
         "target_department": "内科"},
    )  # fmt: skip
    assert out["to"]["institution_id"] == "xiadu" and out["status"] == "PENDING_REVIEW"
    assert out["target_doctor"] == {"doctor_id": "doc-xia", "name": "夏医生"}
    assert out["target_department"] == "内科"
    rows = {(r["target"], r["applied"]) for r in w.store.rollups(C, "2026-06-01", "2026-06-01")}
    assert rows == {("qiaotou", 0), ("xiadu", 1)}


def test_a_forbidden_act_changes_nothing(w):
    rid = w.apply()
    with pytest.raises(Forbidden) as exc:
        w.service.act(OTHER_TOWNSHIP, rid, A.ACCEPT, {})
    assert exc.value.code == "NOT_RECEIVING_INSTITUTION"
    assert w.stored(rid).version == 1 and w.store.save_attempts == 0


# ---------------------------------------------------------------------- the workflow
def test_await_stage_keeps_the_token_while_the_status_matches(w):
    rid = w.apply()
    assert w.wait(rid, Stage.REVIEW, "t1") is True
    assert w.store.items[rid]["wait_stage"] == "review"
    assert w.callbacks.calls == []


def test_await_stage_completes_at_once_when_the_referral_moved_on(w):
    # Given the receiver accepted before the workflow entered the review wait
    rid = w.apply()
    w.later(minutes=1)
    w.service.act(RECEIVER, rid, A.ACCEPT, {})
    # When the workflow's review wait registers
    kept = w.wait(rid, Stage.REVIEW, "t-late")
    # Then the token is not kept and the wait completes with the current state
    assert kept is False and w.store.token_of(rid) is None
    assert w.callbacks.calls == [
        ("t-late", {"status": "ACCEPTED", "direction": "up", "wait_seconds": 7000}, True),
    ]
    # And the arrival wait that follows registers normally
    assert w.wait(rid, Stage.ARRIVAL, "t-arrival") is True


def test_await_stage_of_an_unknown_referral_is_404(w):
    with pytest.raises(NotFound):
        w.wait("ZZ-nope", Stage.REVIEW, "t")


@pytest.mark.parametrize(
    "setup,stage,status,wait_seconds,counter",
    [
        ([], Stage.REVIEW, S.ESCALATED, 4000, "escalated"),
        ([(A.ESCALATE, None, {})], Stage.ESCALATED, S.EXPIRED, 1, "expired"),
        ([(A.REQUEST_INFO, RECEIVER, {"question": "?"})], Stage.MORE_INFO, S.EXPIRED, 1,
         "expired"),
        ([(A.ACCEPT, RECEIVER, {})], Stage.ARRIVAL, S.NO_SHOW, 1, "no_show"),
    ],
)  # fmt: skip
def test_on_timeout_takes_the_system_action(w, setup, stage, status, wait_seconds, counter):
    # Given a referral in the stage's status, its workflow waiting
    rid = w.apply()
    for action, who, data in setup:
        if who is None:
            w.clock.t = parse_time(w.stored(rid).due_at)
            w.service.on_timeout(rid, Stage.REVIEW)
        else:
            w.service.act(who, rid, action, data)
    w.wait(rid, stage, "tok")
    # When the wait's limit passes (Step Functions times the token out)
    w.clock.t = parse_time(w.stored(rid).due_at)
    w.callbacks.time_out("tok")
    outcome = w.service.on_timeout(rid, stage)
    # Then the system action is taken and the outcome routes the workflow
    r = w.stored(rid)
    assert outcome == {"status": str(status), "direction": "up", "wait_seconds": wait_seconds}
    assert r.status is status and r.history[-1]["by"]["sub"] == "system:referral-workflow"
    (row,) = w.store.rollups(C, "2026-06-01", "2026-06-01")
    assert row[counter] == 1
    # the timed-out token is refused quietly, and spent in the store
    assert w.callbacks.calls[-1] == ("tok", outcome, False)
    assert w.store.token_of(rid) is None


def test_on_timeout_after_the_deadline_moved_waits_again(w):
    # Given a referral reassigned (a fresh review deadline) before the old one passed
    rid = w.apply()
    w.later(seconds=2000)
    w.service.act(CENTRE, rid, A.REASSIGN, {"target_institution_id": "xiadu", "reason": "x"})
    before = w.stored(rid)
    # When the old review wait's limit passes
    w.later(seconds=1000)
    outcome = w.service.on_timeout(rid, Stage.REVIEW)
    # Then nothing changes; the workflow waits for the rest of the new deadline
    assert outcome == {"status": "PENDING_REVIEW", "direction": "up", "wait_seconds": 2000}
    assert w.stored(rid) == before


def test_on_timeout_finds_a_decision_that_raced_the_timer(w):
    # Given the receiver accepted just as the review limit passed
    rid = w.apply()
    w.clock.t = parse_time(w.stored(rid).due_at)
    w.service.act(RECEIVER, rid, A.ACCEPT, {})
    # When the timeout task runs
    outcome = w.service.on_timeout(rid, Stage.REVIEW)
    # Then the decision stands and the workflow goes on to wait for arrival
    assert outcome == {"status": "ACCEPTED", "direction": "up", "wait_seconds": 7000}
    assert w.stored(rid).status is S.ACCEPTED and w.stored(rid).escalated is False


def test_on_timeout_reconciles_a_decision_landing_between_read_and_write(w):
    # Given the receiver's acceptance lands between the timeout's read and its write
    rid = w.apply()
    w.clock.t = parse_time(w.stored(rid).due_at)
    w.store.before_next_save(lambda: w.service.act(RECEIVER, rid, A.ACCEPT, {}))
    # When the timeout task runs
    outcome = w.service.on_timeout(rid, Stage.REVIEW)
    # Then the acceptance wins: not escalated, counted once
    r = w.stored(rid)
    assert outcome["status"] == "ACCEPTED" and r.status is S.ACCEPTED and not r.escalated
    assert [h["action"] for h in r.history] == ["apply", "accept"]
    (row,) = w.store.rollups(C, "2026-06-01", "2026-06-01")
    assert row["accepted"] == 1 and row.get("escalated", 0) == 0


@pytest.mark.parametrize(
    "stage,first,raced,status",
    [
        # the referral centre asks for information as the escalation limit passes
        (Stage.ESCALATED, True, (CENTRE, A.REQUEST_INFO, {"question": "请补充心电图"}),
         S.MORE_INFO),
        # the referral centre reassigns (a fresh review deadline) as the review limit passes
        (Stage.REVIEW, False,
         (CENTRE, A.REASSIGN, {"target_institution_id": "xiadu", "reason": "无床位"}),
         S.PENDING_REVIEW),
    ],
)  # fmt: skip
def test_on_timeout_does_not_override_a_person_s_action_that_raced_its_write(
    w, stage, first, raced, status
):
    # Given a referral whose wait's limit has passed
    rid = w.apply()
    if first:
        w.clock.t = parse_time(w.stored(rid).due_at)
        w.service.on_timeout(rid, Stage.REVIEW)  # escalated
    w.clock.t = parse_time(w.stored(rid).due_at)
    # And a person's action that lands between the timeout's read and its write
    who, action, data = raced
    w.store.before_next_save(lambda: w.service.act(who, rid, action, data))
    # When the timeout task runs
    outcome = w.service.on_timeout(rid, stage)
    # Then the person's action stands (its new deadline has not passed): nothing expires
    # or escalates behind their back, and the workflow waits for the new deadline
    r = w.stored(rid)
    assert [h["action"] for h in r.history][-1] == str(action)
    assert r.status is status
    assert outcome["status"] == str(status) and outcome["wait_seconds"] > 1


# ------------------------------------------------------------------------- worklists
@pytest.fixture
def county(w) -> dict[str, str]:
    """Referrals to the township centre in every open box, one closed, one downward."""
    ids = {
        "pending": w.apply(),
        "accepted": w.apply(COLLEAGUE, patient_id="p-other"),
        "escalated": w.apply(urgency="emergency"),
        "cancelled": w.apply(),
        "down": w.apply(COUNTY_DOCTOR, direction="down"),
    }
    w.service.act(RECEIVER, ids["accepted"], A.ACCEPT, {})
    w.service.act(REFERRER, ids["cancelled"], A.CANCEL, {"reason": "患者拒绝"})
    w.later(seconds=31)
    w.service.on_timeout(ids["escalated"], Stage.REVIEW)
    w.later(seconds=41)  # the escalation is overdue now too
    w.audit.events.clear()
    return ids


def box(w, who, name) -> tuple[list[str], dict[str, int]]:
    out = w.service.worklist(who, name)
    assert out["box"] == name and out["count"] == len(out["items"])
    assert all("history" not in item for item in out["items"])
    return [item["referral_id"] for item in out["items"]], out["counts"]


def test_the_receiver_s_boxes(w, county):
    ids = county
    to_review, counts = box(w, RECEIVER, "to_review")
    assert sorted(to_review) == sorted([ids["pending"], ids["escalated"], ids["down"]])
    assert box(w, RECEIVER, "awaiting_patient")[0] == [ids["accepted"]]
    assert box(w, RECEIVER, "overdue")[0] == [ids["escalated"]]
    assert box(w, RECEIVER, "sent")[0] == []
    assert counts == {"to_review": 3, "awaiting_patient": 1, "overdue": 1, "sent": 0}


def test_to_review_is_ordered_by_deadline(w, county):
    to_review, _ = box(w, RECEIVER_ADMIN, "to_review")
    dues = [w.stored(i).due_at for i in to_review]
    assert dues == sorted(dues)


def test_a_doctor_sees_only_their_own_sent_referrals(w, county):
    ids = county
    assert sorted(box(w, REFERRER, "sent")[0]) == sorted([ids["pending"], ids["escalated"]])
    assert box(w, COLLEAGUE, "sent")[0] == [ids["accepted"]]
    # the institution's admin sees all it sent that are open
    admin = box(w, SOURCE_ADMIN, "sent")[0]
    assert sorted(admin) == sorted([ids["pending"], ids["accepted"], ids["escalated"]])


def test_the_escalated_box_is_the_referral_centre_s(w, county):
    ids = county
    for who in (CENTRE, CONSORTIUM_ADMIN):
        escalated, counts = box(w, who, "escalated")
        assert escalated == [ids["escalated"]] and counts["escalated"] == 1
    assert "escalated" not in box(w, RECEIVER, "to_review")[1]
    with pytest.raises(Forbidden) as exc:
        w.service.worklist(RECEIVER, "escalated")
    assert exc.value.code == "NOT_REFERRAL_CENTRE"


def test_an_unknown_box_is_refused(w, county):
    with pytest.raises(InvalidInput) as exc:
        w.service.worklist(RECEIVER, "inbox")
    assert exc.value.code == "UNKNOWN_BOX"
    assert exc.value.details["allowed"] == [
        "to_review", "awaiting_patient", "overdue", "sent", "escalated",
    ]  # fmt: skip


def test_a_worklist_is_audited_as_one_search_naming_everyone_listed(w, county):
    box(w, RECEIVER, "to_review")
    (event,) = w.audit.events
    assert event.action is AuditAction.SEARCH and event.what == "Referral.worklist"
    assert event.person_ids == (PATIENT_ID,) and event.detail == {"box": "to_review"}
    box(w, RECEIVER, "sent")  # an empty box lists nobody: nothing to audit
    assert len(w.audit.events) == 1


def test_a_resident_s_worklist_is_their_own_referrals(w, county):
    ids = county
    out = w.service.worklist(RESIDENT, "whatever")
    listed = [i["referral_id"] for i in out["items"]]
    assert sorted(listed) == sorted(set(ids.values()) - {ids["accepted"]})
    assert out["count"] == 4 and all("clinical_summary" not in i for i in out["items"])
    assert all(i["actions"] == [] for i in out["items"])
    assert w.service.worklist(OTHER_RESIDENT, "to_review")["items"] == [
        w.service.view(w.stored(ids["accepted"]), OTHER_RESIDENT)
    ]
    with pytest.raises(Forbidden) as exc:
        w.service.worklist(replace(RESIDENT, person_id=None), "to_review")
    assert exc.value.code == "NO_PERSON"


# ----------------------------------------------------------------------------- reads
@pytest.mark.parametrize(
    "who", [REFERRER, COLLEAGUE, SOURCE_ADMIN, RECEIVER, RECEIVER_ADMIN, CENTRE,
            CONSORTIUM_ADMIN, RESIDENT],
)  # fmt: skip
def test_the_parties_read_a_referral_and_each_read_is_audited(w, who):
    rid = w.apply()
    w.audit.events.clear()
    out = w.service.get(who, rid)
    assert out["referral_id"] == rid and len(out["history"]) == 1
    assert out["actions"] == w.service.view(w.stored(rid), who)["actions"]
    (event,) = w.audit.events
    assert (event.action, event.outcome, event.person_ids) == (
        AuditAction.READ, AuditOutcome.SUCCESS, (PATIENT_ID,),
    )  # fmt: skip
    assert event.actor_subject == who.subject and event.detail == {"referral_id": rid}
    # the patient's own view leaves the clinical summary out
    assert ("clinical_summary" in out) is (who.role is not Role.RESIDENT)


@pytest.mark.parametrize("who", [OTHER_TOWNSHIP, COUNTY_DOCTOR, OTHER_RESIDENT])
def test_anyone_else_is_refused_and_the_refusal_is_audited(w, who):
    rid = w.apply()
    w.audit.events.clear()
    for read in (w.service.get, w.service.referral_for_fhir):
        with pytest.raises(Forbidden) as exc:
            read(who, rid)
        assert exc.value.code == "NOT_A_PARTY"
    assert [(e.action, e.outcome, e.actor_subject, e.person_ids) for e in w.audit.events] == [
        (AuditAction.READ, AuditOutcome.DENIED, who.subject, (PATIENT_ID,)),
    ] * 2


def test_another_consortium_does_not_see_that_the_referral_exists(w):
    rid = w.apply()
    w.audit.events.clear()
    with pytest.raises(NotFound):
        w.service.get(OUTSIDER, rid)
    with pytest.raises(NotFound):
        w.service.get(replace(CENTRE, consortium_id="other-county"), rid)


def test_the_fhir_read_is_audited_as_such(w):
    rid = w.apply()
    w.audit.events.clear()
    assert w.service.referral_for_fhir(RECEIVER, rid) == w.stored(rid)
    assert [e.what for e in w.audit.events] == ["Referral.fhir"]


def test_the_view_says_when_a_referral_is_overdue(w):
    rid = w.apply()
    w.clock.t = parse_time(w.stored(rid).due_at) - timedelta(seconds=1)
    assert w.service.get(RECEIVER, rid)["overdue"] is False
    w.later(seconds=1)
    assert w.service.get(RECEIVER, rid)["overdue"] is True


# ------------------------------------------------------------------------ statistics
@pytest.fixture
def activity(w) -> World:
    """Referrals over two days: up to the township (one accepted after 5 min, one rejected
    after 15), up out of county, and down from the county hospital (acknowledged)."""
    a = w.apply()
    w.later(minutes=5)
    w.service.act(RECEIVER, a, A.ACCEPT, {})
    b = w.apply(patient_id="p-other")
    w.later(minutes=15)
    w.service.act(RECEIVER, b, A.REJECT, {"reason_code": "NO_CAPACITY"})
    w.clock.t = T0 + timedelta(days=1)
    w.apply(target_institution_id="city-hospital")
    d = w.apply(COUNTY_DOCTOR, direction="down")
    w.later(minutes=1)
    w.service.act(RECEIVER, d, A.ACKNOWLEDGE, {})
    w.clock.t = T0 + timedelta(days=3)
    return w


def test_stats_for_the_consortium(activity):
    out = activity.service.stats(CENTRE, "2026-06-01", "2026-06-02", None)
    assert out["period"] == {"from": "2026-06-01", "to": "2026-06-02"}
    t = out["totals"]
    assert (t["applied"], t["up"], t["down"], t["accepted"], t["rejected"]) == (4, 3, 1, 1, 1)
    assert (t["acknowledged"], t["decided"], t["in_county"], t["out_of_county"]) == (1, 3, 3, 1)
    assert t["acceptance_rate"] == round(2 / 3, 4) and t["out_of_county_share"] == 0.25
    assert t["median_decision_minutes"] == 5.0
    by = {i["institution_id"]: i for i in out["by_institution"]}
    assert set(by) == {"qiaotou-lijia", "qiaotou", "city-hospital", "county-hospital"}
    assert by["qiaotou-lijia"]["name"] == "桥头镇李家村卫生室"
    assert by["qiaotou-lijia"]["sent"]["applied"] == 3
    assert by["qiaotou"]["received"]["applied"] == 3 and by["qiaotou"]["sent"]["applied"] == 0
    assert by["qiaotou"]["received"]["median_decision_minutes"] == 5.0
    assert out["daily"] == [{"day": "2026-06-01", "up": 2, "down": 0},
                            {"day": "2026-06-02", "up": 1, "down": 1}]  # fmt: skip


def test_stats_period_is_inclusive(activity):
    out = activity.service.stats(CONSORTIUM_ADMIN, "2026-06-02", "2026-06-02", None)
    assert out["totals"]["applied"] == 2 and [d["day"] for d in out["daily"]] == ["2026-06-02"]


def test_stats_default_to_the_last_thirty_days(activity):
    out = activity.service.stats(CENTRE, "", "", None)
    assert out["period"] == {"from": "2026-05-06", "to": "2026-06-04"}
    assert out["totals"]["applied"] == 4


def test_a_doctor_sees_their_own_institution_s_figures_only(activity):
    out = activity.service.stats(RECEIVER, "2026-06-01", "2026-06-02", None)
    assert out["institution_id"] == "qiaotou"
    assert [i["institution_id"] for i in out["by_institution"]] == ["qiaotou"]
    assert out["totals"]["applied"] == 3  # the out-of-county one does not involve them
    assert activity.service.stats(RECEIVER, "2026-06-01", "2026-06-02", "qiaotou") == out
    with pytest.raises(Forbidden) as exc:
        activity.service.stats(RECEIVER, "2026-06-01", "2026-06-02", "qiaotou-lijia")
    assert exc.value.code == "OTHER_INSTITUTION"


def test_the_referral_centre_may_look_at_one_institution(activity):
    out = activity.service.stats(CENTRE, "2026-06-01", "2026-06-02", "city-hospital")
    assert out["totals"]["applied"] == 1 and out["totals"]["out_of_county_share"] == 1.0


@pytest.mark.parametrize(
    "first,last,code",
    [("2026-13-01", "2026-06-01", "INVALID_DATE"), ("2026-06-01", "yesterday", "INVALID_DATE"),
     ("2026-06-02", "2026-06-01", "EMPTY_PERIOD"), ("2023-05-29", "2026-06-01", "PERIOD_TOO_LONG"),
     ("", "2020-01-01", None), ("2023-05-30", "2026-06-01", None)],
)  # fmt: skip
def test_stats_period_validation(w, first, last, code):
    if code is None:
        w.service.stats(CENTRE, first, last, None)
        return
    with pytest.raises(InvalidInput) as exc:
        w.service.stats(CENTRE, first, last, None)
    assert exc.value.code == code


def test_residents_have_no_statistics(w):
    with pytest.raises(Forbidden):
        w.service.stats(RESIDENT, "", "", None)


def day_level_stats(w: World, who: Principal, first: str, last: str, inst: str | None) -> dict:
    """The figures as every day rollup of the period gives them (the reference for the month
    rollups and the chart): the same filter and sums, daily from the days' own rows."""
    if who.role not in (Role.CONSORTIUM_ADMIN, Role.REFERRAL_CENTRE):
        inst = who.institution_id
    totals: dict[str, int] = {}
    sent: dict[str, dict[str, int]] = {}
    received: dict[str, dict[str, int]] = {}
    daily: dict[str, dict[str, int]] = {}

    def add(into: dict[str, int], counters: dict[str, int]) -> None:
        for k, v in counters.items():
            into[k] = into.get(k, 0) + v

    for row in w.store.rollups(who.consortium_id, first, last):
        counters = {k: int(v) for k, v in row.items() if k in COUNTERS or k.startswith("dm_")}
        if inst and inst not in (row["source"], row["target"]):
            continue
        add(totals, counters)
        add(sent.setdefault(row["source"], {}), counters)
        add(received.setdefault(row["target"], {}), counters)
        day = daily.setdefault(row["day"], {"up": 0, "down": 0})
        day["up"] += counters.get("up", 0)
        day["down"] += counters.get("down", 0)
    names = {i.institution_id: i.name for i in county_directory().list_institutions(C)}
    return {
        "period": {"from": first, "to": last},
        "institution_id": inst,
        "totals": summarise(totals),
        "by_institution": [
            {
                "institution_id": i,
                "name": names.get(i, i),
                "sent": summarise(sent.get(i, {})),
                "received": summarise(received.get(i, {})),
            }
            for i in ([inst] if inst else sorted(set(sent) | set(received)))
        ],
        "daily": [{"day": d, **daily[d]} for d in sorted(daily)],
    }


def random_activity(w: World, rng: random.Random, n: int, start: datetime, days: int) -> None:
    """n referrals over `days` from `start`: up from the village (in and out of county) and
    down from the county hospital, some reassigned, decided after a random delay, cancelled."""
    routes = [(REFERRER, "up", ("qiaotou", "xiadu", "county-hospital", "city-hospital")),
              (COUNTY_DOCTOR, "down", ("qiaotou", "xiadu"))]  # fmt: skip
    for _ in range(n):
        who, direction, targets = rng.choice(routes)
        target = rng.choice(targets)
        w.clock.t = start + timedelta(minutes=rng.randrange(days * 24 * 60))
        rid = w.apply(who, direction=direction, target_institution_id=target)
        if rng.random() < 0.2:
            others = [t for t in targets if t != target]
            w.later(minutes=rng.randrange(1, 30))
            change = {"target_institution_id": rng.choice(others), "reason": "无床位"}
            w.service.act(CENTRE, rid, A.REASSIGN, change)
        w.later(minutes=rng.randrange(0, 600))
        outcome = rng.random()
        if outcome < 0.5:
            decision = A.ACCEPT if direction == "up" else A.ACKNOWLEDGE
            w.service.act(CENTRE, rid, decision, {})
        elif outcome < 0.7:
            w.service.act(CENTRE, rid, A.REJECT, {"reason_code": "NO_CAPACITY"})
        elif outcome < 0.8:
            w.service.act(who, rid, A.CANCEL, {"reason": "患者拒绝"})


def test_stats_from_months_and_the_chart_equal_the_day_level_figures(w):
    # Given random activity from late November to mid-February (a year boundary, whole
    # and partial months, days without referrals)
    rng = random.Random(4)
    random_activity(w, rng, 160, datetime(2026, 11, 20, tzinfo=CHINA_TZ), 88)
    w.clock.t = datetime(2027, 3, 1, 9, 0, tzinfo=CHINA_TZ)
    # Then every period, for the consortium, one institution, or a doctor's own, gives the
    # figures the day rollups give
    fixed = [("2026-11-15", "2027-02-20"), ("2026-12-01", "2026-12-31"),
             ("2026-12-31", "2027-01-01"), ("2026-12-01", "2027-01-31"),
             ("2026-11-30", "2027-02-01"), ("2027-01-05", "2027-01-05"),
             ("2026-12-02", "2027-01-30"), ("2026-12-15", "2027-01-15")]  # fmt: skip
    lo = datetime(2026, 11, 10).date()
    randoms = []
    for _ in range(40):
        a, b = sorted(lo + timedelta(days=rng.randrange(110)) for _ in range(2))
        randoms.append((a.isoformat(), b.isoformat()))
    viewers = [(CENTRE, None), (CENTRE, "xiadu"), (CONSORTIUM_ADMIN, "city-hospital"),
               (RECEIVER, None), (COUNTY_DOCTOR, None), (REFERRER, None)]  # fmt: skip
    compared = 0
    for first, last in fixed + randoms:
        for who, inst in viewers:
            got = w.service.stats(who, first, last, inst)
            assert got == day_level_stats(w, who, first, last, inst), (first, last, who, inst)
            compared += bool(got["daily"])
    assert compared > 100  # most periods have referrals


@pytest.mark.parametrize(
    "first,last,days,months",
    [("2026-01-01", "2026-12-31", [], ("2026-01", "2026-12")),
     ("2026-06-05", "2026-06-20", [("2026-06-05", "2026-06-20")], None),
     ("2026-06-05", "2026-07-10", [("2026-06-05", "2026-07-10")], None),
     ("2026-06-05", "2026-08-01", [("2026-06-05", "2026-06-30"), ("2026-08-01", "2026-08-01")],
      ("2026-07", "2026-07")),
     ("2026-12-15", "2027-02-28", [("2026-12-15", "2026-12-31")], ("2027-01", "2027-02")),
     ("2026-06-01", "2026-07-01", [("2026-07-01", "2026-07-01")], ("2026-06", "2026-06")),
     ("2024-02-01", "2024-02-29", [], ("2024-02", "2024-02")),
     ("2024-02-01", "2024-02-28", [("2024-02-01", "2024-02-28")], None)],
)  # fmt: skip
def test_a_period_reads_whole_months_and_the_days_of_partial_ones(first, last, days, months):
    assert _split(first, last) == (days, months)


# ------------------------------------------------------------------------- the relay
def _life(w: World) -> list[Referral]:
    """An upward referral's stored versions: applied, a wait token kept, accepted."""
    rid = w.apply()
    applied = w.stored(rid)
    w.wait(rid, Stage.REVIEW, "tok")
    waiting = w.stored(rid)
    w.later(minutes=3)
    w.service.act(RECEIVER, rid, A.ACCEPT, {"proposed_time": iso(T0 + timedelta(days=1))})
    return [applied, waiting, w.stored(rid)]


def test_events_for_each_stored_change(w):
    applied, waiting, accepted = _life(w)
    # a new referral
    ((kind, detail),) = events_for(None, applied)
    assert kind == APPLIED and detail["status"] == "PENDING_REVIEW"
    assert detail["previous_status"] is None and detail["action"] == "apply"
    # a wait token kept: no event
    assert events_for(applied, waiting) == []
    # an upward acceptance: the status change and the booking seam
    out = events_for(waiting, accepted)
    assert [k for k, _ in out] == [STATUS_CHANGED, ACCEPTED]
    detail = out[0][1]
    assert (detail["previous_status"], detail["status"], detail["by"]) == (
        "PENDING_REVIEW", "ACCEPTED", "doc-wang",
    )  # fmt: skip
    assert detail["proposed_time"] == "2026-06-02T09:00:00+08:00"
    # events carry ids and codes, never the patient's name
    assert "张伟" not in repr(out) and detail["person_id"] == PATIENT_ID


def test_no_booking_event_for_a_downward_acknowledgement_or_a_rejection(w):
    down = w.apply(COUNTY_DOCTOR, direction="down")
    before = w.stored(down)
    w.service.act(RECEIVER, down, A.ACKNOWLEDGE, {})
    assert [k for k, _ in events_for(before, w.stored(down))] == [STATUS_CHANGED]
    up = w.apply()
    before = w.stored(up)
    w.service.act(RECEIVER, up, A.REJECT, {"reason_code": "OTHER"})
    assert [k for k, _ in events_for(before, w.stored(up))] == [STATUS_CHANGED]


def test_a_reassignment_is_a_status_change_event_though_the_status_stays(w):
    rid = w.apply()
    before = w.stored(rid)
    w.service.act(CENTRE, rid, A.REASSIGN, {"target_institution_id": "xiadu", "reason": "x"})
    ((kind, detail),) = events_for(before, w.stored(rid))
    assert kind == STATUS_CHANGED and detail["to_institution"] == "xiadu"
    assert detail["previous_status"] == detail["status"] == "PENDING_REVIEW"


def test_the_relay_starts_one_workflow_per_new_referral_and_publishes_in_order(w):
    applied, waiting, accepted = _life(w)
    other = w.stored(w.apply(patient_id="p-other"))
    starter, publisher = FakeStarter(), FakePublisher()
    relay = ReferralEventRelay(starter, publisher, ARN, clock=w.clock)
    changes = [(None, applied), (applied, waiting), (waiting, accepted), (None, other)]
    # When a stream batch is relayed
    assert relay.relay(changes) == 4
    # Then each new referral's workflow starts, named after it, with its first wait
    assert starter.started == {
        applied.referral_id: (ARN, {"referral_id": applied.referral_id,
                                    "outcome": {"status": "PENDING_REVIEW", "direction": "up",
                                                "wait_seconds": 3000 - 180}}),
        other.referral_id: (ARN, {"referral_id": other.referral_id,
                                  "outcome": {"status": "PENDING_REVIEW", "direction": "up",
                                              "wait_seconds": 3000}}),
    }  # fmt: skip
    # And every event goes out in one publish, in stream order
    (batch,) = publisher.batches
    assert [(k, d["referral_id"]) for k, d in batch] == [
        (APPLIED, applied.referral_id), (STATUS_CHANGED, applied.referral_id),
        (ACCEPTED, applied.referral_id), (APPLIED, other.referral_id),
    ]  # fmt: skip
    # A retried batch starts nothing twice
    relay.relay(changes)
    assert starter.calls == 4 and len(starter.started) == 2


def test_a_batch_without_events_publishes_nothing(w):
    applied, waiting, _ = _life(w)
    publisher = FakePublisher()
    relay = ReferralEventRelay(FakeStarter(), publisher, ARN, clock=w.clock)
    assert relay.relay([(applied, waiting)]) == 0 and publisher.batches == []


# --------------------------------------------------------------------- notifications
def detail_for(w: World, status: Status) -> dict[str, Any]:
    r = replace(w.stored(w.apply()), status=status)
    return event_detail(r, S.PENDING_REVIEW)


REF_USER, TO_INST, PATIENT = "user:doc-li", "inst:qiaotou", f"person:{PATIENT_ID}"


@pytest.mark.parametrize(
    "status,recipients",
    [
        (S.PENDING_REVIEW, [TO_INST]),
        (S.CANCELLED, [TO_INST]),
        (S.MORE_INFO, [REF_USER]),
        (S.ESCALATED, [REF_USER, CENTRE_RECIPIENT]),
        (S.ACCEPTED, [REF_USER, PATIENT]),
        (S.ACKNOWLEDGED, [REF_USER, PATIENT]),
        (S.REJECTED, [REF_USER, PATIENT]),
        (S.EXPIRED, [REF_USER, PATIENT]),
        (S.ARRIVED, [REF_USER]),
        (S.NO_SHOW, [REF_USER]),
    ],
)
def test_who_is_notified_of_each_status(w, status, recipients):
    detail = detail_for(w, status)
    for kind in (APPLIED, STATUS_CHANGED):
        out = notifications_for(kind, detail)
        assert [n.recipient for n in out] == recipients
        assert {n.kind for n in out} == {f"referral.{status.lower()}"}
        assert all(n.referral_id == detail["referral_id"] and n.consortium_id == C for n in out)
        assert all("张伟" not in n.body for n in out)
    # each recipient's inbox is one its reader reads
    readers = {TO_INST: RECEIVER, REF_USER: REFERRER, CENTRE_RECIPIENT: CENTRE, PATIENT: RESIDENT}
    for r in recipients:
        assert r in recipients_of(readers[r])


def test_the_booking_event_and_unknown_events_notify_nobody(w):
    detail = detail_for(w, S.ACCEPTED)
    assert notifications_for(ACCEPTED, detail) == []
    assert notifications_for("SomethingElse", detail) == []


def test_an_acceptance_notice_carries_the_proposed_time(w):
    detail = {**detail_for(w, S.ACCEPTED), "proposed_time": "2026-06-02T09:30:00+08:00"}
    notes = notifications_for(STATUS_CHANGED, detail)
    assert all(n.body.endswith("建议到院时间 2026-06-02T09:30:00+08:00") for n in notes)
    assert all(n.title == "转诊已接收，请安排患者到院" for n in notes)


def test_the_notifier_delivers_each_notification_on_every_channel(w):
    class Channel:
        def __init__(self) -> None:
            self.got: list = []

        def deliver(self, n) -> None:
            self.got.append(n)

    inbox, sms = Channel(), Channel()
    sent = Notifier([inbox, sms]).handle(STATUS_CHANGED, detail_for(w, S.ESCALATED))
    assert sent == 2 and inbox.got == sms.got and len(inbox.got) == 2
