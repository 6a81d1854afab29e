"""Remote consultation use cases against in-memory fakes and a clock the test moves: the
request, the centre's review, invitations, scheduling, opinions, the lead-signed report into
the record, acknowledgement; refusals that change nothing; the workflow's waits and time
limits; and the accounting."""

from __future__ import annotations

import base64
from datetime import datetime, timedelta
from typing import Any

import pytest

from tests.support.fake_consultations import (
    CENTRE,
    CHENMING,
    CLOSED,
    COLLEAGUE,
    CONSORTIUM_ADMIN,
    COUNTY,
    COUNTY_ADMIN,
    HEPING,
    LIUYAN,
    OUTSIDER,
    REQUESTER,
    RESIDENT,
    TOWNSHIP,
    TOWNSHIP_ADMIN,
    XUQING,
    ZHAOLEI,
    FakeConsultationStore,
    Harness,
    request_body,
)
from tests.support.fake_referrals import T0, C
from yilian.domain.audit import AuditAction
from yilian.domain.consultation import InviteState, Limits, Status, Tariff, iso
from yilian.domain.directory import Doctor
from yilian.domain.errors import Conflict, Forbidden, InvalidInput, NotFound
from yilian.domain.principal import Principal, Role


@pytest.fixture
def h() -> Harness:
    return Harness()


# ------------------------------------------------------------------------ steps
def request(h: Harness, who: Principal = REQUESTER, **kw: Any) -> str:
    return h.service.request(who, request_body(**kw))["consultation_id"]


def accept(h: Harness, cid: str, *experts: Principal, **kw: Any) -> dict[str, Any]:
    """The centre accepts and invites the experts, the first as lead."""
    invited = [{"doctor_id": e.subject, "lead": n == 0} for n, e in enumerate(experts)]
    return h.act(CENTRE, cid, "accept", experts=invited, **kw)


def respond(h: Harness, who: Principal, cid: str, answer: str = "accept") -> dict[str, Any]:
    return h.act(who, cid, "respond", answer=answer, reason="" if answer == "accept" else "出差")


def written(h: Harness, *experts: Principal, **kw: Any) -> str:
    """A written consultation every expert accepted: IN_PROGRESS."""
    cid = request(h, **kw)
    accept(h, cid, *experts)
    for e in experts:
        respond(h, e, cid)
    assert h.stored(cid).status is Status.IN_PROGRESS
    return cid


def video(h: Harness, *experts: Principal, **kw: Any) -> str:
    """A video consultation every expert accepted: SCHEDULED, no session yet."""
    cid = request(h, mode="video", **kw)
    accept(h, cid, *experts)
    for e in experts:
        respond(h, e, cid)
    assert h.stored(cid).status is Status.SCHEDULED
    return cid


def opinion(h: Harness, who: Principal, cid: str, **kw: Any) -> dict[str, Any]:
    return h.act(who, cid, "opinion", findings="未见异常", recommendations="随访", **kw)


def sign(h: Harness, who: Principal, cid: str, **kw: Any) -> dict[str, Any]:
    return h.act(who, cid, "sign", findings="稳定型心绞痛", recommendations="冠脉CTA", **kw)


def refused(h: Harness, error: type[Exception], code: str, fn: Any, *args: Any, **kw: Any) -> Any:
    """`fn` fails with `code` and the store is exactly as it was."""
    before = h.store.snapshot()
    with pytest.raises(error) as e:
        fn(*args, **kw)
    assert e.value.code == code  # type: ignore[attr-defined]
    assert h.store.snapshot() == before
    return e.value


# ======================================================================== request
def test_a_request_is_stored_and_its_workflow_started(h: Harness) -> None:
    # Given the township doctor's routine request to the county hospital
    # When it is sent
    out = h.service.request(REQUESTER, request_body())
    cid = out["consultation_id"]
    # Then it waits for the centre's review, within the routine review limit
    c = h.stored(cid)
    assert c.status is Status.REQUESTED and out["status"] == "REQUESTED"
    assert c.due_at == iso(T0 + timedelta(seconds=Limits().review["routine"]))
    assert c.requester.subject == REQUESTER.subject and c.requester.title == "主治医师"
    assert [e["action"] for e in c.history] == ["request"]
    # And one workflow execution is named after it
    assert h.callbacks.started[cid][1] == {"consultation_id": cid}
    # And the creation is audited against the patient, and the centre told
    assert [(e.action, e.person_ids) for e in h.audit.events] == [
        (AuditAction.CREATE, ("p-zhangwei",))
    ]
    assert [n.recipient for n in h.notices.delivered] == ["centre"]


def test_an_urgent_request_has_the_urgent_review_limit(h: Harness) -> None:
    cid = request(h, kind="urgent")
    assert h.stored(cid).due_at == iso(T0 + timedelta(seconds=Limits().review["urgent"]))


@pytest.mark.parametrize("person_id", ["p-nobody", "p-foreign", ""])
def test_a_request_for_an_unknown_patient(h: Harness, person_id: str) -> None:
    # Given a patient not in this consortium's master index
    # When a request names them / Then it is refused and nothing is stored or started
    refused(h, InvalidInput, "PATIENT_UNKNOWN", h.service.request, REQUESTER,
            request_body(person_id=person_id))  # fmt: skip
    assert h.store.items == {} and h.callbacks.started == {}


def test_a_request_for_a_merged_patient(h: Harness) -> None:
    from dataclasses import replace

    merged = h.persons.persons["p-other"]
    h.persons.add(replace(merged, merged_into="p-zhangwei"))
    refused(h, InvalidInput, "PATIENT_UNKNOWN", h.service.request, REQUESTER,
            request_body(person_id="p-other"))  # fmt: skip


def test_a_request_to_the_requesters_own_institution(h: Harness) -> None:
    refused(h, InvalidInput, "CENTRE_IS_REQUESTER", h.service.request, REQUESTER,
            request_body(centre_institution_id=TOWNSHIP))  # fmt: skip
    assert h.callbacks.started == {}


@pytest.mark.parametrize("centre", ["nowhere", CLOSED, ""])
def test_a_request_to_an_unknown_or_closed_centre(h: Harness, centre: str) -> None:
    refused(h, InvalidInput, "CENTRE_UNKNOWN", h.service.request, REQUESTER,
            request_body(centre_institution_id=centre))  # fmt: skip


@pytest.mark.parametrize("who", [RESIDENT, TOWNSHIP_ADMIN, CENTRE, CONSORTIUM_ADMIN])
def test_only_a_doctor_requests(h: Harness, who: Principal) -> None:
    refused(h, Forbidden, "ROLE_NOT_ALLOWED", h.service.request, who, request_body())


def test_a_bad_form_stores_nothing(h: Harness) -> None:
    refused(h, InvalidInput, "FIELD_REQUIRED", h.service.request, REQUESTER,
            request_body(question=""))  # fmt: skip


# ======================================================================== the centre's review
def test_accept_invites_the_experts(h: Harness) -> None:
    # Given a requested consultation
    cid = request(h)
    h.advance(60)
    # When the centre accepts it and invites two experts
    out = accept(h, cid, CHENMING, HEPING, note="请尽快")
    # Then both are invited, the first leads, and one acceptance confirms it
    c = h.stored(cid)
    assert c.status is Status.ASSIGNING and out["status"] == "ASSIGNING"
    assert [(i.expert.subject, i.state, i.lead) for i in c.invitations] == [
        ("doc-chenming", InviteState.INVITED, True),
        ("doc-heping", InviteState.INVITED, False),
    ]
    assert c.required_accepts == 1
    assert c.invitations[0].expert.title == "主任医师"  # from the directory
    assert c.due_at == iso(h.clock.t + timedelta(seconds=Limits().invitation["routine"]))
    assert c.history[-1]["note"] == "请尽快"
    # And the invited experts are told
    invited = [n for n in h.notices.delivered if n.kind == "ConsultationInvited"]
    assert {n.recipient for n in invited} == {"user:doc-chenming", "user:doc-heping"}


def test_mdt_needs_every_invited_expert_by_default(h: Harness) -> None:
    cid = request(h, kind="mdt", specialty="心血管内科,神经内科")
    accept(h, cid, CHENMING, LIUYAN, ZHAOLEI)
    assert h.stored(cid).required_accepts == 3


def test_the_lead_named_is_the_lead(h: Harness) -> None:
    cid = request(h)
    h.act(CENTRE, cid, "accept", experts=[{"doctor_id": "doc-chenming"},
                                          {"doctor_id": "doc-heping", "lead": True}])  # fmt: skip
    assert [i.lead for i in h.stored(cid).invitations] == [False, True]


@pytest.mark.parametrize(
    "doctor_id",
    [
        "doc-nobody",
        "doc-foreign",  # a doctor of another consortium
        "doc-retired",  # inactive
        "adm-county",  # not a doctor
        "",
    ],
)
def test_an_expert_not_in_the_consortium(h: Harness, doctor_id: str) -> None:
    # Given a doctor of another consortium in the directory
    h.directory.add_doctor(
        Doctor("doc-foreign", "other-county", COUNTY, "外县专家", "心血管内科", "主任医师"), None
    )
    cid = request(h)
    # When the centre invites someone who is not a consortium doctor
    # Then the acceptance is refused and nothing changes
    refused(h, InvalidInput, "EXPERT_UNKNOWN", h.act, CENTRE, cid, "accept",
            experts=[{"doctor_id": "doc-chenming"}, {"doctor_id": doctor_id}])  # fmt: skip


def test_the_requester_is_not_their_own_expert(h: Harness) -> None:
    cid = request(h)
    refused(h, InvalidInput, "EXPERT_IS_REQUESTER", h.act, CENTRE, cid, "accept",
            experts=[{"doctor_id": REQUESTER.subject}])  # fmt: skip


@pytest.mark.parametrize(
    ("experts", "extra", "code"),
    [
        ([{"doctor_id": "doc-chenming", "lead": True}, {"doctor_id": "doc-heping", "lead": True}],
         {}, "TWO_LEADS"),
        ([{"doctor_id": "doc-chenming"}, {"doctor_id": "doc-chenming"}], {}, "EXPERT_TWICE"),
        ([{"doctor_id": "doc-chenming"}, {"doctor_id": "doc-heping"}],
         {"required_accepts": 3}, "REQUIRED_ACCEPTS_INVALID"),
        ([{"doctor_id": "doc-chenming"}], {"required_accepts": -1}, "REQUIRED_ACCEPTS_INVALID"),
        ([], {}, "EXPERTS_REQUIRED"),
        ([{"doctor_id": f"d{i}"} for i in range(9)], {}, "EXPERTS_REQUIRED"),
    ],
)  # fmt: skip
def test_a_bad_assignment_changes_nothing(
    h: Harness, experts: list[Any], extra: dict[str, Any], code: str
) -> None:
    cid = request(h)
    refused(h, InvalidInput, code, h.act, CENTRE, cid, "accept", experts=experts, **extra)
    assert h.stored(cid).status is Status.REQUESTED


@pytest.mark.parametrize("who", [REQUESTER, CHENMING, COLLEAGUE])
def test_only_the_centre_reviews(h: Harness, who: Principal) -> None:
    cid = request(h)
    # the expert is no party yet: the request is the centre's and the requester's
    code = "NOT_A_PARTY" if who is CHENMING else "NOT_THE_CENTRE"
    refused(h, Forbidden, code, h.act, who, cid, "accept",
            experts=[{"doctor_id": "doc-heping"}])  # fmt: skip


def test_return_then_amend(h: Harness) -> None:
    # Given a requested consultation
    cid = request(h)
    # When the centre returns it for more information
    h.act(CENTRE, cid, "return", reason="请补充心电图")
    c = h.stored(cid)
    assert c.status is Status.MORE_INFO
    assert c.due_at == iso(T0 + timedelta(seconds=Limits().amendment))
    # And the requester amends the clinical summary
    h.advance(3600)
    h.act(REQUESTER, cid, "amend", summary="补充：心电图ST段压低0.1mV")
    # Then it is back for review, with the new summary and a fresh review limit
    c = h.stored(cid)
    assert c.status is Status.REQUESTED and c.summary == "补充：心电图ST段压低0.1mV"
    assert c.due_at == iso(h.clock.t + timedelta(seconds=Limits().review["routine"]))
    assert [e["action"] for e in c.history] == ["request", "return", "amend"]


def test_return_needs_a_reason_and_amend_a_summary(h: Harness) -> None:
    cid = request(h)
    refused(h, InvalidInput, "REASON_REQUIRED", h.act, CENTRE, cid, "return", reason=" ")
    h.act(CENTRE, cid, "return", reason="请补充心电图")
    refused(h, InvalidInput, "FIELD_REQUIRED", h.act, REQUESTER, cid, "amend", summary="")
    refused(h, Forbidden, "NOT_THE_REQUESTER", h.act, COLLEAGUE, cid, "amend", summary="x")


def test_decline_closes_with_its_reason(h: Harness) -> None:
    cid = request(h)
    h.act(CENTRE, cid, "decline", reason="本院无该专科")
    c = h.stored(cid)
    assert c.status is Status.DECLINED and c.closed_reason == "本院无该专科"
    assert h.store.open_ones(C) == []


# ======================================================================== invitations
def test_only_the_invited_expert_responds(h: Harness) -> None:
    cid = request(h)
    accept(h, cid, CHENMING)
    refused(h, Forbidden, "NOT_INVITED", h.act, REQUESTER, cid, "respond", answer="accept")
    refused(h, Forbidden, "NOT_INVITED", h.act, CENTRE, cid, "respond", answer="accept")
    refused(h, Forbidden, "NOT_A_PARTY", h.act, HEPING, cid, "respond", answer="accept")
    refused(h, InvalidInput, "ANSWER_INVALID", h.act, CHENMING, cid, "respond", answer="maybe")


def test_a_decline_invites_the_least_busy_candidate_of_the_specialty(h: Harness) -> None:
    # Given 何平 already invited elsewhere (busier than 徐青), both cardiologists
    other = request(h)
    accept(h, other, HEPING)
    cid = request(h)
    accept(h, cid, CHENMING)
    # When the lead, 陈明, declines
    h.advance(600)
    respond(h, CHENMING, cid, "decline")
    # Then 徐青 is invited in his place, as lead, with a fresh invitation limit
    c = h.stored(cid)
    assert c.status is Status.ASSIGNING
    assert [(i.expert.subject, i.state, i.lead) for i in c.invitations] == [
        ("doc-chenming", InviteState.DECLINED, True),
        ("doc-xuqing", InviteState.INVITED, True),
    ]
    assert c.invitations[0].reason == "出差"
    assert c.invitations[1].due_at == iso(h.clock.t + timedelta(seconds=86400))
    # and the wait runs to the first open invitation's limit (the newcomer's)
    assert c.due_at == c.invitations[1].due_at
    assert h.store.workload(C, "doc-xuqing") == 1 and h.store.workload(C, "doc-chenming") == 0


def test_written_opinion_starts_when_enough_accept(h: Harness) -> None:
    cid = request(h)
    accept(h, cid, CHENMING)
    out = respond(h, CHENMING, cid)
    c = h.stored(cid)
    assert c.status is Status.IN_PROGRESS and out["status"] == "IN_PROGRESS"
    assert c.due_at == iso(T0 + timedelta(seconds=Limits().report))
    assert out["actions"] == ["opinion", "sign"]


def test_video_waits_for_scheduling_when_enough_accept(h: Harness) -> None:
    cid = request(h, mode="video")
    accept(h, cid, CHENMING)
    respond(h, CHENMING, cid)
    c = h.stored(cid)
    assert c.status is Status.SCHEDULED and c.session is None
    assert any(n.kind == "ConsultationReadyToSchedule" for n in h.notices.delivered)


def test_mdt_waits_for_the_required_number(h: Harness) -> None:
    # Given an MDT needing two of three experts, 陈明 invited as lead
    cid = request(h, kind="mdt", specialty="心血管内科,神经内科")
    accept(h, cid, CHENMING, LIUYAN, ZHAOLEI, required_accepts=2)
    # When 刘艳 accepts, it still waits; when 赵磊 accepts, it starts
    respond(h, LIUYAN, cid)
    assert h.stored(cid).status is Status.ASSIGNING
    respond(h, ZHAOLEI, cid)
    c = h.stored(cid)
    assert c.status is Status.IN_PROGRESS
    # Then exactly one lead: 陈明 did not accept, so the first to accept leads
    assert [(i.expert.subject, i.lead) for i in c.invitations if i.lead] == [("doc-liuyan", True)]
    assert c.lead is not None and c.lead.expert.subject == "doc-liuyan"


def test_the_invited_lead_who_accepts_stays_lead(h: Harness) -> None:
    cid = request(h, kind="mdt")
    accept(h, cid, CHENMING, LIUYAN)
    respond(h, LIUYAN, cid)
    respond(h, CHENMING, cid)
    c = h.stored(cid)
    assert [i.expert.subject for i in c.invitations if i.lead] == ["doc-chenming"]


# ======================================================================== scheduling
def start_at(hours: float) -> str:
    return iso(T0 + timedelta(hours=hours))


def test_scheduling_issues_a_join_link_per_participant(h: Harness) -> None:
    # Given a video MDT both experts accepted
    cid = video(h, CHENMING, LIUYAN, kind="mdt")
    # When the centre schedules it tomorrow
    h.act(CENTRE, cid, "schedule", start=start_at(24), minutes=45)
    c = h.stored(cid)
    assert c.session is not None and c.session["start"] == start_at(24)
    assert c.session["minutes"] == 45
    # Then each participant has their own link
    links = {i.expert.subject: i.join_url for i in c.invitations}
    links["requester"] = c.session["requester_join_url"]
    assert len(set(links.values())) == 3
    assert f"p={CHENMING.subject}&" in links["doc-chenming"]
    assert f"p={REQUESTER.subject}&" in links["requester"]
    assert all(cid in url for url in links.values())
    # And each sees only their own
    mine = h.service.get(CHENMING, cid)
    assert {i["expert"]["subject"]: i["join_url"] for i in mine["invitations"]} == {
        "doc-chenming": links["doc-chenming"],
        "doc-liuyan": "",
    }
    assert "requester_join_url" not in mine["session"]
    asker = h.service.get(REQUESTER, cid)
    assert asker["session"]["requester_join_url"] == links["requester"]
    assert all(i["join_url"] == "" for i in asker["invitations"])
    centre = h.service.get(CENTRE, cid)
    assert all(i["join_url"] == "" for i in centre["invitations"])
    assert "requester_join_url" not in centre["session"]
    # And the first wait ends a reminder's time before the start
    assert c.due_at == iso(T0 + timedelta(hours=24) - timedelta(seconds=Limits().reminder))


def test_a_non_party_sees_no_join_link(h: Harness) -> None:
    cid = video(h, CHENMING)
    h.act(CENTRE, cid, "schedule", start=start_at(24))
    for who in (OUTSIDER, HEPING):
        with pytest.raises(Forbidden) as e:
            h.service.get(who, cid)
        assert e.value.code == "NOT_A_PARTY"
    # a colleague of the requester reads it, but no one's link
    seen = h.service.get(COLLEAGUE, cid)
    assert "requester_join_url" not in seen["session"]
    assert all(i["join_url"] == "" for i in seen["invitations"])


def test_only_the_centre_schedules(h: Harness) -> None:
    cid = video(h, CHENMING)
    for who in (REQUESTER, CHENMING):
        refused(h, Forbidden, "NOT_THE_CENTRE", h.act, who, cid, "schedule", start=start_at(24))


@pytest.mark.parametrize(
    ("start", "minutes", "code"),
    [
        (iso(T0 - timedelta(minutes=1)), 30, "START_IN_PAST"),
        (iso(T0), 30, "START_IN_PAST"),
        ("2026-06-02T09:00:00", 30, "START_INVALID"),  # no offset
        ("tomorrow", 30, "START_INVALID"),
        (iso(T0 + timedelta(days=1)), 5, "MINUTES_INVALID"),
        (iso(T0 + timedelta(days=1)), 300, "MINUTES_INVALID"),
    ],
)
def test_a_bad_session_changes_nothing(h: Harness, start: str, minutes: int, code: str) -> None:
    cid = video(h, CHENMING)
    refused(h, InvalidInput, code, h.act, CENTRE, cid, "schedule", start=start, minutes=minutes)


def test_an_expert_busy_elsewhere_then(h: Harness) -> None:
    # Given 陈明 in a session tomorrow 09:00-09:30 of another consultation
    other = video(h, CHENMING)
    h.act(CENTRE, other, "schedule", start=start_at(24), minutes=30)
    cid = video(h, LIUYAN, CHENMING, kind="mdt")
    # When this one is put at 09:15 / Then 陈明 is busy, naming the other consultation
    error = refused(h, Conflict, "EXPERT_BUSY", h.act, CENTRE, cid, "schedule",
                    start=start_at(24.25), minutes=30)  # fmt: skip
    assert error.details == {"doctor_id": "doc-chenming", "consultation_id": other}
    # And at 09:30, just after, it is fine
    h.act(CENTRE, cid, "schedule", start=start_at(24.5), minutes=30)
    assert h.stored(cid).session["start"] == start_at(24.5)


def test_a_session_the_expert_declined_does_not_make_them_busy(h: Harness) -> None:
    # Given 陈明 declined a consultation that 何平 took, scheduled tomorrow 09:00
    other = request(h, mode="video")
    accept(h, other, CHENMING)
    respond(h, CHENMING, other, "decline")  # 何平 (least busy cardiologist) is invited
    respond(h, HEPING, other)
    h.act(CENTRE, other, "schedule", start=start_at(24), minutes=30)
    # When 陈明's own consultation is put at the same time
    cid = video(h, CHENMING)
    h.act(CENTRE, cid, "schedule", start=start_at(24), minutes=30)
    # Then it is scheduled: he is not in the other session
    assert h.stored(cid).session is not None


def test_the_calendar_has_only_the_experts_sessions(h: Harness) -> None:
    other = request(h, mode="video")
    accept(h, other, CHENMING)
    respond(h, CHENMING, other, "decline")
    respond(h, HEPING, other)
    h.act(CENTRE, other, "schedule", start=start_at(24), minutes=30)
    assert h.service.worklist(CHENMING)["calendar"] == []


# ======================================================================== opinions
def test_opinions_follow_the_session(h: Harness) -> None:
    # Given a session tomorrow
    cid = video(h, CHENMING, LIUYAN, kind="mdt")
    h.act(CENTRE, cid, "schedule", start=start_at(24))
    # When an expert files an opinion before it / Then it is refused
    refused(h, Conflict, "SESSION_NOT_STARTED", opinion, h, LIUYAN, cid)
    # And once it has started, the opinion is filed and the consultation is in progress
    h.advance(24 * 3600)
    opinion(h, LIUYAN, cid)
    c = h.stored(cid)
    assert c.status is Status.IN_PROGRESS
    assert c.invitation_of("doc-liuyan").opinion == {
        "findings": "未见异常", "recommendations": "随访", "filed_at": iso(h.clock.t)
    }  # fmt: skip
    assert c.due_at == iso(h.clock.t + timedelta(seconds=Limits().report))


def test_the_actions_offered_before_the_session_are_possible(h: Harness) -> None:
    cid = video(h, CHENMING)
    h.act(CENTRE, cid, "schedule", start=start_at(24))
    assert "opinion" not in h.service.get(CHENMING, cid)["actions"]


def test_no_opinion_before_a_session_is_scheduled(h: Harness) -> None:
    cid = video(h, CHENMING)
    refused(h, Conflict, "SESSION_NOT_STARTED", opinion, h, CHENMING, cid)


def test_a_report_by_someone_not_assigned(h: Harness) -> None:
    # Given an MDT with 赵磊 invited but not answering, and 刘艳 declined
    cid = request(h, kind="mdt")
    accept(h, cid, CHENMING, LIUYAN, ZHAOLEI, required_accepts=1)
    respond(h, CHENMING, cid)
    # When someone other than the accepted expert files an opinion or signs
    # Then they are refused and nothing changes
    for who in (ZHAOLEI, LIUYAN, REQUESTER):
        refused(h, Forbidden, "NOT_ASSIGNED", opinion, h, who, cid)
        refused(h, Forbidden, "NOT_ASSIGNED", sign, h, who, cid)
    refused(h, InvalidInput, "OPINION_INCOMPLETE", h.act, CHENMING, cid, "opinion", findings="x")


# ======================================================================== the report
def test_the_lead_signs_the_report_into_the_record(h: Harness) -> None:
    # Given a written MDT both experts accepted, 刘艳 filed her opinion
    cid = written(h, CHENMING, LIUYAN, kind="mdt")
    opinion(h, LIUYAN, cid)
    h.advance(90 * 60)
    # When the lead signs
    out = sign(h, CHENMING, cid, recommend_referral={"target_institution_id": COUNTY})
    # Then the report is signed, with her opinion, awaiting the requester's acknowledgement
    c = h.stored(cid)
    assert c.status is Status.REPORTED and out["actions"] == []
    assert c.report is not None
    assert c.report["signed_by"] == "doc-chenming" and c.report["signed_title"] == "主任医师"
    assert [o["name"] for o in c.report["opinions"]] == ["刘艳"]
    assert c.report["recommend_referral"] == {"target_institution_id": COUNTY}
    assert c.reported_at == iso(h.clock.t)
    # And it joined the patient's record, filed as the lead expert
    [(who, bundle)] = h.records.submitted
    assert (who.subject, who.role, who.institution_id) == ("doc-chenming", Role.DOCTOR, COUNTY)
    assert bundle["identifier"]["value"] == f"consultation-{cid}"
    doc = bundle["entry"][0]["resource"]
    assert doc["resourceType"] == "DocumentReference"
    assert doc["type"]["coding"][0] == {
        "system": "http://loinc.org", "code": "11488-4", "display": "会诊记录"
    }  # fmt: skip
    assert doc["subject"] == {"reference": "Patient/p-zhangwei"}
    text = base64.b64decode(doc["content"][0]["attachment"]["data"]).decode()
    assert "冠脉CTA" in text and "刘艳" in text
    # And the accounting rollups were written in the same step
    assert {sk for _, sk in h.store.accounts} == {
        "2026-06#E#doc-chenming", "2026-06#E#doc-liuyan",
        f"2026-06#I#{COUNTY}#consulting", f"2026-06#I#{TOWNSHIP}#requesting",
    }  # fmt: skip
    # And the requester and the patient are told
    told = {n.recipient for n in h.notices.delivered if n.kind == "ConsultationReported"}
    assert told == {"user:doc-wang", "person:p-zhangwei"}


def test_only_the_lead_signs(h: Harness) -> None:
    cid = written(h, CHENMING, LIUYAN, kind="mdt")
    error = refused(h, Forbidden, "NOT_LEAD", sign, h, LIUYAN, cid)
    assert error.details == {"lead": "陈明"}
    assert h.records.submitted == []


def test_two_experts_both_signing_as_lead(h: Harness) -> None:
    # Given two experts who both saw the consultation at the same version
    cid = written(h, CHENMING, LIUYAN, kind="mdt")
    seen = h.stored(cid).version
    # When the lead signs, and the other signs on what they saw
    sign(h, CHENMING, cid, version=seen)
    # Then the second signature is refused and nothing changes: one report, one filing
    refused(h, Conflict, "REPLAYED", sign, h, LIUYAN, cid, version=seen)
    refused(h, Conflict, "REPLAYED", sign, h, CHENMING, cid, version=seen)
    assert len(h.records.submitted) == 1
    assert h.stored(cid).report["signed_by"] == "doc-chenming"


def test_a_second_signature_on_the_current_version_is_already_signed(h: Harness) -> None:
    cid = written(h, CHENMING)
    sign(h, CHENMING, cid)
    refused(h, Conflict, "ALREADY_SIGNED", sign, h, CHENMING, cid)


def test_the_requester_acknowledges(h: Harness) -> None:
    cid = written(h, CHENMING)
    sign(h, CHENMING, cid)
    for who in (CENTRE, CHENMING, COLLEAGUE):
        refused(h, Forbidden, "NOT_THE_REQUESTER", h.act, who, cid, "acknowledge")
    out = h.act(REQUESTER, cid, "acknowledge", note="已阅")
    assert out["status"] == "COMPLETED" and out["actions"] == []
    assert h.stored(cid).status is Status.COMPLETED
    assert len(h.records.submitted) == 1  # filed once, at signing


# ======================================================================== cancel
@pytest.mark.parametrize("who", [REQUESTER, CENTRE])
def test_the_requester_or_the_centre_cancels(h: Harness, who: Principal) -> None:
    cid = written(h, CHENMING)
    h.act(who, cid, "cancel", reason="患者已转院")
    c = h.stored(cid)
    assert c.status is Status.CANCELLED and c.closed_reason == "患者已转院"
    assert h.store.workload(C, "doc-chenming") == 0


def test_nobody_else_cancels_and_a_reported_one_is_not_cancelled(h: Harness) -> None:
    cid = written(h, CHENMING)
    refused(h, Forbidden, "NOT_THE_REQUESTER", h.act, CHENMING, cid, "cancel", reason="不做了")
    refused(h, InvalidInput, "REASON_REQUIRED", h.act, REQUESTER, cid, "cancel")
    sign(h, CHENMING, cid)
    refused(h, Conflict, "WRONG_STATE", h.act, REQUESTER, cid, "cancel", reason="不做了")


# ======================================================================== refusals
CLOSED_STEPS = [
    (CENTRE, "accept", {"experts": [{"doctor_id": "doc-heping"}]}),
    (CENTRE, "decline", {"reason": "重复申请"}),
    (REQUESTER, "cancel", {"reason": "重复申请"}),
    (REQUESTER, "amend", {"summary": "补充"}),
    (REQUESTER, "acknowledge", {}),
    (CHENMING, "sign", {"findings": "f", "recommendations": "r"}),
    (CHENMING, "opinion", {"findings": "f", "recommendations": "r"}),
]


@pytest.mark.parametrize(("who", "action", "body"), CLOSED_STEPS)
def test_acting_on_a_closed_consultation(
    h: Harness, who: Principal, action: str, body: dict[str, Any]
) -> None:
    # Given a cancelled consultation 陈明 had accepted
    cid = written(h, CHENMING)
    h.act(REQUESTER, cid, "cancel", reason="患者已转院")
    # When anyone acts on it, even on the current version
    # Then it is closed and nothing changes
    refused(h, Conflict, "CONSULTATION_CLOSED", h.act, who, cid, action, **body)


def test_a_replayed_step_changes_nothing(h: Harness) -> None:
    # Given the centre accepted a request on version 1
    cid = request(h)
    accept(h, cid, CHENMING, version=1)
    # When the same acceptance arrives again / Then it is a replay
    refused(h, Conflict, "REPLAYED", accept, h, cid, HEPING, version=1)
    assert [i.expert.subject for i in h.stored(cid).invitations] == ["doc-chenming"]


def test_a_step_without_a_version(h: Harness) -> None:
    cid = request(h)
    refused(h, InvalidInput, "VERSION_REQUIRED", h.service.act, CENTRE, cid, "return",
            {"reason": "请补充"})  # fmt: skip


def test_a_concurrent_step_makes_the_slower_one_a_replay(h: Harness) -> None:
    # Given the requester cancels while the centre's acceptance is being written
    cid = request(h)
    h.store.before_next_save(lambda: h.act(REQUESTER, cid, "cancel", reason="患者已转院"))
    # When the centre's save finds the consultation moved / Then it is refused
    with pytest.raises(Conflict) as e:
        accept(h, cid, CHENMING)
    assert e.value.code == "CONSULTATION_CLOSED"
    assert h.stored(cid).status is Status.CANCELLED and h.stored(cid).invitations == ()


@pytest.mark.parametrize("action", ["accept", "cancel", "acknowledge", "respond", "no_show"])
def test_a_resident_does_not_act(h: Harness, action: str) -> None:
    cid = request(h)
    refused(h, Forbidden, "ROLE_NOT_ALLOWED", h.act, RESIDENT, cid, action, reason="不想要了")


def test_unknown_action_and_consultation(h: Harness) -> None:
    cid = request(h)
    refused(h, NotFound, "ACTION_UNKNOWN", h.act, CENTRE, cid, "approve")
    refused(h, NotFound, "CONSULTATION_NOT_FOUND", h.service.act, CENTRE, "HZ0", "return",
            {"version": 1, "reason": "请补充"})  # fmt: skip
    foreign = Principal("centre-x", Role.REFERRAL_CENTRE, "other-county", COUNTY)
    refused(h, NotFound, "CONSULTATION_NOT_FOUND", h.act, foreign, cid, "return", reason="请补充")


# ======================================================================== the workflow's waits
def test_every_step_spends_the_wait_token_with_the_new_outcome(h: Harness) -> None:
    # Given the workflow waiting for the review
    cid = request(h)
    assert h.wait(cid, "t-review") is True
    assert h.store.token_of(cid) == "t-review"
    steps = [
        (lambda: accept(h, cid, CHENMING), "ASSIGNING", "invitation"),
        (lambda: respond(h, CHENMING, cid), "IN_PROGRESS", "report"),
        (lambda: opinion(h, CHENMING, cid), "IN_PROGRESS", "report"),
        (lambda: sign(h, CHENMING, cid), "REPORTED", "acknowledgement"),
        (lambda: h.act(REQUESTER, cid, "acknowledge"), "COMPLETED", "closed"),
    ]
    for n, (step, status, stage) in enumerate(steps):
        token = f"t{n}"
        if n:
            assert h.wait(cid, token) is True
        else:
            token = "t-review"
        h.advance(60)
        # When a person takes the step
        step()
        # Then the wait completes once, routing on the new state; the token is gone
        outcome = h.callbacks.completed[token]
        assert (outcome["status"], outcome["stage"]) == (status, stage)
        assert outcome["wait_seconds"] >= 1
        assert h.store.token_of(cid) is None
    assert all(ok for _, _, ok in h.callbacks.calls)


def test_the_outcome_carries_the_seconds_left(h: Harness) -> None:
    cid = request(h)
    h.advance(100)
    assert h.service.start_workflow(cid) == {
        "status": "REQUESTED", "stage": "review",
        "wait_seconds": Limits().review["routine"] - 100,
    }  # fmt: skip


def test_a_wait_for_a_status_already_left_resumes_at_once(h: Harness) -> None:
    # Given the centre accepted before the workflow's review wait registered
    cid = request(h)
    accept(h, cid, CHENMING)
    h.callbacks.issue("late")
    # When the review wait arrives
    kept = h.service.await_stage(cid, "review", "late")
    # Then its token is not kept; it completes at once with the current state
    assert kept is False and h.store.token_of(cid) is None
    assert h.callbacks.completed["late"]["status"] == "ASSIGNING"
    assert h.callbacks.completed["late"]["stage"] == "invitation"


def test_a_wait_for_an_unknown_stage_resumes_at_once(h: Harness) -> None:
    cid = request(h)
    h.callbacks.issue("odd")
    assert h.service.await_stage(cid, "closed", "odd") is False
    assert h.callbacks.completed["odd"]["status"] == "REQUESTED"


def test_a_spent_token_is_refused_by_step_functions(h: Harness) -> None:
    cid = request(h)
    h.wait(cid, "t1")
    h.callbacks.time_out("t1")  # the wait's limit passed first
    accept(h, cid, CHENMING)  # the step still lands; Step Functions refuses the token
    assert h.callbacks.calls[-1][0] == "t1" and h.callbacks.calls[-1][2] is False
    assert h.stored(cid).status is Status.ASSIGNING


# ======================================================================== time limits
def test_an_urgent_review_escalates_once_then_expires() -> None:
    # Given an urgent request and limits in seconds
    h = Harness(limits=Limits.from_mapping({"review": {"urgent": 3}, "escalation": 5}))
    cid = request(h, kind="urgent")
    # When the review limit passes
    h.advance(3)
    out = h.service.on_timeout(cid, "review")
    # Then it is escalated, still awaiting review, with the escalation's extra time
    c = h.stored(cid)
    assert c.status is Status.REQUESTED and c.escalated and out["stage"] == "review"
    assert c.due_at == iso(h.clock.t + timedelta(seconds=5)) and out["wait_seconds"] == 5
    assert [e["action"] for e in c.history] == ["request", "escalate"]
    assert {n.recipient for n in h.notices.delivered if n.kind == "ConsultationEscalated"} == {
        "centre", "admins"
    }  # fmt: skip
    # And when that passes too, it expires
    h.advance(5)
    out = h.service.on_timeout(cid, "review")
    c = h.stored(cid)
    assert c.status is Status.EXPIRED and c.closed_reason == "审核超时"
    assert out["stage"] == "closed"
    assert [e["action"] for e in c.history] == ["request", "escalate", "expire"]


def test_a_routine_review_expires_without_escalation(h: Harness) -> None:
    cid = request(h)
    h.advance(Limits().review["routine"])
    h.service.on_timeout(cid, "review")
    c = h.stored(cid)
    assert c.status is Status.EXPIRED and not c.escalated


def test_an_unanswered_amendment_expires(h: Harness) -> None:
    cid = request(h)
    h.act(CENTRE, cid, "return", reason="请补充心电图")
    h.advance(Limits().amendment)
    h.service.on_timeout(cid, "amendment")
    assert h.stored(cid).closed_reason == "补充资料超时"


def test_silent_experts_make_way_for_the_next_until_the_rounds_run_out() -> None:
    # Given two rounds of invitations, an hour each, 陈明 invited
    h = Harness(limits=Limits.from_mapping({"invitation": {"routine": 3600},
                                            "invitation_rounds": 2}))  # fmt: skip
    cid = request(h)
    accept(h, cid, CHENMING)
    # When he stays silent past the limit
    h.advance(3600)
    h.service.on_timeout(cid, "invitation")
    # Then his invitation expires and the next cardiologist is invited, as lead
    c = h.stored(cid)
    assert c.status is Status.ASSIGNING and c.rounds == 1
    assert [(i.expert.subject, i.state, i.lead) for i in c.invitations] == [
        ("doc-chenming", InviteState.EXPIRED, True),
        ("doc-heping", InviteState.INVITED, True),
    ]
    assert c.due_at == iso(h.clock.t + timedelta(seconds=3600))
    # And again
    h.advance(3600)
    h.service.on_timeout(cid, "invitation")
    c = h.stored(cid)
    assert [i.state for i in c.invitations] == [InviteState.EXPIRED, InviteState.EXPIRED,
                                                InviteState.INVITED]  # fmt: skip
    assert c.invitations[2].expert.subject == "doc-xuqing"
    # And when the rounds run out, it expires
    h.advance(3600)
    h.service.on_timeout(cid, "invitation")
    c = h.stored(cid)
    assert c.status is Status.EXPIRED and c.closed_reason == "专家未在时限内确认"
    assert h.store.workload(C, "doc-xuqing") == 0


def test_with_no_one_left_in_the_specialty_any_department_is_next() -> None:
    # Given an orthopaedic request: 赵磊 is the county hospital's only 骨科 expert
    h = Harness()
    cid = request(h, specialty="骨科")
    accept(h, cid, ZHAOLEI)
    # When he stays silent
    h.advance(86400)
    h.service.on_timeout(cid, "invitation")
    # Then the least busy doctor of the consulting institution is invited instead
    c = h.stored(cid)
    assert c.status is Status.ASSIGNING
    assert c.invitations[-1].expert.subject == "doc-chen"  # 神经内科; workload 0, first by id


def test_no_candidate_left_expires_the_invitation(h: Harness) -> None:
    # Given a request to the county TCM hospital, which has no doctors in the directory
    cid = request(h, centre_institution_id="county-tcm")
    accept(h, cid, CHENMING)
    # When the invited expert stays silent
    h.advance(86400)
    h.service.on_timeout(cid, "invitation")
    # Then no one can be invited next: it expires
    c = h.stored(cid)
    assert c.status is Status.EXPIRED and c.rounds == 1
    assert [i.state for i in c.invitations] == [InviteState.EXPIRED]


def test_a_session_is_reminded_then_held() -> None:
    # Given a video session in an hour, a 10 minute reminder and 5 minutes' grace
    h = Harness(limits=Limits.from_mapping({"reminder": 600, "session_grace": 300}))
    cid = video(h, CHENMING)
    h.act(CENTRE, cid, "schedule", start=start_at(1))
    assert h.stored(cid).due_at == iso(T0 + timedelta(minutes=50))
    # When the first limit passes, the parties are reminded
    h.advance(50 * 60)
    out = h.service.on_timeout(cid, "session")
    c = h.stored(cid)
    assert c.status is Status.SCHEDULED and c.session["reminded"] == iso(h.clock.t)
    assert out["wait_seconds"] == 15 * 60
    assert any(n.kind == "ConsultationReminder" and n.recipient == "user:doc-chenming"
               for n in h.notices.delivered)  # fmt: skip
    # And after the start and its grace, the session is held: opinions are due
    h.advance(15 * 60)
    h.service.on_timeout(cid, "session")
    c = h.stored(cid)
    assert c.status is Status.IN_PROGRESS
    assert c.due_at == iso(h.clock.t + timedelta(seconds=Limits().report))
    assert c.history[-1]["action"] == "session_held"


def test_an_unscheduled_session_expires(h: Harness) -> None:
    cid = video(h, CHENMING)
    h.advance(Limits().invitation["routine"])
    h.service.on_timeout(cid, "session")
    assert h.stored(cid).closed_reason == "未能排期"


def test_a_report_not_written_in_time_expires(h: Harness) -> None:
    cid = written(h, CHENMING)
    h.advance(Limits().report)
    h.service.on_timeout(cid, "report")
    assert h.stored(cid).status is Status.EXPIRED
    assert h.stored(cid).closed_reason == "会诊报告超时"


def test_an_unacknowledged_report_completes_by_itself(h: Harness) -> None:
    cid = written(h, CHENMING)
    sign(h, CHENMING, cid)
    h.advance(Limits().acknowledgement)
    out = h.service.on_timeout(cid, "acknowledgement")
    c = h.stored(cid)
    assert c.status is Status.COMPLETED and out["stage"] == "closed"
    assert c.history[-1]["action"] == "auto_acknowledge"
    assert len(h.records.submitted) == 1


def test_a_timeout_for_a_stage_already_left_changes_nothing(h: Harness) -> None:
    # Given the centre accepted just as the review limit passed
    cid = request(h)
    h.advance(Limits().review["routine"])
    accept(h, cid, CHENMING)
    before = h.store.snapshot()
    # When the review's timeout runs / Then nothing changes; it routes on the new stage
    out = h.service.on_timeout(cid, "review")
    assert out["status"] == "ASSIGNING" and out["stage"] == "invitation"
    assert h.store.snapshot() == before


def test_a_timeout_before_a_moved_deadline_changes_nothing(h: Harness) -> None:
    # Given an invitation wait whose deadline is a day away
    cid = request(h)
    accept(h, cid, CHENMING)
    h.advance(3600)
    before = h.store.snapshot()
    # When a timeout for that stage arrives early / Then nothing changes
    out = h.service.on_timeout(cid, "invitation")
    assert out == {"status": "ASSIGNING", "stage": "invitation", "wait_seconds": 86400 - 3600}
    assert h.store.snapshot() == before


def test_a_timeout_on_a_closed_consultation_changes_nothing(h: Harness) -> None:
    cid = request(h)
    h.act(REQUESTER, cid, "cancel", reason="患者已转院")
    before = h.store.snapshot()
    h.advance(10**6)
    assert h.service.on_timeout(cid, "review")["stage"] == "closed"
    assert h.store.snapshot() == before


# ======================================================================== accounting
def signed_after(h: Harness, minutes: int, *experts: Principal, **kw: Any) -> str:
    """A written consultation requested now and signed `minutes` later by the first expert."""
    start = h.clock.t
    cid = written(h, *experts, **kw)
    h.clock.t = start + timedelta(minutes=minutes)
    sign(h, experts[0], cid)
    h.clock.t = start + timedelta(hours=1)
    return cid


def test_the_median_is_interpolated_in_its_bucket(h: Harness) -> None:
    # Given 陈明 signed four reports, 10, 20, 35 and 50 minutes after their requests
    # (buckets 0-15, 15-30, 30-45, 45-60: one each)
    for minutes in (50, 10, 35, 20):
        signed_after(h, minutes, CHENMING)
    # When the centre asks for the month
    out = h.service.accounting(CENTRE, {"from": "2026-06", "to": "2026-06"})
    # Then his median falls where the second of four lies: the top of the 15-30 bucket
    [row] = out["experts"]
    assert row["doctor_id"] == "doc-chenming" and row["n"] == 4
    assert row["median_minutes_to_report"] == 30.0
    # And a fifth, slow one moves it half way into the 30-45 bucket
    signed_after(h, 1000, CHENMING)
    out = h.service.accounting(CENTRE, {"from": "2026-06", "to": "2026-06"})
    assert out["experts"][0]["median_minutes_to_report"] == 37.5


def test_a_rollup_holds_at_most_one_counter_per_bucket(h: Harness) -> None:
    from yilian.domain.consultation import REPORT_BUCKETS

    # Given many reports at every minute of the first day
    for minutes in range(0, 1440, 37):
        signed_after(h, minutes, CHENMING)
    # Then 陈明's rollup has no more histogram counters than there are buckets
    [item] = [i for i in h.store.rollups(C, "2026-06", "2026-06") if "#E#" in i["sk"]]
    counters = [k for k in item if k.startswith("m_")]
    assert 0 < len(counters) <= len(REPORT_BUCKETS)


def test_fees_by_tariff_and_title_split_between_institutions() -> None:
    # Given a tariff, and an MDT with a 主任医师, a 副主任医师 and a 住院医师 (the "*" fee)
    tariff = Tariff.from_mapping({"fees": {"mdt": {"主任医师": 500}}, "consulting_share": 0.6})
    h = Harness(tariff=tariff)
    signed_after(h, 30, CHENMING, LIUYAN, XUQING, kind="mdt")
    signed_after(h, 30, HEPING)  # routine, 主治医师: 100
    # When the centre asks
    out = h.service.accounting(CENTRE, {"from": "2026-06", "to": "2026-06"})
    # Then each expert's fee is by kind and title
    fees = {e["doctor_id"]: e["fee_yuan"] for e in out["experts"]}
    assert fees == {"doc-chenming": 500, "doc-liuyan": 300, "doc-xuqing": 150, "doc-heping": 100}
    # And the consulting institution receives 60%, the requesting keeps the rest: the sum
    inst = {i["institution_id"]: i for i in out["institutions"]}
    total = 500 + 300 + 150 + 100
    assert inst[COUNTY]["fee_received_yuan"] == total * 0.6
    assert inst[TOWNSHIP]["fee_retained_yuan"] == total * 0.4
    assert inst[COUNTY]["fee_received_fen"] + inst[TOWNSHIP]["fee_retained_fen"] == total * 100
    # counted once per consultation on each side
    assert inst[COUNTY]["consulting_n"] == 2 and inst[TOWNSHIP]["requesting_n"] == 2


def test_counts_by_kind_and_department(h: Harness) -> None:
    # Given cardiology and neurology experts in routine, urgent and MDT consultations
    signed_after(h, 10, CHENMING)
    signed_after(h, 10, CHENMING, kind="urgent")
    signed_after(h, 10, HEPING)
    signed_after(h, 10, LIUYAN, CHENMING, kind="mdt")
    # When the centre asks
    out = h.service.accounting(CENTRE, {"from": "2026-06", "to": "2026-06"})
    # Then each expert counts by kind
    kinds = {e["doctor_id"]: e["by_kind"] for e in out["experts"]}
    assert kinds["doc-chenming"] == {"routine": 1, "urgent": 1, "mdt": 1}
    assert kinds["doc-liuyan"] == {"mdt": 1}
    assert out["experts"][0]["doctor_id"] == "doc-chenming"  # busiest first
    # And departments add their experts up
    depts = {d["department"]: d for d in out["departments"]}
    assert depts["心血管内科"]["n"] == 4 and depts["神经内科"]["n"] == 1
    assert depts["心血管内科"]["by_kind"] == {"routine": 2, "urgent": 1, "mdt": 1}
    assert depts["心血管内科"]["fee_yuan"] == 200 + 300 + 100 + 400
    assert depts["心血管内科"]["institution_id"] == COUNTY


def test_the_period_is_by_month_of_request(h: Harness) -> None:
    signed_after(h, 10, CHENMING)
    h.clock.t = datetime.fromisoformat("2026-07-03T09:00:00+08:00")
    signed_after(h, 10, CHENMING)
    june = h.service.accounting(CENTRE, {"from": "2026-06", "to": "2026-06"})
    both = h.service.accounting(CENTRE, {"from": "2026-01", "to": "2026-12"})
    assert june["experts"][0]["n"] == 1 and both["experts"][0]["n"] == 2
    assert h.service.accounting(CENTRE, {"from": "2025-01", "to": "2025-12"})["experts"] == []
    # the default period is this month
    assert h.service.accounting(CENTRE, {})["from"] == "2026-07"


def test_who_sees_which_accounts(h: Harness) -> None:
    signed_after(h, 10, CHENMING)
    signed_after(h, 10, HEPING)
    period = {"from": "2026-06", "to": "2026-06"}
    # an expert sees only themselves, and no institution
    mine = h.service.accounting(HEPING, period)
    assert [e["doctor_id"] for e in mine["experts"]] == ["doc-heping"]
    assert mine["institutions"] == []
    # a doctor who never consulted sees nothing of the others
    assert h.service.accounting(REQUESTER, period)["experts"] == []
    # an institution admin sees their own institution
    county = h.service.accounting(COUNTY_ADMIN, period)
    assert {e["doctor_id"] for e in county["experts"]} == {"doc-chenming", "doc-heping"}
    assert [i["institution_id"] for i in county["institutions"]] == [COUNTY]
    township = h.service.accounting(TOWNSHIP_ADMIN, period)
    assert township["experts"] == []
    assert [i["institution_id"] for i in township["institutions"]] == [TOWNSHIP]
    # the centre sees everyone
    everyone = h.service.accounting(CONSORTIUM_ADMIN, period)
    assert len(everyone["experts"]) == 2 and len(everyone["institutions"]) == 2
    # a resident sees nothing
    with pytest.raises(Forbidden):
        h.service.accounting(RESIDENT, period)


@pytest.mark.parametrize(
    "period",
    [{"from": "2026-07", "to": "2026-06"}, {"from": "June", "to": "2026-06"},
     {"from": "2026/06", "to": "2026-06"}],
)  # fmt: skip
def test_a_bad_period(h: Harness, period: dict[str, str]) -> None:
    with pytest.raises(InvalidInput) as e:
        h.service.accounting(CENTRE, period)
    assert e.value.code == "PERIOD_INVALID"


def test_a_month_out_of_range_is_a_bad_period(h: Harness) -> None:
    with pytest.raises(InvalidInput):
        h.service.accounting(CENTRE, {"from": "2026-13", "to": "2026-13"})


# ======================================================================== reads
def test_the_board_and_the_worklists(h: Harness) -> None:
    cid = request(h)
    accept(h, cid, CHENMING)
    board = h.service.board(CENTRE)["consultations"]
    assert [(r["consultation_id"], r["status"]) for r in board] == [(cid, "ASSIGNING")]
    mine = h.service.worklist(CHENMING)
    assert [(r["consultation_id"], r["my_state"]) for r in mine["as_expert"]] == [(cid, "invited")]
    assert [r["consultation_id"] for r in h.service.worklist(REQUESTER)["requested"]] == [cid]
    with pytest.raises(Forbidden):
        h.service.board(REQUESTER)


def test_a_resident_sees_their_consultations(h: Harness) -> None:
    cid = written(h, CHENMING)
    assert h.service.get(RESIDENT, cid)["report"] is None
    sign(h, CHENMING, cid)
    [row] = h.service.for_resident(RESIDENT)["consultations"]
    assert row["report"]["recommendations"] == "冠脉CTA"
    with pytest.raises(Forbidden):
        h.service.for_resident(RESIDENT, "p-other")


def test_no_show_closes_the_session(h: Harness) -> None:
    cid = video(h, CHENMING)
    h.act(CENTRE, cid, "schedule", start=start_at(2))
    refused(h, InvalidInput, "PARTY_INVALID", h.act, CENTRE, cid, "no_show", party="x",
            reason="未上线")  # fmt: skip
    refused(h, Forbidden, "NOT_THE_CENTRE", h.act, REQUESTER, cid, "no_show", party="expert",
            reason="未上线")  # fmt: skip
    h.act(CENTRE, cid, "no_show", party="patient", reason="患者未到")
    c = h.stored(cid)
    assert c.status is Status.NO_SHOW and c.closed_reason == "patient no-show: 患者未到"


# ======================================================================== bad inputs (bugs)
def test_experts_given_as_bare_ids_are_refused(h: Harness) -> None:
    cid = request(h)
    refused(h, InvalidInput, "EXPERTS_REQUIRED", h.act, CENTRE, cid, "accept",
            experts=["doc-chenming"])  # fmt: skip


def test_a_non_numeric_required_accepts_is_refused(h: Harness) -> None:
    cid = request(h)
    refused(h, InvalidInput, "REQUIRED_ACCEPTS_INVALID", h.act, CENTRE, cid, "accept",
            experts=[{"doctor_id": "doc-chenming"}], required_accepts="two")  # fmt: skip


def test_invitations_not_needed_once_confirmed_leave_the_workload(h: Harness) -> None:
    # Given an MDT needing two of three experts, confirmed by 刘艳 and 赵磊
    cid = request(h, kind="mdt")
    accept(h, cid, CHENMING, LIUYAN, ZHAOLEI, required_accepts=2)
    respond(h, LIUYAN, cid)
    respond(h, ZHAOLEI, cid)
    assert h.stored(cid).status is Status.IN_PROGRESS
    # Then 陈明, who can no longer answer, is not busy with it
    assert h.store.workload(C, "doc-chenming") == 0


# ======================================================================== the fake
def test_the_fake_store_offers_the_adapters_methods_with_their_parameters() -> None:
    # Given the adapter the fake stands for
    import inspect

    from yilian.adapters.consultation_store import DynamoConsultationStore

    public = [m for m, _ in inspect.getmembers(DynamoConsultationStore, inspect.isfunction)
              if not m.startswith("_") and m != "key"]  # fmt: skip
    # Then the fake has every public method, with the same parameter names
    assert public
    for method in public:
        assert hasattr(FakeConsultationStore, method), method
        ours = list(inspect.signature(getattr(FakeConsultationStore, method)).parameters)
        theirs = list(inspect.signature(getattr(DynamoConsultationStore, method)).parameters)
        assert ours == theirs, method


def test_the_fake_store_refuses_a_stale_save_and_writes_nothing(h: Harness) -> None:
    from dataclasses import replace

    from yilian.adapters.consultation_store import StaleConsultation

    # Given a stored consultation with a kept wait token
    cid = request(h)
    c = h.stored(cid)
    h.store.register_wait(cid, "REQUESTED", "review", "tok")
    before = h.store.snapshot()
    # When a save names an older version, or creation repeats an id / Then it is refused
    with pytest.raises(StaleConsultation):
        h.store.save(replace(c, version=0), replace(c, version=1, summary="x"))
    with pytest.raises(StaleConsultation):
        h.store.create(c)
    assert h.store.snapshot() == before
    # And a wait for another status is not kept; a good save drops the token
    assert h.store.register_wait(cid, "ASSIGNING", "invitation", "t2") is False
    h.store.save(c, replace(c, version=c.version + 1),
                 [("ACCT#x#2026", "2026-06#E#d", {"title": 1}, {"n": 2})], token="tok")  # fmt: skip
    h.store.save(
        replace(c, version=c.version + 1),
        replace(c, version=c.version + 2),
        [("ACCT#x#2026", "2026-06#E#d", {"title": "主任医师"}, {"n": 1, "m_5": 1})],
    )
    assert h.store.token_of(cid) is None
    assert h.store.rollups("x", "2026-06", "2026-06") == [
        {"pk": "ACCT#x#2026", "sk": "2026-06#E#d", "n": 3, "m_5": 1, "title": "主任医师"}
    ]
    assert h.store.rollups("x", "2026-07", "2027-02") == []
