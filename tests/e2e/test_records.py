"""Cross-institution health records over HTTP, as county and village doctors, residents and
the consortium admin use them: contribute FHIR documents, read a person's timeline, summary,
documents, FHIR searches and export, 互认; who may read (care relationship, consent,
break-glass, proxies) and the audit trail that shows who did. Bad inputs get a clear 4xx and
store nothing."""

from __future__ import annotations

import copy
import itertools
import json
from datetime import timedelta
from typing import Any

import pytest

from yilian.domain.clock import now as china_now
from yilian.domain.identity import id_check_digit
from yilian.domain.principal import Role
from yilian.domain.record import ID_CARD_SYSTEM, document_id
from yilian_local.sample_records import allergy_record, lab_report, outpatient_visit

pytestmark = pytest.mark.e2e

INSTITUTIONS = [
    {"institution_id": "hr-county", "name": "档案测试县医院", "type": "general_hospital"},
    {"institution_id": "hr-town", "name": "档案测试镇卫生院", "type": "township_health_centre",
     "parent_id": "hr-county"},
    {"institution_id": "hr-village", "name": "档案测试村卫生室", "type": "village_clinic",
     "parent_id": "hr-town"},
    {"institution_id": "hr-east", "name": "档案东村卫生室", "type": "village_clinic",
     "parent_id": "hr-town"},
    {"institution_id": "hr-west", "name": "档案西村卫生室", "type": "village_clinic",
     "parent_id": "hr-town"},
]  # fmt: skip
GOOD_REASON = "患者昏迷送入急诊，需查既往病史与过敏史"
_seq = itertools.count(1)


def ago(days: float = 0, hours: float = 0) -> Any:
    return china_now() - timedelta(days=days, hours=hours)


def id_number(birth_date: str, sex: str) -> str:
    order = next(_seq) * 2 + (1 if sex == "male" else 0)
    first17 = f"330122{birth_date.replace('-', '')}{order % 1000:03d}"
    return first17 + id_check_digit(first17)


class Records:
    """The test county's people and shortcuts for their calls."""

    def __init__(self, api: Any) -> None:
        self.api = api
        self.admin = api.token(Role.CONSORTIUM_ADMIN, "hr-admin", institution_id="hr-county",
                               name="档案管理员")  # fmt: skip
        for inst in INSTITUTIONS:
            r = api.call("POST", "/institutions", self.admin, json=inst)
            assert r.status_code in (201, 409), r.text
        self.county = api.token(Role.DOCTOR, "hr-dr-county", institution_id="hr-county",
                                name="心内陈")  # fmt: skip
        self.village = api.token(Role.DOCTOR, "hr-dr-village", institution_id="hr-village",
                                 name="村医李")  # fmt: skip
        self.east = api.token(Role.DOCTOR, "hr-dr-east", institution_id="hr-east", name="东村赵")
        self.west = api.token(Role.DOCTOR, "hr-dr-west", institution_id="hr-west", name="西村孙")

    # ------------------------------------------------------------------ people
    def register(self, name: str, birth_date: str = "1961-05-20", sex: str = "male") -> dict:
        """A new person in the index (with an ID card); returns {person_id, id_card}."""
        card = id_number(birth_date, sex)
        body = {"name": name, "sex": sex, "birth_date": birth_date,
                "address": f"档案测试村{card[-6:]}号",
                "identifiers": [{"type": "id_card", "value": card}]}  # fmt: skip
        r = self.api.call("POST", "/persons", self.village, json=body)
        assert r.status_code == 201, r.text
        return {"person_id": r.json()["person"]["person_id"], "id_card": card}

    def person(self, name: str, **kw: Any) -> str:
        return self.register(name, **kw)["person_id"]

    def resident(self, person_id: str) -> str:
        return self.api.token(Role.RESIDENT, f"hr-res-{person_id}", person_id=person_id)

    def refer(self, person_id: str) -> dict[str, Any]:
        """An open referral from the village clinic up to the county hospital."""
        body = {"patient_id": person_id, "direction": "up", "urgency": "routine",
                "target_institution_id": "hr-county", "target_department": "心血管内科",
                "reason": "血压控制不佳，需专科调整方案",
                "diagnosis": {"code": "I10", "text": "原发性高血压"},
                "clinical_summary": "高血压10年，近期血压波动"}  # fmt: skip
        r = self.api.call("POST", "/referrals", self.village, json=body)
        assert r.status_code == 201, r.text
        return r.json()

    # ------------------------------------------------------------------ records
    def submit(self, bundle: dict[str, Any], token: str | None = None, **kw: Any) -> Any:
        return self.api.call("POST", "/records/documents", token or self.county, json=bundle, **kw)

    def stored(self, bundle: dict[str, Any], token: str | None = None) -> dict[str, Any]:
        r = self.submit(bundle, token)
        assert r.status_code == 201, r.text
        return r.json()

    def get(self, path: str, token: str, status: int = 200) -> Any:
        r = self.api.call("GET", path, token)
        assert r.status_code == status, r.text
        return r.json()

    def timeline(self, person_id: str, token: str | None = None, query: str = "") -> dict:
        return self.get(f"/records/persons/{person_id}/timeline{query}", token or self.county)

    def doc_ids(self, person_id: str) -> list[str]:
        """The person's documents as the resident sees them (no relationship needed)."""
        out = self.get("/me/record", self.resident(person_id))
        return sorted(i["doc_id"] for i in out["timeline"]["items"])

    def access_log(self, person_id: str) -> list[dict[str, Any]]:
        return self.get("/me/access-log", self.resident(person_id))["items"]


def error(resp: Any) -> str:
    return resp.json()["error"]["code"]


def fhir_error(resp: Any) -> str:
    return resp.json()["issue"][0]["details"]["coding"][0]["code"]


def doc_of(bundle: dict[str, Any], institution_id: str, consortium: str) -> str:
    return document_id(consortium, institution_id, bundle["identifier"]["value"])


@pytest.fixture(scope="module")
def hr(api) -> Records:
    return Records(api)


@pytest.fixture(scope="module")
def patient(hr) -> dict[str, Any]:
    """王建国: referred from the village to the county, with a visit and a blood count."""
    pid = hr.person("王建国")
    hr.refer(pid)
    visit = outpatient_visit(pid, "hr-county", seed="hr-visit", when=ago(days=20),
                             diagnoses=["I10", "E11.9"], document=True, doctor="心内陈",
                             institution_name="档案测试县医院")  # fmt: skip
    lab = lab_report(pid, "hr-village", seed="hr-cbc", when=ago(days=2), panel="cbc",
                     doctor="村医李", institution_name="档案测试村卫生室")  # fmt: skip
    first = hr.submit(visit)
    second = hr.submit(lab, hr.village)
    return {"person_id": pid, "visit": visit, "lab": lab, "first": first, "second": second}


# ================================================================== contribute and read


def test_a_visit_is_stored_once_and_named_as_the_national_spec_names_it(hr, patient):
    first = patient["first"]
    assert first.status_code == 201, first.text
    created = first.json()
    assert (created["status"], created["version"], created["kind"]) == ("created", 1, "outpatient")
    assert created["kind_name"] == "门诊摘要" and created["spec"].startswith("WS/T 500")
    assert created["person_id"] == patient["person_id"]
    # the same bundle again (a retry): unchanged, same document
    again = hr.submit(patient["visit"])
    assert again.status_code == 200, again.text
    assert again.json() | {"status": "created"} == created
    assert again.json()["status"] == "unchanged"
    lab = patient["second"].json()
    assert (lab["kind"], lab["kind_name"]) == ("lab_report", "检验报告")


def test_the_timeline_lists_documents_across_institutions(hr, patient):
    pid = patient["person_id"]
    out = hr.timeline(pid)
    assert out["person"]["name"] == "王建国"
    assert out["access"]["basis"] == "care_relationship"
    assert out["access"]["relationship"].startswith("referral:")
    items = out["items"]
    assert [i["kind"] for i in items] == ["lab_report", "outpatient"]  # newest first
    assert {i["institution_name"] for i in items} == {"档案测试县医院", "档案测试村卫生室"}
    only_labs = hr.timeline(pid, query="?kind=lab_report")
    assert [i["kind_name"] for i in only_labs["items"]] == ["检验报告"]
    at_county = hr.timeline(pid, query="?institution_id=hr-county")
    assert [i["institution_id"] for i in at_county["items"]] == ["hr-county"]
    recent = hr.timeline(pid, query=f"?from={ago(days=5).date().isoformat()}")
    assert recent["count"] == 1
    r = hr.api.call("GET", f"/records/persons/{pid}/timeline?kind=bogus", hr.county)
    assert (r.status_code, error(r)) == (400, "KIND_INVALID")


def test_the_summary_gathers_problems_medications_vitals_and_labs(hr, patient):
    out = hr.get(f"/records/persons/{patient['person_id']}/summary", hr.village)
    assert {p["code"] for p in out["active_problems"]} >= {"I10", "E11.9"}
    assert out["current_medications"], out
    assert {v["code"] for v in out["latest_vitals"]} >= {"85354-9", "8867-4"}
    assert {lab["code"] for lab in out["recent_labs"]} >= {"718-7", "6690-2"}
    assert out["documents"]["count"] == 2
    assert out["documents"]["by_kind"] == {"outpatient": 1, "lab_report": 1}


def test_a_document_reads_with_its_resources_and_versions(hr, patient):
    doc_id = patient["first"].json()["doc_id"]
    out = hr.get(f"/records/documents/{doc_id}", hr.county)
    assert out["document"]["kind_name"] == "门诊摘要"
    assert out["current_version"] == 1 and len(out["versions"]) == 1
    types = {r["resourceType"] for r in out["resources"]}
    assert {"Composition", "Encounter", "Condition", "Observation"} <= types
    refs = json.dumps(out["resources"])
    assert f"Patient/{patient['person_id']}" in refs and "urn:uuid:" not in refs


def test_a_new_version_keeps_the_previous_one_readable(hr):
    pid = hr.person("钱国强")
    hr.refer(pid)
    bundle = lab_report(pid, "hr-county", seed="hr-v", when=ago(days=3), panel="glucose")
    doc_id = hr.stored(bundle)["doc_id"]
    corrected = copy.deepcopy(bundle)
    glucose = next(
        e["resource"]
        for e in corrected["entry"]
        if e["resource"].get("code", {}).get("coding", [{}])[0].get("code") == "1558-6"
    )
    old_value = glucose["valueQuantity"]["value"]
    glucose["valueQuantity"]["value"] = 12.34
    r = hr.api.call("PUT", f"/records/documents/{doc_id}", hr.county, json=corrected)
    assert r.status_code == 200, r.text
    assert (r.json()["status"], r.json()["version"]) == ("updated", 2)

    def glucose_in(out: dict) -> Any:
        [obs] = [x for x in out["resources"] if x.get("code", {}).get("coding", [{}])[0]
                 .get("code") == "1558-6"]  # fmt: skip
        return obs["valueQuantity"]["value"]

    current = hr.get(f"/records/documents/{doc_id}", hr.county)
    assert current["current_version"] == 2 and len(current["versions"]) == 2
    assert glucose_in(current) == 12.34
    old = hr.get(f"/records/documents/{doc_id}?version=1", hr.county)
    assert old["document"]["version"] == 1 and glucose_in(old) == old_value
    # the timeline still lists one document, at its new version
    [item] = hr.timeline(pid)["items"]
    assert (item["doc_id"], item["version"]) == (doc_id, 2)


def test_fhir_search_finds_observations_and_reports(hr, patient):
    pid = patient["person_id"]
    since = ago(days=7).date().isoformat()
    r = hr.api.call("GET", f"/fhir/Observation?patient={pid}&code=http://loinc.org|718-7"
                    f"&date=ge{since}", hr.county)  # fmt: skip
    assert r.status_code == 200, r.text
    assert r.headers["Content-Type"].startswith("application/fhir+json")
    out = r.json()
    assert (out["resourceType"], out["type"], out["total"]) == ("Bundle", "searchset", 1)
    [hb] = [e["resource"] for e in out["entry"]]
    assert hb["code"]["coding"][0]["code"] == "718-7"
    assert hb["subject"]["reference"] == f"Patient/{pid}"
    # the visit's vitals are older than a week: only found without the date bound
    vitals = hr.get(f"/fhir/Observation?patient={pid}&category=vital-signs", hr.county)
    assert vitals["total"] >= 3
    later = hr.get(f"/fhir/Observation?patient={pid}&category=vital-signs&date=ge{since}",
                   hr.county)  # fmt: skip
    assert later["total"] == 0
    reports = hr.get(f"/fhir/DiagnosticReport?patient={pid}", hr.county)
    assert [e["resource"]["code"]["coding"][0]["code"] for e in reports["entry"]] == ["58410-2"]
    r = hr.api.call("GET", "/fhir/Observation?code=718-7", hr.county)
    assert (r.status_code, fhir_error(r)) == (400, "PATIENT_REQUIRED")
    assert r.json()["resourceType"] == "OperationOutcome"


def test_patient_everything_exports_the_whole_record(hr, patient):
    pid = patient["person_id"]
    r = hr.api.call("GET", f"/fhir/Patient/{pid}/$everything", hr.county)
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["resourceType"] == "Bundle"
    first = out["entry"][0]["resource"]
    assert (first["resourceType"], first["id"]) == ("Patient", pid)
    types = {e["resource"]["resourceType"] for e in out["entry"][1:]}
    assert {"Encounter", "Condition", "Observation", "DiagnosticReport"} <= types
    n = sum(len(b["entry"]) for b in (patient["visit"], patient["lab"]))
    assert out["total"] == n + 1  # every resource of both documents, and the Patient


def test_recognition_finds_a_recent_blood_count(hr, patient):
    pid = patient["person_id"]
    out = hr.get(f"/records/persons/{pid}/recognition?item=cbc", hr.county)
    assert out["recognised"] is True and out["item"]["name"] == "血常规"
    [result] = out["results"]
    assert (result["code"], result["institution_name"]) == ("58410-2", "档案测试村卫生室")
    none = hr.get(f"/records/persons/{pid}/recognition?item=chest_ct", hr.county)
    assert none["recognised"] is False and none["results"] == []
    r = hr.api.call("GET", f"/records/persons/{pid}/recognition?item=mri", hr.county)
    assert (r.status_code, error(r)) == (400, "RECOGNITION_ITEM_UNKNOWN")


def test_a_bundle_naming_the_patient_by_id_card_resolves_through_the_index(hr, api):
    registered = hr.register("孙秀兰", birth_date="1950-09-09", sex="female")
    card = {"system": ID_CARD_SYSTEM, "value": registered["id_card"]}
    bundle = allergy_record("by-card", "hr-county", seed="hr-card", when=ago(days=1),
                            patient_identifier=card)  # fmt: skip
    assert bundle["entry"][0]["resource"]["resourceType"] == "Patient"
    out = hr.stored(bundle)
    assert out["person_id"] == registered["person_id"]
    assert hr.doc_ids(registered["person_id"]) == [out["doc_id"]]
    # an ID card nobody registered is not guessed at
    unknown = {"system": ID_CARD_SYSTEM, "value": id_number("1950-09-09", "female")}
    stray = allergy_record("by-card", "hr-county", seed="hr-card2", when=ago(days=1),
                           patient_identifier=unknown)  # fmt: skip
    r = hr.submit(stray)
    assert (r.status_code, error(r)) == (400, "SUBJECT_NOT_IN_INDEX")
    missing = hr.api.call("GET", f"/records/documents/{doc_of(stray, 'hr-county', api.consortium)}",
                          hr.county)  # fmt: skip
    assert (missing.status_code, error(missing)) == (404, "DOCUMENT_NOT_FOUND")


# ================================================================== bad inputs


@pytest.fixture(scope="module")
def target(hr) -> dict[str, Any]:
    """A person with one stored lab report, whom the bad bundles are about."""
    pid = hr.person("赵德明")
    base = lab_report(pid, "hr-county", seed="hr-base", when=ago(days=4), panel="renal")
    return {"person_id": pid, "base": base, "doc_id": hr.stored(base)["doc_id"]}


def _fresh(person_id: str, seed: str) -> dict[str, Any]:
    return lab_report(person_id, "hr-county", seed=seed, when=ago(days=1), panel="lipid")


def _wrong_type(b: dict) -> None:
    b["entry"][0]["resource"]["status"] = 123


def _foo(b: dict) -> None:
    b["entry"].append({"fullUrl": "urn:uuid:0f0f0f0f-0000-4000-8000-000000000001",
                       "resource": {"resourceType": "Foo", "id": "x"}})  # fmt: skip


def _claim(b: dict) -> None:
    b["entry"].append({"fullUrl": "urn:uuid:0f0f0f0f-0000-4000-8000-000000000002",
                       "resource": {"resourceType": "Claim", "status": "active"}})  # fmt: skip


def _no_subject(b: dict) -> None:
    for e in b["entry"]:
        e["resource"].pop("subject", None)


def _stranger(b: dict) -> None:
    for e in b["entry"]:
        e["resource"]["subject"] = {"reference": "Patient/hr-nobody-in-the-index"}


def _snomed(b: dict) -> None:
    report = b["entry"][-1]["resource"]
    report["code"]["coding"][0]["system"] = "http://snomed.info/sct"


BAD = {
    "wrong_type": (_wrong_type, 400, "FHIR_INVALID"),
    "unknown_resource": (_foo, 400, "RESOURCE_NOT_ACCEPTED"),
    "claim": (_claim, 400, "RESOURCE_NOT_ACCEPTED"),
    "missing_subject": (_no_subject, 400, "SUBJECT_MISSING"),
    "not_in_index": (_stranger, 400, "SUBJECT_NOT_IN_INDEX"),
    "wrong_code_system": (_snomed, 400, "CODE_SYSTEM_NOT_ACCEPTED"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_a_bad_bundle_is_refused_with_its_reason_and_nothing_is_stored(hr, api, target, case):
    spoil, status, code = BAD[case]
    before = hr.doc_ids(target["person_id"])
    bundle = _fresh(target["person_id"], f"hr-bad-{case}")
    spoil(bundle)
    r = hr.submit(bundle)
    assert (r.status_code, error(r)) == (status, code), r.text
    assert hr.doc_ids(target["person_id"]) == before == [target["doc_id"]]
    doc_id = doc_of(bundle, "hr-county", api.consortium)
    assert hr.api.call("GET", f"/records/documents/{doc_id}", hr.county).status_code == 404


def test_invalid_fhir_says_where(hr, target):
    bundle = _fresh(target["person_id"], "hr-bad-where")
    _wrong_type(bundle)
    details = hr.submit(bundle).json()["error"]["details"]
    assert any("status" in i["path"] for i in details["issues"]), details


def test_another_consortiums_person_is_refused(hr, api, target):
    """A person another consortium registered (its tokens never pass this deployment's
    gateway, so the person is placed in the shared index table directly)."""
    foreign_token = api.token(Role.DOCTOR, "hr-foreign", consortium="other-consortium",
                              institution_id="other-clinic")  # fmt: skip
    assert api.call("GET", "/institutions", foreign_token).status_code == 401
    foreign = _foreign_person(api, target["person_id"])
    bundle = _fresh(foreign, "hr-bad-foreign")
    r = hr.submit(bundle)
    assert (r.status_code, error(r)) == (403, "CROSS_CONSORTIUM")
    doc_id = doc_of(bundle, "hr-county", api.consortium)
    assert hr.api.call("GET", f"/records/documents/{doc_id}", hr.county).status_code == 404
    r = hr.api.call("GET", f"/records/persons/{foreign}/timeline", hr.county)
    assert (r.status_code, error(r)) == (403, "CROSS_CONSORTIUM")


def _foreign_person(api: Any, template_id: str) -> str:
    db = api.stack.client("dynamodb")
    table = api.stack.physical_id("PersonsTable")
    key = {"pk": {"S": f"P#{template_id}"}, "sk": {"S": "PROFILE"}}
    item = db.get_item(TableName=table, Key=key)["Item"]
    foreign = "hr-foreign-" + template_id[-8:]
    data = json.loads(item["data"]["S"]) | {"person_id": foreign,
                                            "consortium_id": "other-consortium"}  # fmt: skip
    item = {k: v for k, v in item.items() if not k.startswith("gsi")}
    item |= {"pk": {"S": f"P#{foreign}"}, "consortium_id": {"S": "other-consortium"},
             "data": {"S": json.dumps(data, ensure_ascii=False)}}  # fmt: skip
    db.put_item(TableName=table, Item=item)
    return foreign


def test_an_oversized_bundle_is_refused_and_says_how_to_send_it(hr, api, target):
    bundle = _fresh(target["person_id"], "hr-bad-large")
    scan = {"contentType": "application/pdf", "title": "扫描件", "data": "A" * (6 * 1024 * 1024)}
    bundle["entry"].append({
        "fullUrl": "urn:uuid:0f0f0f0f-0000-4000-8000-000000000003",
        "resource": {"resourceType": "DocumentReference", "status": "current",
                     "subject": {"reference": f"Patient/{target['person_id']}"},
                     "content": [{"attachment": scan}]},
    })  # fmt: skip
    r = hr.submit(bundle)
    assert (r.status_code, error(r)) == (413, "PAYLOAD_TOO_LARGE")
    message = r.json()["error"]["message"]
    assert message.startswith("request body exceeds 6291456 bytes: ")
    # says how to send it: the upload route (or splitting the bundle)
    assert "/records/uploads" in message or "split" in message, message
    assert hr.doc_ids(target["person_id"]) == [target["doc_id"]]


def test_the_same_document_id_with_another_body_is_a_conflict(hr, target):
    changed = copy.deepcopy(target["base"])
    changed["entry"][0]["resource"]["valueQuantity"]["value"] = 999
    r = hr.submit(changed)
    assert (r.status_code, error(r)) == (409, "DUPLICATE_SOURCE_CHANGED")
    details = r.json()["error"]["details"]
    assert (details["doc_id"], details["version"]) == (target["doc_id"], 1)
    out = hr.get(f"/records/documents/{target['doc_id']}", hr.resident(target["person_id"]))
    assert out["current_version"] == 1 and len(out["versions"]) == 1
    values = [x["valueQuantity"]["value"] for x in out["resources"] if "valueQuantity" in x]
    assert 999 not in values


# ================================================================== who may read


def test_a_doctor_without_a_relationship_is_refused_and_the_resident_sees_it(hr):
    pid = hr.person("李桂芝", birth_date="1948-02-14", sex="female")
    doc_id = hr.stored(allergy_record(pid, "hr-county", seed="hr-deny", when=ago(days=2)))["doc_id"]
    for path in (f"/records/persons/{pid}/timeline", f"/records/documents/{doc_id}",
                 f"/records/persons/{pid}/summary"):  # fmt: skip
        r = hr.api.call("GET", path, hr.east)
        assert (r.status_code, error(r)) == (403, "NO_CARE_RELATIONSHIP"), path
        assert r.json()["error"]["details"]["break_glass_allowed"] is True
    log = hr.access_log(pid)
    denied = [e for e in log if e["outcome"] == "denied"]
    assert len(denied) == 3
    assert {(e["institution_id"], e["institution_name"], e["role"]) for e in denied} == {
        ("hr-east", "档案东村卫生室", "doctor")
    }
    assert all(e["who"] == "东村赵" and not e["break_glass"] for e in denied)


def test_an_open_referral_lets_both_sides_read(hr):
    pid = hr.person("周志强")
    hr.stored(allergy_record(pid, "hr-county", seed="hr-ref", when=ago(days=2)))
    for token in (hr.village, hr.county):
        r = hr.api.call("GET", f"/records/persons/{pid}/timeline", token)
        assert (r.status_code, error(r)) == (403, "NO_CARE_RELATIONSHIP")
    referral = hr.refer(pid)
    for token in (hr.village, hr.county):
        out = hr.timeline(pid, token)
        assert out["count"] == 1
        assert out["access"] == {"basis": "care_relationship", "emergency": False,
                                 "relationship": f"referral:{referral['referral_id']}"}  # fmt: skip
    r = hr.api.call("GET", f"/records/persons/{pid}/timeline", hr.east)
    assert r.status_code == 403  # a third clinic is not party to the referral


def test_a_residents_consent_lets_an_institution_read_until_revoked(hr):
    pid = hr.person("吴淑珍", birth_date="1955-07-07", sex="female")
    hr.stored(allergy_record(pid, "hr-county", seed="hr-consent", when=ago(days=2)))
    me = hr.resident(pid)
    assert hr.api.call("GET", f"/records/persons/{pid}/timeline", hr.west).status_code == 403
    until = (ago(days=-30)).isoformat(timespec="seconds")
    r = hr.api.call(
        "POST",
        "/me/consents",
        me,
        json={"institution_id": "hr-west", "valid_until": until, "note": "慢病随访"},
    )
    assert r.status_code == 201, r.text
    consent = r.json()
    assert consent["active"] is True and consent["institution_name"] == "档案西村卫生室"
    out = hr.timeline(pid, hr.west)
    assert out["access"]["basis"] == "consent" and out["count"] == 1
    # another clinic's doctor still may not
    assert hr.api.call("GET", f"/records/persons/{pid}/timeline", hr.east).status_code == 403
    listed = hr.get("/me/consents", me)["items"]
    assert [c["consent_id"] for c in listed] == [consent["consent_id"]]
    r = hr.api.call("POST", f"/me/consents/{consent['consent_id']}/revoke", me, json={})
    assert r.status_code == 200, r.text
    assert r.json()["active"] is False and r.json()["revoked_at"]
    r = hr.api.call("GET", f"/records/persons/{pid}/timeline", hr.west)
    assert (r.status_code, error(r)) == (403, "NO_CARE_RELATIONSHIP")
    again = hr.api.call("POST", f"/me/consents/{consent['consent_id']}/revoke", me, json={})
    assert (again.status_code, error(again)) == (409, "CONSENT_REVOKED")
    # consent is the resident's own: a doctor cannot grant it
    r = hr.api.call(
        "POST", "/me/consents", hr.west, json={"institution_id": "hr-west", "valid_until": until}
    )
    assert (r.status_code, error(r)) == (403, "ROLE_NOT_ALLOWED")


def test_break_glass_needs_a_reason_and_is_shown_to_the_resident_and_the_admin(hr):
    pid = hr.person("郑海涛", birth_date="1970-01-30")
    hr.stored(allergy_record(pid, "hr-county", seed="hr-glass", when=ago(days=2)))
    r = hr.api.call(
        "POST", "/records/break-glass", hr.east, json={"person_id": pid, "reason": "急诊"}
    )
    assert (r.status_code, error(r)) == (400, "REASON_REQUIRED")
    assert hr.api.call("GET", f"/records/persons/{pid}/timeline", hr.east).status_code == 403
    r = hr.api.call(
        "POST", "/records/break-glass", hr.east, json={"person_id": pid, "reason": GOOD_REASON}
    )
    assert r.status_code == 201, r.text
    grant = r.json()
    assert grant["person_id"] == pid and grant["reason"] == GOOD_REASON and grant["expires_at"]
    out = hr.timeline(pid, hr.east)
    assert out["access"]["basis"] == "break_glass" and out["access"]["emergency"] is True
    assert out["count"] == 1
    # only the doctor who broke the glass: a colleague elsewhere still may not
    assert hr.api.call("GET", f"/records/persons/{pid}/timeline", hr.west).status_code == 403
    # the resident sees it, flagged, with the reason
    flagged = [e for e in hr.access_log(pid) if e["break_glass"]]
    assert flagged and all(e["reason"] == GOOD_REASON for e in flagged)
    assert {e["what"] for e in flagged} >= {"Record.break_glass", "Record.timeline"}
    # the consortium admin reviews it
    audit = hr.get("/audit?flag=break_glass", hr.admin)
    mine = [e for e in audit["items"] if pid in e["persons"]]
    assert mine and all(e["flag"] == "break_glass" for e in mine)
    assert all(e["agent"]["subject"] == "hr-dr-east" for e in mine)
    assert any(e["detail"].get("reason") == GOOD_REASON for e in mine)
    # and both are told
    notes = hr.get("/notifications", hr.resident(pid))["items"]
    [note] = [n for n in notes if n["kind"] == "RecordBreakGlass"]
    assert note["title"] == "健康档案紧急调阅" and GOOD_REASON in note["body"]
    admin_notes = hr.get("/notifications", hr.admin)["items"]
    assert any(n["kind"] == "RecordBreakGlass" and GOOD_REASON in n["body"] for n in admin_notes)


def test_break_glass_is_for_doctors(hr):
    pid = hr.person("冯玉梅", birth_date="1966-03-03", sex="female")
    r = hr.api.call(
        "POST",
        "/records/break-glass",
        hr.resident(pid),
        json={"person_id": pid, "reason": GOOD_REASON},
    )
    assert (r.status_code, error(r)) == (403, "ROLE_NOT_ALLOWED")


def test_a_guardian_reads_a_childs_record_and_a_stranger_does_not(hr):
    child = hr.person("陈小雨", birth_date="2019-06-01", sex="female")
    parent = hr.person("陈国华", birth_date="1988-04-12")
    stranger = hr.person("林志远", birth_date="1985-11-11")
    hr.stored(allergy_record(child, "hr-village", seed="hr-child", when=ago(days=3)),
              hr.village)  # fmt: skip
    r = hr.api.call(
        "POST",
        "/records/proxies",
        hr.village,
        json={"person_id": child, "proxy_person_id": parent, "relation": "child"},
    )
    assert r.status_code == 201, r.text
    assert r.json()["active"] is True and r.json()["valid_until"].startswith("2037-06-01")
    out = hr.get(f"/me/record?person_id={child}", hr.resident(parent))
    assert out["timeline"]["person"]["person_id"] == child
    assert out["timeline"]["access"] == {"basis": "proxy", "emergency": False,
                                         "relation": "child"}  # fmt: skip
    assert out["timeline"]["count"] == 1 and out["summary"]["allergies"]
    dependents = hr.get("/me/dependents", hr.resident(parent))["dependents"]
    assert [(d["person_id"], d["name"]) for d in dependents] == [(child, "陈小雨")]
    r = hr.api.call("GET", f"/me/record?person_id={child}", hr.resident(stranger))
    assert (r.status_code, error(r)) == (403, "NOT_YOUR_RECORD")
    # the guardian also sees who read the child's record; the stranger does not
    log = hr.get(f"/me/access-log?person_id={child}", hr.resident(parent))
    assert log["person_id"] == child and any(e["basis"] == "proxy" for e in log["items"])
    r = hr.api.call("GET", f"/me/access-log?person_id={child}", hr.resident(stranger))
    assert (r.status_code, error(r)) == (403, "NOT_YOUR_RECORD")
    # a guardian is recorded for a minor only, and by staff, not residents
    r = hr.api.call(
        "POST",
        "/records/proxies",
        hr.village,
        json={"person_id": stranger, "proxy_person_id": parent, "relation": "child"},
    )
    assert (r.status_code, error(r)) == (400, "NOT_A_MINOR")
    r = hr.api.call(
        "POST",
        "/records/proxies",
        hr.resident(stranger),
        json={"person_id": child, "proxy_person_id": stranger, "relation": "child"},
    )
    assert (r.status_code, error(r)) == (403, "ROLE_NOT_ALLOWED")


def test_a_resident_reads_their_own_record_and_only_theirs(hr, patient):
    pid = patient["person_id"]
    me = hr.resident(pid)
    out = hr.get("/me/record", me)
    assert out["timeline"]["access"]["basis"] == "self"
    assert out["timeline"]["count"] == 2
    assert {p["code"] for p in out["summary"]["active_problems"]} >= {"I10"}
    other = hr.person("黄丽娟", birth_date="1979-08-08", sex="female")
    r = hr.api.call("GET", f"/records/persons/{other}/timeline", me)
    assert (r.status_code, error(r)) == (403, "NOT_YOUR_RECORD")
    # and the access log shows the doctors who read it, by name and institution
    readers = {(e["who"], e["institution_name"]) for e in hr.access_log(pid)
               if e["outcome"] == "allowed" and e["clinical"]}  # fmt: skip
    assert ("心内陈", "档案测试县医院") in readers


def test_admins_search_the_audit_trail_by_actor_and_as_fhir(hr, patient):
    hr.timeline(patient["person_id"], hr.county)
    out = hr.get("/audit?actor=hr-dr-county", hr.admin)
    assert (out["by"], out["value"]) == ("actor", "hr-dr-county")
    assert out["items"] and all(e["agent"]["subject"] == "hr-dr-county" for e in out["items"])
    whats = {e["what"] for e in out["items"]}
    assert {"Record.timeline", "Record.document"} <= whats
    r = hr.api.call("GET", "/audit?actor=hr-dr-county&format=fhir&limit=5", hr.admin)
    assert r.status_code == 200, r.text
    assert r.headers["Content-Type"].startswith("application/fhir+json")
    bundle = r.json()
    assert bundle["resourceType"] == "Bundle" and 0 < bundle["total"] <= 5
    events = [e["resource"] for e in bundle["entry"]]
    assert {e["resourceType"] for e in events} == {"AuditEvent"}
    assert all(e["agent"][0]["who"]["identifier"]["value"] == "hr-dr-county" for e in events)
    for token in (hr.resident(patient["person_id"]), hr.county):
        r = hr.api.call("GET", "/audit?actor=hr-dr-county", token)
        assert (r.status_code, error(r)) == (403, "ROLE_NOT_ALLOWED")
    r = hr.api.call("GET", "/audit", hr.admin)
    assert (r.status_code, error(r)) == (400, "AUDIT_QUERY")


def test_fhir_date_bounds_combine(hr, patient):
    pid = patient["person_id"]
    lo, hi = ago(days=30).date().isoformat(), ago(days=10).date().isoformat()
    out = hr.get(f"/fhir/Observation?patient={pid}&date=ge{lo}&date=le{hi}", hr.county)
    codes = {e["resource"]["code"]["coding"][0]["code"] for e in out["entry"]}
    assert codes and "718-7" not in codes  # the visit's vitals, not the recent blood count
    r = hr.api.call("GET", f"/fhir/Observation?patient={pid}&date=xx2025", hr.county)
    assert (r.status_code, fhir_error(r)) == (400, "DATE_PARAMETER")


def test_a_new_version_stays_with_its_person_and_its_document(hr, target):
    doc_id = target["doc_id"]
    other = hr.person("何建军", birth_date="1972-12-12")
    moved = copy.deepcopy(target["base"])
    for e in moved["entry"]:
        e["resource"]["subject"] = {"reference": f"Patient/{other}"}
    r = hr.api.call("PUT", f"/records/documents/{doc_id}", hr.county, json=moved)
    assert (r.status_code, error(r)) == (409, "SUBJECT_CHANGED")
    # another institution cannot version this institution's document
    r = hr.api.call("PUT", f"/records/documents/{doc_id}", hr.village, json=target["base"])
    assert (r.status_code, error(r)) in {(400, "SOURCE_SYSTEM_MISMATCH"),
                                         (400, "SOURCE_ID_MISMATCH")}  # fmt: skip
    fresh = _fresh(target["person_id"], "hr-put-new")
    new_id = doc_of(fresh, "hr-county", hr.api.consortium)
    r = hr.api.call("PUT", f"/records/documents/{new_id}", hr.county, json=fresh)
    assert (r.status_code, error(r)) == (404, "DOCUMENT_NOT_FOUND")
    assert hr.doc_ids(target["person_id"]) == [doc_id]
    assert hr.doc_ids(other) == []


def test_an_institution_admin_sees_only_their_own_staffs_events(hr, patient):
    clerk = hr.api.token(Role.INSTITUTION_ADMIN, "hr-clerk-village", institution_id="hr-village")
    hr.timeline(patient["person_id"], hr.county)
    out = hr.get(f"/audit?person={patient['person_id']}", clerk)
    assert out["items"] and {e["agent"]["institution"] for e in out["items"]} == {"hr-village"}
    everyone = hr.get(f"/audit?person={patient['person_id']}", hr.admin)
    assert {"hr-county", "hr-village"} <= {e["agent"]["institution"] for e in everyone["items"]}


def _in_utc(value: Any) -> Any:
    """The same bundle with every China-time timestamp written in UTC (…Z), as a system
    that keeps UTC sends it: the same instants."""
    from datetime import UTC, datetime

    if isinstance(value, dict):
        return {k: _in_utc(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_in_utc(v) for v in value]
    if isinstance(value, str) and len(value) == 25 and value.endswith("+08:00"):
        return datetime.fromisoformat(value).astimezone(UTC).isoformat().replace("+00:00", "Z")
    return value


def test_documents_dated_in_utc_take_their_place_on_the_timeline(hr):
    """FHIR dateTimes may carry any offset: a report stamped in UTC two hours after a
    China-time one is the newer, listed first."""
    pid = hr.person("许文博", birth_date="1969-10-10")
    hr.refer(pid)
    noon = ago(days=3).replace(hour=12, minute=0, second=0, microsecond=0)
    older = lab_report(pid, "hr-county", seed="hr-tz-a", when=noon, panel="glucose")
    newer = _in_utc(lab_report(pid, "hr-county", seed="hr-tz-b", when=noon + timedelta(hours=2),
                               panel="lipid"))  # fmt: skip
    a, b = hr.stored(older)["doc_id"], hr.stored(newer)["doc_id"]
    items = hr.timeline(pid)["items"]
    assert [i["doc_id"] for i in items] == [b, a], [(i["doc_id"], i["date"]) for i in items]


def test_a_document_dated_in_utc_falls_on_the_china_day_it_happened(hr):
    """07:30 in China is 23:30Z the day before: the timeline's from/to are China days."""
    pid = hr.person("许文静", birth_date="1971-04-04", sex="female")
    hr.refer(pid)
    morning = ago(days=3).replace(hour=7, minute=30, second=0, microsecond=0)
    early = _in_utc(lab_report(pid, "hr-county", seed="hr-tz-c", when=morning, panel="renal"))
    doc_id = hr.stored(early)["doc_id"]
    day = morning.date().isoformat()
    on_the_day = hr.timeline(pid, query=f"?from={day}&to={day}")
    assert [i["doc_id"] for i in on_the_day["items"]] == [doc_id], on_the_day["items"]


def test_fhir_reads_without_a_relationship_are_refused_as_operation_outcomes(hr, patient):
    pid = patient["person_id"]
    for path in (f"/fhir/Observation?patient={pid}", f"/fhir/Patient/{pid}/$everything"):
        r = hr.api.call("GET", path, hr.east)
        assert r.status_code == 403, r.text
        assert r.json()["resourceType"] == "OperationOutcome"
        assert fhir_error(r) == "NO_CARE_RELATIONSHIP"


def test_residents_do_not_contribute_documents(hr, target):
    me = hr.resident(target["person_id"])
    r = hr.submit(_fresh(target["person_id"], "hr-bad-resident"), me)
    assert (r.status_code, error(r)) == (403, "ROLE_NOT_ALLOWED")
    assert hr.doc_ids(target["person_id"]) == [target["doc_id"]]


@pytest.mark.parametrize("query", ["limit=lots", "cursor=not-a-cursor"])
def test_a_malformed_audit_query_is_a_clear_400(hr, query):
    r = hr.api.call("GET", f"/audit?actor=hr-dr-county&{query}", hr.admin)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["code"]


def test_a_booking_lets_that_institutions_doctor_read(hr):
    pid = hr.person("蒋丽华", birth_date="1963-09-19", sex="female")
    hr.stored(allergy_record(pid, "hr-county", seed="hr-booking", when=ago(days=2)))
    assert hr.api.call("GET", f"/records/persons/{pid}/timeline", hr.west).status_code == 403
    day = ago(days=-2).date().isoformat()
    session = {"institution_id": "hr-west", "department": "全科", "date": day, "period": "am",
               "start": "08:00", "end": "09:00", "slot_minutes": 30, "capacity": 1}  # fmt: skip
    r = hr.api.call("POST", "/schedules", hr.admin, json=session)
    assert r.status_code == 201, r.text
    slot = r.json()["slots"][0]["slot_id"]
    r = hr.api.call("POST", "/appointments", hr.resident(pid), json={"slot_id": slot})
    assert r.status_code == 201, r.text
    out = hr.timeline(pid, hr.west)
    assert out["access"]["basis"] == "care_relationship"
    assert out["access"]["relationship"].startswith("booking:")
    assert hr.api.call("GET", f"/records/persons/{pid}/timeline", hr.east).status_code == 403
