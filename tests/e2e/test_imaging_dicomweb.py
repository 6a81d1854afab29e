"""DICOMweb over HTTP, the subset a viewer (e.g. OHIF) needs to list and open a study: QIDO-RS
studies / series / instances with PatientID (a person id), StudyDate ranges and
ModalitiesInStudy, WADO-RS metadata, instances (multipart/related application/dicom, or a 303
to a presigned URL when large) and rendered frames; residents search only their own."""

from __future__ import annotations

import io
import uuid
from typing import Any

import pydicom
import pytest
import requests

from tests.e2e.test_imaging import (
    JPEG,
    NAMES,
    Imaging,
    _birth,
    ct_study,
    patient_kw,
    uids,
)
from tests.support import dicom_factory as F

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def img(api) -> Imaging:
    return Imaging(api)


@pytest.fixture(scope="module")
def ct(img) -> dict[str, Any]:
    return ct_study(img)


def _value(attrs: dict[str, Any], tag: str) -> Any:
    return (attrs.get(tag) or {}).get("Value", [None])[0]


def test_qido_finds_the_study_its_series_instances_and_metadata(img, ct):
    dates = "20261101-20261130"  # the factory's study date is 2026-11-20
    q = f"/dicomweb/studies?PatientID={ct['person_id']}&ModalitiesInStudy=CT&StudyDate={dates}"
    r = img.call("GET", q, img.qiaotou)
    assert r.headers["content-type"].startswith("application/dicom+json")
    found = [s for s in r.json() if _value(s, "0020000D") == ct["study_uid"]]
    assert found and _value(found[0], "00201208") == 6
    none = img.get(f"/dicomweb/studies?PatientID={ct['person_id']}&ModalitiesInStudy=MR",
                   img.qiaotou)  # fmt: skip
    assert ct["study_uid"] not in {_value(s, "0020000D") for s in none}
    base = f"/dicomweb/studies/{ct['study_uid']}/series"
    series = img.get(base, img.qiaotou)
    assert [_value(s, "0020000E") for s in series] == [ct["series_uid"]]
    assert _value(series[0], "00080060") == "CT"
    instances = img.get(f"{base}/{ct['series_uid']}/instances", img.qiaotou)
    assert {_value(i, "00080018") for i in instances} == {uids(f)[2] for f in ct["files"]}
    metadata = img.get(f"{base}/{ct['series_uid']}/metadata", img.qiaotou)
    assert len(metadata) == 6 and all(_value(m, "00280010") == 128 for m in metadata)


def test_wado_retrieves_the_instance_and_a_rendered_frame(img, ct):
    study_uid, series_uid = ct["study_uid"], ct["series_uid"]
    data = ct["files"][1]
    sop = uids(data)[2]
    path = f"/dicomweb/studies/{study_uid}/series/{series_uid}/instances/{sop}"
    r = img.call("GET", path, img.qiaotou,
                 headers={"Accept": 'multipart/related; type="application/dicom"'})  # fmt: skip
    ctype = r.headers["content-type"]
    assert ctype.startswith("multipart/related") and 'type="application/dicom"' in ctype
    boundary = ctype.split("boundary=")[1].strip('"').encode()
    parts = [p for p in r.content.split(b"--" + boundary) if p.strip(b"-\r\n")]
    assert len(parts) == 1
    head, body = parts[0].split(b"\r\n\r\n", 1)
    assert b"application/dicom" in head
    part = body[:-2] if body.endswith(b"\r\n") else body
    assert part == data
    assert str(pydicom.dcmread(io.BytesIO(part)).SOPInstanceUID) == sop
    frame = img.call("GET", f"{path}/frames/1/rendered", img.qiaotou, headers=JPEG)
    assert frame.headers["content-type"].startswith("image/jpeg")
    assert frame.content[:3] == b"\xff\xd8\xff"


def test_wado_sends_a_large_instance_by_a_presigned_url(img):
    local, name, birth = f"BIG{uuid.uuid4().hex[:8].upper()}", next(NAMES), _birth()
    img.register(local, name, birth)
    data = F.ct_instance(rows=1500, cols=1500, **patient_kw(local, name, birth))
    assert 4 * 1024 * 1024 < len(data) < 8 * 1024 * 1024
    study_uid, series_uid, sop = uids(data)
    assert img.upload(img.qiaotou, [data])["counts"] == {"indexed": 1}
    path = f"/dicomweb/studies/{study_uid}/series/{series_uid}/instances/{sop}"
    accept = {"Accept": 'multipart/related; type="application/dicom"'}
    r = img.call("GET", path, img.qiaotou, 303, headers=accept, allow_redirects=False)
    got = requests.get(r.headers["Location"], timeout=30)
    assert got.status_code == 200 and got.content == data


def test_a_resident_searches_their_own_studies_by_dicomweb_only(img, ct):
    resident = img.resident(ct["person_id"])
    own = img.get(f"/dicomweb/studies?PatientID={ct['person_id']}", resident)
    assert ct["study_uid"] in {_value(s, "0020000D") for s in own}
    other = img.register(f"DW{uuid.uuid4().hex[:8].upper()}", next(NAMES), _birth())
    r = img.api.call("GET", f"/dicomweb/studies?PatientID={ct['person_id']}",
                     img.resident(other))  # fmt: skip
    assert r.status_code == 403, r.text


def test_a_bad_study_date_is_a_clear_400(img, ct):
    r = img.api.call("GET", f"/dicomweb/studies?PatientID={ct['person_id']}&StudyDate=yesterday",
                     img.qiaotou)  # fmt: skip
    assert r.status_code == 400, (r.status_code, r.text[:300])


@pytest.mark.parametrize("query", ["limit=ten", "offset=x"])
def test_a_non_numeric_limit_or_offset_is_a_clear_400(img, ct, query):
    r = img.api.call("GET", f"/dicomweb/studies?PatientID={ct['person_id']}&{query}", img.qiaotou)
    assert r.status_code == 400, (r.status_code, r.text[:300])
