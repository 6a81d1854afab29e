"""One contract, two implementations: the in-memory fake (tests/support/fake_consultations.py)
and DynamoConsultationStore (moto, ConsultationsTable from template.yaml) keep consultations,
their version lock, the workflow's wait token, the patient's, board, requesting and expert
lists, workloads and the accounting rollups alike."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta

import pytest

from tests.support.fake_consultations import FakeConsultationStore
from tests.support.store_contract import fake_and_dynamodb_store
from yilian.adapters.consultation_store import DynamoConsultationStore, StaleConsultation
from yilian.domain.clock import CHINA_TZ
from yilian.domain.consultation import (
    Consultation,
    InviteState,
    Kind,
    Mode,
    Party,
    Status,
    invite,
    iso,
    move,
)

pytestmark = pytest.mark.integration

store = fake_and_dynamodb_store(
    FakeConsultationStore,
    lambda db, names: DynamoConsultationStore(db, names["ConsultationsTable"]),
)

C = "demo-county"
T0 = datetime(2026, 6, 1, 9, 0, tzinfo=CHINA_TZ)
REQUESTER = Party("doc-wangfang", "王芳", "qiaotou", "全科", "主治医师")
CHEN = Party("doc-chenming", "陈明", "county-hospital", "心血管内科", "主任医师")
LIU = Party("doc-liuyan", "刘艳", "county-hospital", "神经内科", "副主任医师")


def new(
    cid: str,
    *,
    person: str = "p-1",
    at: datetime = T0,
    requester: Party = REQUESTER,
    consortium: str = C,
) -> Consultation:
    return Consultation(
        consultation_id=cid,
        consortium_id=consortium,
        person_id=person,
        requester=requester,
        centre_institution_id="county-hospital",
        kind=Kind.MDT,
        mode=Mode.WRITTEN,
        specialty="心血管内科,神经内科",
        question="胸痛待查",
        summary="反复胸痛",
        attachments={"documents": [], "studies": []},
        preferred_times=(),
        status=Status.REQUESTED,
        created_at=iso(at),
        updated_at=iso(at),
        history=(
            {
                "at": iso(at),
                "action": "request",
                "from": "",
                "to": "REQUESTED",
                "by": requester.subject,
                "by_name": requester.name,
            },
        ),
    )


def accepted(c: Consultation, *experts: Party, at: datetime = T0) -> Consultation:
    invitations = tuple(invite(e, at, 86400, lead=n == 0) for n, e in enumerate(experts))
    return move(
        c,
        Status.ASSIGNING,
        None,
        "accept",
        at + timedelta(minutes=1),
        due_seconds=86400,
        invitations=invitations,
        required_accepts=len(experts),
    )


def answered(c: Consultation, subject: str, state: InviteState) -> Consultation:
    invitations = tuple(
        replace(i, state=state) if i.expert.subject == subject else i for i in c.invitations
    )
    return move(c, c.status, None, "respond", T0 + timedelta(minutes=2), invitations=invitations)


# ------------------------------------------------------------------------------- one item


def test_a_created_consultation_reads_back_whole_without_a_wait(store):
    c = new("HZ1")
    store.create(c)
    got, token = store.get("HZ1")
    assert (got, token) == (c, None)
    assert store.get("HZ-none") is None


def test_creating_the_same_consultation_twice_is_refused(store):
    store.create(new("HZ1"))
    with pytest.raises(StaleConsultation):
        store.create(replace(new("HZ1"), question="另一个"))
    assert store.get("HZ1")[0].question == "胸痛待查"


def test_a_save_names_the_version_it_read(store):
    c = new("HZ1")
    store.create(c)
    after = accepted(c, CHEN, LIU)
    store.save(c, after)
    assert store.get("HZ1")[0] == after and after.version == 2
    # a second writer who read version 1 is refused, and nothing it wrote is kept
    other = move(c, Status.DECLINED, None, "decline", T0, closed_reason="不符合")
    with pytest.raises(StaleConsultation):
        store.save(c, other)
    assert store.get("HZ1")[0] == after
    assert [x.consultation_id for x in store.for_expert(C, "doc-chenming")] == ["HZ1"]


def test_a_wait_is_kept_only_in_its_status_and_every_save_drops_it(store):
    c = new("HZ1")
    store.create(c)
    assert store.register_wait("HZ1", "ASSIGNING", "invitation", "tok-0") is False
    assert store.get("HZ1")[1] is None
    assert store.register_wait("HZ1", "REQUESTED", "review", "tok-1") is True
    seen, token = store.get("HZ1")
    assert token == "tok-1"
    store.save(seen, accepted(seen, CHEN), token=token)
    assert store.get("HZ1")[1] is None  # the next wait brings its own
    assert store.register_wait("HZ-none", "REQUESTED", "review", "tok-2") is False


def test_a_save_read_before_the_wait_was_registered_is_stale(store):
    c = new("HZ1")
    store.create(c)
    seen, token = store.get("HZ1")  # a person's step reads: no wait yet
    assert token is None
    assert store.register_wait("HZ1", "REQUESTED", "review", "tok-1")  # the workflow waits
    with pytest.raises(StaleConsultation):  # the step must read again and spend tok-1
        store.save(seen, accepted(seen, CHEN))
    assert store.get("HZ1") == (c, "tok-1")


# ------------------------------------------------------------------------------- lists


def test_the_patient_board_requesting_and_expert_lists(store):
    a = new("HZ1", person="p-1", at=T0)
    b = new("HZ2", person="p-1", at=T0 + timedelta(hours=1))
    other = new(
        "HZ3",
        person="p-2",
        at=T0 + timedelta(hours=2),
        requester=Party("doc-zhanghong", "张红", "shimen"),
    )
    elsewhere = new("HZ4", person="p-1", consortium="other-county")
    for c in (a, b, other, elsewhere):
        store.create(c)
    assert [c.consultation_id for c in store.for_patient(C, "p-1")] == ["HZ2", "HZ1"]
    assert [c.consultation_id for c in store.open_ones(C)] == ["HZ3", "HZ2", "HZ1"]
    assert [c.consultation_id for c in store.for_requesting(C, "qiaotou")] == ["HZ2", "HZ1"]
    assert [c.consultation_id for c in store.for_requesting(C, "shimen")] == ["HZ3"]
    # a closed consultation leaves the board but stays on the patient's list
    store.save(b, move(b, Status.CANCELLED, None, "cancel", T0, closed_reason="取消"))
    assert [c.consultation_id for c in store.open_ones(C)] == ["HZ3", "HZ1"]
    assert [c.consultation_id for c in store.for_patient(C, "p-1")] == ["HZ2", "HZ1"]


def test_an_experts_worklist_and_workload(store):
    a, b, c = new("HZ1"), new("HZ2", at=T0 + timedelta(hours=1)), new("HZ3")
    for x in (a, b, c):
        store.create(x)
    a2 = accepted(a, CHEN, LIU)
    b2 = accepted(b, CHEN)
    store.save(a, a2)
    store.save(b, b2)
    assert [x.consultation_id for x in store.for_expert(C, "doc-chenming")] == ["HZ2", "HZ1"]
    assert [x.consultation_id for x in store.for_expert(C, "doc-liuyan")] == ["HZ1"]
    assert store.for_expert(C, "doc-nobody") == []
    assert (store.workload(C, "doc-chenming"), store.workload(C, "doc-liuyan")) == (2, 1)
    # a declined invitation and a closed consultation no longer count
    a3 = answered(a2, "doc-liuyan", InviteState.DECLINED)
    store.save(a2, a3)
    store.save(b2, move(b2, Status.EXPIRED, None, "expire", T0, closed_reason="超时"))
    assert (store.workload(C, "doc-chenming"), store.workload(C, "doc-liuyan")) == (1, 0)
    assert [x.consultation_id for x in store.for_expert(C, "doc-liuyan")] == ["HZ1"]


# ------------------------------------------------------------------------------- accounting


def _rollup(month: str, expert: str, fee: int, minutes: int) -> tuple:
    return (
        f"ACCT#{C}#{month[:4]}",
        f"{month}#E#{expert}",
        {"expert_name": "陈明", "title": "主任医师"},
        {"n": 1, "n_mdt": 1, "fee_fen": fee, f"m_{minutes}": 1},
    )


def test_rollups_add_up_in_the_transaction_and_read_by_month(store):
    a, b, c = new("HZ1"), new("HZ2"), new("HZ3")
    for x in (a, b, c):
        store.create(x)
    store.save(a, accepted(a, CHEN), [_rollup("2026-06", "doc-chenming", 40000, 12)])
    store.save(b, accepted(b, CHEN), [_rollup("2026-06", "doc-chenming", 40000, 30)])
    store.save(c, accepted(c, CHEN), [_rollup("2026-07", "doc-chenming", 40000, 12)])
    # a refused save adds nothing
    with pytest.raises(StaleConsultation):
        store.save(a, accepted(a, LIU), [_rollup("2026-06", "doc-chenming", 40000, 12)])
    [june] = store.rollups(C, "2026-06", "2026-06")
    assert (june["sk"], int(june["n"]), int(june["fee_fen"])) == (
        "2026-06#E#doc-chenming",
        2,
        80000,
    )
    assert (int(june["m_12"]), int(june["m_30"]), june["title"]) == (1, 1, "主任医师")
    assert [r["sk"][:7] for r in store.rollups(C, "2026-01", "2026-12")] == ["2026-06", "2026-07"]
    assert store.rollups(C, "2025-01", "2026-05") == []
    assert store.rollups("other-county", "2026-01", "2026-12") == []
