"""Two-way referral over HTTP, as a village doctor, a county specialist, the referral centre
and a resident use it; the real state machine runs in the embedded stack (test time limits:
emergencies time out after 3 s, see tests/conftest.py)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

import pytest

from yilian.domain.clock import now as china_now
from yilian.domain.principal import Role

INSTITUTIONS = [
    {"institution_id": "rt-county", "name": "转诊测试县医院", "type": "general_hospital"},
    {"institution_id": "rt-county2", "name": "转诊测试县中医院", "type": "tcm_hospital"},
    {"institution_id": "rt-town", "name": "转诊测试镇卫生院", "type": "township_health_centre",
     "parent_id": "rt-county"},
    {"institution_id": "rt-village", "name": "转诊测试村卫生室", "type": "village_clinic",
     "parent_id": "rt-town"},
    {"institution_id": "rt-stats", "name": "统计测试村卫生室", "type": "village_clinic",
     "parent_id": "rt-town"},
    {"institution_id": "rt-city", "name": "转诊测试市医院", "type": "regional_hospital"},
]  # fmt: skip


class Clinic:
    """The people of the test county and a few shortcuts for their calls."""

    def __init__(self, api: Any) -> None:
        self.api = api
        admin = api.token(Role.CONSORTIUM_ADMIN, "rt-admin", institution_id="rt-county")
        self.admin = admin
        for inst in INSTITUTIONS:
            r = api.call("POST", "/institutions", admin, json=inst)
            assert r.status_code in (201, 409), r.text
        self.village = api.token(Role.DOCTOR, "rt-dr-village", institution_id="rt-village",
                                 name="村医李")  # fmt: skip
        self.village2 = api.token(Role.DOCTOR, "rt-dr-village2", institution_id="rt-village",
                                  name="村医王")  # fmt: skip
        self.county = api.token(Role.DOCTOR, "rt-dr-county", institution_id="rt-county",
                                name="专科陈")  # fmt: skip
        self.county2 = api.token(Role.DOCTOR, "rt-dr-county2", institution_id="rt-county2",
                                 name="中医刘")  # fmt: skip
        self.town = api.token(Role.DOCTOR, "rt-dr-town", institution_id="rt-town", name="镇医张")
        self.city = api.token(Role.DOCTOR, "rt-dr-city", institution_id="rt-city", name="市医赵")
        self.centre = api.token(Role.REFERRAL_CENTRE, "rt-centre", institution_id="rt-county",
                                name="转诊中心蒋")  # fmt: skip

    def person(self, name: str = "王建华") -> str:
        body = {"name": name, "sex": "male", "birth_date": "1958-03-02",
                "address": f"测试村{uuid.uuid4().hex[:6]}号"}  # fmt: skip
        r = self.api.call("POST", "/persons", self.village, json=body)
        assert r.status_code in (200, 201), r.text
        return r.json()["person"]["person_id"]

    def resident(self, person_id: str) -> str:
        return self.api.token(Role.RESIDENT, f"rt-res-{person_id}", person_id=person_id)

    def body(self, person_id: str, **over: Any) -> dict[str, Any]:
        body = {
            "patient_id": person_id, "direction": "up", "urgency": "routine",
            "target_institution_id": "rt-county", "target_department": "心血管内科",
            "reason": "反复胸痛，基层无法明确诊断",
            "diagnosis": {"code": "I20.9", "text": "心绞痛"},
            "clinical_summary": "胸痛3天，心电图ST段压低",
            "attachments": [
                {"kind": "record", "ref": "DocumentReference/ecg-1", "title": "心电图"}
            ],
        }  # fmt: skip
        body.update(over)
        return body

    def apply(self, token: str | None = None, **body: Any) -> dict[str, Any]:
        r = self.api.call("POST", "/referrals", token or self.village, json=body)
        assert r.status_code == 201, r.text
        return r.json()

    def act(self, token: str, referral_id: str, action: str, body: dict | None = None) -> Any:
        return self.api.call("POST", f"/referrals/{referral_id}/{action}", token, json=body or {})

    def get(self, referral_id: str, token: str | None = None) -> dict[str, Any]:
        r = self.api.call("GET", f"/referrals/{referral_id}", token or self.centre)
        assert r.status_code == 200, r.text
        return r.json()

    def box(self, token: str, box: str) -> dict[str, Any]:
        r = self.api.call("GET", f"/referrals?box={box}", token)
        assert r.status_code == 200, r.text
        return r.json()

    def execution(self, referral_id: str) -> dict[str, Any]:
        sfn = self.api.stack.client("stepfunctions")
        arn = self.api.stack.outputs["ReferralStateMachineArn"]
        execution_arn = arn.replace(":stateMachine:", ":execution:") + f":{referral_id}"
        return sfn.describe_execution(executionArn=execution_arn)


def eventually(check: Callable[[], Any], timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.3)


def status_becomes(clinic: Clinic, referral_id: str, status: str, timeout: float = 20.0) -> dict:
    return eventually(lambda: (r := clinic.get(referral_id))["status"] == status and r, timeout)


def execution_ends(clinic: Clinic, referral_id: str, status: str = "SUCCEEDED") -> None:
    eventually(lambda: clinic.execution(referral_id)["status"] == status)


@pytest.fixture(scope="module")
def clinic(api) -> Clinic:
    return Clinic(api)


@pytest.fixture(scope="module")
def patient(clinic) -> str:
    return clinic.person()


# ----------------------------------------------------------------------- happy paths
def test_village_doctor_refers_up_specialist_accepts_patient_arrives(clinic, patient):
    # Given a village doctor's routine upward referral
    referral = clinic.apply(**clinic.body(patient))
    rid = referral["referral_id"]
    assert referral["status"] == "PENDING_REVIEW" and rid.startswith("ZZ")
    assert referral["from"]["institution_id"] == "rt-village"
    assert clinic.execution(rid)["status"] == "RUNNING"
    # When the county specialist finds it in their review box and accepts with a time
    box = clinic.box(clinic.county, "to_review")
    assert rid in [r["referral_id"] for r in box["items"]]
    assert box["counts"]["to_review"] >= 1
    when = (china_now() + timedelta(days=1)).replace(microsecond=0).isoformat()
    accepted = clinic.act(clinic.county, rid, "accept", {"proposed_time": when, "note": "明早来"})
    # Then it awaits the patient, and arrival closes it and its workflow
    assert accepted.status_code == 200, accepted.text
    assert accepted.json()["status"] == "ACCEPTED"
    assert accepted.json()["decision"]["proposed_time"].startswith(when[:16])
    assert rid in [r["referral_id"] for r in clinic.box(clinic.county, "awaiting_patient")["items"]]
    arrived = clinic.act(clinic.county, rid, "arrive", {"note": "已到心内科门诊"})
    assert arrived.status_code == 200 and arrived.json()["status"] == "ARRIVED"
    execution_ends(clinic, rid)
    history = clinic.get(rid)["history"]
    assert [h["action"] for h in history] == ["apply", "accept", "arrive"]
    assert history[1]["by"]["sub"] == "rt-dr-county" and history[1]["reason"] == "明早来"
    # and the referring doctor was told
    notes = eventually(lambda: [
        n for n in clinic.api.call("GET", "/notifications", clinic.village).json()["items"]
        if n["referral_id"] == rid
    ])  # fmt: skip
    assert {"referral.accepted", "referral.arrived"} <= {n["kind"] for n in notes}


def test_receiver_rejects_with_a_reason_code(clinic, patient):
    rid = clinic.apply(**clinic.body(patient))["referral_id"]
    bad = clinic.act(clinic.county, rid, "reject", {"reason_code": "BUSY"})
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "INVALID_REASON_CODE"
    assert clinic.get(rid)["status"] == "PENDING_REVIEW"
    r = clinic.act(clinic.county, rid, "reject", {"reason_code": "NO_CAPACITY", "note": "无床位"})
    assert r.status_code == 200
    assert r.json()["status"] == "REJECTED"
    assert r.json()["decision"]["reason_code"] == "NO_CAPACITY"
    execution_ends(clinic, rid)


def test_more_information_then_amendment_then_acceptance(clinic, patient):
    rid = clinic.apply(**clinic.body(patient))["referral_id"]
    asked = clinic.act(clinic.county, rid, "request-info", {"question": "请补充心肌酶结果"})
    assert asked.status_code == 200 and asked.json()["status"] == "MORE_INFO"
    # only the referring doctor amends
    other = clinic.act(clinic.village2, rid, "amend", {"note": "x"})
    assert other.status_code == 403 and other.json()["error"]["code"] == "NOT_REFERRER"
    amended = clinic.act(clinic.village, rid, "amend", {
        "note": "已补充", "clinical_summary": "胸痛3天，肌钙蛋白升高",
        "attachments": [{"kind": "document", "ref": "DiagnosticReport/trop-1", "title": "心肌酶"}],
    })  # fmt: skip
    assert amended.status_code == 200, amended.text
    assert amended.json()["status"] == "PENDING_REVIEW"
    assert amended.json()["clinical_summary"] == "胸痛3天，肌钙蛋白升高"
    accepted = clinic.act(clinic.county, rid, "accept", {})
    assert accepted.status_code == 200 and accepted.json()["status"] == "ACCEPTED"
    assert [h["action"] for h in clinic.get(rid)["history"]] == [
        "apply", "request_info", "amend", "accept"]  # fmt: skip
    assert clinic.execution(rid)["status"] == "RUNNING"  # waiting for arrival


def test_emergency_escalates_then_the_centre_accepts_then_no_show(clinic, patient):
    # Given an emergency referral nobody reviews within its (3 s) limit
    rid = clinic.apply(**clinic.body(patient, urgency="emergency"))["referral_id"]
    escalated = status_becomes(clinic, rid, "ESCALATED")
    assert escalated["escalated"] is True
    assert escalated["history"][-1]["by"]["role"] == "system"
    # Then the referral centre sees it and accepts on the receiver's behalf
    assert rid in [r["referral_id"] for r in clinic.box(clinic.centre, "escalated")["items"]]
    doctors_box = clinic.api.call("GET", "/referrals?box=escalated", clinic.county)
    assert doctors_box.status_code == 403
    accepted = clinic.act(clinic.centre, rid, "accept", {"note": "转诊中心协调接收"})
    assert accepted.status_code == 200, accepted.text
    # and the patient not arriving within the arrival limit is a no-show
    no_show = status_becomes(clinic, rid, "NO_SHOW")
    assert [h["action"] for h in no_show["history"]] == ["apply", "escalate", "accept", "no_show"]
    execution_ends(clinic, rid)


def test_unanswered_escalation_expires_and_the_referrer_is_told(clinic, patient):
    rid = clinic.apply(**clinic.body(patient, urgency="emergency"))["referral_id"]
    expired = status_becomes(clinic, rid, "EXPIRED")
    assert [h["action"] for h in expired["history"]] == ["apply", "escalate", "expire"]
    execution_ends(clinic, rid)
    late = clinic.act(clinic.county, rid, "accept", {})
    assert late.status_code == 409 and late.json()["error"]["code"] == "INVALID_TRANSITION"
    kinds = eventually(lambda: {
        n["kind"] for n in clinic.api.call("GET", "/notifications", clinic.village).json()["items"]
        if n["referral_id"] == rid and n["kind"] == "referral.expired"
    })  # fmt: skip
    assert kinds == {"referral.expired"}


def test_the_centre_reassigns_an_escalated_referral(clinic, patient):
    rid = clinic.apply(**clinic.body(patient, urgency="emergency"))["referral_id"]
    status_becomes(clinic, rid, "ESCALATED")
    down = clinic.act(clinic.centre, rid, "reassign",
                      {"target_institution_id": "rt-stats", "reason": "x"})  # fmt: skip
    assert down.status_code == 400 and down.json()["error"]["code"] == "UPWARD_TO_LOWER_TIER"
    moved = clinic.act(clinic.centre, rid, "reassign", {
        "target_institution_id": "rt-county2", "target_department": "心内科",
        "reason": "县医院心内科满床，改转县中医院",
    })  # fmt: skip
    assert moved.status_code == 200, moved.text
    assert moved.json()["to"]["institution_id"] == "rt-county2"
    assert moved.json()["status"] == "PENDING_REVIEW"
    # the new receiver decides; the old one no longer may
    old = clinic.act(clinic.county, rid, "accept", {})
    assert old.status_code == 403
    assert clinic.act(clinic.county2, rid, "accept", {}).status_code == 200


def test_downward_referral_carries_a_plan_and_is_acknowledged(clinic, patient):
    due = (china_now() + timedelta(days=14)).date().isoformat()
    body = clinic.body(
        patient, direction="down", target_institution_id="rt-town", urgency="routine",
        reason="心梗术后稳定，转回基层康复", diagnosis={"code": "I21.9", "text": "急性心肌梗死"},
        discharge_summary="PCI术后第7天，生命体征平稳",
        follow_up_plan=[
            {"item": "复查血脂", "due_date": due}, {"item": "血压随访", "due_date": due}
        ],
    )  # fmt: skip
    referral = clinic.apply(clinic.county, **body)
    rid = referral["referral_id"]
    assert referral["follow_up_plan"][0] == {"item": "复查血脂", "due_date": due}
    wrong = clinic.act(clinic.town, rid, "accept", {})
    assert wrong.status_code == 409 and wrong.json()["error"]["code"] == "USE_ACKNOWLEDGE"
    ack = clinic.act(clinic.town, rid, "acknowledge", {"note": "已建立随访计划"})
    assert ack.status_code == 200 and ack.json()["status"] == "ACKNOWLEDGED"
    execution_ends(clinic, rid)


def test_out_of_county_referral(clinic, patient):
    referral = clinic.apply(clinic.county, **clinic.body(patient, target_institution_id="rt-city"))
    assert referral["to"]["in_county"] is False
    assert clinic.act(clinic.city, referral["referral_id"], "accept", {}).status_code == 200


# ----------------------------------------------------------------------- conflicts
def test_cancel_before_acceptance_and_not_after(clinic, patient):
    rid = clinic.apply(**clinic.body(patient))["referral_id"]
    no_reason = clinic.act(clinic.village, rid, "cancel", {"reason": ""})
    assert no_reason.status_code == 400
    cancelled = clinic.act(clinic.village, rid, "cancel", {"reason": "患者改去市医院"})
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "CANCELLED"
    after = clinic.act(clinic.county, rid, "accept", {})
    assert after.status_code == 409 and after.json()["error"]["code"] == "INVALID_TRANSITION"
    execution_ends(clinic, rid)

    rid2 = clinic.apply(**clinic.body(patient))["referral_id"]
    assert clinic.act(clinic.county, rid2, "accept", {}).status_code == 200
    before = clinic.get(rid2)
    late = clinic.act(clinic.village, rid2, "cancel", {"reason": "太晚了"})
    assert late.status_code == 409
    second = clinic.act(clinic.county, rid2, "accept", {})
    assert second.status_code == 409
    assert clinic.get(rid2)["history"] == before["history"]


def test_concurrent_accept_and_reject_exactly_one_decision_wins(clinic, patient):
    rid = clinic.apply(**clinic.body(patient))["referral_id"]
    calls = [("accept", {})] * 4 + [("reject", {"reason_code": "NO_CAPACITY"})] * 4

    def decide(call: tuple[str, dict]) -> int:
        return clinic.act(clinic.county, rid, call[0], call[1]).status_code

    with ThreadPoolExecutor(8) as pool:
        codes = list(pool.map(decide, calls))
    assert codes.count(200) == 1 and codes.count(409) == 7, codes
    final = clinic.get(rid)
    decisions = [h for h in final["history"] if h["action"] in ("accept", "reject")]
    assert len(decisions) == 1
    assert final["status"] == {"accept": "ACCEPTED", "reject": "REJECTED"}[decisions[0]["action"]]


def test_who_may_act(clinic, patient):
    rid = clinic.apply(**clinic.body(patient))["referral_id"]
    before = clinic.get(rid)
    other = clinic.act(clinic.town, rid, "accept", {})
    assert other.status_code == 403 and other.json()["error"]["code"] == "NOT_RECEIVING_INSTITUTION"
    resident = clinic.resident(patient)
    r = clinic.act(resident, rid, "accept", {})
    assert r.status_code == 403 and r.json()["error"]["code"] == "RESIDENT_CANNOT_ACT"
    r = clinic.api.call("POST", "/referrals", resident, json=clinic.body(patient))
    assert r.status_code == 403
    after = clinic.get(rid)
    assert after["history"] == before["history"] and after["version"] == before["version"]


# ----------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    ("over", "status", "code"),
    [
        ({"patient_id": "no-such-person"}, 400, "UNKNOWN_PATIENT"),
        ({"target_institution_id": "no-such-inst"}, 400, "UNKNOWN_TARGET"),
        ({"target_institution_id": "rt-village"}, 400, "REFERRAL_TO_SELF"),
        ({"target_institution_id": "rt-stats"}, 400, "UPWARD_TO_LOWER_TIER"),
        ({"direction": "down", "target_institution_id": "rt-county"}, 400,
         "DOWNWARD_TO_HIGHER_TIER"),
        ({"diagnosis": {"code": "chest pain", "text": "胸痛"}}, 400, "INVALID_ICD10"),
        ({"urgency": "asap"}, 400, "VALIDATION_FAILED"),
        ({"task_token": "AAAA"}, 400, "VALIDATION_FAILED"),
        ({"status": "ACCEPTED"}, 400, "VALIDATION_FAILED"),
        ({"discharge_summary": "出院小结"}, 400, "NOT_A_DOWNWARD_REFERRAL"),
        ({"target_doctor_id": "doc-nobody"}, 400, "UNKNOWN_DOCTOR"),
    ],
)  # fmt: skip
def test_bad_applications_are_refused_and_store_nothing(clinic, patient, over, status, code):
    resident = clinic.resident(patient)
    before = clinic.api.call("GET", "/referrals", resident).json()["count"]
    r = clinic.api.call("POST", "/referrals", clinic.village, json=clinic.body(patient, **over))
    assert r.status_code == status, r.text
    assert r.json()["error"]["code"] == code
    assert clinic.api.call("GET", "/referrals", resident).json()["count"] == before


def test_the_same_apply_twice_with_one_idempotency_key_is_one_referral(clinic):
    person = clinic.person("赵一鸣")
    resident = clinic.resident(person)
    key = {"Idempotency-Key": uuid.uuid4().hex}
    body = clinic.body(person)
    first = clinic.api.call("POST", "/referrals", clinic.village, json=body, headers=dict(key))
    again = clinic.api.call("POST", "/referrals", clinic.village, json=body, headers=dict(key))
    assert first.status_code == again.status_code == 201
    assert first.json()["referral_id"] == again.json()["referral_id"]
    changed = clinic.api.call("POST", "/referrals", clinic.village,
                              json={**body, "reason": "另一个原因"}, headers=dict(key))  # fmt: skip
    assert changed.status_code == 409
    assert changed.json()["error"]["code"] == "IDEMPOTENCY_KEY_REUSED"
    assert clinic.api.call("GET", "/referrals", resident).json()["count"] == 1


def test_task_tokens_stay_on_the_server_and_a_replayed_or_forged_one_changes_nothing(clinic):
    person = clinic.person("钱多多")
    rid = clinic.apply(**clinic.body(person))["referral_id"]
    stack = clinic.api.stack
    db, sfn = stack.client("dynamodb"), stack.client("stepfunctions")
    table = stack.physical_id("ReferralsTable")
    key = {"pk": {"S": f"REF#{rid}"}, "sk": {"S": "REF"}}

    def token() -> str | None:
        item = db.get_item(TableName=table, Key=key, ConsistentRead=True)["Item"]
        return item.get("wait_token", {}).get("S")

    review_token = eventually(token)
    assert review_token not in clinic.api.call("GET", f"/referrals/{rid}", clinic.county).text
    # a forged token is refused by Step Functions
    with pytest.raises(sfn.exceptions.InvalidToken):
        sfn.send_task_success(
            taskToken="forged-" + review_token[:20], output='{"status": "ACCEPTED"}'
        )
    assert clinic.get(rid)["status"] == "PENDING_REVIEW"
    # the review token is spent by the acceptance; replaying it changes nothing
    assert clinic.act(clinic.county, rid, "accept", {}).status_code == 200
    before = clinic.get(rid)
    eventually(lambda: (t := token()) and t != review_token)  # now waiting for arrival
    with pytest.raises((sfn.exceptions.InvalidToken, sfn.exceptions.TaskTimedOut,
                        sfn.exceptions.TaskDoesNotExist)):  # fmt: skip
        sfn.send_task_success(taskToken=review_token, output='{"status": "REJECTED"}')
    time.sleep(0.5)
    after = clinic.get(rid)
    assert after["status"] == "ACCEPTED" and after["history"] == before["history"]
    assert clinic.execution(rid)["status"] == "RUNNING"
    assert clinic.act(clinic.county, rid, "arrive", {}).status_code == 200
    execution_ends(clinic, rid)


# ----------------------------------------------------------------------- reading
def test_a_resident_follows_their_own_referrals_only(clinic):
    mine, theirs = clinic.person("孙小梅"), clinic.person("周大海")
    rid = clinic.apply(**clinic.body(mine))["referral_id"]
    other = clinic.apply(**clinic.body(theirs))["referral_id"]
    resident = clinic.resident(mine)
    listing = clinic.api.call("GET", "/referrals", resident).json()
    assert [r["referral_id"] for r in listing["items"]] == [rid]
    assert "clinical_summary" not in listing["items"][0]
    assert listing["items"][0]["actions"] == []
    assert clinic.api.call("GET", f"/referrals/{rid}", resident).status_code == 200
    denied = clinic.api.call("GET", f"/referrals/{other}", resident)
    assert denied.status_code == 403
    # an unrelated institution's doctor may not read it either, and the refusal is audited
    assert clinic.api.call("GET", f"/referrals/{rid}", clinic.city).status_code == 403
    audit = clinic.api.stack.client("dynamodb").query(
        TableName=clinic.api.stack.physical_id("AuditTable"),
        KeyConditionExpression="pk = :pk",
        ExpressionAttributeValues={":pk": {"S": f"PERSON#{clinic.api.consortium}#{mine}"}},
    )["Items"]
    events = [i["event"]["S"] for i in audit]
    assert any('"Referral"' in e and '"4"' in e for e in events)  # a denied read
    assert any('"Referral"' in e and '"C"' in e for e in events)  # the application


def test_fhir_view_is_a_service_request_and_a_task(clinic, patient):
    rid = clinic.apply(**clinic.body(patient, urgency="urgent"))["referral_id"]
    r = clinic.api.call("GET", f"/referrals/{rid}/fhir", clinic.county)
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("application/fhir+json")
    bundle = r.json()
    request, task = (e["resource"] for e in bundle["entry"])
    assert request["resourceType"] == "ServiceRequest" and request["priority"] == "urgent"
    assert request["reasonCode"][0]["coding"][0]["code"] == "I20.9"
    assert request["subject"]["reference"] == f"Patient/{patient}"
    assert task["resourceType"] == "Task" and task["status"] == "requested"
    assert task["focus"]["reference"] == f"ServiceRequest/{rid}"


def test_icd10_search(clinic):
    r = clinic.api.call("GET", "/codes/icd10?q=脑梗", clinic.village)
    assert r.status_code == 200
    assert any(i["code"].startswith("I63") for i in r.json()["items"])


# ----------------------------------------------------------------------- statistics
def test_statistics_count_each_outcome_once(clinic):
    stats_doctor = clinic.api.token(Role.DOCTOR, "rt-dr-stats", institution_id="rt-stats",
                                    name="统计村医")  # fmt: skip
    person = clinic.person("统计测试")
    ids = [clinic.apply(stats_doctor, **clinic.body(person))["referral_id"] for _ in range(4)]
    assert clinic.act(clinic.county, ids[0], "accept", {}).status_code == 200
    assert clinic.act(clinic.county, ids[0], "arrive", {}).status_code == 200
    assert clinic.act(clinic.county, ids[1], "reject", {"reason_code": "NOT_INDICATED"}).ok
    assert clinic.act(stats_doctor, ids[2], "cancel", {"reason": "患者拒绝"}).ok
    today = china_now().date().isoformat()
    r = clinic.api.call("GET", f"/referrals/stats?from={today}&to={today}&institution_id=rt-stats",
                        clinic.admin)  # fmt: skip
    assert r.status_code == 200, r.text
    sent = r.json()["totals"]
    assert (sent["applied"], sent["up"], sent["accepted"], sent["rejected"], sent["cancelled"],
            sent["arrived"], sent["decided"]) == (4, 4, 1, 1, 1, 1, 2)  # fmt: skip
    assert sent["acceptance_rate"] == 0.5
    assert sent["median_decision_minutes"] == 0.0
    # a doctor sees their own institution only
    mine = clinic.api.call("GET", "/referrals/stats", stats_doctor)
    assert mine.status_code == 200 and mine.json()["institution_id"] == "rt-stats"
    other = clinic.api.call("GET", "/referrals/stats?institution_id=rt-county", stats_doctor)
    assert other.status_code == 403
    bad = clinic.api.call("GET", "/referrals/stats?from=2026-13-01", clinic.admin)
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "INVALID_DATE"
