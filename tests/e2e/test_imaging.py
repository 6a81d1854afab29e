"""Regional imaging (区域影像中心, 云胶片) over HTTP, as the township centres, the county
radiologist and residents use it: upload a CT series through presigned POSTs, see it indexed
and linked to the registered person, view thumbnails, previews with window presets and the
original; report it into the person's health record; share it as cloud film; the
reconciliation queue, dead letters and their re-drive, a de-identified export. Every bad input
gets its clear status, nothing is half-indexed and the original stays in the bucket.

The test stack's ImagingPolicy: retries at once (no back-off) and an 8 MB file limit.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import json
import time
import uuid
import zipfile
from concurrent.futures import ThreadPoolExecutor
from datetime import date, timedelta
from typing import Any

import pydicom
import pytest
import requests

from tests.support import dicom_factory as F
from yilian.domain.principal import Role
from yilian_local.demo_county import INSTITUTIONS

pytestmark = pytest.mark.e2e

JPEG = {"Accept": "image/jpeg"}
NAMES = itertools.cycle(["章影", "刘片", "陈像", "杨光", "赵透", "黄扫", "周层", "吴析"])
_born = itertools.count(1)


def _birth() -> str:
    """A birth date no other person of this run has (the stack is fresh each session), so the
    master index never confuses two test people."""
    return (date(1941, 3, 1) + timedelta(days=53 * next(_born))).isoformat()


class Imaging:
    """The demo county's imaging people and shortcuts for their calls."""

    def __init__(self, api: Any) -> None:
        self.api = api
        self.stack = api.stack
        self.consortium = api.consortium
        self.admin = api.token(Role.CONSORTIUM_ADMIN, "img-admin", institution_id="county-hospital",
                               name="影像管理员")  # fmt: skip
        for inst in INSTITUTIONS:
            r = api.call("POST", "/institutions", self.admin, json=inst)
            assert r.status_code in (201, 409), r.text
        self.qiaotou = api.token(Role.DOCTOR, "wangfang", institution_id="qiaotou", name="王芳")
        self.shimen = api.token(Role.DOCTOR, "zhanghong", institution_id="shimen", name="张红")
        self.radiologist = api.token(Role.DOCTOR, "huangtao", institution_id="county-hospital",
                                     name="黄涛")  # fmt: skip
        self.table = self.stack.physical_id("ImagingTable")
        self.bucket = self.stack.physical_id("ImagingBucket")
        self.db = self.stack.client("dynamodb")
        self.s3 = self.stack.client("s3")

    # ------------------------------------------------------------------ people
    def register(self, local: str, name: str, birth: str, sex: str = "male") -> str:
        """A person registered at qiaotou with `local` as its local number (= PatientID)."""
        body = {
            "name": name,
            "sex": sex,
            "birth_date": birth,
            "identifiers": [{"type": "local", "value": local, "assigner": "qiaotou"}],
        }
        r = self.api.call("POST", "/persons", self.qiaotou, json=body)
        assert r.status_code == 201, r.text
        return r.json()["person"]["person_id"]

    def resident(self, person_id: str) -> str:
        return self.api.token(Role.RESIDENT, f"img-res-{person_id}", person_id=person_id,
                              name="居民")  # fmt: skip

    # ------------------------------------------------------------------ calls
    def call(self, method: str, path: str, token: str | None, status: int = 200, **kw) -> Any:
        r = self.api.call(method, path, token, **kw)
        assert r.status_code == status, (path, r.status_code, r.text[:500])
        return r

    def get(self, path: str, token: str, status: int = 200) -> Any:
        return self.call("GET", path, token, status).json()

    def start(self, token: str, files: list[bytes], **extra: Any) -> dict[str, Any]:
        body = {"files": [{"name": f"img{i}.dcm", "size": len(b)} for i, b in enumerate(files)],
                **extra}  # fmt: skip
        return self.call("POST", "/imaging/uploads", token, 201, json=body).json()

    @staticmethod
    def post_file(entry: dict[str, Any], data: bytes) -> None:
        post = entry["post"]
        r = requests.post(post["url"], data=post["fields"], timeout=30,
                          files={"file": ("x.dcm", data, "application/dicom")})  # fmt: skip
        assert r.status_code < 300, (r.status_code, r.text[:300])

    def upload(self, token: str, files: list[bytes]) -> dict[str, Any]:
        """Presigned POSTs of every file; returns the batch once none is pending."""
        batch = self.start(token, files)
        for entry, data in zip(batch["files"], files, strict=True):
            self.post_file(entry, data)
        return self.wait(token, batch["batch_id"])

    def wait(self, token: str, batch_id: str, seconds: float = 60) -> dict[str, Any]:
        deadline = time.monotonic() + seconds
        while True:
            out = self.get(f"/imaging/uploads/{batch_id}", token)
            if not {"pending", "failed"} & set(out["counts"]) or time.monotonic() > deadline:
                return out
            time.sleep(0.3)

    # ------------------------------------------------------------------ what is stored
    def item(self, pk: str, sk: str) -> dict[str, Any] | None:
        got = self.db.get_item(TableName=self.table, Key={"pk": {"S": pk}, "sk": {"S": sk}},
                               ConsistentRead=True)  # fmt: skip
        return got.get("Item")

    def indexed(self, study_uid: str = "", sop_uid: str = "") -> bool:
        """Is anything of this study or SOP instance in the index?"""
        if study_uid:
            got = self.db.query(TableName=self.table, KeyConditionExpression="pk = :p",
                                ExpressionAttributeValues={":p": {"S": f"STUDY#{study_uid}"}},
                                ConsistentRead=True)  # fmt: skip
            if got["Items"]:
                return True
        return bool(sop_uid and self.item(f"SOP#{sop_uid}", "SOP"))

    def object_bytes(self, key: str) -> bytes:
        return self.s3.get_object(Bucket=self.bucket, Key=key)["Body"].read()

    def kept(self, key: str) -> bool:
        return self.s3.head_object(Bucket=self.bucket, Key=key)["ContentLength"] > 0

    def institution_study_uids(self, token: str) -> set[str]:
        return {s["study_uid"] for s in self.get("/imaging/studies", token)["studies"]}


def error(resp: Any) -> str:
    return resp.json()["error"]["code"]


def patient_kw(local: str, name: str, birth: str, sex: str = "M") -> dict[str, Any]:
    return {"patient_id": local, "patient_name": name, "sex": sex,
            "birth_date": birth.replace("-", "")}  # fmt: skip


def uids(data: bytes) -> tuple[str, str, str]:
    ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
    return str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID)


@pytest.fixture(scope="module")
def img(api) -> Imaging:
    return Imaging(api)


def ct_study(img: Imaging) -> dict[str, Any]:
    """A person registered at qiaotou and a 6-slice CT series uploaded there (linked)."""
    local, name, birth = f"IMG{uuid.uuid4().hex[:8].upper()}", next(NAMES), _birth()
    person_id = img.register(local, name, birth)
    files = F.ct_series(6, rows=128, cols=128, **patient_kw(local, name, birth))
    batch = img.upload(img.qiaotou, files)
    study_uid, series_uid, _ = uids(files[0])
    return {"person_id": person_id, "local": local, "name": name, "files": files, "batch": batch,
            "study_uid": study_uid, "series_uid": series_uid}  # fmt: skip


@pytest.fixture(scope="module")
def ct(img) -> dict[str, Any]:
    return ct_study(img)


# ------------------------------------------------------------------ upload, index, link


def test_an_uploaded_series_is_indexed_and_linked_to_the_registered_person(img, ct):
    batch = ct["batch"]
    assert batch["counts"] == {"indexed": 6}, batch
    assert {f["study_uid"] for f in batch["files"]} == {ct["study_uid"]}
    listed = {s["study_uid"]: s for s in img.get("/imaging/studies", img.qiaotou)["studies"]}
    study = listed[ct["study_uid"]]
    assert (study["person_id"], study["link_status"]) == (ct["person_id"], "linked")
    assert (study["modalities"], study["instance_count"], study["series_count"]) == (["CT"], 6, 1)
    mine = img.get("/me/imaging", img.resident(ct["person_id"]))
    assert [s["study_uid"] for s in mine["studies"]] == [ct["study_uid"]]


def test_a_name_in_the_three_group_form_links_by_the_local_number(img):
    local, name, birth = f"PN{uuid.uuid4().hex[:8].upper()}", next(NAMES), _birth()
    person_id = img.register(local, name, birth)
    files = F.ct_series(1, rows=64, cols=64, **patient_kw(local, f"Pinyin^Name={name}", birth))
    batch = img.upload(img.qiaotou, files)
    assert batch["counts"] == {"indexed": 1}, batch
    view = img.get(f"/imaging/studies/{uids(files[0])[0]}", img.qiaotou)
    assert (view["person_id"], view["link_status"]) == (person_id, "linked"), view


def test_the_study_view_has_its_series_a_thumbnail_and_window_presets(img, ct):
    view = img.get(f"/imaging/studies/{ct['study_uid']}", img.qiaotou)
    [series] = view["series"]
    assert (series["series_uid"], series["thumbnail"]) == (ct["series_uid"], "ready")
    assert len(series["instances"]) == 6
    thumb = requests.get(series["thumbnail_url"], timeout=30)
    assert thumb.status_code == 200 and thumb.content[:3] == b"\xff\xd8\xff"
    sop = series["instances"][0]["sop_uid"]
    path = f"/imaging/studies/{ct['study_uid']}/instances/{sop}/preview"
    lung = img.call("GET", path + "?window=lung", img.qiaotou, headers=JPEG)
    bone = img.call("GET", path + "?window=bone", img.qiaotou, headers=JPEG)
    assert lung.headers["content-type"].startswith("image/jpeg")
    assert lung.content[:3] == bone.content[:3] == b"\xff\xd8\xff"
    assert lung.content != bone.content


def test_the_original_is_the_exact_uploaded_file(img, ct):
    view = img.get(f"/imaging/studies/{ct['study_uid']}", img.qiaotou)
    by_sop = {uids(f)[2]: f for f in ct["files"]}
    sop = view["series"][0]["instances"][2]["sop_uid"]
    out = img.get(f"/imaging/studies/{ct['study_uid']}/instances/{sop}/original", img.qiaotou)
    got = requests.get(out["url"], timeout=30)
    assert got.status_code == 200 and got.content == by_sop[sop]


def test_the_same_file_twice_is_one_instance(img, ct):
    batch = img.upload(img.qiaotou, [ct["files"][0]])
    [f] = batch["files"]
    assert (f["status"], f["study_uid"]) == ("duplicate", ct["study_uid"]), f
    view = img.get(f"/imaging/studies/{ct['study_uid']}", img.qiaotou)
    assert view["instance_count"] == 6
    assert sum(len(s["instances"]) for s in view["series"]) == 6
    assert img.kept(f["key"])


def _kinds(common: dict[str, Any]) -> dict[str, bytes]:
    """One instance of each kind the issue names, as series of one study."""
    makers = {
        "ct": lambda kw: F.ct_instance(rows=64, cols=64, **kw),
        "mr": lambda kw: F.mr_instance(rows=64, cols=64, **kw),
        "dx": lambda kw: F.dx_instance(rows=96, cols=80, **kw),
        "us_rgb": lambda kw: F.us_rgb_instance(rows=48, cols=64, **kw),
        "multiframe": lambda kw: F.multiframe_instance(frames=3, rows=64, cols=64, **kw),
        "rle": lambda kw: F.rle_instance("ct", rows=64, cols=64, **kw),
        "j2k": lambda kw: F.j2k_instance("mr", rows=64, cols=64, **kw),
        "jpeg_lossless": lambda kw: F.jpeg_lossless_instance(rows=64, cols=64, **kw),
    }
    return {kind: make({**common, "series_uid": F.uid(), "series_number": n})
            for n, (kind, make) in enumerate(makers.items(), start=1)}  # fmt: skip


def test_every_kind_of_image_gets_a_thumbnail_or_a_clear_reason(img):
    local, name, birth = f"KND{uuid.uuid4().hex[:8].upper()}", next(NAMES), _birth()
    img.register(local, name, birth)
    study_uid = F.uid()
    files = _kinds({"study_uid": study_uid, **patient_kw(local, name, birth)})
    batch = img.upload(img.qiaotou, list(files.values()))
    assert batch["counts"] == {"indexed": len(files)}, batch
    view = img.get(f"/imaging/studies/{study_uid}", img.qiaotou)
    by_number = {s["number"]: s for s in view["series"]}
    assert len(by_number) == len(files)
    for n, kind in enumerate(files, start=1):
        series = by_number[n]
        if kind == "jpeg_lossless":  # nothing shipped decodes it: indexed, no thumbnail, why
            assert series["thumbnail"] == "no_decoder" and series["thumbnail_reason"], series
            continue
        assert series["thumbnail"] == "ready", (kind, series)
        thumb = requests.get(series["thumbnail_url"], timeout=30)
        assert thumb.content[:3] == b"\xff\xd8\xff", kind
    # the cine's third frame previews; a frame past its end is a clear 400
    cine = by_number[list(files).index("multiframe") + 1]["instances"][0]
    assert cine["frames"] == 3
    path = f"/imaging/studies/{study_uid}/instances/{cine['sop_uid']}/preview"
    third = img.call("GET", path + "?frame=2", img.qiaotou, headers=JPEG)
    assert third.content[:3] == b"\xff\xd8\xff"
    r = img.api.call("GET", path + "?frame=3", img.qiaotou, headers=JPEG)
    assert (r.status_code, error(r)) == (400, "FRAME_OUT_OF_RANGE")
    # the undecodable instance's preview says why instead of failing
    odd = by_number[list(files).index("jpeg_lossless") + 1]["instances"][0]
    r = img.api.call("GET", f"/imaging/studies/{study_uid}/instances/{odd['sop_uid']}/preview",
                     img.qiaotou, headers=JPEG)  # fmt: skip
    assert 400 <= r.status_code < 500, (r.status_code, r.text[:300])


def test_a_series_uploaded_in_parallel_is_counted_once_per_instance(img):
    local, name, birth = f"PAR{uuid.uuid4().hex[:8].upper()}", next(NAMES), _birth()
    person_id = img.register(local, name, birth)
    files = F.ct_series(12, rows=64, cols=64, **patient_kw(local, name, birth))
    twice = files + files[:4]  # four of them sent twice, at the same time
    batch = img.start(img.qiaotou, twice)
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(img.post_file, batch["files"], twice))
    state = img.wait(img.qiaotou, batch["batch_id"])
    assert state["counts"] == {"indexed": 12, "duplicate": 4}, state["counts"]
    view = img.get(f"/imaging/studies/{uids(files[0])[0]}", img.qiaotou)
    assert (view["person_id"], view["series_count"], view["instance_count"]) == (person_id, 1, 12)
    [series] = view["series"]
    assert (series["instance_count"], len(series["instances"])) == (12, 12)
    assert series["thumbnail"] == "ready"


def test_a_file_sent_with_the_presigned_put_is_indexed(img):
    data = _ct(study_uid=F.uid())
    batch = img.start(img.qiaotou, [data])
    r = requests.put(batch["files"][0]["put_url"], data=data, timeout=30,
                     headers={"Content-Type": "application/dicom"})  # fmt: skip
    assert r.status_code == 200, r.text[:300]
    [f] = img.wait(img.qiaotou, batch["batch_id"])["files"]
    assert (f["status"], f["study_uid"]) == ("indexed", uids(data)[0]), f


def test_the_same_file_twice_in_one_batch_is_one_instance(img):
    data = _ct(study_uid=F.uid())
    batch = img.upload(img.qiaotou, [data, data])
    assert batch["counts"] == {"indexed": 1, "duplicate": 1}, batch
    view = img.get(f"/imaging/studies/{uids(data)[0]}", img.qiaotou)
    assert view["instance_count"] == 1


def test_other_townships_doctors_neither_see_nor_report_anothers_study(img, ct):
    r = img.api.call("GET", f"/imaging/studies/{ct['study_uid']}", img.shimen)
    assert r.status_code == 403, r.text
    r = img.api.call("POST", f"/imaging/studies/{ct['study_uid']}/report", img.shimen,
                     json={"findings": "x", "impression": "y"})  # fmt: skip
    assert r.status_code == 403, r.text
    assert ct["study_uid"] not in img.institution_study_uids(img.shimen)


# ------------------------------------------------------------------ bad inputs


def _ct(**kw: Any) -> bytes:
    return F.ct_instance(rows=64, cols=64, **kw)


BAD = {
    "not_dicom": (lambda: F.not_dicom(), "NOT_DICOM"),
    "not_dicom_text": (lambda: F.not_dicom("text"), "NOT_DICOM"),
    "missing_uid": (lambda: F.missing_uids("sop", study_uid=F.uid()), "MISSING_UID"),
    "truncated": (lambda: F.truncated(_ct(study_uid=F.uid())), "TRUNCATED"),
    "unknown_transfer_syntax": (
        lambda: F.unknown_transfer_syntax(study_uid=F.uid()), "UNKNOWN_TRANSFER_SYNTAX"),
    "pixel_size_mismatch": (
        lambda: F.pixel_size_mismatch(study_uid=F.uid()), "PIXEL_SIZE_MISMATCH"),
}  # fmt: skip


def _study_and_sop(data: bytes) -> tuple[str, str]:
    """The UIDs a bad file claims, where it has any (a file cut short keeps its header)."""
    try:
        ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True, force=True)
    except Exception:  # noqa: BLE001 - not DICOM at all: it claims nothing
        return "", ""
    return str(ds.get("StudyInstanceUID", "")), str(ds.get("SOPInstanceUID", ""))


@pytest.mark.parametrize("case", list(BAD))
def test_a_bad_file_is_rejected_with_its_reason_nothing_indexed_and_the_original_kept(img, case):
    make, code = BAD[case]
    data = make()
    study_uid, sop_uid = _study_and_sop(data)
    assert bool(study_uid) is not case.startswith("not_dicom")  # what a half-index would use
    batch = img.upload(img.qiaotou, [data])
    [f] = batch["files"]
    assert (f["status"], f["code"]) == ("rejected", code), f
    assert f["message"] and not f["study_uid"]
    assert not img.indexed(study_uid, sop_uid)
    if study_uid:
        assert study_uid not in img.institution_study_uids(img.qiaotou)
    assert img.object_bytes(f["key"]) == data


def test_a_file_over_the_limit_gets_no_upload_url_and_nothing_is_stored(img):
    r = img.api.call(
        "POST",
        "/imaging/uploads",
        img.qiaotou,
        json={"files": [{"name": "big.dcm", "size": 8 * 1024 * 1024 + 1}]},
    )
    assert (r.status_code, error(r)) == (400, "FILE_TOO_LARGE"), r.text
    assert "post" not in r.text


def test_an_enormous_file_from_a_gateway_is_refused_and_kept(img):
    key = f"dicom/{img.consortium}/qiaotou/gateway/big-{uuid.uuid4().hex[:8]}.dcm"
    data = _ct(study_uid=F.uid())
    study_uid, sop_uid = _study_and_sop(data)
    blob = data + b"\x00" * (9 * 1024 * 1024 - len(data))  # a real header, 9 MB in all
    img.s3.put_object(Bucket=img.bucket, Key=key, Body=blob)
    status = _object_status(img, key)
    assert (status["status"]["S"], status["code"]["S"]) == ("rejected", "TOO_LARGE"), status
    assert not img.indexed(study_uid, sop_uid)
    assert img.s3.head_object(Bucket=img.bucket, Key=key)["ContentLength"] == len(blob)


def test_a_file_from_an_institutions_gateway_is_indexed(img):
    data = _ct(study_uid=F.uid())
    study_uid, sop_uid = _study_and_sop(data)
    key = f"dicom/{img.consortium}/qiaotou/gateway/{sop_uid}.dcm"
    img.s3.put_object(Bucket=img.bucket, Key=key, Body=data)
    status = _object_status(img, key)
    assert (status["status"]["S"], status["study_uid"]["S"]) == ("indexed", study_uid), status
    assert study_uid in img.institution_study_uids(img.qiaotou)


def _object_status(img: Imaging, key: str, seconds: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + seconds
    while True:
        item = img.item(f"OBJ#{key}", "OBJ")
        if item and item["status"]["S"] not in ("failed",) or time.monotonic() > deadline:
            assert item, f"no status for {key}"
            return item
        time.sleep(0.3)


def test_a_file_under_another_institutions_prefix_is_refused_and_kept(img):
    batch = img.start(img.qiaotou, [b"x"])
    data = _ct(study_uid=F.uid())
    study_uid, sop_uid = _study_and_sop(data)
    own = batch["files"][0]["key"]
    key = own.replace(f"/{img.consortium}/qiaotou/", f"/{img.consortium}/shimen/")
    assert key != own
    img.s3.put_object(Bucket=img.bucket, Key=key, Body=data)
    status = _object_status(img, key)
    assert (status["status"]["S"], status["code"]["S"]) == ("rejected", "WRONG_PREFIX"), status
    assert not img.indexed(study_uid, sop_uid)
    assert img.object_bytes(key) == data


def _post(entry: dict[str, Any], data: bytes, key: str | None = None) -> requests.Response:
    post = entry["post"]
    fields = {**post["fields"], **({"key": key} if key else {})}
    return requests.post(post["url"], data=fields, timeout=60,
                         files={"file": ("x.dcm", data, "application/dicom")})  # fmt: skip


def test_a_file_bigger_than_its_declared_size_is_refused_or_rejected_and_never_indexed(img):
    data = _ct(study_uid=F.uid())
    study_uid, sop_uid = _study_and_sop(data)
    blob = data + b"\x00" * (9 * 1024 * 1024 - len(data))
    batch = img.start(img.qiaotou, [data])  # declares the small size, sends 9 MB
    r = _post(batch["files"][0], blob)
    if r.status_code < 300:  # the form's content-length-range was not enforced: the ingest is
        f = img.wait(img.qiaotou, batch["batch_id"])["files"][0]
        assert (f["status"], f["code"]) == ("rejected", "TOO_LARGE"), f
        assert img.s3.head_object(Bucket=img.bucket, Key=f["key"])["ContentLength"] == len(blob)
    assert not img.indexed(study_uid, sop_uid)


def test_a_presigned_form_used_for_another_institutions_key_indexes_nothing(img):
    data = _ct(study_uid=F.uid())
    study_uid, sop_uid = _study_and_sop(data)
    batch = img.start(img.qiaotou, [data])
    key = batch["files"][0]["key"].replace("/qiaotou/", "/shimen/")
    r = _post(batch["files"][0], data, key=key)
    if r.status_code < 300:  # the form's key condition was not enforced: the ingest is
        status = _object_status(img, key)
        assert (status["status"]["S"], status["code"]["S"]) == ("rejected", "WRONG_PREFIX")
        assert img.object_bytes(key) == data
    assert not img.indexed(study_uid, sop_uid)


def test_another_institution_neither_reads_a_batch_nor_links_a_held_study(img):
    files = F.ct_series(1, rows=64, cols=64, **patient_kw("HLD" + uuid.uuid4().hex[:6], "郑待配",
                                                          _birth()))  # fmt: skip
    batch = img.upload(img.qiaotou, files)
    r = img.api.call("GET", f"/imaging/uploads/{batch['batch_id']}", img.shimen)
    assert (r.status_code, error(r)) == (403, "INSTITUTION_MISMATCH"), r.text
    person_id = img.register("HLP" + uuid.uuid4().hex[:6], next(NAMES), _birth())
    study_uid = uids(files[0])[0]
    r = img.api.call("POST", f"/imaging/studies/{study_uid}/link", img.shimen,
                     json={"person_id": person_id})  # fmt: skip
    assert (r.status_code, error(r)) == (403, "INSTITUTION_MISMATCH"), r.text
    assert study_uid not in {s["study_uid"] for s in
                             img.get("/imaging/reconciliation", img.shimen)["studies"]}  # fmt: skip
    r = img.api.call("GET", f"/imaging/studies/{study_uid}", img.shimen)
    assert (r.status_code, error(r)) == (403, "STUDY_UNLINKED"), r.text


def test_upload_urls_for_another_institution_are_refused(img):
    r = img.api.call(
        "POST",
        "/imaging/uploads",
        img.qiaotou,
        json={"institution_id": "shimen", "files": [{"name": "a", "size": 10}]},
    )
    assert (r.status_code, error(r)) == (403, "INSTITUTION_MISMATCH"), r.text


def test_a_patient_who_matches_nobody_waits_for_a_human_then_the_resident_sees_it(img):
    local, name, birth = f"NOB{uuid.uuid4().hex[:8].upper()}", next(NAMES), _birth()
    files = F.ct_series(2, rows=64, cols=64, **patient_kw(local, "孙无名", birth))
    study_uid = uids(files[0])[0]
    batch = img.upload(img.qiaotou, files)
    assert batch["counts"] == {"indexed": 2}, batch
    queue = {s["study_uid"]: s for s in img.get("/imaging/reconciliation", img.qiaotou)["studies"]}
    assert queue[study_uid]["link_status"] == "unlinked"
    assert queue[study_uid]["patient"]["patient_id"] == local
    assert queue[study_uid]["link_reason"] == "NO_MATCH", queue[study_uid]
    person_id = img.register(f"R{local}", name, birth)
    resident = img.resident(person_id)
    assert img.get("/me/imaging", resident)["studies"] == []
    img.call("GET", f"/imaging/studies/{study_uid}", resident, 404)
    # When qiaotou links it by hand
    linked = img.call("POST", f"/imaging/studies/{study_uid}/link", img.qiaotou,
                      json={"person_id": person_id}).json()  # fmt: skip
    assert (linked["person_id"], linked["link_status"]) == (person_id, "linked")
    # Then it has left the queue and the resident sees it
    queue = img.get("/imaging/reconciliation", img.qiaotou)["studies"]
    assert study_uid not in {s["study_uid"] for s in queue}
    assert [s["study_uid"] for s in img.get("/me/imaging", resident)["studies"]] == [study_uid]


# ------------------------------------------------------------------ report, film, access log


def test_the_radiologists_report_joins_the_persons_health_record(img, ct):
    report = {"findings": "两肺纹理清晰，未见实质性病变。", "impression": "胸部CT未见异常",
              "technique": "胸部CT平扫"}  # fmt: skip
    out = img.call("POST", f"/imaging/studies/{ct['study_uid']}/report", img.radiologist,
                   json=report).json()  # fmt: skip
    assert (out["status"], out["signed_by_name"]) == ("final", "黄涛")
    doc_id = out["record"]["doc_id"]
    record = img.get("/me/record", img.resident(ct["person_id"]))
    items = {i["doc_id"]: i for i in record["timeline"]["items"]}
    assert doc_id in items, items
    timeline = img.get(f"/records/persons/{ct['person_id']}/timeline",
                       img.resident(ct["person_id"]))  # fmt: skip
    assert doc_id in {i["doc_id"] for i in timeline["items"]}
    view = img.get(f"/imaging/studies/{ct['study_uid']}", img.qiaotou)
    assert view["report"]["impression"] == "胸部CT未见异常"


def test_a_report_filed_before_linking_joins_the_record_when_linked_and_amends_it(img):
    local, name, birth = f"RPT{uuid.uuid4().hex[:8].upper()}", next(NAMES), _birth()
    files = F.ct_series(1, rows=64, cols=64, **patient_kw(local, "钱未配", birth))
    study_uid = uids(files[0])[0]
    assert img.upload(img.qiaotou, files)["counts"] == {"indexed": 1}
    path = f"/imaging/studies/{study_uid}/report"
    draft = {"findings": "右肺下叶小结节。", "impression": "右肺小结节"}
    first = img.call("POST", path, img.radiologist, json=draft).json()
    assert first["record"] is None  # nobody to file it for yet
    r = img.api.call("POST", f"/imaging/studies/{study_uid}/shares", img.qiaotou, json={"days": 1})
    assert (r.status_code, error(r)) == (409, "STUDY_UNLINKED"), r.text
    person_id = img.register(f"R{local}", name, birth)
    linked = img.call("POST", f"/imaging/studies/{study_uid}/link", img.qiaotou,
                      json={"person_id": person_id}).json()  # fmt: skip
    doc_id = linked["record"]["doc_id"]
    resident = img.resident(person_id)
    assert doc_id in {i["doc_id"] for i in img.get("/me/record", resident)["timeline"]["items"]}
    # an amendment is version 2 of the same document
    amendment = {"findings": "右肺下叶小结节，约4mm。", "impression": "右肺小结节，建议年度随访",
                 "version": 1}  # fmt: skip
    amended = img.call("POST", path, img.radiologist, json=amendment).json()
    assert (amended["version"], amended["record"]["doc_id"]) == (2, doc_id)
    assert amended["record"]["version"] == 2
    stale = img.api.call("POST", path, img.radiologist,
                         json={"findings": "x", "impression": "y", "version": 1})  # fmt: skip
    assert (stale.status_code, error(stale)) == (409, "REPORT_CHANGED"), stale.text


def _share(img: Imaging, study_uid: str, token: str, code: str = "2468") -> dict[str, Any]:
    return img.call("POST", f"/imaging/studies/{study_uid}/shares", token, 201,
                    json={"days": 3, "access_code": code, "label": "给家属看"}).json()  # fmt: skip


def test_cloud_film_opens_without_sign_in_and_shows_on_the_residents_access_log(img, ct):
    resident = img.resident(ct["person_id"])
    link = _share(img, ct["study_uid"], resident)
    film = requests.get(f"{img.api.base}/film/{link['token']}?code=2468", timeout=30)
    assert film.status_code == 200, film.text
    body = film.json()
    assert body["series"][0]["series_uid"] == ct["series_uid"]
    assert requests.get(body["series"][0]["thumbnail_url"], timeout=30).content[:2] == b"\xff\xd8"
    sop = body["series"][0]["instances"][0]["sop_uid"]
    preview = requests.get(f"{img.api.base}/film/{link['token']}/instances/{sop}/preview?code=2468",
                           headers=JPEG, timeout=30)  # fmt: skip
    assert preview.status_code == 200 and preview.content[:2] == b"\xff\xd8"
    wrong = requests.get(f"{img.api.base}/film/{link['token']}?code=0000", timeout=30)
    assert wrong.status_code == 403
    log = img.get("/me/access-log", resident)["items"]
    assert any(e["what"] == "ImagingStudy.film" for e in log), log[:5]


def test_cloud_film_shows_only_the_masked_name(img, ct):
    link = _share(img, ct["study_uid"], img.resident(ct["person_id"]))
    film = requests.get(f"{img.api.base}/film/{link['token']}?code=2468", timeout=30)
    assert film.status_code == 200, film.text
    assert film.json()["study"]["patient"]["name"].endswith("*")
    assert ct["name"] not in film.text


def _film(img: Imaging, token: str) -> Any:
    return requests.get(f"{img.api.base}/film/{token}?code=2468", timeout=30)


def _film_preview(img: Imaging, token: str, ct: dict[str, Any]) -> Any:
    sop = uids(ct["files"][0])[2]
    return requests.get(f"{img.api.base}/film/{token}/instances/{sop}/preview?code=2468",
                        headers=JPEG, timeout=30)  # fmt: skip


def test_an_expired_share_link_is_gone(img, ct):
    link = _share(img, ct["study_uid"], img.resident(ct["person_id"]))
    assert _film(img, link["token"]).status_code == 200
    digest = hashlib.sha256(link["token"].encode()).hexdigest()
    img.db.update_item(
        TableName=img.table,
        Key={"pk": {"S": f"SHARE#{digest}"}, "sk": {"S": "SHARE"}},
        UpdateExpression="SET expires_at = :t",
        ConditionExpression="attribute_exists(pk)",
        ExpressionAttributeValues={":t": {"S": "2020-01-01T00:00:00+08:00"}},
    )
    r = _film(img, link["token"])
    assert (r.status_code, error(r)) == (410, "SHARE_EXPIRED"), r.text
    r = _film_preview(img, link["token"], ct)
    assert (r.status_code, error(r)) == (410, "SHARE_EXPIRED"), r.text


def test_a_revoked_share_link_is_gone(img, ct):
    resident = img.resident(ct["person_id"])
    link = _share(img, ct["study_uid"], resident)
    assert _film(img, link["token"]).status_code == 200
    img.call("POST", f"/imaging/studies/{ct['study_uid']}/shares/{link['link_id']}/revoke",
             resident)  # fmt: skip
    r = _film(img, link["token"])
    assert (r.status_code, error(r)) == (410, "SHARE_REVOKED"), r.text
    r = _film_preview(img, link["token"], ct)
    assert (r.status_code, error(r)) == (410, "SHARE_REVOKED"), r.text
    view = img.get(f"/imaging/studies/{ct['study_uid']}", resident)
    [shown] = [s for s in view["shares"] if s["link_id"] == link["link_id"]]
    assert shown["revoked_at"]


def test_a_resident_cannot_share_another_persons_study(img, ct):
    other = img.register(f"OTH{uuid.uuid4().hex[:8].upper()}", next(NAMES), _birth())
    shares = len(img.get(f"/imaging/studies/{ct['study_uid']}", img.qiaotou)["shares"])
    r = img.api.call("POST", f"/imaging/studies/{ct['study_uid']}/shares", img.resident(other),
                     json={"days": 3, "label": "陌生人"})  # fmt: skip
    assert r.status_code == 403, r.text
    view = img.get(f"/imaging/studies/{ct['study_uid']}", img.qiaotou)
    assert len(view["shares"]) == shares


def test_a_share_link_lasts_one_to_the_policys_days(img, ct):
    resident = img.resident(ct["person_id"])
    for days in (0, 365, "7"):
        r = img.api.call("POST", f"/imaging/studies/{ct['study_uid']}/shares", resident,
                         json={"days": days})  # fmt: skip
        assert (r.status_code, error(r)) == (400, "SHARE_DAYS_INVALID"), (days, r.text)
    r = img.api.call("POST", f"/imaging/studies/{ct['study_uid']}/shares", resident,
                     json={"days": 3, "access_code": "12ab"})  # fmt: skip
    assert (r.status_code, error(r)) == (400, "ACCESS_CODE_INVALID"), r.text


# ------------------------------------------------------------------ dead letters


def _event_for_missing(img: Imaging, key: str, size: int) -> None:
    """The ingest queue gets an S3 event naming `key`, which is not in the bucket (yet)."""
    sqs = img.stack.client("sqs")
    queue = sqs.get_queue_url(QueueName=img.stack.physical_id("ImagingIngestQueue").split("/")[-1])
    event = {"Records": [{"s3": {"bucket": {"name": img.bucket},
                                 "object": {"key": key, "size": size}}}]}  # fmt: skip
    sqs.send_message(QueueUrl=queue["QueueUrl"], MessageBody=json.dumps(event))


def _dead_letters(img: Imaging, keys: set[str], seconds: float = 60) -> list[dict[str, Any]]:
    """The dead letters (as the consortium admin sees them) once all of `keys` are there."""
    deadline = time.monotonic() + seconds
    while True:
        letters = img.get("/imaging/dead-letters", img.admin)["messages"]
        if keys <= {m["key"] for m in letters} or time.monotonic() > deadline:
            return letters
        time.sleep(0.5)


@pytest.mark.timeout(120)
def test_a_failed_ingest_lands_in_the_dead_letters_and_the_redrive_indexes_it(img):
    data = _ct(study_uid=F.uid())
    batch = img.start(img.qiaotou, [data])
    key = batch["files"][0]["key"]
    # Given an S3 event naming an object that is not there (yet)
    _event_for_missing(img, key, len(data))
    # Then after its retries it is in the dead letters, with the reason
    letters = _dead_letters(img, {key})
    mine = [m for m in letters if m["key"] == key]
    assert mine, letters
    assert (mine[0]["status"], mine[0]["code"]) == ("failed", "NoSuchKey"), mine
    assert mine[0]["attempts"] >= 5
    # When the object arrives and the admin re-drives
    img.s3.put_object(Bucket=img.bucket, Key=key, Body=data)
    img.wait(img.qiaotou, batch["batch_id"])
    out = img.call("POST", "/imaging/dead-letters/redrive", img.admin).json()
    assert out["redriven"] >= 1
    # Then it is indexed and the dead letters are empty of it
    status = img.wait(img.qiaotou, batch["batch_id"])
    assert status["files"][0]["status"] in ("indexed", "duplicate"), status
    assert status["files"][0]["study_uid"] == uids(data)[0]
    letters = img.get("/imaging/dead-letters", img.admin)["messages"]
    assert key not in {m["key"] for m in letters}


# ------------------------------------------------------------------ de-identified export


def test_a_deidentified_export_hides_the_patient_and_leaves_the_original(img):
    local, name, birth = f"EXP{uuid.uuid4().hex[:8].upper()}", next(NAMES), _birth()
    person_id = img.register(local, name, birth)
    accession = f"ACC{uuid.uuid4().hex[:8].upper()}"
    files = F.ct_series(3, rows=64, cols=64, accession=accession, **patient_kw(local, name, birth))
    study_uid, series_uid, _ = uids(files[0])
    originals = {uids(f)[2] for f in files}
    batch = img.upload(img.qiaotou, files)
    assert batch["counts"] == {"indexed": 3}, batch
    out = img.call("POST", f"/imaging/studies/{study_uid}/exports", img.radiologist, 201,
                   json={"purpose": "teaching"}).json()  # fmt: skip
    assert out["instances"] == 3
    archive = zipfile.ZipFile(io.BytesIO(requests.get(out["url"], timeout=30).content))
    datasets = []
    for member in archive.namelist():
        raw = archive.read(member)
        for secret in (name, local, accession):
            assert secret.encode() not in raw, (member, secret)
        datasets.append(pydicom.dcmread(io.BytesIO(raw)))
    assert len(datasets) == 3
    [new_study] = {str(d.StudyInstanceUID) for d in datasets}  # one study, consistently
    assert new_study != study_uid
    assert len({str(d.SeriesInstanceUID) for d in datasets}) == 1
    assert str(datasets[0].SeriesInstanceUID) != series_uid
    new_sops = {str(d.SOPInstanceUID) for d in datasets}
    assert len(new_sops) == 3 and not new_sops & originals
    assert all(d.file_meta.MediaStorageSOPInstanceUID == d.SOPInstanceUID for d in datasets)
    [shifted] = {str(d.StudyDate) for d in datasets}  # dates moved, all by the same days
    assert shifted and shifted != "20261120"
    assert {str(d.get("PatientBirthDate", "")) for d in datasets} != {birth.replace("-", "")}
    for f in batch["files"]:
        assert img.object_bytes(f["key"]) in files
    # only doctors export
    r = img.api.call("POST", f"/imaging/studies/{study_uid}/exports",
                     img.resident(person_id), json={"purpose": "teaching"})  # fmt: skip
    assert r.status_code == 403, r.text


def test_the_film_page_shows_a_report_only_once_it_is_final(img):
    local, name, birth = f"FLM{uuid.uuid4().hex[:8].upper()}", next(NAMES), _birth()
    person_id = img.register(local, name, birth)
    files = F.ct_series(1, rows=64, cols=64, **patient_kw(local, name, birth))
    study_uid = uids(files[0])[0]
    assert img.upload(img.qiaotou, files)["counts"] == {"indexed": 1}
    path = f"/imaging/studies/{study_uid}/report"
    draft = {"findings": "左肺上叶磨玻璃影。", "impression": "待复核", "status": "preliminary"}
    assert img.call("POST", path, img.radiologist, json=draft).json()["record"] is None
    link = _share(img, study_uid, img.resident(person_id))
    assert _film(img, link["token"]).json()["report"] is None
    final = {"findings": "左肺上叶磨玻璃影，约6mm。", "impression": "左肺磨玻璃结节", "version": 1}
    assert img.call("POST", path, img.radiologist, json=final).json()["status"] == "final"
    assert _film(img, link["token"]).json()["report"]["impression"] == "左肺磨玻璃结节"


@pytest.mark.timeout(120)
def test_an_institution_admin_sees_only_their_institutions_dead_letters(img):
    ours, theirs = (f"dicom/{img.consortium}/{inst}/gateway/gone-{uuid.uuid4().hex[:8]}.dcm"
                    for inst in ("qiaotou", "shimen"))  # fmt: skip
    for key in (ours, theirs):
        _event_for_missing(img, key, 1000)
    assert {ours, theirs} <= {m["key"] for m in _dead_letters(img, {ours, theirs})}
    admin = img.api.token(Role.INSTITUTION_ADMIN, "qiaotou-admin", institution_id="qiaotou",
                          name="桥头管理员")  # fmt: skip
    seen = {m["key"] for m in img.get("/imaging/dead-letters", admin)["messages"]}
    assert ours in seen
    assert theirs not in seen
