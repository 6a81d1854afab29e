"""Sample health records: every generated Bundle is valid FHIR R4, follows the contract for
contributed documents (identifier, subject, urn:uuid references, code systems), and is the
same every time for the same seed."""

import base64
import re
from collections.abc import Iterator
from datetime import date, datetime
from functools import partial
from typing import Any

import pytest
from fhir.resources.R4B.bundle import Bundle

from yilian.domain.clock import CHINA_TZ
from yilian_local import sample_records as records

PERSON = "3f9a1c0d5e7b2a4c6d8e"
CLINIC, HOSPITAL = "qiaotou", "county-hospital"
WHEN = datetime(2025, 3, 4, 9, 30, tzinfo=CHINA_TZ)
ID_CARD = {"system": "urn:oid:2.16.156.10011.1.3", "value": "330122195803150031"}
LOCAL = {"system": f"https://yilian.example/fhir/sid/local/{CLINIC}", "value": "V00017"}
SOURCE_ID = re.compile(r"[A-Za-z0-9._:\-]{1,64}")
ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}(T\d{2}:\d{2}:\d{2}\+08:00)?")
SUBJECT_OF = {
    "Encounter": "subject", "Condition": "subject", "Observation": "subject",
    "MedicationRequest": "subject", "Procedure": "subject", "DiagnosticReport": "subject",
    "DocumentReference": "subject", "ImagingStudy": "subject", "Composition": "subject",
    "AllergyIntolerance": "patient",
}  # fmt: skip

GENERATORS = {
    "outpatient": partial(records.outpatient_visit, PERSON, CLINIC, when=WHEN),
    "outpatient_document": partial(records.outpatient_visit, PERSON, CLINIC, when=WHEN,
                                   document=True, referral_to="示范县人民医院"),
    "inpatient": partial(records.inpatient_stay, PERSON, HOSPITAL, admitted=WHEN),
    "discharge": partial(records.discharge_document, PERSON, HOSPITAL, admitted=WHEN),
    **{f"lab_{panel}": partial(records.lab_report, PERSON, CLINIC, when=WHEN, panel=panel)
       for panel in records.PANELS},
    **{f"imaging_{exam}": partial(records.imaging_report, PERSON, HOSPITAL, when=WHEN, exam=exam)
       for exam in records.EXAMS},
    "allergy": partial(records.allergy_record, PERSON, CLINIC, when=WHEN),
    "padded": partial(records.bundle_with_entries, PERSON, CLINIC, when=WHEN),
}  # fmt: skip


def resources(bundle: dict[str, Any]) -> list[dict[str, Any]]:
    return [e["resource"] for e in bundle["entry"]]


def of_type(bundle: dict[str, Any], rtype: str) -> list[dict[str, Any]]:
    return [r for r in resources(bundle) if r["resourceType"] == rtype]


def references(value: Any) -> Iterator[str]:
    if isinstance(value, dict):
        if isinstance(value.get("reference"), str):
            yield value["reference"]
        for v in value.values():
            yield from references(v)
    elif isinstance(value, list):
        for v in value:
            yield from references(v)


def effective(bundle: dict[str, Any]) -> str:
    """When a document happened: its Composition's date, else its encounter, report, record."""
    if bundle["type"] == "document":
        return bundle["timestamp"]
    by_type = {r["resourceType"]: r for r in resources(bundle)}
    if "Encounter" in by_type:
        return by_type["Encounter"]["period"]["start"]
    if "DiagnosticReport" in by_type:
        return by_type["DiagnosticReport"]["effectiveDateTime"]
    return by_type["AllergyIntolerance"]["recordedDate"]


def clinical_dates(value: Any) -> Iterator[date]:
    """Every date in the resources, but a prescription's validity (it may run past today)."""
    if isinstance(value, dict):
        for k, v in value.items():
            if k != "validityPeriod":
                yield from clinical_dates(v)
    elif isinstance(value, list):
        for v in value:
            yield from clinical_dates(v)
    elif isinstance(value, str) and ISO_DATE.fullmatch(value):
        yield date.fromisoformat(value[:10])


@pytest.mark.parametrize("kind", GENERATORS)
@pytest.mark.parametrize("identifier", [None, ID_CARD, LOCAL], ids=["person", "card", "local"])
def test_every_bundle_is_valid_fhir_and_follows_the_contract(kind, identifier):
    # Given a generator, naming the patient by person id or by an identifier
    # When it makes a bundle
    bundle = GENERATORS[kind](seed=11, patient_identifier=identifier)

    # Then fhir.resources accepts it
    Bundle.model_validate(bundle)
    # and it carries the institution's own, well-formed id for the document
    institution = bundle["identifier"]["system"].rsplit("/", 1)[1]
    assert (
        bundle["identifier"]["system"] == f"https://yilian.example/fhir/sid/document/{institution}"
    )
    assert SOURCE_ID.fullmatch(bundle["identifier"]["value"])
    # and every entry has a urn:uuid, every reference inside the bundle resolves
    urls = [e["fullUrl"] for e in bundle["entry"]]
    assert all(u.startswith("urn:uuid:") for u in urls) and len(set(urls)) == len(urls)
    for ref in references(resources(bundle)):
        assert ref in urls or ref == f"Patient/{PERSON}" or ref == f"Organization/{institution}"
    # and every resource is about the one patient
    patients = of_type(bundle, "Patient")
    assert [p["identifier"] for p in patients] == ([] if identifier is None else [[identifier]])
    expected = next(
        (e["fullUrl"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Patient"),
        f"Patient/{PERSON}",
    )
    for r in resources(bundle):
        if r["resourceType"] in SUBJECT_OF:
            assert r[SUBJECT_OF[r["resourceType"]]] == {"reference": expected}, r["resourceType"]
    # and a transaction POSTs each entry, a document starts with its Composition
    if bundle["type"] == "transaction":
        assert all(e["request"]["method"] == "POST" for e in bundle["entry"])
        assert all(e["request"]["url"] == e["resource"]["resourceType"] for e in bundle["entry"])
    else:
        assert bundle["type"] == "document" and bundle["timestamp"]
        assert resources(bundle)[0]["resourceType"] == "Composition"


def test_the_same_seed_gives_the_same_bundle_and_another_seed_another():
    for kind, make in GENERATORS.items():
        # Given two calls with one seed and one with another
        first, again, other = make(seed=5), make(seed=5), make(seed=6)

        # Then the first two are equal, uuids and all; the third is another document
        assert first == again, kind
        assert other["identifier"]["value"] != first["identifier"]["value"], kind
        assert other["entry"][0]["fullUrl"] != first["entry"][0]["fullUrl"], kind


def test_an_outpatient_visit_has_icd10_diagnoses_vitals_and_prescriptions():
    # Given a hypertension follow-up at the township health centre
    bundle = records.outpatient_visit(PERSON, CLINIC, seed=3, when=WHEN, diagnoses=["I10"])

    # Then the encounter is ambulatory and provided by the centre
    (encounter,) = of_type(bundle, "Encounter")
    assert encounter["class"]["code"] == "AMB"
    assert encounter["serviceProvider"] == {"reference": "Organization/qiaotou",
                                            "display": "桥头镇卫生院"}  # fmt: skip
    assert encounter["period"]["start"] == "2025-03-04T09:30:00+08:00"
    (condition,) = of_type(bundle, "Condition")
    assert condition["code"]["coding"] == [
        {"system": "http://hl7.org/fhir/sid/icd-10", "code": "I10", "display": "原发性高血压"}
    ]
    # and blood pressure comes as systolic and diastolic components in mmHg, no single value
    (bp,) = [
        o for o in of_type(bundle, "Observation") if o["code"]["coding"][0]["code"] == "85354-9"
    ]
    assert "valueQuantity" not in bp
    assert [c["code"]["coding"][0]["code"] for c in bp["component"]] == ["8480-6", "8462-4"]
    assert {c["valueQuantity"]["code"] for c in bp["component"]} == {"mm[Hg]"}
    # and every quantity is UCUM-coded
    observations = of_type(bundle, "Observation")
    quantities = [o["valueQuantity"] for o in observations if "valueQuantity" in o] + [
        c["valueQuantity"] for o in observations for c in o.get("component", [])
    ]
    assert len(quantities) == 5  # systolic, diastolic, heart rate, temperature, weight
    assert all(q["system"] == "http://unitsofmeasure.org" and q["code"] for q in quantities)
    (med,) = of_type(bundle, "MedicationRequest")
    assert med["intent"] == "order" and med["dosageInstruction"][0]["text"]


def test_an_inpatient_stay_has_a_procedure_and_a_readable_discharge_summary():
    # Given a seven-day stay at the county hospital
    bundle = records.inpatient_stay(PERSON, HOSPITAL, seed=2, admitted=WHEN, days=7)

    # Then it holds an ICD-9-CM-3 procedure within the stay
    (encounter,) = of_type(bundle, "Encounter")
    assert encounter["class"]["code"] == "IMP"
    assert encounter["period"]["end"][:10] == "2025-03-11"
    (procedure,) = of_type(bundle, "Procedure")
    assert procedure["code"]["coding"][0]["system"] == "http://hl7.org/fhir/sid/icd-9-cm"
    assert WHEN.isoformat() <= procedure["performedDateTime"] <= encounter["period"]["end"]
    # and a discharge summary a Chinese reader can open
    (summary,) = of_type(bundle, "DocumentReference")
    assert summary["type"]["coding"][0]["code"] == "18842-5"
    attachment = summary["content"][0]["attachment"]
    assert attachment["contentType"] == "text/plain; charset=utf-8"
    assert base64.b64decode(attachment["data"]).decode().startswith("出院小结")
    # and the discharge document has the same content behind its Composition
    document = records.discharge_document(PERSON, HOSPITAL, seed=2, admitted=WHEN, days=7)
    assert resources(document)[1:] == resources(bundle)
    assert document["identifier"]["value"] != bundle["identifier"]["value"]


def test_reports_carry_their_results_and_their_study():
    # Given a lipid panel and a chest CT
    lab = records.lab_report(PERSON, CLINIC, seed=4, when=WHEN, panel="lipid")
    ct = records.imaging_report(PERSON, HOSPITAL, seed=4, when=WHEN, exam="chest_ct")

    # Then the lab report points at its four results, flagged against their ranges
    (report,) = of_type(lab, "DiagnosticReport")
    assert report["category"][0]["coding"][0]["code"] == "LAB"
    assert len(report["result"]) == len(of_type(lab, "Observation")) == 4
    assert all(
        o["interpretation"][0]["coding"][0]["code"] in "HLN" for o in of_type(lab, "Observation")
    )
    # and the CT report points at a CT study whose series add up
    (report,) = of_type(ct, "DiagnosticReport")
    (study,) = of_type(ct, "ImagingStudy")
    assert report["imagingStudy"] == [{"reference": ct["entry"][0]["fullUrl"]}]
    assert study["modality"][0]["code"] == "CT"
    assert study["identifier"][0]["value"].startswith("urn:oid:1.2.")
    assert study["numberOfInstances"] == sum(s["numberOfInstances"] for s in study["series"])


@pytest.mark.parametrize("n", [50, 200])
def test_a_benchmark_bundle_has_exactly_the_entries_asked_for(n):
    # Given an outpatient visit padded with lab results
    bundle = records.bundle_with_entries(PERSON, CLINIC, seed=9, n_entries=n, when=WHEN)

    # Then it has exactly n entries, and is still valid
    assert len(bundle["entry"]) == n
    Bundle.model_validate(bundle)


def test_a_benchmark_bundle_smaller_than_a_visit_is_refused():
    with pytest.raises(ValueError, match="entries"):
        records.bundle_with_entries(PERSON, CLINIC, seed=9, n_entries=3, when=WHEN)


@pytest.mark.parametrize(
    ("birth", "n"),
    [(date(1952, 6, 1), 150), (date(2023, 2, 10), 40), (date(2025, 12, 20), 8)],
    ids=["elder", "toddler", "newborn"],
)
def test_a_history_lies_between_birth_and_today_oldest_first(birth, n):
    # Given a person's history across the county hospital, a health centre and a village clinic
    today = date(2026, 1, 1)
    institutions = [HOSPITAL, CLINIC, "qiaotou-lijia"]

    # When it is generated
    history = records.history_for(PERSON, institutions, seed=1, n_documents=n, today=today,
                                  birth_date=birth)  # fmt: skip

    # Then every document is valid, about the person, and dated between birth and today
    assert len(history) == n
    for bundle in history:
        Bundle.model_validate(bundle)
        for r in resources(bundle):
            assert r[SUBJECT_OF[r["resourceType"]]] == {"reference": f"Patient/{PERSON}"}
        assert all(birth <= d <= today for d in clinical_dates(resources(bundle)))
    # and each has its own source id, the whole the same every time
    assert len({b["identifier"]["value"] for b in history}) == n
    assert history == records.history_for(PERSON, institutions, seed=1, n_documents=n,
                                          today=today, birth_date=birth)  # fmt: skip
    # and they run oldest first
    dates = [effective(b) for b in history]
    assert dates == sorted(dates)


def test_a_long_history_mixes_kinds_and_institutions():
    # Given eight years of an elder's record
    history = records.history_for(PERSON, [HOSPITAL, CLINIC, "qiaotou-lijia"], seed=2,
                                  n_documents=300, today=date(2026, 1, 1),
                                  birth_date=date(1950, 1, 1))  # fmt: skip

    # Then it holds visits, labs, an allergy, a stay and imaging, at every institution
    kinds = {b["identifier"]["value"].split("-")[0] for b in history}
    assert (
        {"opd", "labcbc", "alg"} <= kinds
        and kinds & {"ipd", "dis"}
        and kinds & {"imgct", "imgdx", "imgus"}
    )
    institutions = {b["identifier"]["system"].rsplit("/", 1)[1] for b in history}
    assert institutions == {HOSPITAL, CLINIC, "qiaotou-lijia"}
    # and spans the years
    days = [effective(b)[:10] for b in history]
    assert days[0] < "2019-01-01" and days[-1] > "2025-06-01"
