"""The contract for contributed FHIR documents (yilian.domain.record): the pre-checks, the
business rules with their clear reasons, what kind of document a bundle is, stable ids,
localised resources, and the summary a doctor reads first."""

from __future__ import annotations

import copy
from collections.abc import Callable
from datetime import date, datetime, timedelta
from typing import Any

import pytest

from yilian.domain.clock import CHINA_TZ
from yilian.domain.errors import InvalidInput
from yilian.domain.record import (
    DOCUMENT_TYPES,
    ICD10_SYSTEMS,
    KIND_NAMES,
    LOINC,
    UCUM,
    Entry,
    Kind,
    Subject,
    check_not_before_birth,
    classify,
    document_id,
    facts_of,
    localise,
    precheck,
    read_document,
    summarise,
)
from yilian_local import sample_records as samples

PID = "p-zhangwei"
CLINIC, HOSPITAL = "qiaotou", "county-hospital"
WHEN = datetime(2025, 3, 4, 9, 30, tzinfo=CHINA_TZ)
NOW = datetime(2026, 6, 1, 9, 0, tzinfo=CHINA_TZ)
ID_CARD = {"system": "urn:oid:2.16.156.10011.1.3", "value": "330122195803150031"}
LOCAL = {"system": f"https://yilian.example/fhir/sid/local/{CLINIC}", "value": "V00017"}
HL7 = "http://terminology.hl7.org/CodeSystem/"
Json = dict[str, Any]


def visit(**kw: Any) -> Json:
    return samples.outpatient_visit(PID, CLINIC, seed=1, when=WHEN, diagnoses=["I10"], **kw)


def lab(**kw: Any) -> Json:
    return samples.lab_report(PID, CLINIC, seed=2, when=WHEN, **kw)


def read(bundle: Json, institution: str = CLINIC, now: datetime = NOW) -> Any:
    return read_document(bundle, institution, now)


def first(bundle: Json, rtype: str) -> Json:
    return next(e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == rtype)


def index_of(bundle: Json, rtype: str) -> int:
    return next(i for i, e in enumerate(bundle["entry"]) if e["resource"]["resourceType"] == rtype)


def refused(bundle: Any, code: str, check: Callable[[Any], Any] = read) -> InvalidInput:
    with pytest.raises(InvalidInput) as exc:
        check(bundle)
    assert exc.value.code == code, exc.value.message
    return exc.value


# ----------------------------------------------------------------- pre-checks
@pytest.mark.parametrize(
    ("mutate", "code"),
    [
        pytest.param(lambda b: [b], "NOT_A_BUNDLE", id="a list"),
        pytest.param(lambda b: b | {"resourceType": "Patient"}, "NOT_A_BUNDLE", id="a Patient"),
        pytest.param(lambda b: "text", "NOT_A_BUNDLE", id="a string"),
        pytest.param(lambda b: b | {"type": "collection"}, "BUNDLE_TYPE_NOT_ACCEPTED",
                     id="collection"),
        pytest.param(lambda b: b | {"type": "searchset"}, "BUNDLE_TYPE_NOT_ACCEPTED",
                     id="searchset"),
        pytest.param(lambda b: {k: v for k, v in b.items() if k != "type"},
                     "BUNDLE_TYPE_NOT_ACCEPTED", id="no type"),
        pytest.param(lambda b: b | {"entry": []}, "BUNDLE_EMPTY", id="no entries"),
        pytest.param(lambda b: {k: v for k, v in b.items() if k != "entry"}, "BUNDLE_EMPTY",
                     id="entry missing"),
        pytest.param(lambda b: b | {"entry": {"resource": {}}}, "BUNDLE_EMPTY",
                     id="entry not a list"),
        pytest.param(lambda b: b | {"entry": b["entry"] + [{"fullUrl": "urn:uuid:x"}]},
                     "ENTRY_WITHOUT_RESOURCE", id="entry without resource"),
        pytest.param(lambda b: b | {"entry": b["entry"] * 300}, "TOO_MANY_ENTRIES",
                     id="too many entries"),
    ],
)  # fmt: skip
def test_precheck_refusals(mutate: Callable[[Json], Any], code: str) -> None:
    # Given a valid visit, changed one way
    # When pre-checked / Then refused with the named reason
    refused(mutate(visit()), code, precheck)


@pytest.mark.parametrize("rtype", ["Claim", "Foo", "Bundle", None])
def test_precheck_refuses_resources_a_record_does_not_hold(rtype: str | None) -> None:
    # Given a visit with one foreign resource third
    bundle = visit()
    bundle["entry"].insert(2, {"resource": {"resourceType": rtype, "id": "x"}})
    # When / Then refused, naming the entry and what is accepted
    err = refused(bundle, "RESOURCE_NOT_ACCEPTED", precheck)
    assert err.details["entry"] == 2 and "Condition" in err.details["accepted"]


def test_precheck_accepts_every_sample() -> None:
    for bundle in (visit(), visit(document=True), lab(),
                   samples.inpatient_stay(PID, HOSPITAL, seed=3, admitted=WHEN),
                   samples.discharge_document(PID, HOSPITAL, seed=3, admitted=WHEN),
                   samples.imaging_report(PID, HOSPITAL, seed=4, when=WHEN),
                   samples.allergy_record(PID, CLINIC, seed=5, when=WHEN)):  # fmt: skip
        precheck(bundle)
        read(bundle, bundle["identifier"]["system"].rsplit("/", 1)[1])


# ----------------------------------------------------------------- the source id
def test_read_document_gives_the_source_subject_kind_and_date() -> None:
    # Given a clinic visit naming its patient by id
    bundle = visit()
    # When read
    doc = read(bundle)
    # Then its source id, subject, kind, date, title and author come out
    assert doc.source_id == bundle["identifier"]["value"]
    assert doc.subject == Subject(person_id=PID)
    assert doc.kind is Kind.OUTPATIENT and doc.effective == "2025-03-04T09:30:00+08:00"
    assert doc.day == "2025-03-04"
    assert doc.title == "门诊摘要：原发性高血压" and doc.author == "王芳"
    assert len(doc.resources) == len(bundle["entry"])


@pytest.mark.parametrize(
    ("identifier", "code"),
    [
        (None, "SOURCE_ID_MISSING"),
        ({}, "SOURCE_ID_MISSING"),
        ({"system": "https://yilian.example/fhir/sid/document/qiaotou"}, "SOURCE_ID_MISSING"),
        ("opd-1", "SOURCE_ID_MISSING"),
        ({"value": "has space"}, "SOURCE_ID_INVALID"),
        ({"value": "x" * 65}, "SOURCE_ID_INVALID"),
        ({"value": "病历-1"}, "SOURCE_ID_INVALID"),
        ({"system": "https://yilian.example/fhir/sid/document/county-hospital", "value": "a1"},
         "SOURCE_SYSTEM_MISMATCH"),
    ],
)  # fmt: skip
def test_source_id_rules(identifier: Any, code: str) -> None:
    # Given a visit with its identifier replaced
    bundle = visit() | {"identifier": identifier}
    # When read as the clinic / Then refused with the reason
    err = refused(bundle, code)
    if code == "SOURCE_ID_MISSING":
        assert err.details["system"].endswith("/document/qiaotou")


def test_source_id_without_system_and_at_the_limits_is_accepted() -> None:
    for value in ("a", "A.b_c:d-9" + "x" * 55):
        assert read(visit() | {"identifier": {"value": value}}).source_id == value


# ----------------------------------------------------------------- the subject
def test_subject_missing_everywhere() -> None:
    # Given a visit whose resources name no patient
    bundle = visit()
    for e in bundle["entry"]:
        e["resource"].pop("subject", None)
    # Then refused
    refused(bundle, "SUBJECT_MISSING")


def test_subject_missing_on_one_resource_names_the_entry() -> None:
    # Given a visit whose one Condition lost its subject
    bundle = visit()
    i = index_of(bundle, "Condition")
    del bundle["entry"][i]["resource"]["subject"]
    # Then refused, naming that entry
    assert refused(bundle, "SUBJECT_MISSING").details["entry"] == i


def test_subject_mixed() -> None:
    # Given a visit with one Observation about another person
    bundle = visit()
    first(bundle, "Observation")["subject"] = {"reference": "Patient/p-someone-else"}
    # Then one Bundle is about one person
    assert refused(bundle, "SUBJECT_MIXED").details["subjects"] == 2


@pytest.mark.parametrize(
    ("identifier", "subject"),
    [
        (ID_CARD, Subject(id_card=ID_CARD["value"])),
        (LOCAL, Subject(local_number="V00017", local_assigner=CLINIC)),
    ],
)
def test_patient_entry_names_the_subject(identifier: Json, subject: Subject) -> None:
    # Given a visit naming its patient by a Patient entry with an identifier
    bundle = visit(patient_identifier=identifier)
    # When read / Then the subject is that identifier, to resolve in the index
    assert read(bundle).subject == subject
    precheck(bundle)


def test_patient_entry_without_a_known_identifier_is_unresolved() -> None:
    # Given a Patient entry with only a phone-book identifier
    bundle = visit(patient_identifier={"system": "urn:example:other", "value": "1"})
    # Then the subject cannot be resolved, and the accepted systems are named
    err = refused(bundle, "SUBJECT_UNRESOLVED")
    assert ID_CARD["system"] in err.details["systems"]


def test_subject_reference_not_in_the_bundle_is_unresolved() -> None:
    # Given every subject pointing at a urn:uuid no entry has
    bundle = visit()
    for e in bundle["entry"]:
        if "subject" in e["resource"]:
            e["resource"]["subject"] = {"reference": "urn:uuid:0000-nowhere"}
    refused(bundle, "SUBJECT_UNRESOLVED")


def test_subject_reference_to_a_non_patient_entry_is_unresolved() -> None:
    # Given every subject pointing at the Encounter entry
    bundle = visit()
    enc = bundle["entry"][index_of(bundle, "Encounter")]["fullUrl"]
    for e in bundle["entry"]:
        if "subject" in e["resource"]:
            e["resource"]["subject"] = {"reference": enc}
    refused(bundle, "SUBJECT_UNRESOLVED")


# ----------------------------------------------------------------- codes and units
SNOMED = "http://snomed.info/sct"


def _recode(rtype: str, coding: list[Json]) -> Callable[[Json], None]:
    def change(b: Json) -> None:
        first(b, rtype)["code"] = {"coding": coding}

    return change


@pytest.mark.parametrize(
    ("make", "mutate", "code"),
    [
        pytest.param(visit, _recode("Condition", [{"system": SNOMED, "code": "38341003"}]),
                     "CODE_SYSTEM_NOT_ACCEPTED", id="Condition in SNOMED"),
        pytest.param(visit, _recode("Condition", []), "CODE_SYSTEM_NOT_ACCEPTED",
                     id="Condition uncoded"),
        pytest.param(visit, _recode("Condition", [{"system": sorted(ICD10_SYSTEMS)[0]}]),
                     "CODE_SYSTEM_NOT_ACCEPTED", id="Condition ICD-10 without a code"),
        pytest.param(visit, _recode("Observation", [{"system": SNOMED, "code": "75367002"}]),
                     "CODE_SYSTEM_NOT_ACCEPTED", id="Observation without LOINC"),
        pytest.param(lab, _recode("DiagnosticReport", [{"system": "urn:local", "code": "CBC"}]),
                     "CODE_SYSTEM_NOT_ACCEPTED", id="DiagnosticReport without LOINC"),
        pytest.param(visit, _recode("Condition", [{"system": "http://hl7.org/fhir/sid/icd-10",
                                                   "code": "XYZ"}]),
                     "CODE_INVALID", id="bad ICD-10"),
        pytest.param(visit, _recode("Condition", [{"system": "urn:oid:2.16.156.10011.2.3.3.11",
                                                   "code": "I1O"}]),
                     "CODE_INVALID", id="bad ICD-10, national oid"),
        pytest.param(visit, lambda b: first(b, "Observation").update(
            valueQuantity={"value": 80, "unit": "kg"}), "UNIT_NOT_UCUM", id="unit without UCUM"),
        pytest.param(visit, lambda b: first(b, "Observation")["component"][0].update(
            valueQuantity={"value": 80, "system": UCUM}), "UNIT_NOT_UCUM",
            id="component without a unit code"),
        pytest.param(lab, lambda b: first(b, "Observation").update(
            valueQuantity={"value": 5, "system": "urn:local", "code": "g/L"}), "UNIT_NOT_UCUM",
            id="lab unit in a local system"),
    ],
)  # fmt: skip
def test_codes_and_units(make: Callable[[], Json], mutate: Callable[[Json], None],
                         code: str) -> None:  # fmt: skip
    # Given a valid bundle with one resource recoded
    bundle = make()
    mutate(bundle)
    # When read / Then refused with the reason
    refused(bundle, code)


def _stay() -> Json:
    return samples.inpatient_stay(PID, HOSPITAL, seed=3, admitted=WHEN)


@pytest.mark.parametrize(
    ("coding", "code"),
    [
        ({"system": "http://hl7.org/fhir/sid/icd-10", "code": "K80.1"}, "CODE_SYSTEM_NOT_ACCEPTED"),
        ({"system": "http://hl7.org/fhir/sid/icd-9-cm", "code": "3607"}, "CODE_INVALID"),
        ({"system": "http://hl7.org/fhir/sid/icd-9-cm", "code": "A1.2"}, "CODE_INVALID"),
        ({"system": "urn:oid:2.16.156.10011.2.3.3.12", "code": "36.071"}, "CODE_INVALID"),
    ],
)  # fmt: skip
def test_procedure_codes_are_icd9cm3(coding: Json, code: str) -> None:
    # Given a stay whose procedure is recoded
    bundle = _stay()
    first(bundle, "Procedure")["code"] = {"coding": [coding]}
    # Then refused
    refused(bundle, code, lambda b: read(b, HOSPITAL))


@pytest.mark.parametrize("value", ["36", "36.0", "36.07", "99.10"])
def test_valid_icd9cm3_codes_pass(value: str) -> None:
    bundle = _stay()
    first(bundle, "Procedure")["code"] = {
        "coding": [{"system": "http://hl7.org/fhir/sid/icd-9-cm", "code": value}]
    }
    assert read(bundle, HOSPITAL).kind is Kind.DISCHARGE_SUMMARY


def test_a_second_coding_in_another_system_is_fine() -> None:
    # Given a Condition coded in ICD-10 and SNOMED both
    bundle = visit()
    first(bundle, "Condition")["code"]["coding"].append({"system": SNOMED, "code": "38341003"})
    # Then accepted
    assert read(bundle).kind is Kind.OUTPATIENT


# ----------------------------------------------------------------- dates
@pytest.mark.parametrize(
    ("value", "code"),
    [
        ("2026-06-02", "DATE_IN_FUTURE"),
        ("2026-06-01T09:20:00+08:00", "DATE_IN_FUTURE"),  # past the 10 minutes' skew
        ("2026-06-01T01:11:00Z", "DATE_IN_FUTURE"),
        ("1899-12-31", "DATE_IMPLAUSIBLE"),
        ("1899-12-31T23:00:00+08:00", "DATE_IMPLAUSIBLE"),
        ("2025-13-45", "DATE_INVALID"),
    ],
)
def test_dates_are_sensible(value: str, code: str) -> None:
    # Given a visit with one Observation dated so
    bundle = visit()
    i = index_of(bundle, "Observation")
    bundle["entry"][i]["resource"]["effectiveDateTime"] = value
    # Then refused, naming the entry
    err = refused(bundle, code)
    if code == "DATE_IN_FUTURE":
        assert (err.details["entry"], err.details["path"]) == (i, "effectiveDateTime")


@pytest.mark.parametrize("path", ["period.end", "period.start"])
def test_period_dates_are_checked(path: str) -> None:
    bundle = visit()
    enc = first(bundle, "Encounter")
    enc["period"][path.split(".")[1]] = "2027-01-01T00:00:00+08:00"
    assert refused(bundle, "DATE_IN_FUTURE").details["path"] == path


def test_dates_within_the_clock_skew_and_1900_pass() -> None:
    bundle = visit()
    first(bundle, "Observation")["effectiveDateTime"] = "2026-06-01T09:09:00+08:00"
    first(bundle, "Condition")["onsetDateTime"] = "1900-01-01"
    assert read(bundle).kind is Kind.OUTPATIENT


def test_nothing_before_birth() -> None:
    # Given a visit on 2025-03-04 and a person born that day or the day after
    doc = read(visit())
    check_not_before_birth(doc, "2025-03-04")
    # When born after / Then refused, naming the entry and the field
    with pytest.raises(InvalidInput) as exc:
        check_not_before_birth(doc, "2025-03-05")
    assert exc.value.code == "DATE_BEFORE_BIRTH"
    assert {"entry", "path"} <= set(exc.value.details)


# ----------------------------------------------------------------- kind
def _typed(rtype: str, code: str) -> list[Json]:
    return [{"resourceType": rtype, "type": {"coding": [{"system": LOINC, "code": code}]}},
            {"resourceType": "Encounter", "class": {"code": "AMB"}}]  # fmt: skip


@pytest.mark.parametrize("rtype", ["Composition", "DocumentReference"])
@pytest.mark.parametrize(("code", "kind"), sorted(DOCUMENT_TYPES.items()))
def test_kind_from_document_type(rtype: str, code: str, kind: Kind) -> None:
    # Given a Composition or DocumentReference of a LOINC document type (and an AMB visit)
    # Then the type names the kind, whatever the content
    assert classify(_typed(rtype, code)) is kind


def test_composition_type_wins_over_document_reference() -> None:
    resources = _typed("DocumentReference", "57133-1") + _typed("Composition", "18842-5")
    assert classify(resources) is Kind.DISCHARGE_SUMMARY


def test_unknown_document_type_falls_back_to_content() -> None:
    resources = [{"resourceType": "Composition", "type": {"coding": [
        {"system": LOINC, "code": "00000-0"}, {"system": "urn:x", "code": "18842-5"}]}},
        {"resourceType": "MedicationRequest"}]  # fmt: skip
    assert classify(resources) is Kind.PRESCRIPTION


def _enc(cls: str) -> Json:
    return {"resourceType": "Encounter", "class": {"code": cls}}


def _report(category: str) -> Json:
    return {"resourceType": "DiagnosticReport",
            "category": [{"coding": [{"system": f"{HL7}v2-0074", "code": category}]}]}  # fmt: skip


CONTENT: list[tuple[str, list[Json], Kind]] = [
    ("inpatient IMP", [_enc("IMP"), _report("LAB")], Kind.INPATIENT),
    ("inpatient ACUTE", [_enc("ACUTE")], Kind.INPATIENT),
    ("inpatient NONAC", [_enc("NONAC")], Kind.INPATIENT),
    ("ambulatory", [_enc("AMB"), _report("LAB")], Kind.OUTPATIENT),
    ("emergency", [_enc("EMER")], Kind.OUTPATIENT),
    ("virtual", [_enc("VR")], Kind.OUTPATIENT),
    ("home health", [_enc("HH")], Kind.OUTPATIENT),
    ("radiology report", [_report("RAD"), {"resourceType": "Observation"}], Kind.EXAM_REPORT),
    ("ultrasound report", [_report("US")], Kind.EXAM_REPORT),
    ("CT report", [_report("CT")], Kind.EXAM_REPORT),
    ("imaging study alone", [{"resourceType": "ImagingStudy"}], Kind.EXAM_REPORT),
    ("lab report", [_report("LAB"), {"resourceType": "Observation"}], Kind.LAB_REPORT),
    ("observations alone", [{"resourceType": "Observation"}], Kind.LAB_REPORT),
    ("prescription", [{"resourceType": "MedicationRequest"}], Kind.PRESCRIPTION),
    ("allergy", [{"resourceType": "AllergyIntolerance"}], Kind.HEALTH_SUMMARY),
    ("unknown encounter class", [_enc("FLD"), {"resourceType": "Condition"}],
     Kind.HEALTH_SUMMARY),
]  # fmt: skip


@pytest.mark.parametrize(("resources", "kind"), [pytest.param(*c[1:], id=c[0]) for c in CONTENT])
def test_kind_from_content(resources: list[Json], kind: Kind) -> None:
    assert classify(resources) is kind


def test_every_kind_is_reachable_and_named() -> None:
    # Given the kinds the document types and the content give
    reached = set(DOCUMENT_TYPES.values()) | {k for *_, k in CONTENT}
    # Then every kind is reachable and has a Chinese name
    assert reached == set(Kind)
    assert set(KIND_NAMES) == set(Kind) and all(n.name for n in KIND_NAMES.values())
    assert KIND_NAMES[Kind.LAB_REPORT].name == "检验报告"
    assert KIND_NAMES[Kind.EXAM_REPORT].name == "检查报告"


@pytest.mark.parametrize(
    ("bundle", "kind"),
    [
        pytest.param(visit(), Kind.OUTPATIENT, id="visit"),
        pytest.param(visit(document=True), Kind.OUTPATIENT, id="visit document"),
        pytest.param(visit(referral_to="示范县人民医院"), Kind.REFERRAL_LETTER,
                     id="visit with a referral letter"),
        pytest.param(samples.discharge_document(PID, HOSPITAL, seed=3, admitted=WHEN),
                     Kind.DISCHARGE_SUMMARY, id="discharge"),
        pytest.param(lab(), Kind.LAB_REPORT, id="lab"),
        pytest.param(samples.imaging_report(PID, HOSPITAL, seed=4, when=WHEN, exam="abdomen_us"),
                     Kind.EXAM_REPORT, id="ultrasound"),
    ],
)  # fmt: skip
def test_kind_of_samples(bundle: Json, kind: Kind) -> None:
    inst = bundle["identifier"]["system"].rsplit("/", 1)[1]
    assert read(bundle, inst).kind is kind


# ----------------------------------------------------------------- ids
def test_document_id_is_deterministic_and_scoped() -> None:
    # Given / When the same source id twice, and varied by each part
    a = document_id("demo-county", CLINIC, "opd-1")
    # Then the same id, of a fixed shape; any other part gives another
    assert a == document_id("demo-county", CLINIC, "opd-1")
    assert a.startswith("d") and len(a) == 25 and a[1:].isalnum() and a == a.lower()
    others = {document_id("other-county", CLINIC, "opd-1"), document_id("demo-county", HOSPITAL,
              "opd-1"), document_id("demo-county", CLINIC, "opd-2")}  # fmt: skip
    assert a not in others and len(others) == 3


def test_localise_gives_stable_ids_and_rewrites_references() -> None:
    # Given a visit naming its patient by ID card (a Patient entry first)
    bundle = visit(patient_identifier=ID_CARD)
    conditions = [e["fullUrl"] for e in bundle["entry"]
                  if e["resource"]["resourceType"] == "Condition"]  # fmt: skip
    first(bundle, "Encounter")["diagnosis"] = [{"condition": {"reference": u}} for u in conditions]
    doc = read(bundle)
    # When localised as document d1 of person p-1
    out = localise(doc, "d1", "p-1")
    # Then the Patient entry is gone, every other resource has id d1-{n} (n: its entry)
    assert [r["resourceType"] for r in out] == [
        e["resource"]["resourceType"] for e in bundle["entry"][1:]
    ]
    assert [r["id"] for r in out] == [f"d1-{n}" for n in range(1, len(bundle["entry"]))]
    # And the subject is the person, intra-bundle references are Type/id
    assert {r["subject"]["reference"] for r in out} == {"Patient/p-1"}
    enc_n = index_of(bundle, "Encounter")
    cond = next(r for r in out if r["resourceType"] == "Condition")
    assert cond["encounter"]["reference"] == f"Encounter/d1-{enc_n}"
    enc = next(r for r in out if r["resourceType"] == "Encounter")
    assert {d["condition"]["reference"] for d in enc["diagnosis"]} == {
        f"Condition/d1-{i}" for i, e in enumerate(bundle["entry"])
        if e["resource"]["resourceType"] == "Condition"}  # fmt: skip
    assert "urn:uuid:" not in repr(out)
    # And the bundle itself is unchanged
    assert first(bundle, "Condition")["encounter"]["reference"].startswith("urn:uuid:")


def test_localise_keeps_patient_references_and_unknown_ones() -> None:
    bundle = visit()
    first(bundle, "Condition")["evidence"] = [{"detail": [{"reference": "Observation/elsewhere"}]}]
    out = localise(read(bundle), "d2", PID)
    assert {r["subject"]["reference"] for r in out} == {f"Patient/{PID}"}
    assert "Observation/elsewhere" in repr(out)


def test_facts_are_the_clinical_resources_without_narrative() -> None:
    bundle = visit(document=True, patient_identifier=LOCAL)
    first(bundle, "Condition")["text"] = {"status": "generated", "div": "<div>高血压</div>"}
    facts = facts_of(localise(read(bundle), "d3", PID))
    kinds = {f["resourceType"] for f in facts}
    assert "Composition" not in kinds and "Patient" not in kinds
    assert {"Encounter", "Condition", "Observation"} <= kinds
    assert all("text" not in f for f in facts)


# ----------------------------------------------------------------- the summary
TODAY = date(2026, 6, 1)


def at(days_ago: int) -> str:
    return (datetime(2026, 6, 1, 9, 0, tzinfo=CHINA_TZ) - timedelta(days=days_ago)).isoformat()


def entry(*facts: Json, doc: str = "d1", days_ago: int = 0, inst: str = CLINIC) -> Entry:
    return Entry(doc, PID, inst, "s-" + doc, Kind.OUTPATIENT, at(days_ago), "t", "王芳", 1,
                 at(days_ago), "doc-wang", len(facts), tuple(facts))  # fmt: skip


def condition(code: str, days_ago: int, status: str = "active",
              category: str = "encounter-diagnosis") -> Json:  # fmt: skip
    return {"resourceType": "Condition",
            "clinicalStatus": {"coding": [{"system": f"{HL7}condition-clinical", "code": status}]},
            "category": [{"coding": [{"code": category}]}],
            "code": {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10", "code": code}],
                     "text": samples.DIAGNOSES.get(code, code)},
            "recordedDate": at(days_ago)}  # fmt: skip


def medication(name: str, days_ago: int, until_days: int | None, status: str = "active") -> Json:
    res: Json = {"resourceType": "MedicationRequest", "status": status,
                 "medicationCodeableConcept": {"text": name}, "authoredOn": at(days_ago),
                 "dosageInstruction": [{"text": "每日一次"}]}  # fmt: skip
    if until_days is not None:
        end = (TODAY + timedelta(days=until_days)).isoformat()
        res["dispenseRequest"] = {"validityPeriod": {"end": end}}
    return res


def observation(code: str, days_ago: int, category: str, value: float | None = None,
                components: tuple[float, float] | None = None) -> Json:  # fmt: skip
    res: Json = {"resourceType": "Observation", "status": "final",
                 "category": [{"coding": [{"code": category}]}],
                 "code": {"coding": [{"system": LOINC, "code": code}], "text": code},
                 "effectiveDateTime": at(days_ago)}  # fmt: skip
    if components:
        res["component"] = [
            {"code": {"coding": [{"system": LOINC, "code": c}]},
             "valueQuantity": {"value": v, "unit": "mmHg", "system": UCUM, "code": "mm[Hg]"}}
            for c, v in zip(("8480-6", "8462-4"), components, strict=True)
        ]  # fmt: skip
    else:
        res["valueQuantity"] = {"value": value, "unit": "kg", "system": UCUM, "code": "kg"}
    return res


def allergy(substance: str, days_ago: int, status: str = "active") -> Json:
    return {"resourceType": "AllergyIntolerance", "code": {"text": substance},
            "clinicalStatus": {"coding": [{"code": status}]}, "criticality": "high",
            "recordedDate": at(days_ago)}  # fmt: skip


def test_newest_statement_about_a_problem_wins() -> None:
    # Given hypertension active two months ago, and a cold resolved since it was noted
    entries = [
        entry(condition("I10", 60), condition("J06.9", 30), doc="d1", days_ago=60),
        entry(condition("J06.9", 10, status="resolved"), doc="d2", days_ago=10),
    ]
    # When summarised
    out = summarise(entries, TODAY)
    # Then hypertension is active, the resolved cold dropped out
    assert [(p["code"], p["doc_id"]) for p in out["active_problems"]] == [("I10", "d1")]
    # And a newer active statement brings it back
    entries.append(entry(condition("J06.9", 2), doc="d3", days_ago=2))
    assert [p["code"] for p in summarise(entries, TODAY)["active_problems"]] == ["J06.9", "I10"]


def test_visit_diagnoses_age_out_but_problem_list_items_do_not() -> None:
    # Given an old visit diagnosis and an old problem-list item, both active
    entries = [entry(condition("J20.9", 366), condition("E11.9", 800,
                     category="problem-list-item"), days_ago=366)]  # fmt: skip
    # When summarised / Then only the problem-list item still counts
    assert [p["code"] for p in summarise(entries, TODAY)["active_problems"]] == ["E11.9"]
    # And a visit diagnosis within the year still counts
    recent = [entry(condition("J20.9", 364))]
    assert [p["code"] for p in summarise(recent, TODAY)["active_problems"]] == ["J20.9"]


def test_current_medications_by_validity_end() -> None:
    # Given a running prescription, an ended one, a completed one, one with no end
    entries = [entry(
        medication("氨氯地平", 20, until_days=8),
        medication("二甲双胍", 40, until_days=-1),
        medication("连花清瘟", 3, until_days=2, status="completed"),
        medication("阿托伐他汀", 30, until_days=None),
        medication("阿司匹林", 120, until_days=None),
    )]  # fmt: skip
    # When summarised
    meds = summarise(entries, TODAY)["current_medications"]
    # Then the running one and the recent open-ended one are current, newest first
    assert [m["name"] for m in meds] == ["氨氯地平", "阿托伐他汀"]
    assert meds[0]["until"] == "2026-06-09" and meds[0]["dosage"] == "每日一次"
    assert "current" not in meds[0]


def test_a_newer_prescription_replaces_an_older_one() -> None:
    entries = [
        entry(medication("氨氯地平", 40, until_days=30), doc="d1"),
        entry(medication("氨氯地平", 5, until_days=-1, status="stopped"), doc="d2"),
    ]
    assert summarise(entries, TODAY)["current_medications"] == []


def test_allergies_active_only() -> None:
    entries = [entry(allergy("青霉素", 900), allergy("头孢菌素类", 100),
                     allergy("磺胺类药物", 50, status="inactive"))]  # fmt: skip
    out = summarise(entries, TODAY)["allergies"]
    assert [a["substance"] for a in out] == ["头孢菌素类", "青霉素"]
    assert out[0]["criticality"] == "high"


def test_latest_vitals_per_code_with_blood_pressure() -> None:
    # Given two blood pressures and two weights on different days
    entries = [
        entry(observation("85354-9", 30, "vital-signs", components=(150, 95)),
              observation("29463-7", 30, "vital-signs", value=70.5), doc="d1", days_ago=30),
        entry(observation("85354-9", 2, "vital-signs", components=(138, 88)), doc="d2",
              days_ago=2),
        entry(observation("29463-7", 400, "vital-signs", value=80.0), doc="d0", days_ago=400),
    ]  # fmt: skip
    # When summarised
    vitals = summarise(entries, TODAY)["latest_vitals"]
    # Then the latest of each code, newest first, the pressure as "138/88 mmHg"
    assert [(v["code"], v["value"], v["doc_id"]) for v in vitals] == [
        ("85354-9", "138/88 mmHg", "d2"),
        ("29463-7", "70.5 kg", "d1"),
    ]


def test_recent_labs_window() -> None:
    # Given labs 10, 179 and 181 days ago, and a vital sign
    entries = [entry(observation("718-7", 10, "laboratory", value=130),
                     observation("2160-0", 179, "laboratory", value=80),
                     observation("1558-6", 181, "laboratory", value=6.0),
                     observation("8867-4", 5, "vital-signs", value=72))]  # fmt: skip
    # When summarised
    labs = summarise(entries, TODAY)["recent_labs"]
    # Then the two within 180 days, newest first
    assert [lab["code"] for lab in labs] == ["718-7", "2160-0"]
    assert [
        lab["code"] for lab in summarise(entries, TODAY, recent_lab_days=30)["recent_labs"]
    ] == ["718-7"]


def test_summary_of_a_sample_visit() -> None:
    # Given a clinic visit for hypertension contributed yesterday
    when = NOW - timedelta(days=1)
    bundle = samples.outpatient_visit(PID, CLINIC, seed=7, when=when, diagnoses=["I10"])
    doc = read(bundle)
    facts = facts_of(localise(doc, "d9", PID))
    e = Entry("d9", PID, CLINIC, doc.source_id, doc.kind, doc.effective, doc.title, doc.author,
              1, doc.effective, "doc-wang", len(facts), tuple(facts))  # fmt: skip
    # When summarised
    out = summarise([e], TODAY)
    # Then the problem, its prescription and the vitals show
    assert [p["code"] for p in out["active_problems"]] == ["I10"]
    assert len(out["current_medications"]) == 1
    bp = next(v for v in out["latest_vitals"] if v["code"] == "85354-9")
    assert bp["value"].endswith(" mmHg") and "/" in bp["value"]
    assert {v["institution_id"] for v in out["latest_vitals"]} == {CLINIC}


def test_deep_copies_are_independent() -> None:
    # Guard for the mutations above: a generator call gives a fresh bundle every time
    a = visit()
    b = copy.deepcopy(a)
    first(b, "Condition")["code"] = {}
    assert first(a, "Condition")["code"] and visit() == a
