"""The EMPI functions as Lambda runs them: API Gateway (REST, v1) events from
events/empi_api/*.json into functions/empi_api/app.py, and the S3 event into
functions/empi_import/app.py, against moto with the template's tables, a KMS data key and
the import bucket. Bad inputs get their 4xx reason code and store nothing."""

from __future__ import annotations

import copy
import csv
import io
import json
import uuid
from typing import Any

import pytest

from tests.fakes import make_id_number, registration
from tests.support.lambda_events import CONSORTIUM, ROOT, Context, api_event, load, sample

DOCTOR = {"sub": "doc-wangfang", "role": "doctor", "institution_id": "qiaotou"}
ADMIN = {"sub": "doc-admin", "role": "consortium_admin", "institution_id": "county-hospital"}
CLERK = {"sub": "doc-qiaotouadmin", "role": "institution_admin", "institution_id": "qiaotou"}
CONTEXT = Context("EmpiFunction")


class Stack:
    """The tables, key and bucket in moto, and the two handlers loaded fresh."""

    def __init__(self, db: Any, s3: Any, tables: dict[str, str], bucket: str) -> None:
        self.db, self.s3, self.tables, self.bucket = db, s3, tables, bucket
        self.api = load(ROOT / "functions/empi_api/app.py")
        self.importer = load(ROOT / "functions/empi_import/app.py")

    def call(self, case: str, **replaced: Any) -> tuple[int, Any]:
        """An API sample event, with what `api_event` takes replaced."""
        event = api_event(sample("empi_api", case), **replaced)
        out = self.api.lambda_handler(event, CONTEXT)
        payload = json.loads(out["body"]) if out.get("body") else None
        return out["statusCode"], payload

    def register(self, body: dict, who: dict[str, str] = DOCTOR, **kw: Any) -> tuple[int, Any]:
        """The register event with this body and a fresh Idempotency-Key (unless given)."""
        headers = {"Idempotency-Key": uuid.uuid4().hex, **kw.get("headers", {})}
        return self.call("register", who=who, body=body, headers=headers)

    def count(self, logical_id: str = "PersonsTable") -> int:
        return self.db.scan(TableName=self.tables[logical_id], Select="COUNT")["Count"]


@pytest.fixture
def stack(monkeypatch):
    from moto import mock_aws

    env = {
        "AWS_DEFAULT_REGION": "cn-northwest-1",
        "AWS_REGION": "cn-northwest-1",
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "YL_CONSORTIUM_ID": CONSORTIUM,
        "YL_ENV": "test",
        "POWERTOOLS_SERVICE_NAME": "yilian",
    }
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    with mock_aws():
        import boto3

        from tests.support.template_tables import create_tables
        from yilian.adapters.directory_store import DirectoryStore
        from yilian.domain.directory import Institution, InstitutionType, Tier

        db = boto3.client("dynamodb")
        tables = create_tables(db)
        key = boto3.client("kms").create_key(Description="data key")["KeyMetadata"]["Arn"]
        s3 = boto3.client("s3")
        bucket = "yilian-330122-imports-123456789012-cn-northwest-1"
        s3.create_bucket(
            Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": "cn-northwest-1"}
        )
        for k, v in {
            "YL_PERSONS_TABLE": tables["PersonsTable"],
            "YL_DIRECTORY_TABLE": tables["DirectoryTable"],
            "YL_PLATFORM_TABLE": tables["PlatformTable"],
            "YL_AUDIT_TABLE": tables["AuditTable"],
            "YL_IDEMPOTENCY_TABLE": tables["IdempotencyTable"],
            "YL_DATA_KEY": key,
            "YL_IMPORT_BUCKET": bucket,
        }.items():
            monkeypatch.setenv(k, v)
        directory = DirectoryStore(tables["DirectoryTable"], region="cn-northwest-1")
        for inst_id, name, tier, kind in [
            ("county-hospital", "示范县人民医院", Tier.COUNTY, InstitutionType.GENERAL_HOSPITAL),
            ("qiaotou", "桥头镇卫生院", Tier.TOWNSHIP, InstitutionType.TOWNSHIP_HEALTH_CENTRE),
            ("qiaotou-lijia", "桥头镇李家村卫生室", Tier.VILLAGE, InstitutionType.VILLAGE_CLINIC),
        ]:
            directory.add_institution(Institution(inst_id, CONSORTIUM, name, tier, kind))
        yield Stack(db, s3, tables, bucket)


def _wrong_check_digit() -> str:
    number = make_id_number("1985-03-12", "male", 1)
    return number[:17] + ("1" if number[17] != "1" else "2")


def test_the_sample_event_registers_a_person_and_a_replay_returns_the_same(stack):
    # Given the sample registration event (with its Idempotency-Key)
    status, body = stack.call("register")
    # Then a person is created, identifiers masked
    assert status == 201, body
    assert body["match"]["outcome"] == "NO_MATCH"
    values = [i["value"] for i in body["person"]["identifiers"]]
    assert values[0].startswith("3301") and "*" in values[0]
    items = stack.count()
    # When the same request is replayed
    again_status, again = stack.call("register")
    # Then the first answer comes back, and nothing more is stored
    assert (again_status, again) == (status, body)
    assert stack.count() == items
    # and the same key with another body is refused
    status, err = stack.call("register", body=registration("李强", seq=3, local=None))
    assert (status, err["error"]["code"]) == (409, "IDEMPOTENCY_KEY_REUSED")


BAD = [
    (400, "ID_CHECK_DIGIT", registration(id_card=_wrong_check_digit())),
    (400, "ID_BIRTH_DATE_MISMATCH", {**registration(), "birth_date": "1985-12-03"}),
    (400, "ID_SEX_MISMATCH", {**registration(), "sex": "female"}),
    (400, "ID_FORMAT", registration(id_card="3301221985")),
    (400, "VALIDATION_FAILED", {k: v for k, v in registration().items() if k != "name"}),
    (400, "NAME_REQUIRED", registration(name=" ")),
    (400, "BIRTH_DATE_IN_FUTURE", registration(birth_date="2099-01-01", id_card=None)),
    (400, "UNKNOWN_INSTITUTION", registration(local=("V1", "no-such-clinic"))),
]


@pytest.mark.parametrize(("status", "code", "body"), BAD, ids=[c for _, c, _ in BAD])
def test_a_bad_registration_gets_its_reason_and_nothing_is_stored(stack, status, code, body):
    stack.register(registration("李强", birth_date="1970-01-01", seq=9, local=None))
    before = (stack.count(), stack.count("IdempotencyTable"))
    got, err = stack.register(body, headers={"Idempotency-Key": f"k-{code}"})
    assert (got, err["error"]["code"]) == (status, code), err
    assert (stack.count(), stack.count("IdempotencyTable")) == before
    if code == "VALIDATION_FAILED":
        assert err["error"]["details"]["fields"][0]["field"] == "name"


def test_oversized_and_malformed_bodies_are_refused_before_anything_happens(stack):
    before = stack.count()
    big = registration() | {"address": "村" * 100_000}
    status, err = stack.call("register", body=big)
    assert (status, err["error"]["code"]) == (413, "PAYLOAD_TOO_LARGE")
    status, err = stack.call("register", raw_body='{"name": "张伟", ')
    assert (status, err["error"]["code"]) == (400, "MALFORMED_JSON")
    assert stack.count() == before


def test_residents_and_other_consortia_are_refused_and_nothing_is_stored(stack):
    _, mine = stack.register(registration())
    _, theirs = stack.register(registration("李强", birth_date="1970-01-01", seq=9, local=None))
    me, other = mine["person"]["person_id"], theirs["person"]["person_id"]
    resident = {"sub": f"resident-{me}", "role": "resident", "institution_id": "", "person_id": me}
    before = stack.count()
    status, body = stack.call("get_person", who=resident, path=f"/persons/{me}")
    assert (status, body["person_id"]) == (200, me)
    status, err = stack.call("get_person", who=resident, path=f"/persons/{other}")
    assert (status, err["error"]["code"]) == (403, "NOT_YOUR_RECORD")
    outsider = {"sub": "doc-x", "role": "doctor", "consortium_id": "other-county"}
    status, err = stack.call("get_person", who=outsider, path=f"/persons/{me}")
    assert (status, err["error"]["code"]) == (403, "CROSS_CONSORTIUM")
    status, err = stack.register(registration("赵敏", "female", "2001-01-01", seq=7), who=resident)
    assert (status, err["error"]["code"]) == (403, "ROLE_NOT_ALLOWED")
    assert stack.count() == before
    # the refusals are in the audit trail of the person asked for
    audit = stack.db.query(
        TableName=stack.tables["AuditTable"],
        KeyConditionExpression="pk = :pk",
        ExpressionAttributeValues={":pk": {"S": f"PERSON#{CONSORTIUM}#{other}"}},
    )["Items"]
    outcomes = {json.loads(i["event"]["S"])["outcome"] for i in audit}
    assert "4" in outcomes  # DENIED


def test_a_call_without_a_verified_caller_is_unauthenticated(stack):
    event = sample("empi_api", "get_person")
    event["requestContext"]["authorizer"] = {}
    out = stack.api.lambda_handler(event, CONTEXT)
    assert out["statusCode"] == 401
    assert json.loads(out["body"])["error"]["code"] == "TOKEN_MISSING"


def test_read_search_fhir_and_history(stack):
    _, created = stack.register(registration("王芳", "female", "1988-08-08", seq=2))
    pid = created["person"]["person_id"]
    status, found = stack.call("search_by_name")  # ?name=wangfang
    assert status == 200 and [p["person_id"] for p in found["items"]] == [pid]
    status, found = stack.call("search_by_name", query={"name": "王芳", "birth_date": "1988-08-08"})
    assert [p["person_id"] for p in found["items"]] == [pid]
    status, patient = stack.call("get_fhir", path=f"/persons/{pid}/fhir")
    assert status == 200 and patient["resourceType"] == "Patient"
    assert patient["identifier"][0]["system"] == "urn:oid:2.16.156.10011.1.3"
    status, history = stack.call("get_history", path=f"/persons/{pid}/history")
    assert [h["action"] for h in history["items"]] == ["registered"]
    assert stack.count("AuditTable") >= 5  # register, 2 searches, FHIR read, history read


def test_review_merge_and_unmerge_over_http(stack):
    _, first = stack.register(registration("王丽", "female", "1990-07-05"))
    body = registration("王丽", "female", "1990-05-07", id_card=None, local=("T1", "qiaotou"))
    status, second = stack.register(body)
    assert second["match"]["outcome"] == "POSSIBLE_MATCH"
    a, b = first["person"]["person_id"], second["person"]["person_id"]
    status, queue = stack.call("list_reviews", who=ADMIN)
    assert status == 200 and queue["count"] == 1
    review_id = queue["items"][0]["review_id"]
    status, err = stack.call("list_reviews", who=DOCTOR)
    assert (status, err["error"]["code"]) == (403, "ROLE_NOT_ALLOWED")
    status, decided = stack.call(
        "review_decision",
        who=ADMIN,
        path=f"/reviews/{review_id}/decision",
        body={"decision": "merge", "reason": "重复建档"},
    )
    assert status == 200 and decided["decision"] == "merge"
    status, retired = stack.call("get_person", who=ADMIN, path=f"/persons/{b}")
    assert (retired["status"], retired["merged_into"]) == ("merged", a)
    status, restored = stack.call(
        "merge", who=ADMIN, path=f"/persons/{b}/unmerge", body={"reason": "合并错误"}
    )
    assert status == 200 and restored["status"] == "active"
    status, err = stack.call(
        "merge", who=ADMIN, path=f"/persons/{a}/merge", body={"retired_id": b, "reason": ""}
    )
    assert (status, err["error"]["code"]) == (400, "REASON_REQUIRED")
    status, linked = stack.call(
        "merge", who=ADMIN, path=f"/persons/{a}/links", body={"other_id": b, "reason": "同一人"}
    )
    assert status == 200 and linked["links"] == [b]
    status, unlinked = stack.call(
        "get_person", who=ADMIN, method="DELETE", path=f"/persons/{a}/links/{b}",
        query={"reason": "核对有误"},
    )  # fmt: skip
    assert status == 200 and unlinked["links"] == []


def test_an_uploaded_patient_list_is_imported_by_the_s3_event(stack):
    # Given an institution admin who starts a job
    status, started = stack.call("import_start", who=CLERK)
    assert status == 202
    job_id, key = started["job"]["job_id"], started["upload"]["key"]
    assert started["upload"]["url"].startswith("https://")
    # When the list is uploaded and S3 tells the import function
    out = io.StringIO()
    w = csv.writer(out)
    w.writerow(["门诊号", "姓名", "性别", "出生日期", "身份证号"])
    w.writerow(["Q1", "王丽", "女", "1990-07-15", make_id_number("1990-07-15", "female", 1)])
    w.writerow(["Q2", "张伟", "男", "1985-03-12", make_id_number("1985-03-12", "male", 2)])
    w.writerow(["Q3", "", "男", "1985-03-12", ""])
    stack.s3.put_object(Bucket=stack.bucket, Key=key, Body=out.getvalue().encode("gb18030"))
    event = sample("empi_import", "object_created")
    event["Records"][0]["s3"]["object"]["key"] = key.replace("/", "%2F")  # as S3 encodes it
    result = stack.importer.lambda_handler(copy.deepcopy(event), CONTEXT)
    assert result["jobs"][0]["status"] == "done"
    # Then the job reports its counts and a report to download
    status, job = stack.call("import_status", who=CLERK, path=f"/imports/{job_id}")
    assert status == 200 and job["job"]["status"] == "done"
    assert job["job"]["counts"] == {"total": 3, "matched": 0, "new": 2, "review": 0, "rejected": 1}
    report = stack.s3.get_object(Bucket=stack.bucket, Key=job["job"]["report"]["key"])
    lines = list(csv.DictReader(io.StringIO(report["Body"].read().decode("utf-8-sig"))))
    assert [r["outcome"] for r in lines] == ["new", "new", "rejected"]
    # and a second delivery of the same event changes nothing
    persons = stack.count()
    again = stack.importer.lambda_handler(copy.deepcopy(event), CONTEXT)
    assert again["jobs"][0]["status"] == "done" and stack.count() == persons


def test_a_small_list_can_come_inline(stack):
    content = "local_id,name,sex,birth_date\nQ1,王丽,female,1990-07-15\n"
    status, out = stack.call("import_start", who=CLERK, body={"format": "csv", "content": content})
    assert status == 201 and out["job"]["counts"]["new"] == 1
    status, err = stack.call("import_start", who=DOCTOR | {"institution_id": "qiaotou-lijia"},
                             body={"format": "csv", "institution_id": "qiaotou"})  # fmt: skip
    assert (status, err["error"]["code"]) == (403, "NOT_YOUR_INSTITUTION")
