"""An active consultation is a care relationship: its accepted experts and its requesting
doctor read the patient's record while it lasts, and nobody else does, nor after it closes."""

from __future__ import annotations

import pytest

from tests.support.fake_consultations import (
    CENTRE,
    CHENMING,
    COLLEAGUE,
    HEPING,
    LIUYAN,
    PATIENT_ID,
    REQUESTER,
    Harness,
    request_body,
)
from tests.support.fake_referrals import T0
from yilian.adapters.care_relationships import CareRelationships, ConsultationCare
from yilian.domain.consultation import Status
from yilian.domain.principal import Principal


@pytest.fixture
def h() -> Harness:
    return Harness()


def basis(h: Harness, who: Principal, person_id: str = PATIENT_ID) -> str | None:
    return ConsultationCare(h.store).find(who, person_id, h.clock.t)


def mdt(h: Harness) -> str:
    """An MDT: 陈明 accepted, 刘艳 invited and not answering, needing one acceptance."""
    cid = h.service.request(REQUESTER, request_body(kind="mdt"))["consultation_id"]
    h.act(
        CENTRE,
        cid,
        "accept",
        required_accepts=1,
        experts=[{"doctor_id": "doc-chenming", "lead": True}, {"doctor_id": "doc-liuyan"}],
    )
    h.act(CHENMING, cid, "respond", answer="accept")
    assert h.stored(cid).status is Status.IN_PROGRESS
    return cid


def test_an_accepted_expert_of_an_active_consultation_reads_the_record(h: Harness) -> None:
    # Given an active consultation 陈明 accepted
    cid = mdt(h)
    # When his access to the patient is decided / Then the consultation is the basis
    assert basis(h, CHENMING) == f"consultation:{cid}"


def test_an_invited_expert_who_has_not_accepted_does_not(h: Harness) -> None:
    mdt(h)
    assert basis(h, LIUYAN) is None


def test_while_invitations_are_out_nobody_invited_reads_it_yet(h: Harness) -> None:
    # Given an assignment in progress (ASSIGNING: active), nobody has accepted yet
    cid = h.service.request(REQUESTER, request_body())["consultation_id"]
    h.act(CENTRE, cid, "accept", experts=[{"doctor_id": "doc-chenming"}])
    # Then the requester has the relationship, the invited expert not yet
    assert basis(h, REQUESTER) == f"consultation:{cid}"
    assert basis(h, CHENMING) is None


def test_the_requester_reads_it(h: Harness) -> None:
    cid = mdt(h)
    assert basis(h, REQUESTER) == f"consultation:{cid}"


@pytest.mark.parametrize("who", [COLLEAGUE, HEPING, CENTRE])
def test_nobody_else_has_it(h: Harness, who: Principal) -> None:
    # Given an active consultation: a colleague of the requester, an uninvited expert and
    # the centre have no care relationship through it
    mdt(h)
    assert basis(h, who) is None


def test_only_for_the_consultations_patient(h: Harness) -> None:
    mdt(h)
    assert basis(h, CHENMING, "p-other") is None


def test_a_request_not_yet_reviewed_is_no_relationship(h: Harness) -> None:
    # Given a request the centre has not accepted (REQUESTED is not active)
    h.service.request(REQUESTER, request_body())
    assert basis(h, REQUESTER) is None


@pytest.mark.parametrize("close", ["cancel", "complete"])
def test_nobody_after_it_closes(h: Harness, close: str) -> None:
    # Given an active consultation
    cid = mdt(h)
    # When it closes: cancelled, or reported and acknowledged
    if close == "cancel":
        h.act(REQUESTER, cid, "cancel", reason="患者已转院")
    else:
        h.act(CHENMING, cid, "sign", findings="稳定型心绞痛", recommendations="冠脉CTA")
        assert basis(h, CHENMING) == f"consultation:{cid}"  # REPORTED still active
        h.act(REQUESTER, cid, "acknowledge")
    # Then neither its expert nor its requester has the relationship any longer
    assert basis(h, CHENMING) is None
    assert basis(h, REQUESTER) is None


def test_the_relationship_is_found_among_the_sources(h: Harness) -> None:
    # Given the consultation source behind another that finds nothing
    class Nothing:
        def find(self, who: Principal, person_id: str, now: object) -> None:
            return None

    cid = mdt(h)
    care = CareRelationships([Nothing(), ConsultationCare(h.store)])
    # Then the consultation is the basis found
    assert care.find(CHENMING, PATIENT_ID, T0) == f"consultation:{cid}"
    assert care.find(COLLEAGUE, PATIENT_ID, T0) is None
