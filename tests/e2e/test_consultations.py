"""Remote consultation (远程会诊) over HTTP, as township doctors, the county's consultation
centre, its experts and residents use it: request → review and assignment → the experts'
answers → (video: scheduling and join links) → opinions → the lead's signed report → the
requester's acknowledgement, with the Step Functions execution that holds the clock; urgent
requests that escalate and expire, silent or declining experts replaced by the next
candidate; the experts' care relationship with the patient while the consultation is active;
the resident's view of it; accounting by tariff. Every bad input and conflict gets its clear
4xx and changes nothing.

The test stack's ConsultationLimits: urgent review 3 s, escalation 3 s, urgent invitation 3 s
(routine and MDT limits are long; no test run reaches them).
"""

from __future__ import annotations

import itertools
import time
import uuid
from collections.abc import Callable
from datetime import date, timedelta
from typing import Any

import pytest

from yilian.domain.clock import now as china_now
from yilian.domain.principal import Role
from yilian_local.demo_county import DEMO_PASSWORD, DOCTORS, INSTITUTIONS

pytestmark = pytest.mark.e2e

CENTRE = "county-hospital"
NAMES = itertools.cycle(["钱会", "孙诊", "李商", "周议", "吴问", "郑询", "冯策", "陈谋"])
_born = itertools.count(1)
MDT_EXPERTS = [
    {"doctor_id": "doc-chenming", "lead": True},
    {"doctor_id": "doc-liuyan"},
    {"doctor_id": "doc-huangtao"},
]
EXPERT_NAMES = {
    "doc-chenming": "陈明",
    "doc-liuyan": "刘艳",
    "doc-huangtao": "黄涛",
    "doc-zhaolei": "赵磊",
}


def _birth() -> str:
    """A birth date no other person of this module has (the index never confuses two)."""
    return (date(1938, 2, 3) + timedelta(days=47 * next(_born))).isoformat()


def error(resp: Any) -> str:
    return resp.json()["error"]["code"]


def wait_for(probe: Callable[[], Any], ok: Callable[[Any], bool], seconds: float) -> Any:
    """Polls `probe` until `ok(result)` or the time is up; returns the last result."""
    deadline = time.monotonic() + seconds
    while True:
        out = probe()
        if ok(out) or time.monotonic() > deadline:
            return out
        time.sleep(0.3)


class Consults:
    """The demo county's consultation people and shortcuts for their calls."""

    def __init__(self, api: Any) -> None:
        self.api = api
        self.stack = api.stack
        self.admin = api.token(
            Role.CONSORTIUM_ADMIN, "cs-admin", institution_id=CENTRE, name="会诊管理员"
        )
        for inst in INSTITUTIONS:
            r = api.call("POST", "/institutions", self.admin, json=inst)
            assert r.status_code in (201, 409), r.text
        self.doctors = {f"doc-{u}": (name, inst, role) for u, name, inst, _, _, role in DOCTORS}
        for username, name, inst, dept, title, role in DOCTORS:
            body = {
                "doctor_id": f"doc-{username}",
                "institution_id": inst,
                "name": name,
                "department": dept,
                "title": title,
                "role": role,
                "username": username,
                "password": DEMO_PASSWORD,
            }
            r = api.call("POST", "/doctors", self.admin, json=body)
            assert r.status_code in (201, 409), r.text
        self.centre = self.doctor("doc-zhuanzhen", Role.REFERRAL_CENTRE)
        self.requester = self.doctor("doc-wangfang")  # 桥头镇卫生院
        self.other_requester = self.doctor("doc-zhanghong")  # 石门镇卫生院

    def doctor(self, doctor_id: str, role: Role = Role.DOCTOR) -> str:
        name, inst, _ = self.doctors[doctor_id]
        return self.api.token(role, doctor_id, institution_id=inst, name=name)

    def resident(self, person_id: str) -> str:
        return self.api.token(
            Role.RESIDENT, f"cs-res-{person_id}", person_id=person_id, name="居民"
        )

    # ------------------------------------------------------------------ people
    def person(self) -> str:
        """A person registered at 桥头镇卫生院 (the requester's township)."""
        body = {
            "name": next(NAMES),
            "sex": "male",
            "birth_date": _birth(),
            "identifiers": [
                {
                    "type": "local",
                    "value": f"CS{uuid.uuid4().hex[:8].upper()}",
                    "assigner": "qiaotou",
                }
            ],
        }
        r = self.api.call("POST", "/persons", self.requester, json=body)
        assert r.status_code == 201, r.text
        return r.json()["person"]["person_id"]

    # ------------------------------------------------------------------ calls
    def call(self, method: str, path: str, token: str, status: int = 200, **kw: Any) -> Any:
        r = self.api.call(method, path, token, **kw)
        assert r.status_code == status, (method, path, r.status_code, r.text[:600])
        return r.json()

    def get(self, cid: str, token: str | None = None) -> dict[str, Any]:
        return self.call("GET", f"/consultations/{cid}", token or self.centre)

    def request(self, person_id: str, token: str | None = None, **over: Any) -> dict[str, Any]:
        body = {
            "person_id": person_id,
            "centre_institution_id": CENTRE,
            "kind": "mdt",
            "mode": "written",
            "specialty": "心血管内科,神经内科,放射科",
            "question": "胸痛待查，冠心病？",
            "summary": "65岁男性，反复活动后胸痛3月",
            **over,
        }
        return self.call("POST", "/consultations", token or self.requester, 201, json=body)

    def post(self, cid: str, action: str, token: str, body: dict[str, Any]) -> Any:
        return self.api.call("POST", f"/consultations/{cid}/{action}", token, json=body)

    def step(self, cid: str, action: str, token: str, **body: Any) -> dict[str, Any]:
        """One step with the version the actor sees now."""
        seen = self.get(cid, token)["version"]
        r = self.post(cid, action, token, {"version": seen, **body})
        assert r.status_code == 200, (action, r.status_code, r.text[:600])
        return r.json()

    def refused(
        self, cid: str, action: str, token: str, body: dict[str, Any], status: int, code: str
    ) -> None:
        """The step is refused with `status`/`code` and the consultation is as it was."""
        before = self.get(cid)
        r = self.post(cid, action, token, body)
        assert (r.status_code, error(r)) == (status, code), (action, r.text[:600])
        after = self.get(cid)
        assert (after["version"], after["status"]) == (before["version"], before["status"])
        assert after["history"] == before["history"]

    # ------------------------------------------------------------------ flows
    def accepted_by_all(
        self, person_id: str, experts: list[dict] | None = None, **over: Any
    ) -> dict[str, Any]:
        """A written consultation the centre accepted and every invited expert accepted."""
        experts = experts or MDT_EXPERTS
        c = self.request(person_id, **over)
        c = self.step(c["consultation_id"], "accept", self.centre, experts=experts)
        for e in experts:
            c = self.step(
                c["consultation_id"], "respond", self.doctor(e["doctor_id"]), answer="accept"
            )
        return c

    def signed(self, person_id: str) -> dict[str, Any]:
        c = self.accepted_by_all(person_id)
        cid = c["consultation_id"]
        self.step(
            cid,
            "opinion",
            self.doctor("doc-liuyan"),
            findings="神经系统查体未见异常",
            recommendations="神经内科随访",
        )
        return self.step(
            cid,
            "sign",
            self.doctor("doc-chenming"),
            findings="考虑稳定型心绞痛",
            recommendations="冠脉CTA，必要时转诊县医院心内科",
        )

    def accounting(self, token: str | None = None, status: int = 200) -> dict[str, Any]:
        month = china_now().strftime("%Y-%m")
        return self.call(
            "GET",
            f"/consultations/accounting?from={month}&to={month}",
            token or self.centre,
            status,
        )

    # ------------------------------------------------------------------ the workflow
    def execution(self, cid: str) -> dict[str, Any] | None:
        sfn = self.stack.client("stepfunctions")
        arn = self.stack.outputs["ConsultationStateMachineArn"]
        found = [
            e for e in sfn.list_executions(stateMachineArn=arn)["executions"] if e["name"] == cid
        ]
        return found[0] if found else None

    def execution_ends(self, cid: str, seconds: float = 20) -> dict[str, Any]:
        out = wait_for(
            lambda: self.execution(cid),
            lambda e: e is not None and e["status"] != "RUNNING",
            seconds,
        )
        assert out is not None, f"no execution named {cid}"
        return out

    def states_entered(self, execution_arn: str) -> list[str]:
        sfn = self.stack.client("stepfunctions")
        events = sfn.get_execution_history(executionArn=execution_arn, maxResults=1000)["events"]
        return [
            e["stateEnteredEventDetails"]["name"] for e in events if "stateEnteredEventDetails" in e
        ]

    def notes(self, token: str, kind: str, cid: str) -> list[dict[str, Any]]:
        items = self.call("GET", "/notifications?limit=200", token)["items"]
        return [n for n in items if n["kind"] == kind and cid in n["notification_id"]]


@pytest.fixture(scope="module")
def cs(api) -> Consults:
    return Consults(api)


def invitation(c: dict[str, Any], doctor_id: str) -> dict[str, Any]:
    [mine] = [i for i in c["invitations"] if i["expert"]["subject"] == doctor_id][-1:]
    return mine


# ====================================================================== the written MDT


def test_an_mdt_written_consultation_runs_from_request_to_acknowledged_report(cs):
    pid = cs.person()
    fees_before = cs.accounting()
    # Given a township doctor's MDT request to the county's consultation centre
    c = cs.request(pid)
    cid = c["consultation_id"]
    assert (c["status"], c["kind"], c["mode"], c["version"]) == ("REQUESTED", "mdt", "written", 1)
    assert c["requester"]["subject"] == "doc-wangfang" and c["requester"]["institution_id"] == (
        "qiaotou"
    )
    board = cs.call("GET", "/consultations?box=board", cs.centre)["consultations"]
    assert any(r["consultation_id"] == cid and r["status"] == "REQUESTED" for r in board)
    assert "accept" in cs.get(cid)["actions"]
    # the centre sees candidates of the wanted specialties
    cands = cs.call("GET", f"/consultations/{cid}/candidates", cs.centre)["candidates"]
    assert {"doc-chenming", "doc-liuyan", "doc-huangtao"} <= {d["doctor_id"] for d in cands}
    assert {d["department"] for d in cands} <= {"心血管内科", "神经内科", "放射科"}
    # When the centre accepts with three experts, one the lead
    c = cs.step(cid, "accept", cs.centre, experts=MDT_EXPERTS)
    assert c["status"] == "ASSIGNING" and c["required_accepts"] == 3
    assert [(i["expert"]["subject"], i["state"], i["lead"]) for i in c["invitations"]] == [
        ("doc-chenming", "invited", True),
        ("doc-liuyan", "invited", False),
        ("doc-huangtao", "invited", False),
    ]
    # each expert finds the invitation in their worklist and accepts it
    for n, e in enumerate(MDT_EXPERTS):
        token = cs.doctor(e["doctor_id"])
        mine = cs.call("GET", "/consultations?box=mine", token)["as_expert"]
        assert any(r["consultation_id"] == cid and r["my_state"] == "invited" for r in mine)
        c = cs.step(cid, "respond", token, answer="accept")
        assert c["status"] == ("IN_PROGRESS" if n == 2 else "ASSIGNING"), c["status"]
    # Then the consultation is in progress; the experts file opinions, the lead signs
    c = cs.step(
        cid,
        "opinion",
        cs.doctor("doc-liuyan"),
        findings="神经系统查体未见异常",
        recommendations="神经内科随访",
    )
    c = cs.step(
        cid,
        "opinion",
        cs.doctor("doc-huangtao"),
        findings="胸片未见明显异常",
        recommendations="建议冠脉CTA",
    )
    assert c["status"] == "IN_PROGRESS" and c["report"] is None
    assert "sign" in cs.get(cid, cs.doctor("doc-chenming"))["actions"]
    c = cs.step(
        cid,
        "sign",
        cs.doctor("doc-chenming"),
        findings="考虑稳定型心绞痛",
        recommendations="冠脉CTA，必要时转诊县医院心内科",
    )
    assert c["status"] == "REPORTED"
    report = c["report"]
    assert (report["signed_by"], report["signed_by_name"], report["signed_title"]) == (
        "doc-chenming",
        "陈明",
        "主任医师",
    )
    assert {o["name"] for o in report["opinions"]} == {"刘艳", "黄涛"}
    # the requester acknowledges it
    c = cs.step(cid, "acknowledge", cs.requester)
    assert c["status"] == "COMPLETED" and c["actions"] == []
    assert [h["action"] for h in c["history"]] == [
        "request",
        "accept",
        "respond",
        "respond",
        "respond",
        "opinion",
        "opinion",
        "sign",
        "acknowledge",
    ]
    assert [h["to"] for h in c["history"]][-2:] == ["REPORTED", "COMPLETED"]
    # and its Step Functions execution routed every step and succeeded
    ex = cs.execution_ends(cid)
    assert ex["status"] == "SUCCEEDED"
    states = cs.states_entered(ex["executionArn"])
    assert states[0] == "Load" and states[-1] == "Closed"
    assert {"Await", "Route"} <= set(states)
    assert "OnTimeout" not in states
    # accounting: each expert's fee by the MDT tariff and title, the split, the minutes
    fees = cs.accounting()
    before = {e["doctor_id"]: e for e in fees_before["experts"]}
    after = {e["doctor_id"]: e for e in fees["experts"]}
    for doctor_id, title, fee in (
        ("doc-chenming", "主任医师", 400),
        ("doc-liuyan", "副主任医师", 300),
        ("doc-huangtao", "副主任医师", 300),
    ):
        was = before.get(doctor_id, {"n": 0, "fee_yuan": 0, "by_kind": {}})
        row = after[doctor_id]
        assert (row["title"], row["institution_id"]) == (title, CENTRE)
        assert row["n"] - was["n"] == 1
        assert row["by_kind"]["mdt"] - was["by_kind"].get("mdt", 0) == 1
        assert row["fee_yuan"] - was["fee_yuan"] == fee
        # minutes from request to report, bucketed (other consultations may share the month)
        assert row["median_minutes_to_report"] is not None
    depts = {d["department"] for d in fees["departments"]}
    assert {"心血管内科", "神经内科", "放射科"} <= depts
    inst_before = {i["institution_id"]: i for i in fees_before["institutions"]}
    inst_after = {i["institution_id"]: i for i in fees["institutions"]}

    def delta(inst: str, field: str) -> float:
        return inst_after[inst][field] - inst_before.get(inst, {}).get(field, 0)

    assert delta(CENTRE, "fee_received_yuan") == pytest.approx(700.0)  # 70% of 1000
    assert delta("qiaotou", "fee_retained_yuan") == pytest.approx(300.0)
    assert delta(CENTRE, "consulting_n") == 1 and delta("qiaotou", "requesting_n") == 1


def test_accounting_is_the_centres_and_each_doctor_sees_their_own(cs):
    mine = cs.accounting(cs.doctor("doc-chenming"))
    assert {e["doctor_id"] for e in mine["experts"]} <= {"doc-chenming"}
    assert mine["institutions"] == []
    r = cs.api.call("GET", "/consultations/accounting", cs.resident("p-x"))
    assert r.status_code == 403
    r = cs.api.call("GET", "/consultations/accounting?from=2026-05&to=2026-01", cs.centre)
    assert (r.status_code, error(r)) == (400, "PERIOD_INVALID")


# ====================================================================== video


def _soon_at(hour: int, minute: int = 0) -> str:
    """A time three days ahead (China time): clear of the demo county's session tomorrow."""
    day = (china_now() + timedelta(days=3)).date()
    return f"{day.isoformat()}T{hour:02d}:{minute:02d}:00+08:00"


def test_a_video_consultation_is_scheduled_with_a_join_link_per_participant(cs):
    pid = cs.person()
    # Given a video consultation two experts accepted
    c = cs.request(
        pid,
        kind="routine",
        mode="video",
        specialty="心血管内科,神经内科",
        preferred_times=[_soon_at(9)],
    )
    cid = c["consultation_id"]
    c = cs.step(
        cid,
        "accept",
        cs.centre,
        required_accepts=2,
        experts=[{"doctor_id": "doc-chenming", "lead": True}, {"doctor_id": "doc-liuyan"}],
    )
    cs.step(cid, "respond", cs.doctor("doc-chenming"), answer="accept")
    c = cs.step(cid, "respond", cs.doctor("doc-liuyan"), answer="accept")
    assert c["status"] == "SCHEDULED" and c["session"] is None
    assert "schedule" in cs.get(cid)["actions"]
    # When the centre schedules the session (China time, with its offset)
    c = cs.step(cid, "schedule", cs.centre, start=_soon_at(10), minutes=60)
    # Then a join link is issued per participant, each seeing only their own
    assert c["status"] == "SCHEDULED"
    assert (c["session"]["start"], c["session"]["minutes"]) == (_soon_at(10), 60)
    assert all(i["join_url"] == "" for i in c["invitations"])  # the centre's view
    assert "requester_join_url" not in c["session"]
    links = {}
    for doctor_id in ("doc-chenming", "doc-liuyan"):
        seen = cs.get(cid, cs.doctor(doctor_id))
        own = invitation(seen, doctor_id)["join_url"]
        assert own.startswith("https://") and cid in own and f"p={doctor_id}" in own
        others = [i["join_url"] for i in seen["invitations"] if i["expert"]["subject"] != doctor_id]
        assert others == [""]
        assert "requester_join_url" not in seen["session"]
        links[doctor_id] = own
        calendar = cs.call("GET", "/consultations?box=mine", cs.doctor(doctor_id))["calendar"]
        [entry] = [e for e in calendar if e["consultation_id"] == cid]
        assert entry["join_url"] == own and entry["start"] == _soon_at(10)
    mine = cs.get(cid, cs.requester)
    assert all(i["join_url"] == "" for i in mine["invitations"])
    links["doc-wangfang"] = mine["session"]["requester_join_url"]
    assert "p=doc-wangfang" in links["doc-wangfang"]
    assert len(set(links.values())) == 3
    # opinions wait for the session
    r = cs.post(
        cid,
        "opinion",
        cs.doctor("doc-liuyan"),
        {"version": c["version"], "findings": "x", "recommendations": "y"},
    )
    assert (r.status_code, error(r)) == (409, "SESSION_NOT_STARTED")

    # And an expert with an overlapping session elsewhere cannot be booked twice
    other = cs.request(cs.person(), kind="routine", mode="video", specialty="心血管内科")
    oid = other["consultation_id"]
    cs.step(oid, "accept", cs.centre, experts=[{"doctor_id": "doc-chenming"}])
    o = cs.step(oid, "respond", cs.doctor("doc-chenming"), answer="accept")
    assert o["status"] == "SCHEDULED"
    body = {"version": o["version"], "start": _soon_at(10, 30), "minutes": 30}
    before = cs.get(oid)
    r = cs.post(oid, "schedule", cs.centre, body)
    assert (r.status_code, error(r)) == (409, "EXPERT_BUSY")
    assert r.json()["error"]["details"]["consultation_id"] == cid
    after = cs.get(oid)
    assert (after["version"], after["session"]) == (before["version"], None)
    # right after the first session is fine
    o = cs.step(oid, "schedule", cs.centre, start=_soon_at(11), minutes=30)
    assert o["session"]["start"] == _soon_at(11)
    # a start without its offset, in the past, or a too long session is refused
    for bad, code in (
        ({"start": "2030-01-01T10:00:00"}, "START_INVALID"),
        ({"start": "2020-01-01T10:00:00+08:00"}, "START_IN_PAST"),
        ({"start": _soon_at(15), "minutes": 600}, "MINUTES_INVALID"),
    ):
        seen = cs.get(oid)["version"]
        r = cs.post(oid, "schedule", cs.centre, {"version": seen, **bad})
        assert (r.status_code, error(r)) == (400, code), r.text


# ====================================================================== time limits


def test_an_urgent_request_nobody_reviews_escalates_then_expires(cs):
    pid = cs.person()
    c = cs.request(pid, kind="urgent", specialty="神经内科", question="突发左侧肢体无力2小时")
    cid = c["consultation_id"]
    # after the 3 s review limit the request is escalated to the centre
    c = wait_for(lambda: cs.get(cid), lambda x: x["escalated"], 12)
    assert c["escalated"] is True and c["status"] == "REQUESTED", c
    assert [h["action"] for h in c["history"]] == ["request", "escalate"]
    assert c["history"][1]["by"] == "workflow"
    notes = cs.notes(cs.centre, "ConsultationEscalated", cid)
    assert notes and notes[0]["title"] == "急会诊审核超时"
    # and after the escalation limit it expires, closing the workflow
    c = wait_for(lambda: cs.get(cid), lambda x: x["status"] != "REQUESTED", 15)
    assert (c["status"], c["closed_reason"]) == ("EXPIRED", "审核超时"), c
    assert [h["action"] for h in c["history"]] == ["request", "escalate", "expire"]
    assert cs.notes(cs.requester, "ConsultationExpired", cid)
    ex = cs.execution_ends(cid)
    assert ex["status"] == "SUCCEEDED"
    assert cs.states_entered(ex["executionArn"]).count("OnTimeout") >= 2
    # the closed consultation takes no more steps
    cs.refused(
        cid,
        "accept",
        cs.centre,
        {"version": c["version"], "experts": MDT_EXPERTS[:1]},
        409,
        "CONSULTATION_CLOSED",
    )


def test_an_urgent_invitation_nobody_answers_invites_the_next_candidate(cs):
    pid = cs.person()
    c = cs.request(pid, kind="urgent", specialty="心血管内科,神经内科", question="急性胸痛伴晕厥")
    cid = c["consultation_id"]
    c = cs.step(cid, "accept", cs.centre, experts=[{"doctor_id": "doc-chenming", "lead": True}])
    assert c["status"] == "ASSIGNING"
    # the lead stays silent past the 3 s invitation limit
    c = wait_for(
        lambda: cs.get(cid), lambda x: invitation(x, "doc-chenming")["state"] != "invited", 12
    )
    assert invitation(c, "doc-chenming")["state"] == "expired", c
    nxt = [i for i in c["invitations"] if i["expert"]["subject"] != "doc-chenming"]
    assert nxt and nxt[0]["expert"]["subject"] == "doc-liuyan"  # the other wanted specialty
    assert nxt[0]["lead"] is True
    assert c["status"] == "ASSIGNING" and c["rounds"] == 1
    assert "invite_next" in [h["action"] for h in c["history"]]
    notes = cs.notes(cs.doctor("doc-liuyan"), "ConsultationInvited", cid)
    assert notes, "the next candidate is told"
    # the requester calls it off (retrying when the clock moved it on first)
    for _ in range(5):
        seen = cs.get(cid)
        if seen["status"] != "ASSIGNING":
            break
        r = cs.post(cid, "cancel", cs.requester, {"version": seen["version"], "reason": "已转上级"})
        if r.status_code == 200:
            break
    assert cs.get(cid)["status"] in ("CANCELLED", "EXPIRED")
    assert cs.execution_ends(cid)["status"] == "SUCCEEDED"


def test_a_decline_invites_the_next_candidate_of_the_specialty(cs):
    pid = cs.person()
    c = cs.request(pid, kind="routine", specialty="心血管内科,神经内科")
    cid = c["consultation_id"]
    cs.step(cid, "accept", cs.centre, experts=[{"doctor_id": "doc-chenming", "lead": True}])
    c = cs.step(cid, "respond", cs.doctor("doc-chenming"), answer="decline", reason="本周外出")
    assert c["status"] == "ASSIGNING"
    assert (invitation(c, "doc-chenming")["state"], invitation(c, "doc-chenming")["reason"]) == (
        "declined",
        "本周外出",
    )
    nxt = invitation(c, "doc-liuyan")
    assert (nxt["state"], nxt["lead"], nxt["expert"]["department"]) == ("invited", True, "神经内科")
    # the declined expert has no further say
    cs.refused(
        cid,
        "respond",
        cs.doctor("doc-chenming"),
        {"version": c["version"], "answer": "accept"},
        403,
        "NOT_INVITED",
    )
    c = cs.step(cid, "respond", cs.doctor("doc-liuyan"), answer="accept")
    assert c["status"] == "IN_PROGRESS"
    # an expert who declined files no opinion
    cs.refused(
        cid,
        "opinion",
        cs.doctor("doc-chenming"),
        {"version": c["version"], "findings": "x", "recommendations": "y"},
        403,
        "NOT_ASSIGNED",
    )


# ====================================================================== record access


def test_assigned_experts_read_the_record_only_while_the_consultation_is_active(cs):
    pid = cs.person()
    liuyan = cs.doctor("doc-liuyan")  # 县医院神经内科: not the patient's registering institution
    timeline = f"/records/persons/{pid}/timeline"
    c = cs.request(pid)
    cid = c["consultation_id"]
    r = cs.api.call("GET", timeline, liuyan)
    assert (r.status_code, error(r)) == (403, "NO_CARE_RELATIONSHIP")
    # invited, not yet accepted: still no relationship
    c = cs.step(cid, "accept", cs.centre, experts=MDT_EXPERTS)
    r = cs.api.call("GET", timeline, liuyan)
    assert (r.status_code, error(r)) == (403, "NO_CARE_RELATIONSHIP")
    # the resident sees the consultation, without a report
    res = cs.resident(pid)
    [mine] = cs.call("GET", "/me/consultations", res)["consultations"]
    assert (mine["consultation_id"], mine["report"]) == (cid, None)
    # accepted: the expert reads the record, and the resident's access log shows it
    c = cs.step(cid, "respond", liuyan, answer="accept")
    assert c["status"] == "ASSIGNING"
    r = cs.api.call("GET", timeline, liuyan)
    assert r.status_code == 200, r.text
    log = cs.call("GET", "/me/access-log", res)["items"]
    reads = [e for e in log if e["who"] == "刘艳" and e["what"] == "Record.timeline"]
    assert reads and reads[0]["outcome"] == "allowed", reads
    assert (reads[0]["basis"], reads[0]["institution_id"]) == ("care_relationship", CENTRE)
    assert [e["outcome"] for e in reads] == ["allowed", "denied", "denied"]
    # the audit trail names the consultation as the relationship
    trail = cs.call("GET", f"/audit?person={pid}", cs.admin)["items"]
    [read] = [
        e
        for e in trail
        if e["agent"]["subject"] == "doc-liuyan"
        and e["what"] == "Record.timeline"
        and e["outcome"] == "0"
    ]
    assert read["detail"]["relationship"] == f"consultation:{cid}", read
    for e in MDT_EXPERTS[::2]:
        c = cs.step(cid, "respond", cs.doctor(e["doctor_id"]), answer="accept")
    assert c["status"] == "IN_PROGRESS"
    assert cs.api.call("GET", timeline, liuyan).status_code == 200
    [mine] = cs.call("GET", "/me/consultations", res)["consultations"]
    assert mine["status"] == "IN_PROGRESS" and mine["report"] is None
    assert {e["name"] for e in mine["experts"]} == {"陈明", "刘艳", "黄涛"}
    # the lead signs: the report joins the record as 会诊记录 and the resident reads it
    c = cs.step(
        cid,
        "sign",
        cs.doctor("doc-chenming"),
        findings="考虑稳定型心绞痛",
        recommendations="冠脉CTA",
    )
    record = cs.call("GET", "/me/record", res)["timeline"]["items"]
    assert any("会诊记录" in str(item) for item in record), record
    [mine] = cs.call("GET", "/me/consultations", res)["consultations"]
    assert mine["status"] == "REPORTED"
    assert (mine["report"]["findings"], mine["report"]["signed_by_name"]) == (
        "考虑稳定型心绞痛",
        "陈明",
    )
    one = cs.call("GET", f"/consultations/{cid}", res)
    assert one["report"]["recommendations"] == "冠脉CTA" and "history" not in one
    # completed: the relationship ends
    cs.step(cid, "acknowledge", cs.requester)
    r = cs.api.call("GET", timeline, liuyan)
    assert (r.status_code, error(r)) == (403, "NO_CARE_RELATIONSHIP")
    # a resident reads only their own consultations
    other = cs.resident(cs.person())
    r = cs.api.call("GET", f"/consultations/{cid}", other)
    assert (r.status_code, error(r)) == (403, "NOT_YOUR_RECORD")
    assert cs.call("GET", "/me/consultations", other)["consultations"] == []


# ====================================================================== bad inputs


def test_bad_requests_are_refused_and_create_nothing(cs):
    pid = cs.person()
    token = cs.requester

    def mine() -> list[str]:
        return sorted(
            r["consultation_id"]
            for r in cs.call("GET", "/consultations?box=mine", token)["requested"]
        )

    before = mine()
    base = {
        "person_id": pid,
        "centre_institution_id": CENTRE,
        "kind": "routine",
        "mode": "written",
        "specialty": "心血管内科",
        "question": "胸痛",
        "summary": "胸痛",
    }
    for change, status, code in (
        ({"person_id": "no-such-person"}, 400, "PATIENT_UNKNOWN"),
        ({"centre_institution_id": "qiaotou"}, 400, "CENTRE_IS_REQUESTER"),
        ({"centre_institution_id": "nowhere"}, 400, "CENTRE_UNKNOWN"),
        ({"kind": "casual"}, 400, "KIND_INVALID"),
        ({"question": " "}, 400, "FIELD_REQUIRED"),
        ({"specialty": ""}, 400, "FIELD_REQUIRED"),
        ({"preferred_times": ["tomorrow"]}, 400, "TIMES_INVALID"),
        ({"attachments": {"documents": list(range(60))}}, 400, "ATTACHMENTS_INVALID"),
    ):
        r = cs.api.call("POST", "/consultations", token, json={**base, **change})
        assert (r.status_code, error(r)) == (status, code), (change, r.text)
    r = cs.api.call("POST", "/consultations", token, data="{not json")
    assert (r.status_code, error(r)) == (400, "MALFORMED_JSON")
    # only doctors request; a resident does not
    r = cs.api.call("POST", "/consultations", cs.resident(pid), json=base)
    assert r.status_code == 403
    assert mine() == before
    assert cs.call("GET", "/me/consultations", cs.resident(pid))["consultations"] == []


def test_bad_reviews_and_steps_change_nothing(cs):
    pid = cs.person()
    c = cs.request(pid)
    cid = c["consultation_id"]
    v = c["version"]
    # an expert not in the consortium, two leads, the requester as expert, nobody
    cs.refused(
        cid,
        "accept",
        cs.centre,
        {
            "version": v,
            "experts": [{"doctor_id": "doc-chenming"}, {"doctor_id": "doc-not-in-consortium"}],
        },
        400,
        "EXPERT_UNKNOWN",
    )
    cs.refused(
        cid,
        "accept",
        cs.centre,
        {
            "version": v,
            "experts": [
                {"doctor_id": "doc-chenming", "lead": True},
                {"doctor_id": "doc-liuyan", "lead": True},
            ],
        },
        400,
        "TWO_LEADS",
    )
    cs.refused(
        cid,
        "accept",
        cs.centre,
        {"version": v, "experts": [{"doctor_id": "doc-wangfang"}]},
        400,
        "EXPERT_IS_REQUESTER",
    )
    cs.refused(cid, "accept", cs.centre, {"version": v, "experts": []}, 400, "EXPERTS_REQUIRED")
    cs.refused(
        cid,
        "accept",
        cs.centre,
        {"version": v, "experts": [{"doctor_id": "doc-chenming"}, {"doctor_id": "doc-chenming"}]},
        400,
        "EXPERT_TWICE",
    )
    # the version is required, and a stale one is a replay
    cs.refused(cid, "accept", cs.centre, {"experts": MDT_EXPERTS}, 400, "VERSION_REQUIRED")
    cs.refused(
        cid, "accept", cs.centre, {"version": "1", "experts": MDT_EXPERTS}, 400, "VERSION_REQUIRED"
    )
    cs.refused(
        cid, "accept", cs.centre, {"version": v - 1, "experts": MDT_EXPERTS}, 409, "REPLAYED"
    )
    # the requester does not review; a resident does not act; an outsider is not a party
    cs.refused(
        cid, "accept", cs.requester, {"version": v, "experts": MDT_EXPERTS}, 403, "NOT_THE_CENTRE"
    )
    cs.refused(
        cid,
        "cancel",
        cs.resident(pid),
        {"version": v, "reason": "不想会诊"},
        403,
        "ROLE_NOT_ALLOWED",
    )
    cs.refused(
        cid, "cancel", cs.other_requester, {"version": v, "reason": "不想会诊"}, 403, "NOT_A_PARTY"
    )
    cs.refused(cid, "frobnicate", cs.centre, {"version": v}, 404, "ACTION_UNKNOWN")
    r = cs.api.call("GET", f"/consultations/{cid}", cs.other_requester)
    assert (r.status_code, error(r)) == (403, "NOT_A_PARTY")
    r = cs.api.call("GET", "/consultations/HZ20260101XXXXXX", cs.centre)
    assert (r.status_code, error(r)) == (404, "CONSULTATION_NOT_FOUND")
    # the same accept twice with the version it saw: the second is a replay
    c = cs.step(cid, "accept", cs.centre, experts=MDT_EXPERTS)
    assert c["version"] == v + 1
    cs.refused(cid, "accept", cs.centre, {"version": v, "experts": MDT_EXPERTS}, 409, "REPLAYED")


def test_only_assigned_experts_file_and_only_the_lead_signs(cs):
    pid = cs.person()
    c = cs.accepted_by_all(pid)
    cid, v = c["consultation_id"], c["version"]
    opinion = {"version": v, "findings": "考虑心绞痛", "recommendations": "冠脉CTA"}
    # someone not assigned: the requester, an outsider
    cs.refused(cid, "opinion", cs.requester, opinion, 403, "NOT_ASSIGNED")
    cs.refused(cid, "sign", cs.requester, opinion, 403, "NOT_ASSIGNED")
    cs.refused(cid, "opinion", cs.doctor("doc-zhaolei"), opinion, 403, "NOT_A_PARTY")
    # a non-lead expert does not sign; an incomplete report is refused
    cs.refused(cid, "sign", cs.doctor("doc-liuyan"), opinion, 403, "NOT_LEAD")
    cs.refused(
        cid,
        "sign",
        cs.doctor("doc-chenming"),
        {"version": v, "findings": "x"},
        400,
        "OPINION_INCOMPLETE",
    )
    # the lead signs; the same signature replayed is refused
    c = cs.step(
        cid, "sign", cs.doctor("doc-chenming"), **{k: opinion[k] for k in opinion if k != "version"}
    )
    assert c["status"] == "REPORTED"
    cs.refused(cid, "sign", cs.doctor("doc-chenming"), opinion, 409, "REPLAYED")
    cs.refused(
        cid,
        "opinion",
        cs.doctor("doc-liuyan"),
        {**opinion, "version": c["version"]},
        409,
        "WRONG_STATE",
    )
    # acknowledged: the consultation is closed to every step
    c = cs.step(cid, "acknowledge", cs.requester)
    assert c["status"] == "COMPLETED"
    for action, token, body in (
        ("acknowledge", cs.requester, {}),
        ("cancel", cs.centre, {"reason": "撤销"}),
        ("opinion", cs.doctor("doc-liuyan"), opinion),
    ):
        cs.refused(
            cid, action, token, {**body, "version": c["version"]}, 409, "CONSULTATION_CLOSED"
        )


def test_a_second_signature_is_already_signed(cs):
    pid = cs.person()
    c = cs.signed(pid)
    cid = c["consultation_id"]
    body = {"version": c["version"], "findings": "另一份报告", "recommendations": "另一建议"}
    cs.refused(cid, "sign", cs.doctor("doc-chenming"), body, 409, "ALREADY_SIGNED")
    cs.refused(cid, "sign", cs.doctor("doc-liuyan"), body, 409, "ALREADY_SIGNED")


def test_the_residents_access_log_names_the_consultation(cs):
    pid = cs.person()
    c = cs.accepted_by_all(pid)
    assert (
        cs.api.call("GET", f"/records/persons/{pid}/timeline", cs.doctor("doc-liuyan")).status_code
        == 200
    )
    log = cs.call("GET", "/me/access-log", cs.resident(pid))["items"]
    [read] = [e for e in log if e["who"] == "刘艳" and e["what"] == "Record.timeline"]
    assert read["relationship"] == f"consultation:{c['consultation_id']}"
