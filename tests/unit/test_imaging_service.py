"""Imaging for people (ImagingService) over in-memory fakes, with studies indexed by the real
ingest: who may open a study (one audited check), uploads, the radiologist's report filed into
the health record, the reconciliation queue, cloud-film share links and QIDO-RS searches."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import pytest

from tests.fakes import FakeAuditSink
from tests.support import dicom_factory as factory
from tests.support.fake_imaging import FakeFiles, FakeImagingStore
from tests.support.fake_records import (
    FakeAuditReader,
    FakeCare,
    FakeGrantStore,
    FakePersons,
    FakeRecordsStore,
    FakeResolver,
)
from tests.support.fake_referrals import Clock, county_directory, person
from yilian.adapters.imaging_store import RaceLost
from yilian.adapters.records_store import StaleDocument
from yilian.api.fhir_record import validate_bundle
from yilian.domain.audit import AuditOutcome
from yilian.domain.clock import CHINA_TZ
from yilian.domain.errors import Conflict, Forbidden, Gone, InvalidInput, NotFound
from yilian.domain.imaging import DicomPatient, ImagingPolicy, object_key
from yilian.domain.principal import Principal, Role
from yilian.imaging.dicom import parse
from yilian.imaging.render import Undecodable, thumbnail
from yilian.services.imaging import ImagingService
from yilian.services.imaging_ingest import ImagingIngest, LinkResult
from yilian.services.record_access import RecordAccess
from yilian.services.records import RecordService

C = "demo-county"
NOW = datetime(2026, 11, 20, 10, 0, tzinfo=CHINA_TZ)
PID, OTHER_PID = "p-zhangsan", "p-lisi"
TOWNSHIP, COUNTY = "qiaotou", "county-hospital"
SMALL = {"rows": 64, "cols": 64}

PRODUCER = Principal("doc-wang", Role.DOCTOR, C, TOWNSHIP, name="王芳")
PRODUCER_ADMIN = Principal("adm-qiaotou", Role.INSTITUTION_ADMIN, C, TOWNSHIP, name="桥头管理员")
RADIOLOGIST = Principal("huangtao", Role.DOCTOR, C, COUNTY, name="黄涛")
OTHER_TOWNSHIP = Principal("doc-xia", Role.DOCTOR, C, "xiadu", name="夏医生")
RESIDENT = Principal("res-zs", Role.RESIDENT, C, person_id=PID, name="张三")
OTHER_RESIDENT = Principal("res-ls", Role.RESIDENT, C, person_id=OTHER_PID, name="李四")
OUTSIDER = Principal("doc-out", Role.DOCTOR, "other-county", TOWNSHIP, name="外县医生")
FINDINGS = {"findings": "双肺纹理清晰，未见实变。", "impression": "胸部CT平扫未见异常。"}


class Linker:
    """The master index: local number P0001 at qiaotou is 张三; nobody else is known."""

    def link(self, consortium_id: str, institution_id: str, patient: DicomPatient) -> LinkResult:
        if patient.patient_id == "P0001":
            return LinkResult(PID, "MATCHED")
        return LinkResult(None, "NO_MATCH")


@dataclass
class World:
    store: FakeImagingStore = field(default_factory=FakeImagingStore)
    files: FakeFiles = field(default_factory=FakeFiles)
    audit: FakeAuditSink = field(default_factory=FakeAuditSink)
    care: FakeCare = field(default_factory=FakeCare)
    records_store: FakeRecordsStore = field(default_factory=FakeRecordsStore)
    clock: Clock = field(default_factory=lambda: Clock(NOW))
    policy: ImagingPolicy = field(default_factory=lambda: ImagingPolicy(thumbnail_px=32))
    service: ImagingService = field(init=False)
    ingest: ImagingIngest = field(init=False)
    _n: int = 0

    def __post_init__(self) -> None:
        persons = FakePersons(
            person(PID, C, name="张三", sex="male", birth_date="1970-01-01"),
            person(OTHER_PID, C, name="李四", sex="male", birth_date="1960-01-01"),
            person("p-far", "other-county", name="外县人"),
        )
        directory = county_directory()
        access = RecordAccess(
            FakeGrantStore(), persons, self.care, self.audit, directory,
            audit_reader=FakeAuditReader(self.audit), clock=self.clock,
        )  # fmt: skip
        records = RecordService(
            self.records_store, access, FakeResolver(), self.audit, directory,
            validate_fhir=validate_bundle, stale=StaleDocument, clock=self.clock,
        )  # fmt: skip
        self.service = ImagingService(
            self.store, self.files, access, records, policy=self.policy, race_lost=RaceLost,
            now=self.clock,
        )  # fmt: skip
        self.ingest = ImagingIngest(
            self.store, self.files, Linker(), directory, parse=parse,
            thumbnail=lambda ds, size: thumbnail(ds, size=size), undecodable=Undecodable,
            race_lost=RaceLost, policy=self.policy, now=self.clock,
        )  # fmt: skip

    def put(self, data: bytes, key: str | None = None) -> dict[str, Any]:
        self._n += 1
        key = key or object_key(C, TOWNSHIP, "gateway", f"{self._n:05d}.dcm")
        self.files.put(key, data)
        return self.ingest.ingest(C, key, len(data))

    def study(self, patient_id: str = "P0001", n: int = 1, **kw: Any) -> str:
        """A CT study of `n` slices indexed from qiaotou; its study UID."""
        files = factory.ct_series(n, patient_id=patient_id, **SMALL, **kw)
        results = [self.put(f) for f in files]
        assert {r["status"] for r in results} == {"indexed"}
        return str(results[0]["study_uid"])

    def last_audit(self) -> Any:
        return self.audit.events[-1]


@pytest.fixture
def w() -> World:
    return World()


# ============================================================================= open_study
def test_the_producing_institutions_doctor_opens_the_study_as_producer(w: World) -> None:
    # Given a study qiaotou made of 张三
    uid = w.study()
    # When qiaotou's doctor opens it
    study = w.service.open_study(PRODUCER, uid)
    # Then it opens on the producer basis, audited on 张三
    assert study["study_uid"] == uid
    event = w.last_audit()
    assert event.detail["basis"] == "imaging_producer" and event.person_ids == (PID,)
    assert event.outcome == AuditOutcome.SUCCESS


def test_the_county_reading_centre_opens_any_study_as_reader(w: World) -> None:
    uid = w.study()
    w.service.open_study(RADIOLOGIST, uid)
    assert w.last_audit().detail["basis"] == "imaging_reader"


def test_another_township_doctor_without_care_is_refused_and_audited(w: World) -> None:
    # Given a doctor of another township with no care relationship with 张三
    uid = w.study()
    # When they open the study
    with pytest.raises(Forbidden) as refused:
        w.service.open_study(OTHER_TOWNSHIP, uid)
    # Then the record-access rules refuse it, and the refusal is on 张三's access log
    assert refused.value.code == "NO_CARE_RELATIONSHIP"
    event = w.last_audit()
    assert event.outcome == AuditOutcome.DENIED and event.person_ids == (PID,)
    assert event.actor_subject == OTHER_TOWNSHIP.subject


def test_another_township_doctor_with_a_referral_opens_it(w: World) -> None:
    uid = w.study()
    w.care.relationships[(OTHER_TOWNSHIP.subject, PID)] = "referral:R1"
    assert w.service.open_study(OTHER_TOWNSHIP, uid)["study_uid"] == uid


def test_a_resident_opens_their_own_linked_study(w: World) -> None:
    uid = w.study()
    assert w.service.open_study(RESIDENT, uid)["person_id"] == PID


def test_a_resident_never_sees_an_unlinked_study(w: World) -> None:
    # Given a study nobody could link
    uid = w.study(patient_id="QT9999")
    # When a resident asks for it / Then it does not exist for them
    with pytest.raises(NotFound) as refused:
        w.service.open_study(RESIDENT, uid)
    assert refused.value.code == "STUDY_NOT_FOUND"


def test_an_unlinked_study_is_only_for_producer_and_reader(w: World) -> None:
    uid = w.study(patient_id="QT9999")
    w.service.open_study(PRODUCER, uid)
    w.service.open_study(RADIOLOGIST, uid)
    with pytest.raises(Forbidden) as refused:
        w.service.open_study(OTHER_TOWNSHIP, uid)
    assert refused.value.code == "STUDY_UNLINKED"


def test_another_consortium_is_refused(w: World) -> None:
    uid = w.study()
    with pytest.raises(Forbidden) as refused:
        w.service.open_study(OUTSIDER, uid)
    assert refused.value.code == "CROSS_CONSORTIUM"


def test_an_unknown_study_is_not_found(w: World) -> None:
    with pytest.raises(NotFound):
        w.service.open_study(PRODUCER, "1.2.3.4")


def test_the_study_view_shows_series_with_thumbnails(w: World) -> None:
    uid = w.study(n=3)
    view = w.service.study(PRODUCER, uid)
    (series,) = view["series"]
    assert series["thumbnail"] == "ready" and series["thumbnail_url"].startswith("https://")
    assert [i["number"] for i in series["instances"]] == [1, 2, 3]
    assert view["can_report"] and view["report"] is None
    assert view["patient"]["name"] == "张三"


def test_a_resident_view_has_no_reconciliation_details(w: World) -> None:
    uid = w.study()
    view = w.service.study(RESIDENT, uid)
    assert "patient" not in view and "candidates" not in view and not view["can_report"]


# ============================================================================= uploads
def files_body(n: int = 2, size: int = 1000, **kw: Any) -> dict[str, Any]:
    return {"files": [{"name": f"CT{i}.dcm", "size": size} for i in range(n)], **kw}


def test_start_upload_hands_out_keys_under_the_callers_prefix(w: World) -> None:
    # When qiaotou's doctor starts an upload of two files
    out = w.service.start_upload(PRODUCER, files_body(2))
    # Then each file gets a presigned POST and PUT under dicom/demo-county/qiaotou/{batch}/
    prefix = f"dicom/{C}/{TOWNSHIP}/{out['batch_id']}/"
    assert [f["key"].startswith(prefix) for f in out["files"]] == [True, True]
    assert len({f["key"] for f in out["files"]}) == 2
    assert out["files"][0]["post"]["fields"]["key"] == out["files"][0]["key"]
    assert out["max_bytes"] == w.policy.max_file_bytes
    # And the batch is saved, so the ingest accepts files under it
    batch = w.store.batch(out["batch_id"])
    assert batch is not None and batch["institution_id"] == TOWNSHIP
    assert [f["key"] for f in batch["files"]] == [f["key"] for f in out["files"]]


@pytest.mark.parametrize(
    ("who", "body", "error", "code"),
    [
        (PRODUCER, files_body(institution_id="xiadu"), Forbidden, "INSTITUTION_MISMATCH"),
        (PRODUCER, files_body(size=600 * 1024 * 1024), InvalidInput, "FILE_TOO_LARGE"),
        (PRODUCER, files_body(size=0), InvalidInput, "FILE_SIZE_REQUIRED"),
        (PRODUCER, files_body(1001), InvalidInput, "TOO_MANY_FILES"),
        (PRODUCER, {"files": []}, InvalidInput, "FILES_REQUIRED"),
        (PRODUCER, {}, InvalidInput, "FILES_REQUIRED"),
        (RESIDENT, files_body(), Forbidden, "ROLE_NOT_ALLOWED"),
    ],
    ids=["other-institution", "too-large", "no-size", "too-many", "empty", "none", "resident"],
)
def test_start_upload_refuses(
    w: World, who: Principal, body: dict, error: type[Exception], code: str
) -> None:
    with pytest.raises(error) as refused:
        w.service.start_upload(who, body)
    assert refused.value.code == code  # type: ignore[attr-defined]
    assert not [k for k in w.store.items if k[0].startswith("BATCH#")]


def test_upload_status_counts_what_became_of_each_file(w: World) -> None:
    # Given a batch of three: one good slice, one PNG, one never uploaded
    out = w.service.start_upload(PRODUCER, files_body(3))
    good, png, _ = (f["key"] for f in out["files"])
    w.put(factory.ct_instance(**SMALL), key=good)
    w.put(factory.not_dicom(), key=png)
    # When the uploader looks at the batch
    status = w.service.upload_status(PRODUCER, out["batch_id"])
    # Then it counts one indexed, one rejected (saying why), one pending
    assert status["counts"] == {"indexed": 1, "rejected": 1, "pending": 1}
    assert [f["code"] for f in status["files"]] == [None, "NOT_DICOM", None]
    # And another institution may not look
    with pytest.raises(Forbidden):
        w.service.upload_status(OTHER_TOWNSHIP, out["batch_id"])


# ============================================================================= reports
def test_a_non_reader_may_not_report(w: World) -> None:
    # Given a doctor of another township who may see the study through a referral
    uid = w.study()
    w.care.relationships[(OTHER_TOWNSHIP.subject, PID)] = "referral:R1"
    # When they file a report / Then they are not a reader, and nothing is saved
    with pytest.raises(Forbidden) as refused:
        w.service.file_report(OTHER_TOWNSHIP, uid, FINDINGS)
    assert refused.value.code == "NOT_A_READER"
    assert w.store.report(uid) is None


def test_a_final_report_is_filed_into_the_persons_record(w: World) -> None:
    # Given a linked CT study
    uid = w.study(n=2)
    # When the county radiologist signs a final report
    out = w.service.file_report(RADIOLOGIST, uid, FINDINGS)
    # Then it is version 1, final, signed by 黄涛, and the study shows it
    assert (out["version"], out["status"], out["signed_by_name"]) == (1, "final", "黄涛")
    study = w.store.study(uid)
    assert study is not None and study["report_status"] == "final"
    # And 张三's record holds it as a 检查报告 of the county hospital
    head = w.records_store.head(out["record"]["doc_id"])
    assert head is not None and head["person_id"] == PID and head["institution_id"] == COUNTY
    assert head["kind"] == "exam_report" and out["record"]["version"] == 1


def test_a_preliminary_report_stays_out_of_the_record(w: World) -> None:
    uid = w.study()
    out = w.service.file_report(RADIOLOGIST, uid, {**FINDINGS, "status": "preliminary"})
    assert out["status"] == "preliminary" and out["record"] is None
    assert w.records_store.heads == {}


def test_a_second_report_is_an_amendment_and_a_new_record_version(w: World) -> None:
    # Given a signed report
    uid = w.study()
    first = w.service.file_report(RADIOLOGIST, uid, FINDINGS)
    # When the radiologist corrects it, from the version they opened
    body = {**FINDINGS, "impression": "右肺上叶小结节，建议随访。", "version": 1}
    second = w.service.file_report(RADIOLOGIST, uid, body)
    # Then it is version 2, amended, and the same record document moves to version 2
    assert (second["version"], second["status"]) == (2, "amended")
    assert second["record"]["doc_id"] == first["record"]["doc_id"]
    assert second["record"]["version"] == 2
    assert [i["sk"] for i in w.store.study_items(uid, "REPORT#V")] == [
        "REPORT#V0001",
        "REPORT#V0002",
    ]


def test_a_report_from_a_stale_version_is_refused(w: World) -> None:
    # Given a report signed since the radiologist opened the study (version 0 then)
    uid = w.study()
    w.service.file_report(RADIOLOGIST, uid, FINDINGS)
    # When they sign from version 0 / Then the report changed, nothing overwritten
    with pytest.raises(Conflict) as refused:
        w.service.file_report(RADIOLOGIST, uid, {**FINDINGS, "version": 0, "impression": "x"})
    assert refused.value.code == "REPORT_CHANGED" and refused.value.details["version"] == 1
    report = w.store.report(uid)
    assert report is not None and report["impression"] == FINDINGS["impression"]


def test_a_signed_report_cannot_be_made_preliminary(w: World) -> None:
    uid = w.study()
    w.service.file_report(RADIOLOGIST, uid, FINDINGS)
    with pytest.raises(InvalidInput) as refused:
        w.service.file_report(RADIOLOGIST, uid, {**FINDINGS, "status": "preliminary"})
    assert refused.value.code == "REPORT_ALREADY_FINAL"


# ============================================================================= reconciliation
def test_a_held_study_is_linked_and_appears_in_the_persons_list(w: World) -> None:
    # Given a study nobody could link, in the reconciliation queue
    uid = w.study(patient_id="QT9999")
    assert [s["study_uid"] for s in w.service.reconciliation(PRODUCER)["studies"]] == [uid]
    assert w.service.person_studies(RESIDENT)["studies"] == []
    # When qiaotou's doctor links it to 张三
    out = w.service.link(PRODUCER, uid, {"person_id": PID})
    # Then it is linked, out of the queue, and in 张三's list
    assert (out["person_id"], out["link_status"]) == (PID, "linked")
    assert w.service.reconciliation(PRODUCER)["studies"] == []
    assert [s["study_uid"] for s in w.service.person_studies(RESIDENT)["studies"]] == [uid]
    study = w.store.study(uid)
    assert study is not None and "candidates" not in study


def test_linking_a_linked_study_is_refused(w: World) -> None:
    uid = w.study()
    with pytest.raises(Conflict) as refused:
        w.service.link(PRODUCER, uid, {"person_id": OTHER_PID})
    assert refused.value.code == "ALREADY_LINKED"
    study = w.store.study(uid)
    assert study is not None and study["person_id"] == PID


def test_linking_to_a_person_nobody_knows_is_refused(w: World) -> None:
    uid = w.study(patient_id="QT9999")
    for person_id in ("p-nobody", "p-far"):  # unknown; another consortium's
        with pytest.raises(NotFound) as refused:
            w.service.link(PRODUCER, uid, {"person_id": person_id})
        assert refused.value.code == "PERSON_NOT_FOUND"
    study = w.store.study(uid)
    assert study is not None and study["link_status"] == "unlinked"


def test_a_study_linked_meanwhile_is_already_linked(w: World) -> None:
    # Given two admins linking the same held study at once (the first one wins)
    uid = w.study(patient_id="QT9999")
    read = w.store.study

    def stale_read(study_uid: str, consistent: bool = False) -> dict | None:
        head = read(study_uid, consistent)
        w.store.items[(f"STUDY#{study_uid}", "STUDY")]["link_status"] = "linked"
        return head  # the caller still sees "unlinked"

    w.store.study = stale_read  # type: ignore[method-assign]
    with pytest.raises(Conflict) as refused:
        w.service.link(PRODUCER_ADMIN, uid, {"person_id": PID})
    assert refused.value.code == "ALREADY_LINKED"


def test_linking_a_reported_study_files_its_report(w: World) -> None:
    uid = w.study(patient_id="QT9999")
    w.service.file_report(RADIOLOGIST, uid, FINDINGS)
    assert w.records_store.heads == {}  # nobody to file it for yet
    out = w.service.link(PRODUCER, uid, {"person_id": PID})
    assert out["record"] is not None
    assert w.records_store.head(out["record"]["doc_id"])["person_id"] == PID


# ============================================================================= cloud film
def test_a_resident_shares_their_study_and_anyone_with_the_link_sees_it(w: World) -> None:
    # Given 张三's reported study
    uid = w.study(n=2)
    w.service.file_report(RADIOLOGIST, uid, FINDINGS)
    # When he creates a 7-day link and someone opens it
    link = w.service.create_share(RESIDENT, uid, {"days": 7, "label": "给上级医院"})
    film = w.service.film(link["token"], None)
    # Then the film shows the study with a masked name, the series and the signed report
    assert link["path"] == f"/film/{link['token']}" and not link["has_code"]
    assert film["study"]["patient"]["name"] == "张*" and "person_id" not in film["study"]
    assert len(film["series"]) == 1 and film["report"]["impression"] == FINDINGS["impression"]
    # And the view is on 张三's access log, by the link
    event = w.last_audit()
    assert (event.what, event.person_ids, event.actor_role) == (
        "ImagingStudy.film",
        (PID,),
        "share_link",
    )


def test_every_film_view_is_audited_and_counted(w: World) -> None:
    uid = w.study()
    link = w.service.create_share(RESIDENT, uid, {})
    before = len(w.audit.events)
    for _ in range(3):
        w.service.film(link["token"], None)
    films = [e for e in w.audit.events[before:] if e.what == "ImagingStudy.film"]
    assert len(films) == 3
    from yilian.domain.imaging import token_hash

    shared = w.store.share(token_hash(link["token"]))
    assert shared is not None and shared.views == 3


def test_a_resident_cannot_share_another_persons_study(w: World) -> None:
    # Given 张三's study
    uid = w.study()
    # When 李四 tries to share it
    with pytest.raises(Forbidden) as refused:
        w.service.create_share(OTHER_RESIDENT, uid, {})
    # Then it is not his record: no link exists, and the attempt is on 张三's access log
    assert refused.value.code == "NOT_YOUR_RECORD"
    assert not [k for k in w.store.items if k[0].startswith("SHARE#")]
    event = w.last_audit()
    assert event.outcome == AuditOutcome.DENIED and event.person_ids == (PID,)


def test_an_unlinked_study_cannot_be_shared(w: World) -> None:
    uid = w.study(patient_id="QT9999")
    with pytest.raises(Conflict) as refused:
        w.service.create_share(PRODUCER, uid, {})
    assert refused.value.code == "STUDY_UNLINKED"


def test_a_film_with_a_code_counts_wrong_codes(w: World) -> None:
    from yilian.domain.imaging import token_hash

    # Given a link with access code 2468
    uid = w.study()
    link = w.service.create_share(RESIDENT, uid, {"access_code": "2468"})
    # When opened without a code, then with a wrong one
    with pytest.raises(Forbidden) as without:
        w.service.film(link["token"], None)
    with pytest.raises(Forbidden) as wrong:
        w.service.film(link["token"], "1111")
    # Then both are refused; only the wrong code counts; the right code opens it
    assert (without.value.code, wrong.value.code) == ("ACCESS_CODE_REQUIRED", "ACCESS_CODE_WRONG")
    shared = w.store.share(token_hash(link["token"]))
    assert shared is not None and (shared.failed_codes, shared.views) == (1, 0)
    assert w.service.film(link["token"], "2468")["study"]["study_uid"] == uid


def test_a_link_locks_after_ten_wrong_codes(w: World) -> None:
    uid = w.study()
    link = w.service.create_share(RESIDENT, uid, {"access_code": "2468"})
    for _ in range(w.policy.share_code_attempts):
        with pytest.raises(Forbidden):
            w.service.film(link["token"], "0000")
    with pytest.raises(Forbidden) as refused:
        w.service.film(link["token"], "2468")
    assert refused.value.code == "SHARE_LOCKED"


def test_a_revoked_link_is_gone(w: World) -> None:
    # Given a link its owner revoked
    uid = w.study()
    link = w.service.create_share(RESIDENT, uid, {})
    w.service.revoke_share(RESIDENT, uid, link["link_id"])
    # When opened / Then it is gone, and the study view shows it revoked
    with pytest.raises(Gone) as refused:
        w.service.film(link["token"], None)
    assert refused.value.code == "SHARE_REVOKED"
    (shown,) = w.service.study(RESIDENT, uid)["shares"]
    assert shown["revoked_at"] == NOW.isoformat(timespec="seconds")


def test_an_expired_link_is_gone(w: World) -> None:
    uid = w.study()
    link = w.service.create_share(RESIDENT, uid, {"days": 1})
    w.clock.t = NOW + timedelta(days=1, minutes=1)
    with pytest.raises(Gone) as refused:
        w.service.film(link["token"], None)
    assert refused.value.code == "SHARE_EXPIRED"


def test_an_unknown_token_is_not_found(w: World) -> None:
    with pytest.raises(NotFound) as refused:
        w.service.film("not-a-token", None)
    assert refused.value.code == "SHARE_NOT_FOUND"


def test_a_preliminary_report_is_not_on_the_film(w: World) -> None:
    uid = w.study()
    w.service.file_report(RADIOLOGIST, uid, {**FINDINGS, "status": "preliminary"})
    link = w.service.create_share(RESIDENT, uid, {})
    assert w.service.film(link["token"], None)["report"] is None


# ============================================================================= QIDO-RS
@pytest.fixture
def three(w: World) -> dict[str, str]:
    """qiaotou's CT (1 Nov), MR (15 Nov) and DX (20 Nov) of 张三."""
    out = {}
    for name, make, date, acc in (
        ("ct", factory.ct_instance, "20261101", "A1"),
        ("mr", factory.mr_instance, "20261115", "A2"),
        ("dx", factory.dx_instance, "20261120", "A3"),
    ):
        out[name] = w.put(make(**SMALL, study_date=date, accession=acc))["study_uid"]
    return out


def uids(found: list[dict[str, Any]]) -> list[str]:
    return [s["0020000D"]["Value"][0] for s in found]


def test_qido_lists_the_institutions_studies_newest_first(w: World, three: dict) -> None:
    found = w.service.qido_studies(PRODUCER, {})
    assert uids(found) == [three["dx"], three["mr"], three["ct"]]
    assert found[0]["00080061"]["Value"] == ["DX"] and found[0]["00080050"]["Value"] == ["A3"]


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ({"StudyDate": "20261110-20261130"}, ["dx", "mr"]),
        ({"StudyDate": "20261101"}, ["ct"]),
        ({"StudyDate": "-20261115"}, ["mr", "ct"]),
        ({"ModalitiesInStudy": "CT"}, ["ct"]),
        ({"ModalitiesInStudy": "MR,DX"}, ["dx", "mr"]),
        ({"AccessionNumber": "A2"}, ["mr"]),
        ({"StudyDate": "20261110-", "ModalitiesInStudy": "CT"}, []),
        ({"limit": "1", "offset": "1"}, ["mr"]),
    ],
)
def test_qido_filters(w: World, three: dict, query: dict, expected: list[str]) -> None:
    assert uids(w.service.qido_studies(PRODUCER, query)) == [three[n] for n in expected]


def test_qido_by_patient_for_the_reading_centre(w: World, three: dict) -> None:
    found = w.service.qido_studies(RADIOLOGIST, {"PatientID": PID, "ModalitiesInStudy": "MR"})
    assert uids(found) == [three["mr"]]


def test_qido_by_patient_refuses_a_doctor_without_care(w: World, three: dict) -> None:
    with pytest.raises(Forbidden):
        w.service.qido_studies(OTHER_TOWNSHIP, {"PatientID": PID})


def test_qido_refuses_a_bad_date(w: World, three: dict) -> None:
    with pytest.raises(InvalidInput) as refused:
        w.service.qido_studies(PRODUCER, {"StudyDate": "2026-11-01"})
    assert refused.value.code == "DATE_RANGE_INVALID"


# ============================================================================= the fakes
@pytest.mark.parametrize(
    ("fake", "real"),
    [
        (FakeImagingStore, "yilian.adapters.imaging_store:DynamoImagingStore"),
        (FakeFiles, "yilian.adapters.imaging_store:S3ImagingFiles"),
    ],
)
def test_the_fakes_offer_the_adapters_methods_with_their_parameters(fake: type, real: str) -> None:
    # Given the adapter the fake stands for
    import importlib
    import inspect

    module, name = real.split(":")
    adapter = getattr(importlib.import_module(module), name)
    public = [m for m, _ in inspect.getmembers(adapter, inspect.isfunction)
              if not m.startswith("_")]  # fmt: skip
    # Then the fake has every public method, with the same parameter names
    for method in public:
        assert hasattr(fake, method), method
        ours = list(inspect.signature(getattr(fake, method)).parameters)
        theirs = list(inspect.signature(getattr(adapter, method)).parameters)
        assert ours == theirs, method
