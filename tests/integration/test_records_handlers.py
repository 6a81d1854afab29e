"""The health-record functions as Lambda runs them, against moto with the template's tables.

API Gateway (REST, v1) events from events/records/*.json into functions/records/app.py and
from events/record_access/*.json into functions/record_access/app.py, each handler loaded
fresh with the environment template.yaml gives its function, the records bucket and a KMS
data key in moto. The samples are about one person (and, for the proxy, a child); the tests
register them and put their new ids in the events. Bad inputs get their 4xx reason code and
store nothing.
"""

from __future__ import annotations

import copy
import itertools
import json
import os
from collections.abc import Iterator
from datetime import date, timedelta
from typing import Any
from unittest import mock

import pytest

from tests.fakes import registration
from tests.support.lambda_events import (
    CONSORTIUM,
    EVENTS,
    REGION,
    ROOT,
    Context,
    api_event,
    function_environment,
    load,
    register_patient,
    sample,
    seed_demo_directory,
)
from yilian.domain.record import document_id

SAMPLE_PERSON = "5e2b8c41d7a94f03b6e1"  # whom the sample events are about
SAMPLE_CHILD = "7c1d9e52a8b04f16c3d2"  # the child in the add_proxy sample
SAMPLE_SOURCE = "labcbc-sample-58504b4729"  # the submit sample's Bundle.identifier.value
SAMPLE_DOC = "dbegcwg36xxvizv5kag2sc6es"  # its doc_id (qiaotou's document in demo-county)
FUNCTIONS = {"records": "RecordsFunction", "record_access": "RecordAccessFunction"}
ADMIN = {"sub": "doc-admin", "role": "consortium_admin", "institution_id": "county-hospital"}
READER = {"sub": "doc-chenjie", "role": "doctor", "institution_id": "county-hospital",
          "name": "陈杰"}  # fmt: skip
EMERGENCY = {"sub": "doc-lijia", "role": "doctor", "institution_id": "qiaotou-lijia",
             "name": "李佳"}  # fmt: skip
NAMES = itertools.cycle(["张伟", "王秀英", "李强", "刘洋", "陈静", "杨帆", "赵磊", "黄敏"])
_serial = itertools.count(1)


class Aws:
    """The template's tables, the records bucket and a data key in moto, the directory, and
    both handlers: made once for the module (each test works on its own people)."""

    def __init__(self, db: Any, s3: Any, tables: dict[str, str], refs: dict[str, str]) -> None:
        self.db, self.s3, self.tables, self.refs = db, s3, tables, refs
        self.env = function_environment(FUNCTIONS, refs)
        self.handlers = {f: load(ROOT / "functions" / f / "app.py") for f in FUNCTIONS}


class Stack:
    """One test's view: the module's AWS, a newly registered sample person (and child, when
    asked for), and its own document id for the submit sample."""

    def __init__(self, aws: Aws) -> None:
        self.aws, self.db, self.s3, self.tables = aws, aws.db, aws.s3, aws.tables
        n = next(_serial)
        self.person_id = _register(aws.tables, n, "1975-01-01")
        self._child_id = ""
        self.source_id = f"labcbc-t{n}"
        self.doc_id = document_id(CONSORTIUM, "qiaotou", self.source_id)

    @property
    def child_id(self) -> str:
        if not self._child_id:
            self._child_id = _register(self.tables, next(_serial), "2019-01-01")
        return self._child_id

    def invoke(self, function: str, event: dict[str, Any]) -> dict[str, Any]:
        """One invocation with the function's environment (and only its YL_ settings)."""
        with mock.patch.dict(os.environ):
            for k in [k for k in os.environ if k.startswith(("YL_", "POWERTOOLS_"))]:
                del os.environ[k]
            os.environ.update(self.aws.env[function])
            handler = self.aws.handlers[function].lambda_handler
            return handler(json.loads(json.dumps(event)), Context(FUNCTIONS[function]))

    def event(self, function: str, case: str) -> dict[str, Any]:
        """A sample event about this test's people and document instead of the samples'."""
        text = json.dumps(sample(function, case), ensure_ascii=False)
        for old, new in ((SAMPLE_PERSON, self.person_id), (SAMPLE_SOURCE, self.source_id),
                         (SAMPLE_DOC, self.doc_id)):  # fmt: skip
            text = text.replace(old, new)
        if SAMPLE_CHILD in text:
            text = text.replace(SAMPLE_CHILD, self.child_id)
        return json.loads(text)

    def call(self, case: str, *, function: str = "records", **replaced: Any) -> tuple[int, Any]:
        out = self.invoke(function, api_event(self.event(function, case), **replaced))
        body = out.get("body")
        return out["statusCode"], json.loads(body) if body else None

    def access(self, case: str, **replaced: Any) -> tuple[int, Any]:
        return self.call(case, function="record_access", **replaced)

    def bundle(self) -> dict[str, Any]:
        return json.loads(self.event("records", "submit")["body"])

    def count(self, logical_id: str) -> int:
        return self.db.scan(TableName=self.tables[logical_id], Select="COUNT")["Count"]

    def objects(self) -> int:
        return self.s3.list_objects_v2(Bucket=self.aws.refs["RecordsBucket"]).get("KeyCount", 0)

    def stored(self) -> tuple[int, int]:
        """Everything the record keeps: index items and bodies."""
        return self.count("RecordsTable"), self.objects()

    def timeline(self, who: dict[str, str] = READER) -> tuple[int, Any]:
        return self.call("timeline", who=who, query={})


@pytest.fixture(scope="module")
def aws() -> Iterator[Aws]:
    from moto import mock_aws

    with pytest.MonkeyPatch.context() as mp:
        for k, v in {
            "AWS_DEFAULT_REGION": REGION,
            "AWS_REGION": REGION,
            "AWS_ACCESS_KEY_ID": "test",
            "AWS_SECRET_ACCESS_KEY": "test",
        }.items():
            mp.setenv(k, v)
        mp.delenv("AWS_ENDPOINT_URL", raising=False)
        with mock_aws():
            import boto3

            from tests.support.template_tables import county_params, create_tables

            db, s3 = boto3.client("dynamodb"), boto3.client("s3")
            tables = create_tables(db)
            bucket = f"yilian-{county_params()['CountyCode']}-records-123456789012-{REGION}"
            s3.create_bucket(Bucket=bucket,
                             CreateBucketConfiguration={"LocationConstraint": REGION})  # fmt: skip
            key = boto3.client("kms").create_key(Description="data key")["KeyMetadata"]["Arn"]
            refs = {**tables, "RecordsBucket": bucket, "DataKey.Arn": key}
            seed_demo_directory(tables["DirectoryTable"])
            yield Aws(db, s3, tables, refs)


@pytest.fixture
def stack(aws: Aws) -> Stack:
    return Stack(aws)


def _register(tables: dict[str, str], n: int, born: str) -> str:
    """A new person in the index: names and birth dates differ, so none matches another."""
    from yilian.domain.principal import Principal, Role

    birth = (date.fromisoformat(born) + timedelta(days=37 * n)).isoformat()
    body = registration(next(NAMES), birth_date=birth, seq=n, local=None, phone=None,
                        address=None, household=None)  # fmt: skip
    doctor = Principal("doc-wangfang", Role.DOCTOR, CONSORTIUM, institution_id="qiaotou")
    return register_patient(tables, body, doctor)


def _consent_until() -> str:
    from yilian.domain.clock import now

    return (now() + timedelta(days=30)).isoformat(timespec="seconds")


# ------------------------------------------------------------------------------- submit


def test_the_sample_submit_stores_a_document_and_a_retry_stores_nothing_more(stack):
    # When qiaotou submits the sample lab report
    status, created = stack.call("submit")
    # Then it is stored as a lab report (检验报告) under the deterministic document id
    assert status == 201, created
    assert (created["status"], created["doc_id"], created["version"]) == (
        "created", stack.doc_id, 1,
    )  # fmt: skip
    assert (created["kind"], created["kind_name"]) == ("lab_report", "检验报告")
    assert created["person_id"] == stack.person_id
    stored = (*stack.stored(), stack.count("AuditTable"))
    assert stored[0] > 0
    # When the same bundle comes again (a retry)
    status, again = stack.call("submit")
    # Then the answer is the same document, unchanged, and nothing more is stored
    assert (status, again["status"], again["doc_id"]) == (200, "unchanged", stack.doc_id)
    assert (*stack.stored(), stack.count("AuditTable")) == stored


def test_the_sample_update_makes_version_two_and_keeps_version_one(stack):
    assert stack.call("submit")[0] == 201
    status, updated = stack.call("update")
    assert status == 200, updated
    assert (updated["status"], updated["version"]) == ("updated", 2)
    # the resident reads both versions
    resident = _resident(stack)
    path = f"/records/documents/{stack.doc_id}"
    status, current = stack.call("document", who=resident, path=path, query={})
    assert status == 200, current
    assert current["current_version"] == 2 and len(current["versions"]) == 2
    status, first = stack.call("document", who=resident, path=path, query={"version": "1"})
    values = [r["valueQuantity"]["value"] for r in first["resources"] if "valueQuantity" in r]
    assert 7.25 not in values and first["document"]["version"] == 1


@pytest.mark.parametrize(
    ("spoil", "status", "code"),
    [
        (lambda b: b["entry"][0]["resource"].update(status=123), 400, "FHIR_INVALID"),
        (lambda b: b["entry"].append({"resource": {"resourceType": "Claim"}}), 400,
         "RESOURCE_NOT_ACCEPTED"),
        (lambda b: [e["resource"].pop("subject") for e in b["entry"]], 400, "SUBJECT_MISSING"),
        (lambda b: [e["resource"].update(subject={"reference": "Patient/nobody"})
                    for e in b["entry"]], 400, "SUBJECT_NOT_IN_INDEX"),
        (lambda b: b["entry"][0]["resource"]["code"]["coding"][0].update(
            system="http://snomed.info/sct"), 400, "CODE_SYSTEM_NOT_ACCEPTED"),
    ],
    ids=["wrong_type", "unknown_resource", "no_subject", "not_in_index", "code_system"],
)  # fmt: skip
def test_a_bad_bundle_gets_its_reason_and_stores_nothing(stack, spoil, status, code):
    before = stack.stored()
    bundle = stack.bundle()
    spoil(bundle)
    got_status, err = stack.call("submit", body=bundle)
    assert (got_status, err["error"]["code"]) == (status, code), err
    assert stack.stored() == before


def test_an_oversized_bundle_is_refused_before_it_is_parsed(stack):
    before = stack.stored()
    raw = json.dumps(stack.bundle())[:-1] + ', "padding": "' + "x" * (6 * 1024 * 1024) + '"}'
    status, err = stack.call("submit", raw_body=raw)
    assert (status, err["error"]["code"]) == (413, "PAYLOAD_TOO_LARGE")
    assert stack.stored() == before


def test_the_same_source_id_with_another_body_is_a_conflict(stack):
    assert stack.call("submit")[0] == 201
    items = stack.stored()
    changed = stack.bundle()
    changed["entry"][0]["resource"]["valueQuantity"]["value"] = 99
    status, err = stack.call("submit", body=changed)
    assert (status, err["error"]["code"]) == (409, "DUPLICATE_SOURCE_CHANGED")
    assert err["error"]["details"] == {"doc_id": stack.doc_id, "version": 1}
    assert stack.stored() == items


# ------------------------------------------------------------------------------- read


def _resident(stack: Stack) -> dict[str, str]:
    return {"sub": f"resident-{stack.person_id}", "role": "resident", "institution_id": "",
            "person_id": stack.person_id}  # fmt: skip


def test_the_timeline_sample_is_refused_without_a_relationship_and_audited(stack):
    assert stack.call("submit")[0] == 201
    status, err = stack.call("timeline")
    assert (status, err["error"]["code"]) == (403, "NO_CARE_RELATIONSHIP")
    assert err["error"]["details"]["break_glass_allowed"] is True
    status, log = stack.access("access_log")
    assert status == 200, log
    denied = [e for e in log["items"] if e["outcome"] == "denied"]
    assert [(e["what"], e["institution_name"]) for e in denied] == [
        ("Record.timeline", "示范县人民医院")
    ]


def test_the_resident_reads_their_record_with_the_my_record_sample(stack):
    assert stack.call("submit")[0] == 201
    status, out = stack.call("my_record")
    assert status == 200, out
    [item] = out["timeline"]["items"]
    assert (item["doc_id"], item["kind_name"], item["institution_name"]) == (
        stack.doc_id, "检验报告", "桥头镇卫生院",
    )  # fmt: skip
    assert out["timeline"]["access"]["basis"] == "self"
    assert {lab["code"] for lab in out["summary"]["recent_labs"]} >= {"718-7"}


# ------------------------------------------------------------------------------- consents


def test_a_consent_from_the_sample_opens_the_timeline_until_revoked(stack):
    assert stack.call("submit")[0] == 201
    body = {**json.loads(sample("record_access", "grant_consent")["body"]),
            "valid_until": _consent_until()}  # fmt: skip
    status, consent = stack.access("grant_consent", body=body)
    assert status == 201, consent
    assert consent["institution_id"] == "county-hospital" and consent["active"] is True
    # the county hospital's doctor now reads the timeline sample
    status, out = stack.timeline()
    assert status == 200, out
    assert out["access"]["basis"] == "consent"
    assert [i["doc_id"] for i in out["items"]] == [stack.doc_id]
    status, listed = stack.access("list_consents")
    assert [c["consent_id"] for c in listed["items"]] == [consent["consent_id"]]
    # revoked: refused again
    path = f"/me/consents/{consent['consent_id']}/revoke"
    status, revoked = stack.access("revoke_consent", path=path)
    assert status == 200 and revoked["active"] is False
    assert stack.timeline()[1]["error"]["code"] == "NO_CARE_RELATIONSHIP"
    # a consent id that is not theirs
    status, err = stack.access("revoke_consent")
    assert (status, err["error"]["code"]) == (404, "CONSENT_NOT_FOUND")


def test_a_consent_for_an_unknown_institution_is_refused_and_nothing_stored(stack):
    items = stack.stored()
    body = {"institution_id": "nowhere", "valid_until": _consent_until()}
    status, err = stack.access("grant_consent", body=body)
    assert (status, err["error"]["code"]) == (400, "UNKNOWN_INSTITUTION")
    assert stack.stored() == items
    assert stack.access("list_consents")[1]["items"] == []


# ------------------------------------------------------------------------------- break-glass


def test_the_break_glass_sample_opens_the_record_flags_it_and_tells_everyone(stack):
    assert stack.call("submit")[0] == 201
    assert stack.timeline(EMERGENCY)[0] == 403
    notes = stack.count("PlatformTable")
    status, grant = stack.access("break_glass")
    assert status == 201, grant
    assert grant["person_id"] == stack.person_id and grant["reason"].startswith("患者晕厥")
    status, out = stack.timeline(EMERGENCY)
    assert status == 200, out
    assert out["access"] == {"basis": "break_glass", "emergency": True}
    # flagged for the admin
    status, audit = stack.access("audit_search")
    assert status == 200, audit
    mine = [e for e in audit["items"] if e["persons"] == [stack.person_id]]
    assert {e["what"] for e in mine} == {"Record.break_glass", "Record.timeline"}
    assert all(e["agent"]["subject"] == "doc-lijia" and e["flag"] == "break_glass" for e in mine)
    # the resident and the admins are told (PlatformTable inbox)
    assert stack.count("PlatformTable") == notes + 2
    status, log = stack.access("access_log")
    assert any(e["break_glass"] and e["reason"] == grant["reason"] for e in log["items"])


def test_break_glass_without_a_real_reason_is_refused_and_grants_nothing(stack):
    before = (stack.stored(), stack.count("PlatformTable"))
    body = {"person_id": stack.person_id, "reason": "急诊"}
    status, err = stack.access("break_glass", body=body)
    assert (status, err["error"]["code"]) == (400, "REASON_REQUIRED")
    assert (stack.stored(), stack.count("PlatformTable")) == before
    assert stack.timeline(EMERGENCY)[0] == 403


def test_the_audit_sample_as_fhir_is_a_bundle_of_audit_events(stack):
    assert stack.access("break_glass")[0] == 201
    out = stack.invoke("record_access", stack.event("record_access", "audit_fhir"))
    assert out["statusCode"] == 200, out["body"]
    bundle = json.loads(out["body"])
    assert bundle["resourceType"] == "Bundle" and bundle["total"] >= 1
    events = [e["resource"] for e in bundle["entry"]]
    assert {e["resourceType"] for e in events} == {"AuditEvent"}
    [event] = [e for e in events if e["entity"][0]["what"]["reference"] ==
               f"Patient/{stack.person_id}"]  # fmt: skip
    assert event["purposeOfEvent"][0]["coding"][0]["code"] == "ETREAT"


# ------------------------------------------------------------------------------- proxies


def test_the_proxy_sample_lets_a_parent_read_their_childs_record(stack):
    status, proxy = stack.access("add_proxy")
    assert status == 201, proxy
    assert (proxy["person_id"], proxy["relation"]) == (stack.child_id, "child")
    status, dependents = stack.access("dependents")
    assert [d["person_id"] for d in dependents["dependents"]] == [stack.child_id]
    status, out = stack.call("my_record", query={"person_id": stack.child_id})
    assert status == 200, out
    assert out["timeline"]["access"] == {"basis": "proxy", "emergency": False,
                                         "relation": "child"}  # fmt: skip


# ------------------------------------------------------------------------------- samples

EXPECTED = {
    ("records", "submit"): 200,  # stored before: unchanged
    ("records", "update"): 200,
    ("records", "document"): 200,
    ("records", "timeline"): 200,
    ("records", "summary"): 200,
    ("records", "recognition"): 200,
    ("records", "my_record"): 200,
    ("records", "fhir_observation_search"): 200,
    ("records", "fhir_diagnostic_report_search"): 200,
    ("records", "fhir_everything"): 200,
    ("record_access", "break_glass"): 201,
    ("record_access", "grant_consent"): 201,
    ("record_access", "list_consents"): 200,
    ("record_access", "revoke_consent"): 404,  # the sample's consent id is not stored
    ("record_access", "access_log"): 200,
    ("record_access", "dependents"): 200,
    ("record_access", "add_proxy"): 201,
    ("record_access", "audit_search"): 200,
    ("record_access", "audit_fhir"): 200,
}
SAMPLES = sorted((f, p.stem) for f in FUNCTIONS for p in (EVENTS / f).glob("*.json"))


def test_every_sample_is_covered_here():
    assert set(SAMPLES) == set(EXPECTED)


@pytest.mark.parametrize(("function", "case"), SAMPLES, ids=lambda v: str(v))
def test_every_sample_routes_and_answers_as_it_is(stack, function, case):
    """Each sample as it is (about the registered people): the sample document is stored
    first, and the reading doctor has the resident's consent."""
    assert stack.call("submit")[0] == 201
    consent = {**json.loads(sample("record_access", "grant_consent")["body"]),
               "valid_until": _consent_until()}  # fmt: skip
    assert stack.access("grant_consent", body=consent)[0] == 201
    event = stack.event(function, case)
    if case == "grant_consent":
        event = api_event(copy.deepcopy(event), body=consent)
    out = stack.invoke(function, event)
    assert out["statusCode"] == EXPECTED[(function, case)], out["body"]
    if function == "records" and case.startswith("fhir_"):
        headers = out.get("multiValueHeaders") or {}
        assert headers.get("Content-Type") == ["application/fhir+json"], headers
        assert json.loads(out["body"])["resourceType"] == "Bundle"
