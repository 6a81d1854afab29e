"""The imaging functions as Lambda runs them, against moto with the template's tables.

SQS events from events/imaging_ingest/*.json into functions/imaging_ingest/app.py, API
Gateway (REST, v1) events from events/imaging/*.json into functions/imaging/app.py and from
events/imaging_render/*.json into functions/imaging_render/app.py: each handler loaded fresh
with the environment template.yaml gives its function, the imaging and records buckets, the
ingest queue and its dead-letter queue and a KMS data key in moto. The samples name one
study, series, instance, upload batch and person; each test uploads its own generated DICOM
and registers its own person, and puts their ids in the events. Bad inputs get their reason
and store nothing; the original stays in the bucket.
"""

from __future__ import annotations

import base64
import copy
import io
import itertools
import json
import os
import uuid
import zipfile
from collections.abc import Iterator
from datetime import date, timedelta
from typing import Any
from unittest import mock

import pydicom
import pytest

from tests.fakes import registration
from tests.support import dicom_factory as F
from tests.support.lambda_events import (
    CONSORTIUM,
    REGION,
    ROOT,
    Context,
    api_event,
    function_environment,
    load,
    sample,
    seed_demo_directory,
)

pytestmark = pytest.mark.integration

SAMPLE_PERSON = "5e2b8c41d7a94f03b6e1"
SAMPLE_STUDY = "1.2.826.0.1.3680043.10.1234.9000001"
SAMPLE_SERIES = "1.2.826.0.1.3680043.10.1234.9000002"
SAMPLE_SOP = "1.2.826.0.1.3680043.10.1234.9000003"
SAMPLE_BATCH = "b0123456789abcdef"
SAMPLE_TOKEN = "sampleShareToken0123456789abcdefghijklmnopq"
SAMPLE_KEY = f"dicom/demo-county/qiaotou/{SAMPLE_BATCH}/00000-CT0001.dcm"
FUNCTIONS = {
    "imaging": "ImagingFunction",
    "imaging_render": "ImagingRenderFunction",
    "imaging_ingest": "ImagingIngestFunction",
}
NAMES = itertools.cycle(["张影", "王片", "李像", "刘光", "陈透", "杨扫", "赵层", "黄析"])
_serial = itertools.count(1)


class Aws:
    """moto with the template's tables, buckets, queues and key; the three handlers."""

    def __init__(self, clients: dict[str, Any], tables: dict[str, str], refs: dict[str, str]):
        self.db, self.s3, self.sqs = clients["dynamodb"], clients["s3"], clients["sqs"]
        self.tables, self.refs = tables, refs
        self.bucket = refs["ImagingBucket"]
        self.env = function_environment(FUNCTIONS, refs)
        self.handlers = {f: load(ROOT / "functions" / f / "app.py") for f in FUNCTIONS}
        self._empi: Any = None

    def register(self, name: str, birth: str, local: str) -> str:
        """A person in the master index with `local` as qiaotou's local number, registered
        with the data key the ingest function links with (identifiers are keyed hashes)."""
        from yilian.adapters.empi_wiring import build_empi
        from yilian.domain.principal import Principal, Role
        from yilian.settings import Settings

        if self._empi is None:
            self._empi = build_empi(Settings.from_env(self.env["imaging_ingest"]))
        body = registration(name, birth_date=birth, id_card=None, local=(local, "qiaotou"),
                            phone=None, address=None, household=None)  # fmt: skip
        doctor = Principal("doc-wangfang", Role.DOCTOR, CONSORTIUM, institution_id="qiaotou")
        status, out = self._empi.service.register(doctor, body)
        assert status == 201, out
        return out["person"]["person_id"]


class Stack:
    """One test's view: the module's AWS, a person registered at qiaotou whose local number is
    the generated series' PatientID, and that series (not yet uploaded)."""

    def __init__(self, aws: Aws) -> None:
        self.aws, self.db, self.s3 = aws, aws.db, aws.s3
        n = next(_serial)
        self.local = f"IH{n:04d}{uuid.uuid4().hex[:4].upper()}"
        self.name = next(NAMES)
        self.birth = (date(1950, 1, 1) + timedelta(days=211 * n)).isoformat()
        self.person_id = aws.register(self.name, self.birth, self.local)
        self.files = F.ct_series(3, rows=64, cols=64, patient_id=self.local,
                                 patient_name=self.name, sex="M",
                                 birth_date=self.birth.replace("-", ""))  # fmt: skip
        ds = pydicom.dcmread(io.BytesIO(self.files[0]), stop_before_pixels=True)
        self.study_uid, self.series_uid = str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID)
        self.sop_uid = str(ds.SOPInstanceUID)
        self.batch_id = ""
        self.token = ""

    # ------------------------------------------------------------------ invoking
    def invoke(self, function: str, event: dict[str, Any]) -> dict[str, Any]:
        """One invocation with the function's environment (and only its YL_ settings)."""
        with mock.patch.dict(os.environ):
            for k in [k for k in os.environ if k.startswith(("YL_", "POWERTOOLS_"))]:
                del os.environ[k]
            os.environ.update(self.aws.env[function])
            handler = self.aws.handlers[function].lambda_handler
            return handler(json.loads(json.dumps(event)), Context(FUNCTIONS[function]))

    def event(self, function: str, case: str) -> dict[str, Any]:
        """A sample event about this test's person, study and batch instead of the samples'."""
        text = json.dumps(sample(function, case), ensure_ascii=False)
        for old, new in ((SAMPLE_PERSON, self.person_id), (SAMPLE_STUDY, self.study_uid),
                         (SAMPLE_SERIES, self.series_uid), (SAMPLE_SOP, self.sop_uid),
                         (SAMPLE_BATCH, self.batch_id or SAMPLE_BATCH),
                         (SAMPLE_TOKEN, self.token or SAMPLE_TOKEN)):  # fmt: skip
            text = text.replace(old, new)
        return json.loads(text)

    def call(self, function: str, case: str, **replaced: Any) -> tuple[int, Any, dict]:
        out = self.invoke(function, api_event(self.event(function, case), **replaced))
        body = out.get("body")
        if out.get("isBase64Encoded"):
            return out["statusCode"], base64.b64decode(body), out
        ctype = _header(out, "content-type")
        if body and ("json" in ctype or ctype.startswith("text/")):
            return out["statusCode"], json.loads(body), out
        return out["statusCode"], body, out

    def api(self, case: str, **replaced: Any) -> tuple[int, Any]:
        status, body, _ = self.call("imaging", case, **replaced)
        return status, body

    def render(self, case: str, **replaced: Any) -> tuple[int, Any, dict]:
        return self.call("imaging_render", case, **replaced)

    # ------------------------------------------------------------------ uploading
    def start_upload(self, files: list[bytes]) -> dict[str, Any]:
        body = {"files": [{"name": f"CT{i + 1:04d}.dcm", "size": len(b)} for i, b in
                          enumerate(files)]}  # fmt: skip
        status, batch = self.api("start_upload", body=body)
        assert status == 201, batch
        self.batch_id = batch["batch_id"]
        return batch

    def ingest_event(self, objects: list[tuple[str, int]]) -> dict[str, Any]:
        """The object_created sample, one SQS record per (key, size)."""
        event = self.event("imaging_ingest", "object_created")
        [template] = event["Records"]
        records = []
        for n, (key, size) in enumerate(objects):
            record = copy.deepcopy(template)
            body = json.loads(record["body"])
            body["Records"][0]["s3"]["object"].update(key=key, size=size)
            record["body"] = json.dumps(body)
            record["messageId"] = f"{record['messageId'][:-4]}{n:04d}"
            records.append(record)
        event["Records"] = records
        return event

    def ingest(self, objects: list[tuple[str, int]]) -> dict[str, Any]:
        return self.invoke("imaging_ingest", self.ingest_event(objects))

    def upload(self, files: list[bytes] | None = None) -> dict[str, Any]:
        """Start an upload, put every file at its key, run the ingest; the batch status."""
        files = self.files if files is None else files
        batch = self.start_upload(files)
        for f, data in zip(batch["files"], files, strict=True):
            self.s3.put_object(Bucket=self.aws.bucket, Key=f["key"], Body=data)
        out = self.ingest([(f["key"], len(d)) for f, d in zip(batch["files"], files, strict=True)])
        assert out == {"batchItemFailures": []}, out
        status, state = self.api("upload_status")
        assert status == 200, state
        return state

    # ------------------------------------------------------------------ what is stored
    def index_items(self) -> int:
        return self.db.scan(TableName=self.aws.tables["ImagingTable"], Select="COUNT")["Count"]

    def study_items(self, study_uid: str) -> list[dict[str, Any]]:
        return self.db.query(TableName=self.aws.tables["ImagingTable"],
                             KeyConditionExpression="pk = :p",
                             ExpressionAttributeValues={":p": {"S": f"STUDY#{study_uid}"}},
                             )["Items"]  # fmt: skip

    def status_of(self, key: str) -> dict[str, Any]:
        item = self.db.get_item(TableName=self.aws.tables["ImagingTable"],
                                Key={"pk": {"S": f"OBJ#{key}"}, "sk": {"S": "OBJ"}})  # fmt: skip
        return item.get("Item", {})

    def original(self, key: str) -> bytes:
        return self.s3.get_object(Bucket=self.aws.bucket, Key=key)["Body"].read()


def _header(out: dict[str, Any], name: str) -> str:
    headers = {k.lower(): v for k, v in (out.get("headers") or {}).items()}
    multi = {k.lower(): v for k, v in (out.get("multiValueHeaders") or {}).items()}
    return str(headers.get(name) or (multi.get(name) or [""])[0])


RADIOLOGIST = {"sub": "doc-huangtao", "role": "doctor", "institution_id": "county-hospital",
               "name": "黄涛"}  # fmt: skip


def _resident(person_id: str) -> dict[str, str]:
    return {"sub": f"res-{person_id}", "role": "resident", "institution_id": "",
            "person_id": person_id, "name": "居民"}  # fmt: skip


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

            clients = {s: boto3.client(s) for s in ("dynamodb", "s3", "sqs", "kms")}
            tables = create_tables(clients["dynamodb"])
            county = county_params()["CountyCode"]
            buckets = {
                logical: f"yilian-{county}-{name}-123456789012-{REGION}"
                for logical, name in (("ImagingBucket", "imaging"), ("RecordsBucket", "records"))
            }
            for bucket in buckets.values():
                clients["s3"].create_bucket(
                    Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": REGION}
                )
            sqs = clients["sqs"]
            dlq = sqs.create_queue(QueueName=f"yilian-{county}-imaging-ingest-dlq")["QueueUrl"]
            dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])
            queue = sqs.create_queue(QueueName=f"yilian-{county}-imaging-ingest", Attributes={
                "VisibilityTimeout": "360",
                "RedrivePolicy": json.dumps({"deadLetterTargetArn":
                                             dlq_arn["Attributes"]["QueueArn"],
                                             "maxReceiveCount": 5}),
            })["QueueUrl"]  # fmt: skip
            key = clients["kms"].create_key(Description="data key")["KeyMetadata"]["Arn"]
            refs = {**tables, **buckets, "DataKey.Arn": key, "ImagingIngestQueue": queue,
                    "ImagingDeadLetterQueue": dlq}  # fmt: skip
            seed_demo_directory(tables["DirectoryTable"])
            yield Aws(clients, tables, refs)


@pytest.fixture
def stack(aws: Aws) -> Stack:
    return Stack(aws)


# ------------------------------------------------------------------------------- upload, ingest


def test_the_upload_sample_hands_out_presigned_urls_into_qiaotous_prefix(stack):
    status, batch = stack.api("start_upload")
    assert status == 201, batch
    assert [f["name"] for f in batch["files"]] == ["CT0001.dcm", "CT0002.dcm"]
    for f in batch["files"]:
        assert f["key"].startswith(f"dicom/{CONSORTIUM}/qiaotou/{batch['batch_id']}/")
        assert f["post"]["fields"]["key"] == f["key"] and f["put_url"].startswith("https://")
    stack.batch_id = batch["batch_id"]
    status, state = stack.api("upload_status")
    assert status == 200, state
    assert state["counts"] == {"pending": 2}


def test_the_ingest_sample_indexes_links_and_makes_a_thumbnail(stack):
    state = stack.upload()
    assert state["counts"] == {"indexed": 3}, state
    status, view = stack.api("study")
    assert status == 200, view
    assert (view["person_id"], view["link_status"], view["instance_count"]) == (
        stack.person_id, "linked", 3,
    )  # fmt: skip
    [series] = view["series"]
    assert (series["series_uid"], series["thumbnail"]) == (stack.series_uid, "ready")
    thumb = f"derived/{stack.study_uid}/{stack.series_uid}/thumbnail.jpg"
    assert stack.original(thumb)[:3] == b"\xff\xd8\xff"
    # the same event again (SQS delivers at least once): one instance still
    items = len(stack.study_items(stack.study_uid))
    keys = [(f["key"], 1) for f in state["files"]]
    assert stack.ingest(keys) == {"batchItemFailures": []}
    assert len(stack.study_items(stack.study_uid)) == items
    # the resident sees it with the my_imaging sample
    status, mine = stack.api("my_imaging", who=_resident(stack.person_id))
    assert [s["study_uid"] for s in mine["studies"]] == [stack.study_uid]


def test_the_s3_test_event_is_acknowledged_and_stores_nothing(stack):
    before = stack.index_items()
    out = stack.invoke("imaging_ingest", stack.event("imaging_ingest", "s3_test_event"))
    assert out == {"batchItemFailures": []}
    assert stack.index_items() == before


@pytest.mark.parametrize(
    ("make", "code"),
    [(lambda: F.not_dicom(), "NOT_DICOM"), (lambda: F.missing_uids("study"), "MISSING_UID"),
     (lambda: F.truncated(F.ct_instance(rows=64, cols=64)), "TRUNCATED"),
     (lambda: F.unknown_transfer_syntax(), "UNKNOWN_TRANSFER_SYNTAX"),
     (lambda: F.pixel_size_mismatch(), "PIXEL_SIZE_MISMATCH")],
    ids=["not_dicom", "missing_uid", "truncated", "unknown_syntax", "pixel_size"],
)  # fmt: skip
def test_a_bad_file_is_rejected_not_retried_and_kept(stack, make, code):
    data = make()
    batch = stack.start_upload([data])
    key = batch["files"][0]["key"]
    stack.s3.put_object(Bucket=stack.aws.bucket, Key=key, Body=data)
    before = stack.index_items()
    assert stack.ingest([(key, len(data))]) == {"batchItemFailures": []}
    status = stack.status_of(key)
    assert (status["status"]["S"], status["code"]["S"]) == ("rejected", code)
    assert stack.index_items() == before + 1  # its status only: no study, series, instance
    assert "study_uid" not in status
    assert stack.original(key) == data


def test_a_missing_object_fails_its_message_only_and_keeps_the_reason(stack):
    batch = stack.start_upload(stack.files[:2])
    present, missing = (f["key"] for f in batch["files"])
    stack.s3.put_object(Bucket=stack.aws.bucket, Key=present, Body=stack.files[0])
    event = stack.ingest_event([(present, len(stack.files[0])), (missing, 1000)])
    out = stack.invoke("imaging_ingest", event)
    # Then only the missing object's message is retried; the other is indexed
    assert out == {"batchItemFailures": [{"itemIdentifier": event["Records"][1]["messageId"]}]}
    assert stack.status_of(present)["status"]["S"] == "indexed"
    failed = stack.status_of(missing)
    assert (failed["status"]["S"], failed["code"]["S"]) == ("failed", "NoSuchKey")
    # and the dead-letter screen names it with its reason once it is there
    body = json.loads(event["Records"][1]["body"])
    stack.aws.sqs.send_message(QueueUrl=stack.aws.refs["ImagingDeadLetterQueue"],
                               MessageBody=json.dumps(body))  # fmt: skip
    status, letters = stack.api("dead_letters")
    assert status == 200, letters
    mine = [m for m in letters["messages"] if m["key"] == missing]
    assert [(m["status"], m["code"]) for m in mine] == [("failed", "NoSuchKey")]


# ------------------------------------------------------------------------------- API samples


def test_the_report_sample_files_a_final_report_into_the_record(stack):
    stack.upload()
    status, report = stack.api("report")
    assert status == 200, report
    assert (report["status"], report["signed_by_name"], report["version"]) == ("final", "黄涛", 1)
    assert report["record"]["doc_id"]
    status, listed = stack.api("institution_studies")
    assert status == 200, listed
    [head] = [s for s in listed["studies"] if s["study_uid"] == stack.study_uid]
    assert head["report_status"] == "final"


def test_the_reconciliation_and_link_samples_link_a_study_that_matched_nobody(stack):
    stranger = F.ct_series(1, rows=64, cols=64, patient_id=f"X{stack.local}",
                           patient_name="孙无名", sex="F", birth_date="19300101")  # fmt: skip
    state = stack.upload(stranger)
    assert state["counts"] == {"indexed": 1}, state
    stack.study_uid = state["files"][0]["study_uid"]
    status, queue = stack.api("reconciliation")
    assert status == 200, queue
    [held] = [s for s in queue["studies"] if s["study_uid"] == stack.study_uid]
    assert (held["link_status"], held["link_reason"]) == ("unlinked", "NO_MATCH")
    status, mine = stack.api("my_imaging", who=_resident(stack.person_id))
    assert mine["studies"] == []
    status, linked = stack.api("link")
    assert status == 200, linked
    assert (linked["person_id"], linked["link_status"]) == (stack.person_id, "linked")
    status, again = stack.api("link")
    assert (status, again["error"]["code"]) == (409, "ALREADY_LINKED")


def test_the_share_and_film_samples_open_cloud_film_without_sign_in(stack):
    stack.upload()
    status, link = stack.api("create_share")
    assert status == 201, link
    assert link["has_code"] is True and link["label"] == "给县医院复诊用"
    stack.token = link["token"]
    status, film = stack.api("film")
    assert status == 200, film
    assert film["study"]["patient"]["name"].startswith(stack.name[0])
    assert [s["series_uid"] for s in film["series"]] == [stack.series_uid]
    status, err = stack.api("film", query={"code": "0000"})
    assert (status, err["error"]["code"]) == (403, "ACCESS_CODE_WRONG")
    # another person's resident may not share it
    status, err = stack.api("create_share", who=_resident(SAMPLE_PERSON))
    assert status in (403, 404), err


def test_the_film_sample_never_shows_the_patients_full_name(stack):
    stack.upload()
    status, link = stack.api("create_share")
    assert status == 201, link
    stack.token = link["token"]
    status, film = stack.api("film")
    assert status == 200, film
    assert stack.name not in json.dumps(film, ensure_ascii=False)


def test_the_dicomweb_samples_search_and_retrieve(stack):
    stack.upload()
    status, studies, out = stack.call("imaging", "qido_studies")
    assert status == 200 and _header(out, "content-type").startswith("application/dicom+json")
    assert [s["0020000D"]["Value"] for s in studies] == [[stack.study_uid]]
    status, metadata = stack.api("series_metadata")
    assert status == 200 and len(metadata) == 3
    assert {m["00280010"]["Value"][0] for m in metadata} == {64}
    status, body, out = stack.call("imaging", "wado_instance")
    assert status == 200, body
    ctype = _header(out, "content-type")
    assert ctype.startswith("multipart/related") and 'type="application/dicom"' in ctype
    raw = body if isinstance(body, bytes) else body.encode("latin-1")
    assert stack.files[0] in raw


# ------------------------------------------------------------------------------- render samples


def test_the_preview_and_frame_samples_render_jpeg(stack):
    stack.upload()
    status, lung, out = stack.render("preview")
    assert status == 200 and _header(out, "content-type") == "image/jpeg"
    assert lung[:3] == b"\xff\xd8\xff"
    status, bone, _ = stack.render("preview", query={"window": "bone"})
    assert status == 200 and bone[:3] == b"\xff\xd8\xff" and bone != lung
    status, frame, _ = stack.render("frame_rendered")
    assert status == 200 and frame[:3] == b"\xff\xd8\xff"
    status, err, _ = stack.render(
        "frame_rendered",
        path=stack.event("imaging_render", "frame_rendered")["path"].replace(
            "/frames/1/", "/frames/9/"
        ),
    )
    assert (status, err["error"]["code"]) == (400, "FRAME_OUT_OF_RANGE")


def test_the_film_preview_sample_needs_the_links_code(stack):
    stack.upload()
    status, link = stack.api("create_share")
    assert status == 201, link
    stack.token = link["token"]
    status, jpeg, _ = stack.render("film_preview")
    assert status == 200 and jpeg[:3] == b"\xff\xd8\xff"
    status, err, _ = stack.render("film_preview", query={"window": "lung"})
    assert (status, err["error"]["code"]) == (403, "ACCESS_CODE_REQUIRED")


def test_the_export_sample_writes_a_deidentified_zip_and_leaves_the_originals(stack):
    state = stack.upload()
    keys = [f["key"] for f in state["files"]]
    status, export, _ = stack.render("export")
    assert status == 201, export
    assert (export["purpose"], export["instances"]) == ("teaching", 3)
    zkey = f"exports/{export['export_id']}/{export['subject_code']}.zip"
    archive = zipfile.ZipFile(io.BytesIO(stack.original(zkey)))
    sops = set()
    for member in archive.namelist():
        raw = archive.read(member)
        assert stack.local.encode() not in raw and stack.name.encode() not in raw
        ds = pydicom.dcmread(io.BytesIO(raw))
        assert str(ds.StudyInstanceUID) != stack.study_uid
        sops.add(str(ds.SOPInstanceUID))
    assert len(sops) == 3 and stack.sop_uid not in sops
    assert [stack.original(k) for k in keys] == stack.files
    status, err, _ = stack.render("export", body={"purpose": "fun"})
    assert (status, err["error"]["code"]) == (400, "PURPOSE_REQUIRED")
