"""Health-record bundles over the API's 6 MB: refused with 413 saying how, then sent through a
presigned S3 upload and submitted by functions/records_ingest with the same checks."""

from __future__ import annotations

import base64
import json
import time
from datetime import datetime
from typing import Any

import pytest
import requests

from yilian.domain.clock import CHINA_TZ
from yilian.domain.principal import Role
from yilian_local import sample_records

INSTITUTIONS = [
    {"institution_id": "up-county", "name": "上传测试县医院", "type": "general_hospital"},
    {"institution_id": "up-town", "name": "上传测试镇卫生院", "type": "township_health_centre",
     "parent_id": "up-county"},
]  # fmt: skip


@pytest.fixture(scope="module")
def clinic(api: Any) -> dict[str, Any]:
    admin = api.token(Role.CONSORTIUM_ADMIN, "up-admin", institution_id="up-county")
    for inst in INSTITUTIONS:
        assert api.call("POST", "/institutions", admin, json=inst).status_code in (201, 409)
    doctor = api.token(Role.DOCTOR, "up-dr", institution_id="up-town", name="上传王")
    other = api.token(Role.DOCTOR, "up-dr2", institution_id="up-county", name="县医赵")
    body = {"name": "赵上传", "sex": "female", "birth_date": "1961-05-06", "address": "上传村1号"}
    r = api.call("POST", "/persons", doctor, json=body)
    assert r.status_code in (200, 201), r.text
    return {"doctor": doctor, "other": other, "person_id": r.json()["person"]["person_id"]}


def _large_stay(person_id: str, seed: int, megabytes: int = 7) -> bytes:
    """An inpatient stay whose discharge summary carries a scanned attachment."""
    when = datetime(2026, 9, 1, 9, 0, tzinfo=CHINA_TZ)
    bundle = sample_records.inpatient_stay(person_id, "up-town", seed=seed, admitted=when)
    for entry in bundle["entry"]:
        if entry["resource"]["resourceType"] == "DocumentReference":
            scan = base64.b64encode(b"%PDF" * (megabytes * 1024 * 256)).decode()
            entry["resource"]["content"][0]["attachment"]["data"] = scan
    return json.dumps(bundle).encode()


def _timeline(api: Any, clinic: dict[str, Any]) -> list[dict[str, Any]]:
    resident = api.token(Role.RESIDENT, "up-res", person_id=clinic["person_id"])
    r = api.call("GET", f"/records/persons/{clinic['person_id']}/timeline", resident)
    assert r.status_code == 200, r.text
    return r.json()["items"]


def _upload(api: Any, token: str, raw: bytes) -> dict[str, Any]:
    r = api.call("POST", "/records/uploads", token)
    assert r.status_code == 201, r.text
    upload = r.json()
    assert requests.put(upload["url"], data=raw, headers=upload["headers"], timeout=60).ok
    for _ in range(50):  # the embedded stack delivers S3 events synchronously; AWS does not
        status = api.call("GET", f"/records/uploads/{upload['upload_id']}", token).json()
        if status["state"] in ("done", "failed"):
            return status
        time.sleep(0.1)
    raise AssertionError(f"upload never finished: {status}")


def test_an_oversized_bundle_is_refused_saying_how_and_stores_nothing(api, clinic):
    # Given a 7 MB bundle
    raw = _large_stay(clinic["person_id"], seed=1)
    before = _timeline(api, clinic)
    # When it is posted to the API
    r = api.call("POST", "/records/documents", clinic["doctor"], data=raw,
                 headers={"Content-Type": "application/json"})  # fmt: skip
    # Then 413 names the upload route, and nothing was stored
    assert r.status_code == 413
    assert r.json()["error"]["code"] == "PAYLOAD_TOO_LARGE"
    assert "/records/uploads" in r.json()["error"]["message"]
    assert _timeline(api, clinic) == before


def test_a_large_bundle_sent_through_s3_is_submitted_and_readable(api, clinic):
    # Given a 7 MB bundle uploaded through the presigned URL
    status = _upload(api, clinic["doctor"], _large_stay(clinic["person_id"], seed=2))
    # Then it was submitted as the doctor, and reads back without the scan inline
    assert status["state"] == "done", status
    doc_id = status["outcome"]["result"]["doc_id"]
    assert doc_id in {i["doc_id"] for i in _timeline(api, clinic)}
    resident = api.token(Role.RESIDENT, "up-res", person_id=clinic["person_id"])
    r = api.call("GET", f"/records/documents/{doc_id}", resident)
    assert r.status_code == 200 and len(r.content) < 1024 * 1024
    refs = [x for x in r.json()["resources"] if x["resourceType"] == "DocumentReference"]
    assert refs and "data" not in refs[0]["content"][0]["attachment"]
    assert refs[0]["content"][0]["attachment"]["size"] > 6 * 1024 * 1024


def test_a_bad_uploaded_bundle_fails_with_the_api_error_and_stores_nothing(api, clinic):
    # Given an upload whose bundle codes a diagnosis in the wrong system
    when = datetime(2026, 9, 2, 9, 0, tzinfo=CHINA_TZ)
    bundle = sample_records.outpatient_visit(clinic["person_id"], "up-town", seed=9, when=when)
    for entry in bundle["entry"]:
        if entry["resource"]["resourceType"] == "Condition":
            entry["resource"]["code"]["coding"][0]["system"] = "http://snomed.info/sct"
    before = _timeline(api, clinic)
    status = _upload(api, clinic["doctor"], json.dumps(bundle).encode())
    # Then the upload failed with the code the API gives, and nothing was stored
    assert status["state"] == "failed"
    assert status["outcome"]["error"]["code"] == "CODE_SYSTEM_NOT_ACCEPTED"
    assert _timeline(api, clinic) == before


def test_an_upload_is_seen_only_by_its_institution(api, clinic):
    r = api.call("POST", "/records/uploads", clinic["doctor"])
    upload_id = r.json()["upload_id"]
    r = api.call("GET", f"/records/uploads/{upload_id}", clinic["other"])
    assert r.status_code == 403 and r.json()["error"]["code"] == "NOT_YOUR_UPLOAD"
    resident = api.token(Role.RESIDENT, "up-res", person_id=clinic["person_id"])
    assert api.call("POST", "/records/uploads", resident).status_code == 403
