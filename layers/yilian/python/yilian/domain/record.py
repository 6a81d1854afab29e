"""The shared health record (健康档案): documents institutions contribute, as FHIR R4 Bundles.

A *document* is one Bundle an institution submits (type document or transaction), named by
the institution's own id for it (Bundle.identifier.value). This module holds the rules that
need no AWS and no fhir.resources: which resources and code systems are accepted, what kind
of document a bundle is (named as the national shared-document spec WS/T 500 names it),
the business checks, the indexed *facts* a document contributes, and the summary computed
from them. fhir.resources' structural validation runs before these rules, at the API edge.

Contract for contributors (also in README "Health records"):
- Bundle.identifier = {system: https://yilian.example/fhir/sid/document/{institution}, value}
- every subject/patient reference is "Patient/{person_id}", or points at one Patient entry in
  the bundle whose identifier is an ID card (urn:oid:2.16.156.10011.1.3) or the institution's
  local patient number (https://yilian.example/fhir/sid/local/{institution})
- Condition: ICD-10; Procedure: ICD-9-CM-3; Observation/DiagnosticReport: LOINC; quantities
  in UCUM; no date in the future.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from enum import StrEnum
from typing import Any

from yilian.domain.clock import CHINA_TZ
from yilian.domain.errors import InvalidInput

ICD10_SYSTEMS = frozenset({"http://hl7.org/fhir/sid/icd-10", "urn:oid:2.16.156.10011.2.3.3.11"})
ICD9CM3_SYSTEMS = frozenset({"http://hl7.org/fhir/sid/icd-9-cm", "urn:oid:2.16.156.10011.2.3.3.12"})
LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
ID_CARD_SYSTEM = "urn:oid:2.16.156.10011.1.3"
SID_BASE = "https://yilian.example/fhir/sid"
DOCUMENT_SYSTEM_PREFIX = f"{SID_BASE}/document/"
LOCAL_SYSTEM_PREFIX = f"{SID_BASE}/local/"
OBS_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
V2_0074 = "http://terminology.hl7.org/CodeSystem/v2-0074"
ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"

ACCEPTED_RESOURCES = frozenset(
    {
        "Patient", "Composition", "Encounter", "Condition", "Observation", "MedicationRequest",
        "Procedure", "DiagnosticReport", "DocumentReference", "ImagingStudy",
        "AllergyIntolerance", "Practitioner", "Organization",
    }
)  # fmt: skip
# Resources a document contributes to the person's indexed facts (summary and searches).
FACT_RESOURCES = frozenset(
    {
        "Encounter", "Condition", "Observation", "MedicationRequest", "Procedure",
        "DiagnosticReport", "AllergyIntolerance", "ImagingStudy", "DocumentReference",
    }
)  # fmt: skip
MAX_ENTRIES = 2000
SOURCE_ID = re.compile(r"[A-Za-z0-9._:\-]{1,64}")
CLOCK_SKEW = timedelta(minutes=10)
EARLIEST = date(1900, 1, 1)


class Kind(StrEnum):
    OUTPATIENT = "outpatient"
    INPATIENT = "inpatient"
    DISCHARGE_SUMMARY = "discharge_summary"
    LAB_REPORT = "lab_report"
    EXAM_REPORT = "exam_report"
    PRESCRIPTION = "prescription"
    REFERRAL_LETTER = "referral_letter"
    CONSULT_NOTE = "consult_note"
    HEALTH_SUMMARY = "health_summary"


@dataclass(frozen=True, slots=True)
class KindName:
    name: str  # what a Chinese reader calls it
    spec: str  # the WS/T 500 part it corresponds to ("" where the spec has none)


KIND_NAMES: dict[Kind, KindName] = {
    Kind.OUTPATIENT: KindName("门诊摘要", "WS/T 500.2 门(急)诊病历"),
    Kind.INPATIENT: KindName("住院摘要", "WS/T 500.53 出院小结"),
    Kind.DISCHARGE_SUMMARY: KindName("出院小结", "WS/T 500.53 出院小结"),
    Kind.LAB_REPORT: KindName("检验报告", "WS/T 500.7 检验报告"),
    Kind.EXAM_REPORT: KindName("检查报告", "WS/T 500.6 检查报告"),
    Kind.PRESCRIPTION: KindName("处方", "WS/T 500.4 西药处方"),
    Kind.REFERRAL_LETTER: KindName("转诊记录", ""),
    Kind.CONSULT_NOTE: KindName("会诊记录", ""),
    Kind.HEALTH_SUMMARY: KindName("病历概要", "WS/T 500.1 病历概要"),
}

# LOINC document types (Composition.type, DocumentReference.type) -> kind.
DOCUMENT_TYPES: dict[str, Kind] = {
    "18842-5": Kind.DISCHARGE_SUMMARY,
    "34133-9": Kind.HEALTH_SUMMARY,
    "60591-5": Kind.HEALTH_SUMMARY,
    "11506-3": Kind.OUTPATIENT,
    "34108-1": Kind.OUTPATIENT,
    "11502-2": Kind.LAB_REPORT,
    "18748-4": Kind.EXAM_REPORT,
    "57133-1": Kind.REFERRAL_LETTER,
    "11488-4": Kind.CONSULT_NOTE,
    "57833-6": Kind.PRESCRIPTION,
}
IMAGING_CATEGORIES = frozenset({"RAD", "US", "CT", "RX", "NMR", "CUS", "IMG", "OUS", "VUS"})


# ----------------------------------------------------------------- the parsed document
@dataclass(frozen=True, slots=True)
class Subject:
    """Who a bundle is about: a person id, or identifiers to resolve in the master index."""

    person_id: str | None = None
    id_card: str | None = None
    local_number: str | None = None
    local_assigner: str | None = None


@dataclass(frozen=True, slots=True)
class Document:
    source_id: str
    bundle_type: str
    subject: Subject
    kind: Kind
    effective: str  # ISO date-time of the clinical event the document records
    title: str
    author: str
    resources: tuple[dict[str, Any], ...]  # every entry's resource, in order
    full_urls: tuple[str, ...]

    @property
    def day(self) -> str:
        return self.effective[:10]


def document_id(consortium_id: str, institution_id: str, source_id: str) -> str:
    """Deterministic: the same institution's document id is always the same record, which
    makes submit idempotent without a lookup table."""
    digest = hashlib.sha256(f"{consortium_id}|{institution_id}|{source_id}".encode()).digest()
    return "d" + base64.b32encode(digest).decode().lower().rstrip("=")[:24]


def body_hash(bundle: Mapping[str, Any]) -> str:
    canonical = json.dumps(bundle, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


# ----------------------------------------------------------------- pre-checks (before fhir)
def precheck(bundle: Any) -> None:
    """What must hold before fhir.resources is asked: a Bundle of an accepted type with
    accepted resources. Gives a clearer reason than a pydantic error for the common mistakes."""
    if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
        raise InvalidInput("NOT_A_BUNDLE", "submit a FHIR R4 Bundle (resourceType Bundle)")
    if bundle.get("type") not in ("document", "transaction"):
        raise InvalidInput(
            "BUNDLE_TYPE_NOT_ACCEPTED",
            "a contributed Bundle is of type document or transaction",
            type=bundle.get("type"),
        )
    entries = bundle.get("entry")
    if not isinstance(entries, list) or not entries:
        raise InvalidInput("BUNDLE_EMPTY", "the Bundle has no entries")
    if len(entries) > MAX_ENTRIES:
        raise InvalidInput("TOO_MANY_ENTRIES", f"at most {MAX_ENTRIES} entries per Bundle")
    for i, entry in enumerate(entries):
        resource = entry.get("resource") if isinstance(entry, dict) else None
        if not isinstance(resource, dict):
            raise InvalidInput("ENTRY_WITHOUT_RESOURCE", f"entry {i} has no resource", entry=i)
        rtype = resource.get("resourceType")
        if rtype not in ACCEPTED_RESOURCES:
            raise InvalidInput(
                "RESOURCE_NOT_ACCEPTED",
                f"entry {i}: resource type {rtype!r} is not accepted in a health record",
                entry=i,
                accepted=sorted(ACCEPTED_RESOURCES),
            )


# ----------------------------------------------------------------- business rules
def read_document(bundle: Mapping[str, Any], institution_id: str, now: datetime) -> Document:
    """The business rules over a structurally valid Bundle; raises InvalidInput naming the
    entry and the rule. The subject is returned unresolved (the service resolves it)."""
    source_id = _source_id(bundle, institution_id)
    entries = bundle["entry"]
    resources = tuple(e["resource"] for e in entries)
    full_urls = tuple(str(e.get("fullUrl") or "") for e in entries)
    subject = _subject(resources, full_urls)
    latest = now + CLOCK_SKEW
    for i, resource in enumerate(resources):
        _check_codes(i, resource)
        for path, when in _dates(resource):
            _check_date(i, path, when, latest)
    kind = classify(resources)
    return Document(
        source_id=source_id,
        bundle_type=str(bundle["type"]),
        subject=subject,
        kind=kind,
        effective=_effective(bundle, resources) or now.isoformat(timespec="seconds"),
        title=_title(resources, kind),
        author=_author(resources),
        resources=resources,
        full_urls=full_urls,
    )


def check_not_before_birth(doc: Document, birth_date: str) -> None:
    for i, resource in enumerate(doc.resources):
        for path, when in _dates(resource):
            if when[:10] < birth_date:
                raise InvalidInput(
                    "DATE_BEFORE_BIRTH",
                    f"entry {i} ({resource['resourceType']}.{path}) is before the person's birth",
                    entry=i,
                    path=path,
                )


def _source_id(bundle: Mapping[str, Any], institution_id: str) -> str:
    ident = bundle.get("identifier") or {}
    value = ident.get("value") if isinstance(ident, dict) else None
    if not value:
        raise InvalidInput(
            "SOURCE_ID_MISSING",
            "Bundle.identifier.value must carry your institution's id for this document",
            system=f"{DOCUMENT_SYSTEM_PREFIX}{institution_id}",
        )
    if not SOURCE_ID.fullmatch(value):
        raise InvalidInput("SOURCE_ID_INVALID", "a document id is 1-64 of A-Z a-z 0-9 . _ : -")
    system = ident.get("system")
    if system and system != f"{DOCUMENT_SYSTEM_PREFIX}{institution_id}":
        raise InvalidInput(
            "SOURCE_SYSTEM_MISMATCH",
            "Bundle.identifier.system names another institution",
            expected=f"{DOCUMENT_SYSTEM_PREFIX}{institution_id}",
        )
    return str(value)


def _references(resource: Mapping[str, Any]) -> list[str]:
    out = []
    for name in ("subject", "patient"):
        ref = resource.get(name)
        if isinstance(ref, dict) and ref.get("reference"):
            out.append(str(ref["reference"]))
    return out


def _subject(resources: tuple[dict[str, Any], ...], full_urls: tuple[str, ...]) -> Subject:
    refs = {r for res in resources for r in _references(res)}
    if not refs:
        raise InvalidInput("SUBJECT_MISSING", "no resource names its subject (the patient)")
    if len(refs) > 1:
        raise InvalidInput("SUBJECT_MIXED", "one Bundle is about one person", subjects=len(refs))
    ref = refs.pop()
    for i, res in enumerate(resources):
        if res.get("resourceType") in FACT_RESOURCES and not _references(res):
            raise InvalidInput(
                "SUBJECT_MISSING",
                f"entry {i} ({res['resourceType']}) does not name its subject",
                entry=i,
            )
    if ref.startswith("Patient/"):
        return Subject(person_id=ref[len("Patient/") :][:64])
    patients = [r for u, r in zip(full_urls, resources, strict=True) if u == ref]
    if not patients or patients[0].get("resourceType") != "Patient":
        raise InvalidInput("SUBJECT_UNRESOLVED", f"the subject {ref!r} is not in the Bundle")
    return _subject_from_patient(patients[0])


def _subject_from_patient(patient: Mapping[str, Any]) -> Subject:
    for ident in patient.get("identifier") or []:
        system, value = ident.get("system") or "", ident.get("value") or ""
        if system == ID_CARD_SYSTEM and value:
            return Subject(id_card=value)
        if system.startswith(LOCAL_SYSTEM_PREFIX) and value:
            return Subject(local_number=value, local_assigner=system[len(LOCAL_SYSTEM_PREFIX) :])
    raise InvalidInput(
        "SUBJECT_UNRESOLVED",
        "the Patient entry carries no ID card number nor local patient number",
        systems=[ID_CARD_SYSTEM, f"{LOCAL_SYSTEM_PREFIX}{{institution}}"],
    )


def _codings(concept: Any) -> list[dict[str, Any]]:
    if not isinstance(concept, dict):
        return []
    return [c for c in concept.get("coding") or [] if isinstance(c, dict)]


def _require_system(i: int, rtype: str, concept: Any, systems: Iterable[str], what: str) -> None:
    allowed = set(systems)
    codings = _codings(concept)
    if not any(c.get("system") in allowed and c.get("code") for c in codings):
        raise InvalidInput(
            "CODE_SYSTEM_NOT_ACCEPTED",
            f"entry {i} ({rtype}.code) needs a {what} coding",
            entry=i,
            expected=sorted(allowed),
            got=sorted({str(c.get("system")) for c in codings}),
        )


ICD9CM3 = re.compile(r"\d{2}(\.\d{1,2})?")


def _check_codes(i: int, res: Mapping[str, Any]) -> None:
    from yilian.domain.terminology.icd10 import is_valid_icd10_format

    rtype = str(res.get("resourceType"))
    if rtype == "Condition":
        _require_system(i, rtype, res.get("code"), ICD10_SYSTEMS, "ICD-10")
        for c in _codings(res.get("code")):
            if c.get("system") in ICD10_SYSTEMS and not is_valid_icd10_format(c.get("code")):
                raise InvalidInput("CODE_INVALID", f"entry {i}: {c.get('code')!r} is not ICD-10")
    elif rtype == "Procedure":
        _require_system(i, rtype, res.get("code"), ICD9CM3_SYSTEMS, "ICD-9-CM-3")
        for c in _codings(res.get("code")):
            if c.get("system") in ICD9CM3_SYSTEMS and not ICD9CM3.fullmatch(c.get("code") or ""):
                raise InvalidInput(
                    "CODE_INVALID", f"entry {i}: {c.get('code')!r} is not ICD-9-CM-3"
                )
    elif rtype in ("Observation", "DiagnosticReport"):
        _require_system(i, rtype, res.get("code"), (LOINC,), "LOINC")
        for q in _quantities(res):
            if q.get("system") != UCUM or not q.get("code"):
                raise InvalidInput(
                    "UNIT_NOT_UCUM",
                    f"entry {i} ({rtype}): quantities carry a UCUM unit code",
                    entry=i,
                    expected=UCUM,
                )


def _quantities(res: Mapping[str, Any]) -> Iterator[Mapping[str, Any]]:
    if isinstance(res.get("valueQuantity"), dict):
        yield res["valueQuantity"]
    for comp in res.get("component") or []:
        if isinstance(comp, dict) and isinstance(comp.get("valueQuantity"), dict):
            yield comp["valueQuantity"]


DATE_FIELDS = (
    "effectiveDateTime", "issued", "authoredOn", "recordedDate", "onsetDateTime",
    "performedDateTime", "date", "started", "abatementDateTime",
)  # fmt: skip
PERIOD_FIELDS = ("period", "performedPeriod", "effectivePeriod")


def _dates(res: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
    for name in DATE_FIELDS:
        if isinstance(res.get(name), str):
            yield name, res[name]
    for name in PERIOD_FIELDS:
        period = res.get(name)
        if isinstance(period, dict):
            for end in ("start", "end"):
                if isinstance(period.get(end), str):
                    yield f"{name}.{end}", period[end]


def _instant(value: str) -> datetime:
    if len(value) <= 10:  # a date (or year/month): its first moment in China
        parts = [int(p) for p in value.split("-")] + [1, 1]
        return datetime(parts[0], parts[1], parts[2], tzinfo=CHINA_TZ)
    t = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return t if t.tzinfo else t.replace(tzinfo=CHINA_TZ)


def china_time(value: str) -> str:
    """A FHIR date or dateTime as stored and compared: ISO in Asia/Shanghai (+08:00), so
    string order is time order and the date part is the China day it happened."""
    return _instant(value).astimezone(CHINA_TZ).isoformat(timespec="seconds")


def _check_date(i: int, path: str, value: str, latest: datetime) -> None:
    try:
        when = _instant(value)
    except ValueError:
        raise InvalidInput("DATE_INVALID", f"entry {i}: {path} is not a date", entry=i) from None
    if when > latest:
        raise InvalidInput(
            "DATE_IN_FUTURE", f"entry {i}: {path} {value} is in the future", entry=i, path=path
        )
    if when.date() < EARLIEST:
        raise InvalidInput("DATE_IMPLAUSIBLE", f"entry {i}: {path} {value} is before 1900")


# ----------------------------------------------------------------- kind, title, date
def _doc_type(res: Mapping[str, Any]) -> Kind | None:
    for c in _codings(res.get("type")):
        if c.get("system") == LOINC and c.get("code") in DOCUMENT_TYPES:
            return DOCUMENT_TYPES[str(c["code"])]
    return None


def _category_codes(res: Mapping[str, Any]) -> set[str]:
    cats = res.get("category") or []
    cats = cats if isinstance(cats, list) else [cats]
    return {str(c.get("code")) for cat in cats for c in _codings(cat)}


def _encounter_class(res: Mapping[str, Any]) -> str:
    cls = res.get("class")
    return str(cls.get("code")) if isinstance(cls, dict) else ""


def classify(resources: Iterable[Mapping[str, Any]]) -> Kind:
    """What kind of document a bundle is: its Composition or DocumentReference type when it
    names one, otherwise its content (an inpatient encounter before a lab report...)."""
    by_type: dict[str, list[Mapping[str, Any]]] = {}
    for res in resources:
        by_type.setdefault(str(res.get("resourceType")), []).append(res)
    for rtype in ("Composition", "DocumentReference"):
        for res in by_type.get(rtype, []):
            if kind := _doc_type(res):
                return kind
    classes = {_encounter_class(e) for e in by_type.get("Encounter", [])}
    if classes & {"IMP", "ACUTE", "NONAC"}:
        return Kind.INPATIENT
    if classes & {"AMB", "EMER", "VR", "HH"}:
        return Kind.OUTPATIENT
    categories = {c for r in by_type.get("DiagnosticReport", []) for c in _category_codes(r)}
    if categories & IMAGING_CATEGORIES or by_type.get("ImagingStudy"):
        return Kind.EXAM_REPORT
    if by_type.get("DiagnosticReport") or by_type.get("Observation"):
        return Kind.LAB_REPORT
    if by_type.get("MedicationRequest"):
        return Kind.PRESCRIPTION
    return Kind.HEALTH_SUMMARY


def _effective(bundle: Mapping[str, Any], resources: Iterable[Mapping[str, Any]]) -> str | None:
    for rtype, path in (
        ("Composition", ("date",)),
        ("Encounter", ("period", "start")),
        ("DiagnosticReport", ("effectiveDateTime",)),
        ("DocumentReference", ("date",)),
        ("Observation", ("effectiveDateTime",)),
        ("Procedure", ("performedDateTime",)),
        ("MedicationRequest", ("authoredOn",)),
        ("AllergyIntolerance", ("recordedDate",)),
    ):
        for res in resources:
            if res.get("resourceType") == rtype:
                value: Any = res
                for step in path:
                    value = value.get(step) if isinstance(value, dict) else None
                if isinstance(value, str):
                    return china_time(value)
    ts = bundle.get("timestamp")
    return china_time(ts) if isinstance(ts, str) else None


def concept_text(concept: Any) -> str:
    if not isinstance(concept, dict):
        return ""
    if concept.get("text"):
        return str(concept["text"])
    for c in _codings(concept):
        if c.get("display"):
            return str(c["display"])
    codings = _codings(concept)
    return str(codings[0].get("code", "")) if codings else ""


def concept_code(concept: Any, systems: Iterable[str] | None = None) -> str:
    allowed = set(systems) if systems else None
    for c in _codings(concept):
        if allowed is None or c.get("system") in allowed:
            return str(c.get("code") or "")
    return ""


def _title(resources: Iterable[Mapping[str, Any]], kind: Kind) -> str:
    resources = list(resources)
    for res in resources:
        if res.get("resourceType") == "Composition" and res.get("title"):
            return str(res["title"])[:200]
    for rtype in ("DiagnosticReport", "Condition"):
        names = [concept_text(r.get("code")) for r in resources if r.get("resourceType") == rtype]
        if names := [n for n in names if n]:
            return (KIND_NAMES[kind].name + "：" + "、".join(dict.fromkeys(names)))[:200]
    return KIND_NAMES[kind].name


def _author(resources: Iterable[Mapping[str, Any]]) -> str:
    for res in resources:
        for a in res.get("author") or []:
            if isinstance(a, dict) and a.get("display"):
                return str(a["display"])[:100]
        for p in res.get("participant") or []:
            ind = p.get("individual") if isinstance(p, dict) else None
            if isinstance(ind, dict) and ind.get("display"):
                return str(ind["display"])[:100]
        for name in ("requester", "performer", "recorder", "asserter"):
            ref = res.get(name)
            ref = ref[0] if isinstance(ref, list) and ref else ref
            if isinstance(ref, dict) and ref.get("display"):
                return str(ref["display"])[:100]
    return ""


# ----------------------------------------------------------------- facts
def localise(doc: Document, doc_id: str, person_id: str) -> list[dict[str, Any]]:
    """The document's resources with stable server ids ({doc_id}-{n}) and their
    intra-bundle urn:uuid references rewritten to Type/id, as FHIR searches return them; a
    Patient entry (the subject named by identifier) becomes the person in the index."""
    ids = {
        url: f"Patient/{person_id}"
        if res.get("resourceType") == "Patient"
        else f"{res['resourceType']}/{doc_id}-{n}"
        for n, (url, res) in enumerate(zip(doc.full_urls, doc.resources, strict=True))
        if url
    }
    out = []
    for n, res in enumerate(doc.resources):
        if res.get("resourceType") == "Patient":
            continue
        copy = _rewrite(res, ids)
        copy["id"] = f"{doc_id}-{n}"
        if copy.get("resourceType") == "DocumentReference":
            copy = without_attachments(copy, INLINE_ATTACHMENT_BYTES)
        out.append(copy)
    return out


def _rewrite(value: Any, ids: Mapping[str, str]) -> Any:
    if isinstance(value, dict):
        out = {k: _rewrite(v, ids) for k, v in value.items()}
        ref = out.get("reference")
        if isinstance(ref, str) and ref in ids:
            out["reference"] = ids[ref]
        return out
    if isinstance(value, list):
        return [_rewrite(v, ids) for v in value]
    return value


def facts_of(resources: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The (localised) resources that feed summaries and searches, without narrative."""
    out = []
    for res in resources:
        if res.get("resourceType") not in FACT_RESOURCES:
            continue
        copy = dict(res)
        copy.pop("text", None)  # narrative: the body keeps it
        if copy.get("resourceType") == "DocumentReference":
            copy = without_attachments(copy, 0)  # the document view serves them
        out.append(copy)
    return out


INLINE_ATTACHMENT_BYTES = 512 * 1024  # base64 characters served inline with a document


def without_attachments(res: Mapping[str, Any], limit: int) -> dict[str, Any]:
    """A DocumentReference whose attachments over `limit` base64 characters are left out
    (size kept): API responses stay under Lambda's 6 MB; the stored body keeps them."""
    out = dict(res)
    content = []
    for c in res.get("content") or []:
        att = dict(c.get("attachment") or {})
        data = att.get("data")
        if isinstance(data, str) and len(data) > limit:
            att.pop("data")
            att.setdefault("size", len(data) * 3 // 4)
        content.append({**c, "attachment": att})
    out["content"] = content
    return out


@dataclass(frozen=True, slots=True)
class Entry:
    """A document as the timeline lists it (no clinical content beyond its title)."""

    doc_id: str
    person_id: str
    institution_id: str
    source_id: str
    kind: Kind
    effective: str
    title: str
    author: str
    version: int
    submitted_at: str
    submitted_by: str
    resource_count: int
    facts: tuple[dict[str, Any], ...] = field(default=(), compare=False)

    def view(self, institution_names: Mapping[str, str] | None = None) -> dict[str, Any]:
        names = KIND_NAMES[self.kind]
        return {
            "doc_id": self.doc_id,
            "person_id": self.person_id,
            "kind": str(self.kind),
            "kind_name": names.name,
            "spec": names.spec,
            "title": self.title,
            "date": self.effective,
            "institution_id": self.institution_id,
            "institution_name": (institution_names or {}).get(self.institution_id, ""),
            "author": self.author,
            "version": self.version,
            "submitted_at": self.submitted_at,
            "resource_count": self.resource_count,
        }


# ----------------------------------------------------------------- the summary
def _when(res: Mapping[str, Any], fallback: str) -> str:
    for name in ("effectiveDateTime", "recordedDate", "onsetDateTime", "authoredOn", "issued"):
        if isinstance(res.get(name), str):
            return china_time(res[name])
    return fallback


def _status(res: Mapping[str, Any], name: str) -> str:
    return concept_code(res.get(name)) or ""


@dataclass
class _Latest:
    items: dict[str, tuple[str, dict[str, Any]]] = field(default_factory=dict)

    def offer(self, key: str, when: str, value: dict[str, Any]) -> None:
        if key and (key not in self.items or self.items[key][0] <= when):
            self.items[key] = (when, value)

    def newest_first(self) -> list[dict[str, Any]]:
        return [v for _, v in sorted(self.items.values(), key=lambda p: p[0], reverse=True)]


def summarise(entries: Iterable[Entry], today: date, recent_lab_days: int = 180) -> dict[str, Any]:
    """Active problems, current medications, allergies, latest vitals and recent labs, from
    the facts of every document (the newest statement about a thing wins)."""
    problems, meds, allergies, vitals, labs = _Latest(), _Latest(), _Latest(), _Latest(), []
    lab_since = (today - timedelta(days=recent_lab_days)).isoformat()
    problem_since = (today - timedelta(days=PROBLEM_DAYS)).isoformat()
    for e in entries:
        where = {"doc_id": e.doc_id, "institution_id": e.institution_id}
        for res in e.facts:
            rtype, when = res.get("resourceType"), _when(res, e.effective)
            if rtype == "Condition":
                code = concept_code(res.get("code"), ICD10_SYSTEMS)
                problems.offer(code, when, {
                    "code": code, "name": concept_text(res.get("code")), "date": when,
                    "active": _problem_active(res, when, problem_since), **where})  # fmt: skip
            elif rtype == "MedicationRequest":
                name = concept_text(res.get("medicationCodeableConcept"))
                meds.offer(name, when, _medication(res, name, when, today, where))
            elif rtype == "AllergyIntolerance":
                name = concept_text(res.get("code"))
                allergies.offer(name, when, {
                    "substance": name, "criticality": res.get("criticality", ""),
                    "active": _status(res, "clinicalStatus") in ("active", ""), "date": when,
                    **where})  # fmt: skip
            elif rtype == "Observation":
                obs = observation_view(res, when) | where
                cats = _category_codes(res)
                if "vital-signs" in cats:
                    vitals.offer(obs["code"], when, obs)
                elif "laboratory" in cats and when[:10] >= lab_since:
                    labs.append(obs)
    labs.sort(key=lambda o: o["date"], reverse=True)
    return {
        "active_problems": [p for p in problems.newest_first() if p.pop("active")],
        "current_medications": [m for m in meds.newest_first() if m.pop("current")],
        "allergies": [a for a in allergies.newest_first() if a.pop("active")],
        "latest_vitals": vitals.newest_first(),
        "recent_labs": labs[:50],
    }


PROBLEM_DAYS = 365  # a visit diagnosis not seen again for a year no longer counts as active


def _problem_active(res: Mapping[str, Any], when: str, since: str) -> bool:
    """Active by its clinical status; a visit's diagnosis (encounter-diagnosis) also ages
    out, since a visit rarely records that a cold resolved. Problem-list items do not."""
    if _status(res, "clinicalStatus") not in ("active", "recurrence", "relapse", ""):
        return False
    return "problem-list-item" in _category_codes(res) or when[:10] >= since


def _medication(
    res: Mapping[str, Any], name: str, when: str, today: date, where: dict[str, str]
) -> dict[str, Any]:
    end = ((res.get("dispenseRequest") or {}).get("validityPeriod") or {}).get("end")
    current = res.get("status") == "active" and (
        (end is not None and str(end)[:10] >= today.isoformat())
        or (end is None and when[:10] >= (today - timedelta(days=90)).isoformat())
    )
    dosage = "；".join(
        str(d.get("text")) for d in res.get("dosageInstruction") or [] if d.get("text")
    )
    return {"name": name, "dosage": dosage, "date": when, "until": end, "current": current,
            **where}  # fmt: skip


def observation_view(res: Mapping[str, Any], when: str) -> dict[str, Any]:
    """An Observation as a reader wants it: name, value with unit, flag, reference range."""
    out: dict[str, Any] = {
        "code": concept_code(res.get("code"), (LOINC,)),
        "name": concept_text(res.get("code")),
        "date": when,
        "value": _value(res),
        "flag": concept_code((res.get("interpretation") or [None])[0]) if isinstance(
            res.get("interpretation"), list) else "",
    }  # fmt: skip
    ranges = res.get("referenceRange") or []
    if ranges and isinstance(ranges[0], dict):
        low, high = ranges[0].get("low") or {}, ranges[0].get("high") or {}
        out["range"] = f"{low.get('value', '')}–{high.get('value', '')}".strip("–")
    return out


def _value(res: Mapping[str, Any]) -> str:
    q = res.get("valueQuantity")
    if isinstance(q, dict):
        return f"{q.get('value')} {q.get('unit') or q.get('code') or ''}".strip()
    comps = [c for c in res.get("component") or [] if isinstance(c.get("valueQuantity"), dict)]
    if comps:  # blood pressure: 138/88 mmHg
        values = "/".join(str(c["valueQuantity"].get("value")) for c in comps)
        return f"{values} {comps[0]['valueQuantity'].get('unit', '')}".strip()
    for name in ("valueString", "valueCodeableConcept"):
        if res.get(name):
            v = res[name]
            return concept_text(v) if isinstance(v, dict) else str(v)
    return ""
