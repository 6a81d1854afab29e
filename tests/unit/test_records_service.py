"""The health record's use cases against in-memory fakes: contributing documents (idempotent
on the source id, versioned, refused with a clear reason and nothing stored), and reading
them (timeline, summary, documents, FHIR searches, export, mutual recognition), each read
through the access guard and every write and read audited."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

import pytest

from tests.fakes import FakeAuditSink
from tests.support.fake_records import (
    FakeAuditReader,
    FakeCare,
    FakeGrantStore,
    FakePersons,
    FakeRecordsStore,
    FakeResolver,
)
from tests.support.fake_referrals import Clock, county_directory, person
from yilian.adapters.records_store import StaleDocument
from yilian.api.fhir_record import validate_bundle
from yilian.domain.audit import AuditAction, AuditOutcome
from yilian.domain.clock import CHINA_TZ
from yilian.domain.errors import Conflict, Forbidden, InvalidInput, NotFound
from yilian.domain.person import PersonStatus
from yilian.domain.principal import Principal, Role
from yilian.domain.record import document_id
from yilian.services.record_access import RecordAccess
from yilian.services.records import RecordService
from yilian_local import sample_records as samples

C = "demo-county"
NOW = datetime(2026, 6, 1, 9, 0, tzinfo=CHINA_TZ)
PID, OTHER_PID = "p-zhangwei", "p-lisi"
CLINIC, HOSPITAL = "qiaotou", "county-hospital"
ID_CARD = {"system": "urn:oid:2.16.156.10011.1.3", "value": "330122195804020031"}

DOCTOR = Principal("doc-wang", Role.DOCTOR, C, CLINIC, name="王芳")
HOSPITAL_DOCTOR = Principal("doc-chen", Role.DOCTOR, C, HOSPITAL, name="陈医生")
STRANGER_DOCTOR = Principal("doc-xia", Role.DOCTOR, C, "xiadu", name="夏医生")
NO_INST_DOCTOR = Principal("doc-none", Role.DOCTOR, C, None, name="无机构")
CLINIC_ADMIN = Principal("adm-qiaotou", Role.INSTITUTION_ADMIN, C, CLINIC, name="桥头管理员")
CONS_ADMIN = Principal("cadm", Role.CONSORTIUM_ADMIN, C, name="医共体管理员")
RESIDENT = Principal("res-zw", Role.RESIDENT, C, person_id=PID, name="张伟")
Json = dict[str, Any]


def visit(days_ago: float = 30, seed: int = 1, **kw: Any) -> Json:
    when = NOW - timedelta(days=days_ago)
    return samples.outpatient_visit(PID, CLINIC, seed=seed, when=when, diagnoses=["I10"], **kw)


def cbc(days_ago: float, seed: int = 2, institution: str = CLINIC) -> Json:
    return samples.lab_report(PID, institution, seed=seed, when=NOW - timedelta(days=days_ago))


def xray(days_ago: float, seed: int = 3) -> Json:
    return samples.imaging_report(PID, HOSPITAL, seed=seed, when=NOW - timedelta(days=days_ago))


def resubject(bundle: Json, person_id: str) -> Json:
    out = copy.deepcopy(bundle)
    for e in out["entry"]:
        for name in ("subject", "patient"):
            if name in e["resource"]:
                e["resource"][name] = {"reference": f"Patient/{person_id}"}
    return out


@dataclass
class World:
    store: FakeRecordsStore = field(default_factory=FakeRecordsStore)
    grants: FakeGrantStore = field(default_factory=FakeGrantStore)
    persons: FakePersons = field(default_factory=FakePersons)
    care: FakeCare = field(default_factory=FakeCare)
    audit: FakeAuditSink = field(default_factory=FakeAuditSink)
    resolver: FakeResolver = field(default_factory=FakeResolver)
    clock: Clock = field(default_factory=lambda: Clock(NOW))
    service: Any = None

    def __post_init__(self) -> None:
        self.persons.add(
            person(PID, C, birth_date="1958-04-02", replaces=("p-old",)),
            person("p-old", C, status=PersonStatus.MERGED, merged_into=PID),
            person(OTHER_PID, C, name="李四", birth_date="1960-01-01"),
            person("p-baby", C, name="张小宝", birth_date="2026-05-20"),
            person("p-far", "other-county", name="外县人"),
        )
        self.resolver.id_cards[ID_CARD["value"]] = PID
        self.care.relationships[("doc-wang", PID)] = "referral:R1"
        directory = county_directory()
        access = RecordAccess(
            self.grants, self.persons, self.care, self.audit, directory,
            audit_reader=FakeAuditReader(self.audit), clock=self.clock,
        )  # fmt: skip
        self.service = RecordService(
            self.store, access, self.resolver, self.audit, directory,
            validate_fhir=validate_bundle, stale=StaleDocument, clock=self.clock,
        )  # fmt: skip

    def submit(self, bundle: Json, who: Principal = DOCTOR) -> tuple[int, Json]:
        return self.service.submit(who, bundle)

    def writes(self) -> list[Any]:
        return [e for e in self.audit.events if e.action in (AuditAction.CREATE,
                                                                 AuditAction.UPDATE)]  # fmt: skip


@pytest.fixture
def w() -> World:
    return World()


# ----------------------------------------------------------------- contribute
def test_submit_creates_then_the_same_body_is_unchanged(w: World) -> None:
    # Given a clinic visit
    bundle = visit()
    # When the clinic submits it
    status, result = w.submit(bundle)
    # Then it is created as version 1 of the person's record, named as WS/T 500 names it
    assert status == 201 and result["status"] == "created" and result["version"] == 1
    assert result["doc_id"] == document_id(C, CLINIC, bundle["identifier"]["value"])
    assert (result["person_id"], result["kind"], result["kind_name"]) == (
        PID,
        "outpatient",
        "门诊摘要",
    )
    assert result["spec"].startswith("WS/T 500")
    # And the write is audited
    (event,) = w.writes()
    assert (event.action, event.what, event.person_ids) == (
        AuditAction.CREATE,
        "Record.document",
        (PID,),
    )
    assert event.detail == {"doc_id": result["doc_id"], "kind": "outpatient", "version": "1"}
    # When the same body comes again (a retry)
    saves = w.store.saves
    again = w.submit(copy.deepcopy(bundle))
    # Then 200 unchanged, nothing written again
    assert again == (200, result | {"status": "unchanged"})
    assert w.store.saves == saves and len(w.writes()) == 1


def test_same_source_id_with_another_body_is_a_conflict(w: World) -> None:
    # Given a submitted visit
    bundle = visit()
    _, result = w.submit(bundle)
    before = (w.store.item_count(), w.store.head(result["doc_id"]))
    # When the same source id comes with a changed body
    changed = copy.deepcopy(bundle)
    changed["entry"][0]["resource"]["serviceType"] = {"text": "内科门诊"}
    with pytest.raises(Conflict) as exc:
        w.submit(changed)
    # Then refused, saying how to correct it; nothing stored or changed
    assert exc.value.code == "DUPLICATE_SOURCE_CHANGED"
    assert exc.value.details == {"doc_id": result["doc_id"], "version": 1}
    assert (w.store.item_count(), w.store.head(result["doc_id"])) == before
    assert len(w.writes()) == 1


def test_update_keeps_the_previous_version_readable(w: World) -> None:
    # Given a submitted visit
    bundle = visit()
    _, created = w.submit(bundle)
    doc_id = created["doc_id"]
    # When the clinic corrects it (a new department)
    corrected = copy.deepcopy(bundle)
    corrected["entry"][0]["resource"]["serviceType"] = {"text": "内科门诊"}
    updated = w.service.update(DOCTOR, doc_id, corrected)
    # Then it is version 2, audited as an update
    assert (updated["status"], updated["version"]) == ("updated", 2)
    assert w.writes()[-1].action is AuditAction.UPDATE
    assert w.writes()[-1].detail["version"] == "2"
    # And the current document shows version 2, version 1 still readable
    now = w.service.document(DOCTOR, doc_id)
    assert (now["current_version"], now["document"]["version"]) == (2, 2)
    assert [v["version"] for v in now["versions"]] == [1, 2]
    assert now["resources"][0]["serviceType"] == {"text": "内科门诊"}
    old = w.service.document(DOCTOR, doc_id, version=1)
    assert old["document"]["version"] == 1
    assert old["resources"][0]["serviceType"] == {"text": "全科门诊"}
    # And the timeline still lists one document
    assert w.service.timeline(DOCTOR, PID, {})["count"] == 1
    # And the same correction again is unchanged
    assert w.service.update(DOCTOR, doc_id, corrected)["status"] == "unchanged"
    with pytest.raises(NotFound) as exc:
        w.service.document(DOCTOR, doc_id, version=3)
    assert exc.value.code == "VERSION_NOT_FOUND"


def test_update_may_not_move_a_document_to_another_person(w: World) -> None:
    # Given a submitted visit
    bundle = visit()
    _, created = w.submit(bundle)
    before = w.store.item_count()
    # When an update names another person
    with pytest.raises(Conflict) as exc:
        w.service.update(DOCTOR, created["doc_id"], resubject(bundle, OTHER_PID))
    # Then refused, nothing stored
    assert exc.value.code == "SUBJECT_CHANGED"
    assert w.store.item_count() == before and w.store.head(created["doc_id"])["version"] == 1


def test_update_names_its_document(w: World) -> None:
    bundle = visit()
    _, created = w.submit(bundle)
    with pytest.raises(InvalidInput) as exc:
        w.service.update(DOCTOR, created["doc_id"], visit(seed=9))
    assert exc.value.code == "SOURCE_ID_MISMATCH"
    with pytest.raises(NotFound) as missing:
        w.service.update(DOCTOR, document_id(C, CLINIC, "x"), visit() | {
            "identifier": {"value": "x"}})  # fmt: skip
    assert missing.value.code == "DOCUMENT_NOT_FOUND"
    assert len(w.writes()) == 1


@pytest.mark.parametrize(
    ("make", "error", "code"),
    [
        pytest.param(lambda: resubject(visit(), "p-nobody"), InvalidInput,
                     "SUBJECT_NOT_IN_INDEX", id="unknown person id"),
        pytest.param(lambda: visit(patient_identifier={**ID_CARD, "value": "110101199001011234"}),
                     InvalidInput, "SUBJECT_NOT_IN_INDEX", id="unknown ID card"),
        pytest.param(lambda: resubject(visit(), "p-far"), Forbidden, "CROSS_CONSORTIUM",
                     id="another consortium's person"),
        pytest.param(lambda: resubject(visit(), "p-baby"), InvalidInput, "DATE_BEFORE_BIRTH",
                     id="before the person was born"),
        pytest.param(lambda: visit() | {"type": "collection"}, InvalidInput,
                     "BUNDLE_TYPE_NOT_ACCEPTED", id="collection"),
        pytest.param(lambda: {**visit(), "entry": [{"resource": {"resourceType": "Claim"}}]},
                     InvalidInput, "RESOURCE_NOT_ACCEPTED", id="Claim"),
        pytest.param(lambda: _broken_status(visit()), InvalidInput, "FHIR_INVALID",
                     id="not valid FHIR"),
        pytest.param(lambda: cbc(3, institution=HOSPITAL), InvalidInput,
                     "SOURCE_SYSTEM_MISMATCH", id="another institution's document"),
    ],
)  # fmt: skip
def test_bad_submissions_store_nothing(w: World, make: Any, error: type, code: str) -> None:
    # Given / When a bad document is submitted
    with pytest.raises(error) as exc:
        w.submit(make())
    # Then the clear reason, and nothing stored nor audited as written
    assert exc.value.code == code
    assert w.store.item_count() == 0 and w.store.saves == 0 and w.writes() == []


def _broken_status(bundle: Json) -> Json:
    bundle["entry"][0]["resource"]["status"] = 42
    return bundle


def test_subject_by_id_card_and_merged_person_go_to_the_survivor(w: World) -> None:
    # Given a visit naming the person by ID card, and one naming a merged-away id
    by_card = visit(patient_identifier=ID_CARD)
    merged = resubject(visit(seed=5), "p-old")
    # When submitted
    _, a = w.submit(by_card)
    _, b = w.submit(merged)
    # Then both are the surviving person's
    assert a["person_id"] == b["person_id"] == PID
    assert w.service.timeline(DOCTOR, PID, {})["count"] == 2


@pytest.mark.parametrize("who", [RESIDENT, CONS_ADMIN])
def test_residents_and_consortium_admins_do_not_submit(w: World, who: Principal) -> None:
    with pytest.raises(Forbidden) as exc:
        w.submit(visit(), who)
    assert exc.value.code == "ROLE_NOT_ALLOWED"
    assert w.store.item_count() == 0


def test_submission_is_by_an_institution(w: World) -> None:
    # Given a doctor with no institution
    with pytest.raises(Forbidden) as exc:
        w.submit(visit(), NO_INST_DOCTOR)
    assert exc.value.code == "NO_INSTITUTION"
    # But the clinic's admin may submit the clinic's documents
    assert w.submit(visit(), CLINIC_ADMIN)[0] == 201


# ----------------------------------------------------------------- read
@pytest.fixture
def history(w: World) -> dict[str, str]:
    """A visit 20 days ago, a CBC 3 days ago (clinic) and a chest X-ray 10 days ago
    (hospital)."""
    ids = {
        "visit": w.submit(visit(20))[1]["doc_id"],
        "cbc": w.submit(cbc(3))[1]["doc_id"],
        "xray": w.submit(xray(10), HOSPITAL_DOCTOR)[1]["doc_id"],
    }
    w.audit.events.clear()
    return ids


def test_timeline_newest_first_across_institutions(w: World, history: dict[str, str]) -> None:
    # When the doctor with a referral reads the timeline
    out = w.service.timeline(DOCTOR, PID, {})
    # Then every document, newest first, with the institutions' names
    assert [i["doc_id"] for i in out["items"]] == [history["cbc"], history["xray"],
                                                   history["visit"]]  # fmt: skip
    assert [i["kind_name"] for i in out["items"]] == ["检验报告", "检查报告", "门诊摘要"]
    assert out["items"][1]["institution_name"] == "示范县人民医院"
    assert out["access"] == {"basis": "care_relationship", "emergency": False,
                             "relationship": "referral:R1"}  # fmt: skip
    assert out["person"]["person_id"] == PID
    # And the read is audited as a search
    (event,) = w.audit.events
    assert (event.action, event.what, event.outcome) == (
        AuditAction.SEARCH,
        "Record.timeline",
        AuditOutcome.SUCCESS,
    )


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ({"kind": "lab_report"}, ["cbc"]),
        ({"kind": "lab_report,exam_report"}, ["cbc", "xray"]),
        ({"institution_id": HOSPITAL}, ["xray"]),
        ({"from": (NOW - timedelta(days=10)).date().isoformat()}, ["cbc", "xray"]),
        ({"to": (NOW - timedelta(days=10)).date().isoformat()}, ["xray", "visit"]),
        ({"from": (NOW - timedelta(days=15)).date().isoformat(),
          "to": (NOW - timedelta(days=5)).date().isoformat()}, ["xray"]),
        ({"kind": "discharge_summary"}, []),
    ],
)  # fmt: skip
def test_timeline_filters(w: World, history: dict[str, str], query: dict[str, str],
                          expected: list[str]) -> None:  # fmt: skip
    out = w.service.timeline(DOCTOR, PID, query)
    assert [i["doc_id"] for i in out["items"]] == [history[k] for k in expected]
    assert out["count"] == len(expected)


@pytest.mark.parametrize(
    ("query", "code"),
    [({"kind": "x-ray"}, "KIND_INVALID"), ({"kind": "lab_report,foo"}, "KIND_INVALID"),
     ({"from": "2026-05-10", "to": "2026-05-01"}, "DATE_RANGE"),
     ({"from": "20260501"}, "INVALID_DATE")],
)  # fmt: skip
def test_timeline_bad_filters(w: World, history: dict[str, str], query: dict[str, str],
                              code: str) -> None:  # fmt: skip
    with pytest.raises(InvalidInput) as exc:
        w.service.timeline(DOCTOR, PID, query)
    assert exc.value.code == code
    if code == "KIND_INVALID":
        assert "lab_report" in exc.value.details["allowed"]


def test_reads_without_a_relationship_are_refused_and_audited(
    w: World, history: dict[str, str]
) -> None:
    # Given a doctor of a third institution with no relationship
    for read in (
        lambda: w.service.timeline(STRANGER_DOCTOR, PID, {}),
        lambda: w.service.summary(STRANGER_DOCTOR, PID),
        lambda: w.service.document(STRANGER_DOCTOR, history["cbc"]),
        lambda: w.service.search(STRANGER_DOCTOR, "Observation", {"patient": PID}),
        lambda: w.service.everything(STRANGER_DOCTOR, PID),
        lambda: w.service.recognition(STRANGER_DOCTOR, PID, "cbc"),
    ):
        # When they read / Then refused, break-glass offered
        with pytest.raises(Forbidden) as exc:
            read()
        assert exc.value.code == "NO_CARE_RELATIONSHIP"
    # And each attempt is audited as denied
    assert [e.outcome for e in w.audit.events] == [AuditOutcome.DENIED] * 6
    assert [e.what for e in w.audit.events] == [
        "Record.timeline", "Record.summary", "Record.document", "Observation.search",
        "Patient.$everything", "Record.recognition"]  # fmt: skip


def test_every_read_is_audited(w: World, history: dict[str, str]) -> None:
    # When the resident and their doctor read every way
    w.service.timeline(RESIDENT, PID, {})
    w.service.summary(RESIDENT, PID)
    w.service.document(DOCTOR, history["visit"])
    w.service.search(DOCTOR, "DiagnosticReport", {"patient": PID})
    w.service.everything(DOCTOR, PID)
    w.service.recognition(DOCTOR, PID, "cbc")
    # Then each read is one successful audit event on the person, with its action
    assert [(e.action, e.what) for e in w.audit.events] == [
        (AuditAction.SEARCH, "Record.timeline"), (AuditAction.READ, "Record.summary"),
        (AuditAction.READ, "Record.document"), (AuditAction.SEARCH, "DiagnosticReport.search"),
        (AuditAction.EXPORT, "Patient.$everything"), (AuditAction.SEARCH, "Record.recognition"),
    ]  # fmt: skip
    assert {e.person_ids for e in w.audit.events} == {(PID,)}
    assert {e.outcome for e in w.audit.events} == {AuditOutcome.SUCCESS}
    assert w.audit.events[2].detail["doc_id"] == history["visit"]


def test_summary(w: World, history: dict[str, str]) -> None:
    # When the doctor reads the summary
    out = w.service.summary(DOCTOR, PID)
    # Then the visit's problem and prescription, its vitals and the recent labs show
    assert [p["code"] for p in out["active_problems"]] == ["I10"]
    assert out["active_problems"][0]["institution_name"] == "桥头镇卫生院"
    assert len(out["current_medications"]) == 1
    assert any(v["value"].endswith("mmHg") and "/" in v["value"] for v in out["latest_vitals"])
    assert {lab["doc_id"] for lab in out["recent_labs"]} == {history["cbc"]}
    assert out["documents"] == {"count": 3, "institutions": [HOSPITAL, CLINIC],
                                "by_kind": {"lab_report": 1, "exam_report": 1,
                                            "outpatient": 1}}  # fmt: skip


def test_documents_of_a_merged_away_id_are_the_survivors(w: World) -> None:
    # Given a document filed under an id later merged into the person
    _, created = w.submit(visit())
    entry = w.store.entries[created["doc_id"]]
    w.store.entries[created["doc_id"]] = replace(entry, person_id="p-old")
    # When the doctor reads the survivor's timeline, or the old id's
    # Then the document is there both ways
    assert w.service.timeline(DOCTOR, PID, {})["count"] == 1
    assert w.service.timeline(DOCTOR, "p-old", {})["person"]["person_id"] == PID


def test_a_concurrent_identical_submit_is_unchanged(w: World) -> None:
    # Given the same visit landing from a retry between this submit's read and its write
    bundle = visit()
    save = w.store.save_version

    def racing(*args: Any) -> None:
        w.store.save_version = save  # type: ignore[method-assign]
        w.submit(copy.deepcopy(bundle))
        save(*args)

    w.store.save_version = racing  # type: ignore[method-assign]
    # When this submit writes
    status, result = w.submit(bundle)
    # Then it re-reads and finds its own body: unchanged, one version, one audited write
    assert (status, result["status"], result["version"]) == (200, "unchanged", 1)
    assert len(w.store.versions(result["doc_id"])) == 1 and len(w.writes()) == 1


def test_document_not_found(w: World) -> None:
    with pytest.raises(NotFound) as exc:
        w.service.document(DOCTOR, "dnope")
    assert exc.value.code == "DOCUMENT_NOT_FOUND"


# ----------------------------------------------------------------- FHIR search and export
def test_search_observations_by_code_and_date(w: World, history: dict[str, str]) -> None:
    # Given an older CBC too (40 days ago)
    w.submit(cbc(40, seed=8))
    # When searching haemoglobin (718-7)
    found = w.service.search(DOCTOR, "Observation", {"patient": PID, "code": "718-7"})
    # Then both results, newest first, localised
    assert len(found) == 2 and {r["code"]["coding"][0]["code"] for r in found} == {"718-7"}
    assert found[0]["effectiveDateTime"] > found[1]["effectiveDateTime"]
    assert found[0]["id"].startswith(history["cbc"] + "-")
    assert found[0]["subject"] == {"reference": f"Patient/{PID}"}
    # And with the system, a ge date, or an le date
    since = (NOW - timedelta(days=7)).date().isoformat()
    assert len(w.service.search(DOCTOR, "Observation", {
        "patient": PID, "code": "http://loinc.org|718-7"})) == 2  # fmt: skip
    recent = w.service.search(DOCTOR, "Observation", {"patient": PID, "code": "718-7",
                                                      "date": f"ge{since}"})  # fmt: skip
    assert [r["id"] for r in recent] == [found[0]["id"]]
    old = w.service.search(
        DOCTOR, "Observation", {"patient": f"Patient/{PID}", "code": "718-7", "date": f"le{since}"}
    )
    assert [r["id"] for r in old] == [found[1]["id"]]
    both = w.service.search(
        DOCTOR,
        "Observation",
        {"patient": PID, "code": "718-7,6690-2", "date": f"ge{since},le{NOW.date()}"},
    )
    assert len(both) == 2
    # And by category: vital signs come from the visit only
    vitals = w.service.search(DOCTOR, "Observation", {"patient": PID, "category": "vital-signs"})
    assert vitals and all(r["id"].startswith(history["visit"]) for r in vitals)


def test_search_diagnostic_reports(w: World, history: dict[str, str]) -> None:
    reports = w.service.search(DOCTOR, "DiagnosticReport", {"patient": PID})
    assert [r["id"].split("-")[0] for r in reports] == [history["cbc"], history["xray"]]
    cbcs = w.service.search(DOCTOR, "DiagnosticReport", {"patient": PID, "code": "58410-2"})
    assert len(cbcs) == 1 and cbcs[0]["result"][0]["reference"].startswith(
        f"Observation/{history['cbc']}-"
    )


@pytest.mark.parametrize(
    ("rtype", "query", "error", "code"),
    [
        ("Condition", {"patient": PID}, NotFound, "RESOURCE_TYPE"),
        ("Observation", {}, InvalidInput, "PATIENT_REQUIRED"),
        ("Observation", {"patient": PID, "date": "xx2026"}, InvalidInput, "DATE_PARAMETER"),
        ("Observation", {"patient": PID, "date": "sa2026-01-01"}, InvalidInput,
         "DATE_PARAMETER"),
    ],
)  # fmt: skip
def test_search_refusals(w: World, rtype: str, query: dict[str, str], error: type,
                         code: str) -> None:  # fmt: skip
    with pytest.raises(error) as exc:
        w.service.search(DOCTOR, rtype, query)
    assert exc.value.code == code


def test_everything_exports_every_current_resource(w: World, history: dict[str, str]) -> None:
    # When the doctor exports the record
    who, resources = w.service.everything(DOCTOR, PID)
    # Then every resource of every document, with server ids and the person as subject
    assert who.person_id == PID
    assert {r["id"].rsplit("-", 1)[0] for r in resources} == set(history.values())
    assert len(resources) == sum(len(e.facts) for e in w.store.entries.values())
    assert "urn:uuid:" not in repr(resources)
    assert w.audit.events[-1].action is AuditAction.EXPORT


# ----------------------------------------------------------------- mutual recognition
def test_recent_cbc_is_recognised(w: World, history: dict[str, str]) -> None:
    # When the doctor is about to order a CBC, three days after one was done
    out = w.service.recognition(DOCTOR, PID, "cbc")
    # Then the recent result is recognised, where it was done
    assert out["recognised"] and out["item"]["valid_days"] == 7
    assert [r["doc_id"] for r in out["results"]] == [history["cbc"]]
    assert out["results"][0]["institution_name"] == "桥头镇卫生院"
    assert out["results"][0]["code"] == "58410-2"
    # And asked by a LOINC code of the same exam, the same answer
    assert w.service.recognition(DOCTOR, PID, "58410-2")["recognised"]
    # And a chest X-ray (valid 30 days) from 10 days ago is recognised too
    assert w.service.recognition(DOCTOR, PID, "chest_xr")["recognised"]


def test_older_cbc_is_not_recognised(w: World) -> None:
    # Given only a CBC from eight days ago
    w.submit(cbc(8))
    # When the doctor asks / Then nothing recognised (the window is seven days)
    out = w.service.recognition(DOCTOR, PID, "cbc")
    assert (out["recognised"], out["results"]) == (False, [])


def test_recognition_item_must_be_known(w: World) -> None:
    with pytest.raises(InvalidInput) as exc:
        w.service.recognition(DOCTOR, PID, "mri-knee")
    assert exc.value.code == "RECOGNITION_ITEM_UNKNOWN" and "cbc" in exc.value.details["items"]
