"""The two-way referral's rules as plain Python (yilian.domain.referral), table-driven:
routes, input checks, the action x status matrix, who may act, deadlines, history,
the workflow's timing decisions, references and the statistics' counters."""

from __future__ import annotations

import itertools
import random
import statistics
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from tests.support.fake_referrals import (
    CENTRE,
    COLLEAGUE,
    CONSORTIUM_ADMIN,
    COUNTY,
    COUNTY_DOCTOR,
    LIMITS,
    OTHER_TOWNSHIP,
    OUTSIDER,
    PATIENT_ID,
    PATIENT_SNAPSHOT,
    RECEIVER,
    RECEIVER_ADMIN,
    REFERRER,
    REGIONAL,
    RESIDENT,
    SOURCE_ADMIN,
    T0,
    TCM,
    TOWNSHIP,
    TOWNSHIP_2,
    VILLAGE,
    application,
)
from yilian.domain.clock import CHINA_TZ
from yilian.domain.directory import TIER_RANK
from yilian.domain.errors import Conflict, DomainError, Forbidden, InvalidInput
from yilian.domain.principal import Principal
from yilian.domain.referral import (
    COUNTERS,
    DEFAULT_LIMITS,
    REFERENCE_ALPHABET,
    SYSTEM_SUBJECT,
    Action,
    Change,
    Direction,
    Referral,
    RollupKey,
    Stage,
    Status,
    TimeLimits,
    Urgency,
    allowed_actions,
    apply,
    check_diagnosis,
    check_route,
    contribution,
    is_reference,
    iso,
    median_from_histogram,
    new_reference,
    parse_time,
    rollup_delta,
    stage_outcome,
    summarise,
    timeout_action,
    transition,
)

S = Status
A = Action
REASON = "原因说明"


def applied(
    direction: str = "up", urgency: str = "routine", *, now: datetime = T0, **kw
) -> Referral:
    """An upward village -> township referral, or a downward county -> township one."""
    up = direction == "up"
    source, who = (VILLAGE, REFERRER) if up else (COUNTY, COUNTY_DOCTOR)
    who = kw.pop("who", who)
    return apply(
        application(direction=direction, urgency=urgency, **kw), who,
        referral_id="ZZ260601ABCDEFG", patient=PATIENT_SNAPSHOT, source=source, target=TOWNSHIP,
        target_doctor=None, now=now, limits=LIMITS,
    )  # fmt: skip


def in_status(status: Status, direction: str = "up", urgency: str = "routine") -> Referral:
    return replace(applied(direction, urgency), status=status)


def act(r: Referral, action: Action, who: Principal | None, at: datetime = T0, **change):
    return transition(r, action, who, Change(**change), now=at, limits=LIMITS)


def code_of(exc_info: pytest.ExceptionInfo) -> str:
    return exc_info.value.code


# ------------------------------------------------------------------------------ routes
RANK = {"village": 0, "township": 1, "county": 2, "regional": 3}
TIERS = {
    "village": VILLAGE, "township": TOWNSHIP, "county": COUNTY, "regional": REGIONAL,
}  # fmt: skip


@pytest.mark.parametrize(
    "direction,source,target", list(itertools.product(["up", "down"], TIERS, TIERS))
)
def test_route_goes_up_to_a_higher_tier_and_down_to_a_lower_one(direction, source, target):
    # Given two institutions of these tiers (another institution of the same tier when equal)
    src = TIERS[source]
    dst = TIERS[target] if source != target else replace(TIERS[target], institution_id="twin")
    # When the route is checked
    if direction == "up" and RANK[target] <= RANK[source]:
        expected = "UPWARD_TO_LOWER_TIER"
    elif direction == "down" and RANK[target] >= RANK[source]:
        expected = "DOWNWARD_TO_HIGHER_TIER"
    else:
        expected = None
    # Then only a strictly higher (up) or lower (down) tier passes
    if expected is None:
        check_route(Direction(direction), src, dst)
    else:
        with pytest.raises(InvalidInput) as exc:
            check_route(Direction(direction), src, dst)
        assert code_of(exc) == expected
        assert exc.value.details == {"source_tier": source, "target_tier": target}


def test_same_tier_is_neither_up_nor_down():
    # Given the county hospital and the county TCM hospital (both county tier)
    for direction, code in (("up", "UPWARD_TO_LOWER_TIER"), ("down", "DOWNWARD_TO_HIGHER_TIER")):
        with pytest.raises(InvalidInput) as exc:
            check_route(Direction(direction), COUNTY, TCM)
        assert code_of(exc) == code


@pytest.mark.parametrize("direction", ["up", "down"])
def test_referral_to_self_is_refused_before_tiers(direction):
    with pytest.raises(InvalidInput) as exc:
        check_route(Direction(direction), TOWNSHIP, TOWNSHIP)
    assert code_of(exc) == "REFERRAL_TO_SELF"


@pytest.mark.parametrize("source", [VILLAGE, TOWNSHIP, COUNTY])
def test_a_regional_hospital_is_an_out_of_county_up_target(source):
    # When any in-county institution refers up to the city hospital
    check_route(Direction.UP, source, REGIONAL)
    who = Principal("d", REFERRER.role, REFERRER.consortium_id, source.institution_id)
    r = apply(
        application(target_institution_id=REGIONAL.institution_id), who, referral_id="R1",
        patient=PATIENT_SNAPSHOT, source=source, target=REGIONAL, target_doctor=None, now=T0,
        limits=LIMITS,
    )  # fmt: skip
    # Then it is allowed and remembered as out of county
    assert r.target.in_county is False and r.source.in_county is True
    assert contribution(r)["out_of_county"] == 1 and "in_county" not in contribution(r)


def test_route_accepts_the_remembered_party_as_source():
    # A reassignment checks the route from the referral's remembered source (a Party)
    r = applied()
    check_route(Direction.UP, r.source, COUNTY)
    with pytest.raises(InvalidInput):
        check_route(Direction.UP, r.source, VILLAGE)


# ------------------------------------------------------------------------- diagnosis
@pytest.mark.parametrize(
    "code,normalised",
    [("I63.9", "I63.9"), ("i63.9", "I63.9"), (" E11 ", "E11"), ("S72.0011", "S72.0011"),
     ("i10.x00", "I10.X00"), ("Z00.0", "Z00.0"), ("A00", "A00")],
)  # fmt: skip
def test_valid_icd10_codes_are_normalised(code, normalised):
    assert check_diagnosis({"code": code, "text": " 脑梗死 "}) == {
        "code": normalised, "text": "脑梗死",
    }  # fmt: skip


@pytest.mark.parametrize(
    "code", ["", "I6", "I639", "163.9", "I63.", "I63.12345", "II3.9", "I63-9", "U99"]
)
def test_malformed_icd10_codes_are_refused(code):
    with pytest.raises(InvalidInput) as exc:
        check_diagnosis({"code": code, "text": "脑梗死"})
    assert code_of(exc) == "INVALID_ICD10"


def test_diagnosis_needs_its_text():
    with pytest.raises(InvalidInput) as exc:
        check_diagnosis({"code": "I63.9", "text": "  "})
    assert code_of(exc) == "DIAGNOSIS_TEXT_REQUIRED"


def test_every_code_the_diagnosis_picker_offers_is_accepted():
    # Given the common codes the referral form's ICD-10 search offers (GET /codes/icd10)
    from yilian.domain.terminology.icd10 import common_codes

    # When each is sent as a referral's diagnosis
    refused = []
    for entry in common_codes():
        try:
            check_diagnosis({"code": entry.code, "text": entry.name})
        except InvalidInput:
            refused.append(entry.code)
    # Then none is refused (U07.1, COVID-19, is in the list and valid ICD-10)
    assert refused == []


def test_diagnosis_code_typed_full_width_is_normalised_like_the_terminology():
    # A Chinese keyboard types full-width characters; the terminology normalises them (NFKC)
    assert check_diagnosis({"code": "Ｉ６３．９", "text": "脑梗死"})["code"] == "I63.9"


# ------------------------------------------------------------------------------ apply
def test_apply_makes_a_pending_referral_with_the_review_deadline():
    # When the village doctor refers a patient up
    r = applied(urgency="urgent", target_department=" 心内科 ", attachments=[{"kind": "record"}])
    # Then it waits for review, version 1, one history entry by the doctor
    assert (r.status, r.direction, r.urgency, r.version) == (S.PENDING_REVIEW, "up", "urgent", 1)
    assert r.source.institution_id == VILLAGE.institution_id
    assert r.target.to_json() == {"institution_id": "qiaotou", "name": "桥头镇卫生院",
                                  "tier": "township", "in_county": True}  # fmt: skip
    assert r.referring_doctor == {"sub": REFERRER.subject, "name": REFERRER.name}
    assert r.consortium_id == REFERRER.consortium_id and r.person_id == PATIENT_ID
    assert r.target_department == "心内科" and r.attachments == ({"kind": "record"},)
    assert parse_time(r.due_at) == T0 + timedelta(seconds=LIMITS.review[Urgency.URGENT])
    assert r.created_at == r.updated_at == iso(T0) == "2026-06-01T09:00:00+08:00"
    assert r.history == (
        {"at": iso(T0), "action": "apply", "from_status": None, "to_status": "PENDING_REVIEW",
         "by": {"sub": "doc-li", "name": "李医生", "role": "doctor",
                "institution_id": "qiaotou-lijia"}},
    )  # fmt: skip
    assert r.is_open and not r.escalated and r.decision is None


@pytest.mark.parametrize(
    "changes,code,error",
    [
        ({"direction": "sideways"}, "INVALID_DIRECTION", InvalidInput),
        ({"urgency": "soon"}, "INVALID_URGENCY", InvalidInput),
        ({"reason": "  "}, "REASON_REQUIRED", InvalidInput),
        ({"diagnosis": {"code": "XX", "text": "?"}}, "INVALID_ICD10", InvalidInput),
        ({"discharge_summary": "出院小结"}, "NOT_A_DOWNWARD_REFERRAL", InvalidInput),
        ({"follow_up_plan": [{"item": "复查", "due_date": "2026-07-01"}]},
         "NOT_A_DOWNWARD_REFERRAL", InvalidInput),
    ],
)  # fmt: skip
def test_apply_refuses_bad_input(changes, code, error):
    with pytest.raises(error) as exc:
        applied(**changes)
    assert code_of(exc) == code


@pytest.mark.parametrize("who", [RESIDENT, CENTRE, CONSORTIUM_ADMIN])
def test_only_institution_staff_apply(who):
    with pytest.raises(Forbidden) as exc:
        applied(who=who)
    assert code_of(exc) == "ROLE_NOT_ALLOWED"


def test_a_downward_referral_carries_its_discharge_summary_and_follow_up_plan():
    # When the county hospital sends a patient down with a plan (one item due today)
    r = applied(
        "down", discharge_summary=" 出院小结 ",
        follow_up_plan=[{"item": " 复查血压 ", "due_date": "2026-06-01"},
                        {"item": "复查血糖", "due_date": "2026-09-01"}],
    )  # fmt: skip
    # Then the plan is kept, trimmed
    assert r.direction is Direction.DOWN and r.discharge_summary == "出院小结"
    assert r.follow_up_plan == (
        {"item": "复查血压", "due_date": "2026-06-01"},
        {"item": "复查血糖", "due_date": "2026-09-01"},
    )


@pytest.mark.parametrize(
    "item,code",
    [
        ({"item": "复查", "due_date": "2026-05-31"}, "FOLLOW_UP_IN_PAST"),
        ({"item": "复查", "due_date": "2026/07/01"}, "INVALID_DATE"),
        ({"item": "复查", "due_date": ""}, "INVALID_DATE"),
        ({"item": "复查"}, "INVALID_DATE"),
        ({"item": "  ", "due_date": "2026-07-01"}, "FOLLOW_UP_ITEM_REQUIRED"),
    ],
)
def test_follow_up_plan_items_are_checked(item, code):
    with pytest.raises(InvalidInput) as exc:
        applied("down", follow_up_plan=[item])
    assert code_of(exc) == code


def test_follow_up_today_is_the_china_date():
    # At 00:30 in China (16:30 UTC the day before) "today" is already the China date
    late = datetime(2026, 6, 1, 16, 30, tzinfo=UTC)
    with pytest.raises(InvalidInput) as exc:
        applied("down", now=late, follow_up_plan=[{"item": "复查", "due_date": "2026-06-01"}])
    assert code_of(exc) == "FOLLOW_UP_IN_PAST"


def test_referral_json_round_trip():
    r = act(applied("down", follow_up_plan=[{"item": "复查", "due_date": "2026-07-01"}]),
            A.ACKNOWLEDGE, RECEIVER, reason="收到")  # fmt: skip
    assert Referral.from_json(r.to_json()) == r
    assert "history" not in r.to_json(with_history=False)


# ------------------------------------------------------------------ action x status matrix
ALLOWED = {  # written out from the life-cycle diagram, not read from RULES
    A.ACCEPT: ({S.PENDING_REVIEW, S.ESCALATED}, S.ACCEPTED),
    A.ACKNOWLEDGE: ({S.PENDING_REVIEW, S.ESCALATED}, S.ACKNOWLEDGED),
    A.REJECT: ({S.PENDING_REVIEW, S.ESCALATED}, S.REJECTED),
    A.REQUEST_INFO: ({S.PENDING_REVIEW, S.ESCALATED}, S.MORE_INFO),
    A.AMEND: ({S.MORE_INFO}, S.PENDING_REVIEW),
    A.CANCEL: ({S.PENDING_REVIEW, S.ESCALATED, S.MORE_INFO}, S.CANCELLED),
    A.REASSIGN: ({S.PENDING_REVIEW, S.ESCALATED}, S.PENDING_REVIEW),
    A.ARRIVE: ({S.ACCEPTED}, S.ARRIVED),
    A.ESCALATE: ({S.PENDING_REVIEW}, S.ESCALATED),
    A.EXPIRE: ({S.ESCALATED, S.MORE_INFO}, S.EXPIRED),
    A.NO_SHOW: ({S.ACCEPTED}, S.NO_SHOW),
}
SYSTEM = {A.ESCALATE, A.EXPIRE, A.NO_SHOW}


def actor_for(action: Action, direction: str = "up") -> Principal | None:
    """Someone entitled to take the action on the village -> township (or county ->
    township) referral."""
    if action in SYSTEM:
        return None
    if action is A.REASSIGN:
        return CENTRE
    if action in (A.AMEND, A.CANCEL):
        return REFERRER if direction == "up" else COUNTY_DOCTOR
    return RECEIVER


def full_change(action: Action) -> dict:
    """A change carrying whatever the action needs."""
    change: dict = {"reason": REASON}
    if action is A.REJECT:
        change["reason_code"] = "NO_CAPACITY"
    if action is A.REASSIGN:
        change["new_target"] = TOWNSHIP_2
    if action is A.AMEND:
        change["amendment"] = {"clinical_summary": "补充: 心电图 ST 段压低"}
    return change


def test_the_matrix_covers_every_action_but_apply():
    assert set(ALLOWED) == set(Action) - {A.APPLY}


@pytest.mark.parametrize("action,status", list(itertools.product(ALLOWED, Status)))
def test_every_action_from_every_status(action, status):
    # Given a referral in this status, and someone entitled to the action
    direction = "down" if action is A.ACKNOWLEDGE else "up"
    r = in_status(status, direction)
    allowed_from, after = ALLOWED[action]
    # When they take it
    if status in allowed_from:
        out = act(r, action, actor_for(action, direction), T0 + timedelta(minutes=1),
                  **full_change(action))  # fmt: skip
        # Then it moves to the action's status
        assert out.status is after
        assert out.version == r.version + 1
        assert out.history[-1]["from_status"] == str(status)
        assert out.history[-1]["to_status"] == str(after)
    else:
        # Then it is a 409 naming the status and the action, and nothing changed
        with pytest.raises(Conflict) as exc:
            act(r, action, actor_for(action, direction), **full_change(action))
        assert code_of(exc) == "INVALID_TRANSITION"
        assert exc.value.details == {"status": str(status), "action": str(action)}


@pytest.mark.parametrize(
    "action,direction,code",
    [(A.ACCEPT, "down", "USE_ACKNOWLEDGE"), (A.ACKNOWLEDGE, "up", "USE_ACCEPT")],
)
def test_accept_is_for_upward_and_acknowledge_for_downward(action, direction, code):
    # Given a pending referral of the other direction
    r = applied(direction)
    # When the receiver takes the other direction's decision
    with pytest.raises(Conflict) as exc:
        act(r, action, RECEIVER)
    # Then it is refused with the action to use
    assert code_of(exc) == code


def test_acknowledging_a_downward_referral_closes_it_without_arrival():
    r = act(applied("down"), A.ACKNOWLEDGE, RECEIVER, T0 + timedelta(minutes=3), reason="已建档")
    assert r.status is S.ACKNOWLEDGED and not r.is_open and r.due_at is None
    assert r.decision == {"outcome": "acknowledged", "at": iso(T0 + timedelta(minutes=3)),
                          "by": {"sub": "doc-wang", "name": "王芳"}, "note": "已建档"}  # fmt: skip


# ------------------------------------------------------------------------ who may act
UP_CASES = [
    # (action, who, status, expected error code or None)
    (A.ACCEPT, RECEIVER, S.PENDING_REVIEW, None),
    (A.ACCEPT, RECEIVER_ADMIN, S.PENDING_REVIEW, None),
    (A.ACCEPT, CENTRE, S.ESCALATED, None),
    (A.ACCEPT, CONSORTIUM_ADMIN, S.PENDING_REVIEW, None),
    (A.ACCEPT, REFERRER, S.PENDING_REVIEW, "NOT_RECEIVING_INSTITUTION"),
    (A.ACCEPT, OTHER_TOWNSHIP, S.PENDING_REVIEW, "NOT_RECEIVING_INSTITUTION"),
    (A.ACCEPT, COUNTY_DOCTOR, S.PENDING_REVIEW, "NOT_RECEIVING_INSTITUTION"),
    (A.REJECT, REFERRER, S.PENDING_REVIEW, "NOT_RECEIVING_INSTITUTION"),
    (A.REQUEST_INFO, SOURCE_ADMIN, S.PENDING_REVIEW, "NOT_RECEIVING_INSTITUTION"),
    (A.REJECT, CENTRE, S.ESCALATED, None),
    (A.REQUEST_INFO, CONSORTIUM_ADMIN, S.ESCALATED, None),
    (A.CANCEL, REFERRER, S.PENDING_REVIEW, None),
    (A.CANCEL, SOURCE_ADMIN, S.ESCALATED, None),
    (A.CANCEL, COLLEAGUE, S.PENDING_REVIEW, "NOT_REFERRER"),
    (A.CANCEL, RECEIVER, S.PENDING_REVIEW, "NOT_REFERRER"),
    (A.CANCEL, CENTRE, S.PENDING_REVIEW, "NOT_REFERRER"),
    (A.CANCEL, CONSORTIUM_ADMIN, S.PENDING_REVIEW, "NOT_REFERRER"),
    (A.AMEND, REFERRER, S.MORE_INFO, None),
    (A.AMEND, SOURCE_ADMIN, S.MORE_INFO, None),
    (A.AMEND, COLLEAGUE, S.MORE_INFO, "NOT_REFERRER"),
    (A.AMEND, RECEIVER, S.MORE_INFO, "NOT_REFERRER"),
    (A.REASSIGN, CENTRE, S.ESCALATED, None),
    (A.REASSIGN, CONSORTIUM_ADMIN, S.PENDING_REVIEW, None),
    (A.REASSIGN, RECEIVER, S.PENDING_REVIEW, "NOT_REFERRAL_CENTRE"),
    (A.REASSIGN, RECEIVER_ADMIN, S.PENDING_REVIEW, "NOT_REFERRAL_CENTRE"),
    (A.REASSIGN, REFERRER, S.PENDING_REVIEW, "NOT_REFERRAL_CENTRE"),
    (A.ARRIVE, RECEIVER, S.ACCEPTED, None),
    (A.ARRIVE, RECEIVER_ADMIN, S.ACCEPTED, None),
    (A.ARRIVE, CENTRE, S.ACCEPTED, "NOT_RECEIVING_INSTITUTION"),
    (A.ARRIVE, REFERRER, S.ACCEPTED, "NOT_RECEIVING_INSTITUTION"),
    (A.ACCEPT, RESIDENT, S.PENDING_REVIEW, "RESIDENT_CANNOT_ACT"),
    (A.CANCEL, RESIDENT, S.PENDING_REVIEW, "RESIDENT_CANNOT_ACT"),
    (A.ARRIVE, RESIDENT, S.ACCEPTED, "RESIDENT_CANNOT_ACT"),
    (A.ACCEPT, OUTSIDER, S.PENDING_REVIEW, "CROSS_CONSORTIUM"),
    (A.REASSIGN, replace(CENTRE, subject="centre-x", consortium_id="other-county"), S.ESCALATED,
     "CROSS_CONSORTIUM"),
    (A.ESCALATE, RECEIVER, S.PENDING_REVIEW, "SYSTEM_ONLY"),
    (A.EXPIRE, CENTRE, S.ESCALATED, "SYSTEM_ONLY"),
    (A.NO_SHOW, RECEIVER, S.ACCEPTED, "SYSTEM_ONLY"),
    (A.ACCEPT, None, S.PENDING_REVIEW, "SYSTEM_ONLY"),
    (A.CANCEL, None, S.PENDING_REVIEW, "SYSTEM_ONLY"),
    (A.ESCALATE, None, S.PENDING_REVIEW, None),
    (A.EXPIRE, None, S.MORE_INFO, None),
    (A.NO_SHOW, None, S.ACCEPTED, None),
]  # fmt: skip


@pytest.mark.parametrize(
    "action,who,status,code", UP_CASES,
    ids=[f"{a}-{w.subject if w else 'system'}-{s}" for a, w, s, _ in UP_CASES],
)  # fmt: skip
def test_who_may_act_on_an_upward_referral(action, who, status, code):
    # Given the village -> township referral in a status the action starts from
    r = in_status(status)
    if code is None:
        # Then the entitled actor moves it, and the history names them
        out = act(r, action, who, **full_change(action))
        by = out.history[-1]["by"]
        assert by["sub"] == (who.subject if who else SYSTEM_SUBJECT)
        assert by["role"] == (str(who.role) if who else "system")
    else:
        # Then anybody else gets a 403 with the reason
        with pytest.raises(Forbidden) as exc:
            act(r, action, who, **full_change(action))
        assert code_of(exc) == code


@pytest.mark.parametrize(
    "action,who,code",
    [(A.ACKNOWLEDGE, RECEIVER, None), (A.ACKNOWLEDGE, CENTRE, None),
     (A.ACKNOWLEDGE, COUNTY_DOCTOR, "NOT_RECEIVING_INSTITUTION"),
     (A.CANCEL, COUNTY_DOCTOR, None),
     # referral centre staff working at the referring hospital are not its referrer
     (A.CANCEL, CENTRE, "NOT_REFERRER")],
)  # fmt: skip
def test_who_may_act_on_a_downward_referral(action, who, code):
    r = applied("down")
    if code is None:
        assert act(r, action, who, reason=REASON).history[-1]["by"]["sub"] == who.subject
    else:
        with pytest.raises(Forbidden) as exc:
            act(r, action, who, reason=REASON)
        assert code_of(exc) == code


ALL_PRINCIPALS = [
    REFERRER, COLLEAGUE, SOURCE_ADMIN, RECEIVER, RECEIVER_ADMIN, OTHER_TOWNSHIP, COUNTY_DOCTOR,
    CENTRE, CONSORTIUM_ADMIN, RESIDENT, OUTSIDER,
]  # fmt: skip


@pytest.mark.parametrize(
    "status,direction,expected",
    [
        (S.PENDING_REVIEW, "up", {
            REFERRER: ["cancel"], SOURCE_ADMIN: ["cancel"],
            RECEIVER: ["accept", "reject", "request_info"],
            RECEIVER_ADMIN: ["accept", "reject", "request_info"],
            CENTRE: ["accept", "reassign", "reject", "request_info"],
            CONSORTIUM_ADMIN: ["accept", "reassign", "reject", "request_info"],
        }),
        (S.PENDING_REVIEW, "down", {
            COUNTY_DOCTOR: ["cancel"],
            RECEIVER: ["acknowledge", "reject", "request_info"],
            RECEIVER_ADMIN: ["acknowledge", "reject", "request_info"],
            CENTRE: ["acknowledge", "reassign", "reject", "request_info"],
            CONSORTIUM_ADMIN: ["acknowledge", "reassign", "reject", "request_info"],
        }),
        (S.MORE_INFO, "up", {REFERRER: ["amend", "cancel"], SOURCE_ADMIN: ["amend", "cancel"]}),
        (S.ACCEPTED, "up", {RECEIVER: ["arrive"], RECEIVER_ADMIN: ["arrive"]}),
        *[(s, "up", {}) for s in (S.ARRIVED, S.NO_SHOW, S.ACKNOWLEDGED, S.REJECTED,
                                   S.CANCELLED, S.EXPIRED)],
    ],
)  # fmt: skip
def test_allowed_actions_per_caller(status, direction, expected):
    r = in_status(status, direction)
    for who in ALL_PRINCIPALS:
        assert allowed_actions(r, who) == expected.get(who, []), who.subject


@pytest.mark.parametrize("status", list(Status))
@pytest.mark.parametrize("direction", ["up", "down"])
def test_allowed_actions_are_exactly_what_transition_lets_through(status, direction):
    # For every caller and every person's action: offered <=> the transition succeeds
    r = in_status(status, direction)
    for who, action in itertools.product(ALL_PRINCIPALS, set(ALLOWED) - SYSTEM):
        try:
            act(r, action, who, **full_change(action))
            passed = True
        except (Forbidden, Conflict):
            passed = False
        except InvalidInput:  # e.g. a reassignment whose route does not fit this direction
            passed = True
        assert (str(action) in allowed_actions(r, who)) == passed, (who.subject, action)


# --------------------------------------------------------------------- action inputs
@pytest.mark.parametrize(
    "action,status,change,code",
    [
        (A.REJECT, S.PENDING_REVIEW, {}, "INVALID_REASON_CODE"),
        (A.REJECT, S.PENDING_REVIEW, {"reason_code": "BUSY"}, "INVALID_REASON_CODE"),
        (A.REQUEST_INFO, S.PENDING_REVIEW, {"reason": " "}, "QUESTION_REQUIRED"),
        (A.CANCEL, S.PENDING_REVIEW, {}, "REASON_REQUIRED"),
        (A.REASSIGN, S.ESCALATED, {"reason": REASON}, "TARGET_REQUIRED"),
        (A.REASSIGN, S.ESCALATED, {"new_target": TOWNSHIP_2}, "REASON_REQUIRED"),
        (A.REASSIGN, S.ESCALATED, {"new_target": TOWNSHIP, "reason": REASON}, "SAME_TARGET"),
        (A.REASSIGN, S.ESCALATED, {"new_target": VILLAGE, "reason": REASON},
         "REFERRAL_TO_SELF"),
        (A.REASSIGN, S.ESCALATED,
         {"new_target": replace(VILLAGE, institution_id="v2"), "reason": REASON},
         "UPWARD_TO_LOWER_TIER"),
        (A.AMEND, S.MORE_INFO, {"amendment": {"diagnosis": {"code": "bad", "text": "x"}}},
         "INVALID_ICD10"),
        (A.ACCEPT, S.PENDING_REVIEW, {"proposed_time": "2026-06-02T09:00:00"},
         "TIME_WITHOUT_OFFSET"),
        (A.ACCEPT, S.PENDING_REVIEW, {"proposed_time": "tomorrow"}, "INVALID_TIME"),
        (A.ACCEPT, S.PENDING_REVIEW, {"proposed_time": "2026-06-01T08:54:59+08:00"},
         "PROPOSED_TIME_IN_PAST"),
    ],
)  # fmt: skip
def test_action_inputs_are_checked(action, status, change, code):
    with pytest.raises(InvalidInput) as exc:
        act(in_status(status), action, actor_for(action), **change)
    assert code_of(exc) == code


def test_a_proposed_time_a_few_minutes_ago_is_tolerated():
    # A clock a little behind is not an error: up to five minutes in the past
    r = act(applied(), A.ACCEPT, RECEIVER, proposed_time="2026-06-01T08:56:00+08:00")
    assert r.decision["proposed_time"] == "2026-06-01T08:56:00+08:00"
    # the arrival limit runs from now, not from the past proposal
    assert parse_time(r.due_at) == T0 + timedelta(seconds=LIMITS.arrival[Urgency.ROUTINE])


def test_accept_records_the_decision_the_department_and_the_doctor():
    # When the receiver accepts with a proposed time given in UTC
    r = act(
        applied(), A.ACCEPT, RECEIVER, T0 + timedelta(minutes=10), reason="请空腹",
        proposed_time="2026-06-02T01:30:00+00:00", department=" 心内科 ",
        target_doctor={"doctor_id": "doc-wang", "name": "王芳"},
    )  # fmt: skip
    # Then the time is kept in China time, and the arrival limit runs from it
    proposed = datetime(2026, 6, 2, 9, 30, tzinfo=CHINA_TZ)
    assert r.decision == {
        "outcome": "accepted", "at": "2026-06-01T09:10:00+08:00",
        "by": {"sub": "doc-wang", "name": "王芳"}, "note": "请空腹",
        "proposed_time": "2026-06-02T09:30:00+08:00",
    }  # fmt: skip
    assert parse_time(r.due_at) == proposed + timedelta(seconds=LIMITS.arrival[Urgency.ROUTINE])
    assert r.target_department == "心内科"
    assert r.target_doctor == {"doctor_id": "doc-wang", "name": "王芳"}
    assert r.history[-1]["details"] == {"proposed_time": "2026-06-02T09:30:00+08:00"}


def test_reassign_moves_the_target_and_resets_the_review():
    # Given an escalated referral with a department and a doctor chosen at the old target
    r = replace(in_status(S.ESCALATED), target_department="全科", escalated=True,
                target_doctor={"doctor_id": "doc-wang", "name": "王芳"})  # fmt: skip
    # When the referral centre reassigns it to the other township
    out = act(r, A.REASSIGN, CENTRE, T0 + timedelta(hours=1), new_target=TOWNSHIP_2,
              reason="桥头镇无床位", department="内科")  # fmt: skip
    # Then it is pending review at the new target, the old choices dropped
    assert out.status is S.PENDING_REVIEW and out.target.institution_id == "xiadu"
    assert (out.target_department, out.target_doctor, out.escalated) == ("内科", None, True)
    assert out.history[-1]["details"] == {"from_institution": "qiaotou", "to_institution": "xiadu"}
    assert out.history[-1]["reason"] == "桥头镇无床位"


def test_amend_changes_only_what_it_names():
    r = in_status(S.MORE_INFO)
    out = act(r, A.AMEND, REFERRER, reason="已补充",
              amendment={"diagnosis": {"code": "i21.9", "text": "急性心梗"},
                         "clinical_summary": " 肌钙蛋白升高 ", "attachments": []})  # fmt: skip
    assert out.diagnosis == {"code": "I21.9", "text": "急性心梗"}
    assert out.clinical_summary == "肌钙蛋白升高"
    assert out.attachments == r.attachments and out.reason == r.reason
    assert out.history[-1]["details"] == {"changed": ["clinical_summary", "diagnosis"]}


# ------------------------------------------------------------------------- deadlines
@pytest.mark.parametrize("urgency", list(Urgency))
def test_deadlines_follow_the_urgency_and_the_wait(urgency):
    u = Urgency(urgency)

    def due(r: Referral) -> datetime | None:
        return parse_time(r.due_at) if r.due_at else None

    t1, t2, t3 = (T0 + timedelta(hours=h) for h in (1, 2, 3))
    # apply: the review limit
    r = applied(urgency=urgency)
    assert due(r) == T0 + timedelta(seconds=LIMITS.review[u])
    # the review limit passes: the escalation limit
    escalated = act(r, A.ESCALATE, None, t1)
    assert due(escalated) == t1 + timedelta(seconds=LIMITS.escalation[u])
    # more information asked: the amendment limit (the same for every urgency)
    asked = act(escalated, A.REQUEST_INFO, CENTRE, t2, reason="请补充心电图")
    assert due(asked) == t2 + timedelta(seconds=LIMITS.amendment)
    # amended: a fresh review limit
    amended = act(asked, A.AMEND, REFERRER, t3, amendment={"clinical_summary": "见附件"})
    assert due(amended) == t3 + timedelta(seconds=LIMITS.review[u])
    # reassigned: a fresh review limit
    moved = act(amended, A.REASSIGN, CENTRE, t1, new_target=TOWNSHIP_2, reason=REASON)
    assert due(moved) == t1 + timedelta(seconds=LIMITS.review[u])
    # accepted: the arrival limit
    accepted = act(amended, A.ACCEPT, RECEIVER, t3)
    assert due(accepted) == t3 + timedelta(seconds=LIMITS.arrival[u])
    # closed: no deadline
    assert due(act(accepted, A.ARRIVE, RECEIVER, t3)) is None
    assert due(act(accepted, A.NO_SHOW, None, t3)) is None
    assert due(act(amended, A.REJECT, RECEIVER, t3, reason_code="OUT_OF_SCOPE")) is None
    assert due(act(amended, A.CANCEL, REFERRER, t3, reason=REASON)) is None
    assert due(act(asked, A.EXPIRE, None, t3)) is None
    assert due(act(applied("down", urgency), A.ACKNOWLEDGE, RECEIVER, t3)) is None


def test_default_limits_are_shorter_the_more_urgent():
    for limits in (DEFAULT_LIMITS.review, DEFAULT_LIMITS.escalation, DEFAULT_LIMITS.arrival):
        assert limits[Urgency.EMERGENCY] < limits[Urgency.URGENT] < limits[Urgency.ROUTINE]
    assert DEFAULT_LIMITS.review[Urgency.EMERGENCY] == 30 * 60  # 急危重症: half an hour


@pytest.mark.parametrize("raw", [None, "", "{}"])
def test_limits_without_configuration_are_the_defaults(raw):
    assert TimeLimits.from_json(raw) == DEFAULT_LIMITS


def test_limits_from_json_override_only_what_is_given():
    # Given a county that shortens the emergency review and the amendment limit
    limits = TimeLimits.from_json('{"review": {"emergency": "60"}, "amendment": 10}')
    # Then those change; every other limit keeps its default
    assert limits.review == {**DEFAULT_LIMITS.review, Urgency.EMERGENCY: 60}
    assert limits.amendment == 10
    assert limits.escalation == DEFAULT_LIMITS.escalation
    assert limits.arrival == DEFAULT_LIMITS.arrival


def test_overdue_is_open_and_past_its_deadline():
    r = applied()
    due = parse_time(r.due_at)
    assert not r.overdue(due - timedelta(seconds=1))
    assert r.overdue(due)
    closed = act(r, A.CANCEL, REFERRER, reason=REASON)
    assert not replace(closed, due_at=r.due_at).overdue(due + timedelta(days=1))


# --------------------------------------------------------------------------- history
def test_history_keeps_who_when_and_why_of_every_step():
    # Given a referral that goes through review, a question, an amendment and a decision
    steps = [
        (A.ESCALATE, None, {}),
        (A.REQUEST_INFO, CENTRE, {"reason": " 请补充心电图 "}),
        (A.AMEND, REFERRER, {"reason": "已补充", "amendment": {"clinical_summary": "见附件"}}),
        (A.REASSIGN, CENTRE, {"new_target": TOWNSHIP_2, "reason": "桥头镇无床位"}),
        (A.REJECT, OTHER_TOWNSHIP, {"reason_code": "NO_CAPACITY", "reason": "满床"}),
    ]
    r = applied()
    seen = [r]
    for n, (action, who, change) in enumerate(steps, start=1):
        r = act(r, action, who, T0 + timedelta(minutes=n), **change)
        seen.append(r)
    # Then every step is one more entry, the earlier ones untouched, the version one up
    for before, after in itertools.pairwise(seen):
        assert after.history[: len(before.history)] == before.history
        assert len(after.history) == len(before.history) + 1
        assert after.version == before.version + 1
    assert [h["action"] for h in r.history] == [
        "apply", "escalate", "request_info", "amend", "reassign", "reject",
    ]  # fmt: skip
    assert [h["at"] for h in r.history] == [iso(T0 + timedelta(minutes=n)) for n in range(6)]
    assert [h["by"]["sub"] for h in r.history] == [
        "doc-li", SYSTEM_SUBJECT, "centre-1", "doc-li", "centre-1", "doc-xia",
    ]  # fmt: skip
    assert [h.get("reason") for h in r.history] == [
        None, None, "请补充心电图", "已补充", "桥头镇无床位", "满床",
    ]  # fmt: skip
    assert r.history[-1]["details"] == {"reason_code": "NO_CAPACITY"}
    assert r.history[1]["by"] == {"sub": SYSTEM_SUBJECT, "name": "转诊流程", "role": "system",
                                  "institution_id": None}  # fmt: skip
    assert r.version == 6 and r.updated_at == iso(T0 + timedelta(minutes=5))
    assert r.created_at == iso(T0)


def test_a_refused_transition_changes_nothing():
    r = applied()
    snapshot = r.to_json()
    with pytest.raises(DomainError):
        act(r, A.CANCEL, REFERRER)  # no reason
    with pytest.raises(DomainError):
        act(r, A.ARRIVE, RECEIVER)
    assert r.to_json() == snapshot


# ------------------------------------------------------------------------- workflow
@pytest.mark.parametrize(
    "due_in,expected",
    [(10.0, 10), (10.2, 11), (0.4, 1), (0.0, 1), (-60.0, 1), (86400.0, 86400)],
)
def test_stage_outcome_waits_until_the_deadline_and_at_least_a_second(due_in, expected):
    r = replace(applied(), due_at=iso(T0 + timedelta(seconds=30)))
    now = T0 + timedelta(seconds=30) - timedelta(seconds=due_in)
    assert stage_outcome(r, now) == {
        "status": "PENDING_REVIEW", "direction": "up", "wait_seconds": expected,
    }  # fmt: skip


@pytest.mark.parametrize(
    "status", sorted(set(Status) - {S.PENDING_REVIEW, S.ESCALATED, S.MORE_INFO, S.ACCEPTED})
)
def test_stage_outcome_of_a_closed_referral_routes_on_its_status(status):
    out = stage_outcome(replace(applied("down"), status=status), T0)
    assert out == {"status": str(status), "direction": "down", "wait_seconds": 1}


def test_stage_outcome_of_an_open_referral_without_deadline_waits_a_second():
    assert stage_outcome(replace(applied(), due_at=None), T0)["wait_seconds"] == 1


DUE = iso(T0)
TIMEOUTS = [
    # (status, stage, seconds from the deadline to now, expected)
    (S.PENDING_REVIEW, Stage.REVIEW, 0, A.ESCALATE),
    (S.PENDING_REVIEW, Stage.REVIEW, 30, A.ESCALATE),
    (S.PENDING_REVIEW, Stage.REVIEW, -1, A.ESCALATE),  # a second early: the timer's jitter
    (S.PENDING_REVIEW, Stage.REVIEW, -2, None),  # deadline moved (amended, reassigned)
    (S.PENDING_REVIEW, Stage.REVIEW, -3600, None),
    (S.ESCALATED, Stage.ESCALATED, 0, A.EXPIRE),
    (S.MORE_INFO, Stage.MORE_INFO, 5, A.EXPIRE),
    (S.ACCEPTED, Stage.ARRIVAL, 5, A.NO_SHOW),
    (S.ACCEPTED, Stage.ARRIVAL, -600, None),
    # moved on: another stage's status
    (S.ACCEPTED, Stage.REVIEW, 5, None),
    (S.ESCALATED, Stage.REVIEW, 5, None),
    (S.PENDING_REVIEW, Stage.MORE_INFO, 5, None),
    (S.PENDING_REVIEW, Stage.ESCALATED, 5, None),
    (S.MORE_INFO, Stage.ESCALATED, 5, None),
    (S.ARRIVED, Stage.ARRIVAL, 5, None),
    (S.REJECTED, Stage.REVIEW, 5, None),
    (S.CANCELLED, Stage.MORE_INFO, 5, None),
]


@pytest.mark.parametrize("status,stage,late,expected", TIMEOUTS)
def test_timeout_action(status, stage, late, expected):
    r = replace(applied(), status=status, due_at=DUE)
    assert timeout_action(r, stage, T0 + timedelta(seconds=late)) == expected


def test_timeout_action_is_a_system_transition_from_its_status():
    # Whatever timeout_action calls for, the system may take from that status
    for status, _stage, late, expected in TIMEOUTS:
        if expected is not None:
            r = replace(applied(), status=status, due_at=DUE)
            assert act(r, expected, None, T0 + timedelta(seconds=late)).is_open is (
                expected is A.ESCALATE
            )


# ------------------------------------------------------------------------ references
def test_reference_format():
    # At 23:30 UTC it is already the next day in China
    now = datetime(2026, 6, 1, 23, 30, tzinfo=UTC)
    ref = new_reference(now, random.Random(7))
    assert len(ref) == 15 and ref.startswith("ZZ260602")
    assert all(c in REFERENCE_ALPHABET for c in ref[8:])
    assert is_reference(ref)
    assert not set("ILOU") & set(REFERENCE_ALPHABET) and len(REFERENCE_ALPHABET) == 32


def test_references_are_random():
    refs = {new_reference(T0) for _ in range(200)}
    assert len(refs) == 200 and all(is_reference(r) for r in refs)


def _references(n: int = 50) -> list[str]:
    rand = random.Random(2026)
    return [new_reference(T0 + timedelta(days=rand.randrange(3000)), rand) for _ in range(n)]


def test_a_single_mistyped_character_is_detected():
    # Given valid references
    missed = []
    for ref in _references():
        # When any one character after ZZ is replaced by another the form lets you type
        for i in range(2, 15):
            typed = "0123456789" if i < 8 else REFERENCE_ALPHABET
            for c in typed:
                wrong = ref[:i] + c + ref[i + 1 :]
                if c != ref[i] and is_reference(wrong):
                    missed.append(f"{ref}->{wrong}")
    # Then the check character catches every one
    assert missed == []


@pytest.mark.parametrize(
    "value",
    ["", "ZZ", "ZZ260601ABCDEF", "ZZ260601ABCDEFGH", "zz260601abcdefg", "ZY260601ABCDEFG",
     "ZZ260601ABCDEFI", "ZZ260601ABCDEFO", "ZZ260601-BCDEFG", "ZZ26-601ABCDEFG",
     "ZZ26060１ABCDEFG", "REF#ZZ260601ABC"],
)  # fmt: skip
def test_anything_else_is_not_a_reference(value):
    assert is_reference(value) is False


# ------------------------------------------------------------------------ statistics
def key(r: Referral) -> RollupKey:
    return RollupKey(
        r.created_at[:10], r.source.institution_id, r.target.institution_id, str(r.direction),
        r.target.in_county,
    )  # fmt: skip


def test_a_new_referral_counts_once_in_its_day_route_and_direction():
    r = applied()
    assert rollup_delta(None, r) == {
        RollupKey("2026-06-01", "qiaotou-lijia", "qiaotou", "up", True):
            {"applied": 1, "up": 1, "in_county": 1},
    }  # fmt: skip


def test_the_rollup_day_is_the_china_day():
    # 16:30 UTC on 31 May is 00:30 on 1 June in China
    r = applied(now=datetime(2026, 5, 31, 16, 30, tzinfo=UTC))
    assert next(iter(rollup_delta(None, r))).day == "2026-06-01"


@pytest.mark.parametrize(
    "status,action,who,change,expected",
    [
        (S.PENDING_REVIEW, A.ESCALATE, None, {}, {"escalated": 1}),
        (S.PENDING_REVIEW, A.REQUEST_INFO, RECEIVER, {"reason": "?"}, {}),
        (S.MORE_INFO, A.AMEND, REFERRER, {"amendment": {"clinical_summary": "x"}}, {}),
        (S.PENDING_REVIEW, A.ACCEPT, RECEIVER, {},
         {"accepted": 1, "decided": 1, "dm_61": 1}),
        (S.PENDING_REVIEW, A.REJECT, RECEIVER, {"reason_code": "OTHER"},
         {"rejected": 1, "decided": 1, "dm_61": 1}),
        (S.PENDING_REVIEW, A.CANCEL, REFERRER, {"reason": "x"}, {"cancelled": 1}),
        (S.MORE_INFO, A.EXPIRE, None, {}, {"expired": 1}),
        (S.ACCEPTED, A.ARRIVE, RECEIVER, {}, {"arrived": 1}),
        (S.ACCEPTED, A.NO_SHOW, None, {}, {"no_show": 1}),
    ],
)  # fmt: skip
def test_each_transition_changes_exactly_its_counters(status, action, who, change, expected):
    # Given a referral applied at T0; When the action is taken 61 minutes and 59 s later
    r = in_status(status)
    after = act(r, action, who, T0 + timedelta(minutes=61, seconds=59), **change)
    # Then the delta is the counters the action adds (decision minutes rounded down)
    assert rollup_delta(r, after) == ({key(r): expected} if expected else {})


def test_acknowledging_counts_as_a_decision():
    r = applied("down")
    after = act(r, A.ACKNOWLEDGE, RECEIVER, T0 + timedelta(seconds=59))
    assert rollup_delta(r, after) == {key(r): {"acknowledged": 1, "decided": 1, "dm_0": 1}}


def test_reassign_moves_the_counts_from_one_key_to_the_other():
    # Given an escalated referral
    r = act(applied(), A.ESCALATE, None, T0 + timedelta(hours=1))
    # When it is reassigned (up to the county hospital, out of the township's figures)
    after = act(r, A.REASSIGN, CENTRE, T0 + timedelta(hours=2), new_target=COUNTY, reason="x")
    delta = rollup_delta(r, after)
    # Then the old key loses everything it had and the new key gains it
    old = {k: -v for k, v in contribution(r).items()}
    assert delta == {key(r): old, key(after): contribution(after)}
    assert key(after).target == "county-hospital"
    # And over both keys every counter nets to zero
    for name in contribution(r):
        assert sum(c.get(name, 0) for c in delta.values()) == 0


def test_reassign_out_of_county_moves_the_in_county_count():
    r = act(applied(), A.ESCALATE, None, T0)
    after = act(r, A.REASSIGN, CENTRE, T0, new_target=REGIONAL, reason="疑难")
    totals: dict[str, int] = {}
    for counters in rollup_delta(r, after).values():
        for name, n in counters.items():
            totals[name] = totals.get(name, 0) + n
    assert {k: v for k, v in totals.items() if v} == {"in_county": -1, "out_of_county": 1}


def add_into(totals: dict[RollupKey, dict[str, int]], delta) -> None:
    for k, counters in delta.items():
        bucket = totals.setdefault(k, {})
        for name, n in counters.items():
            bucket[name] = bucket.get(name, 0) + n


def test_deltas_over_a_whole_life_sum_to_the_final_contribution():
    # Given random walks through the life cycle
    rand = random.Random(11)
    for _ in range(200):
        r = applied(rand.choice(["up", "down"]), rand.choice(list(Urgency)))
        totals: dict[RollupKey, dict[str, int]] = {}
        add_into(totals, rollup_delta(None, r))
        t = T0
        while r.is_open:
            t += timedelta(minutes=rand.randrange(1, 500))
            options = [a for a in ALLOWED if r.status in ALLOWED[a][0]]
            action = rand.choice(options)
            who = actor_for(action, str(r.direction))
            if who is RECEIVER:  # whoever works at the current target
                who = replace(RECEIVER, institution_id=r.target.institution_id)
            change = full_change(action)
            if action is A.REASSIGN:
                targets = [TOWNSHIP, TOWNSHIP_2]
                if r.direction is Direction.UP:
                    targets += [COUNTY, REGIONAL]
                change["new_target"] = rand.choice(
                    [i for i in targets if i.institution_id != r.target.institution_id]
                )
            try:
                after = act(r, action, who, t, **change)
            except (Conflict, Forbidden):
                continue  # accept on a downward referral, a receiver that changed ...
            add_into(totals, rollup_delta(r, after))
            r = after
        # Then what the deltas left behind is exactly the final referral's contribution
        left = {k: {n: v for n, v in c.items() if v} for k, c in totals.items()}
        assert {k: c for k, c in left.items() if c} == {key(r): contribution(r)}


def test_summarise_rates_and_median():
    counters = {"applied": 12, "up": 10, "down": 2, "accepted": 6, "acknowledged": 2,
                "rejected": 2, "decided": 10, "in_county": 9, "out_of_county": 3,
                "dm_5": 4, "dm_12": 3, "dm_90": 3, "dm_7": 0, "target_in_county": True}  # fmt: skip
    out = summarise(counters)
    assert out["acceptance_rate"] == 0.8
    assert out["out_of_county_share"] == 0.25
    assert out["median_decision_minutes"] == 12.0
    assert {k: out[k] for k in COUNTERS} == {k: counters.get(k, 0) for k in COUNTERS}


def test_summarise_of_nothing():
    out = summarise({})
    assert out["acceptance_rate"] is None and out["out_of_county_share"] is None
    assert out["median_decision_minutes"] is None
    assert all(out[k] == 0 for k in COUNTERS)


def test_summarise_rounds_rates_to_four_places():
    out = summarise({"accepted": 1, "rejected": 2, "in_county": 2, "out_of_county": 1})
    assert (out["acceptance_rate"], out["out_of_county_share"]) == (0.3333, 0.3333)


@pytest.mark.parametrize(
    "histogram,median",
    [({}, None), ({7: 0}, None), ({5: 1}, 5.0), ({1: 1, 3: 1}, 2.0), ({1: 2, 10: 1}, 1.0),
     ({1: 1, 10: 2}, 10.0), ({0: 1, 2: 1, 4: 1, 100: 1}, 3.0), ({3: 2}, 3.0),
     ({9: 1, 1: 1, 5: 1}, 5.0), ({4: 0, 6: 2, 8: 2}, 7.0)],
)  # fmt: skip
def test_median_from_histogram(histogram, median):
    assert median_from_histogram(histogram) == median


def test_median_from_histogram_is_exactly_the_median_of_the_values():
    rand = random.Random(5)
    for _ in range(500):
        values = [rand.randrange(0, rand.choice([3, 30, 3000])) for _ in range(rand.randint(1, 60))]
        histogram: dict[int, int] = {}
        for v in values:
            histogram[v] = histogram.get(v, 0) + 1
        assert median_from_histogram(histogram) == statistics.median(values), values


def test_the_route_table_above_uses_the_directory_s_tier_order():
    assert {str(tier): rank for tier, rank in TIER_RANK.items()} == RANK
