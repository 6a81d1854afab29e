"""Regional imaging (区域影像中心, 云胶片): the rules, in plain Python.

An imaging centre uploads DICOM into its own prefix of the imaging bucket; the ingest indexes
each file as Study / Series / Instance (idempotent on SOPInstanceUID), links the study to a
person of the master index or holds it for a human, and renders one thumbnail per series.
Doctors read studies under the record-access rules; radiologists report; residents share a
study as a "cloud film" link with an expiry and an optional access code.

Nothing here touches AWS or pydicom: the DICOM reading lives in yilian.imaging (imaging
layer only), the storage in yilian.adapters.imaging_store.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from yilian.domain.errors import Forbidden, Gone, InvalidInput

OBJECT_PREFIX = "dicom"  # dicom/{consortium}/{institution}/{batch or gateway path}/{file}
UID_PATTERN = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$")
DICOM_DATE = re.compile(r"^\d{8}$")


class DicomRejected(InvalidInput):
    """A file the platform will not index (kept in the bucket, its status says why).

    Codes: NOT_DICOM, TRUNCATED, MISSING_UID, INVALID_UID, UNKNOWN_TRANSFER_SYNTAX,
    PIXEL_SIZE_MISMATCH, TOO_LARGE, WRONG_PREFIX, UNKNOWN_INSTITUTION."""


class ObjectStatus(StrEnum):
    """What became of one uploaded object (GET /imaging/uploads/{batch} shows it)."""

    INDEXED = "indexed"  # a new instance in the index
    DUPLICATE = "duplicate"  # the same SOPInstanceUID was already indexed: one instance
    REJECTED = "rejected"  # a bad input: never retried, the original kept
    FAILED = "failed"  # an unexpected error: retried with back-off, then dead-lettered


class ThumbnailStatus(StrEnum):
    PENDING = "pending"
    READY = "ready"
    NO_DECODER = "no_decoder"  # a compressed transfer syntax the installed handlers can't decode
    NO_PIXELS = "no_pixels"  # e.g. a structured report or a key-object selection
    PIXEL_DATA_INVALID = "pixel_data_invalid"


class LinkStatus(StrEnum):
    LINKED = "linked"
    UNLINKED = "unlinked"  # in the reconciliation queue; never shown to residents


@dataclass(frozen=True, slots=True)
class ImagingPolicy:
    """Template parameter ImagingPolicy (JSON); every field has a sensible default."""

    max_file_mb: int = 512
    upload_url_seconds: int = 900
    max_batch_files: int = 1000
    thumbnail_px: int = 256
    preview_px: int = 1024
    share_default_days: int = 7
    share_max_days: int = 30
    share_code_attempts: int = 10  # wrong access codes before a link locks
    retry_base_seconds: int = 30  # back-off of a failed ingest: base * 2^(attempt-1)
    retry_max_seconds: int = 900
    # Institutions whose doctors read (report) any study of the consortium: the regional
    # imaging centre. Empty: every county-tier institution.
    reading_institutions: tuple[str, ...] = ()

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any]) -> ImagingPolicy:
        known = set(cls.__dataclass_fields__)
        unknown = set(raw) - known
        if unknown:
            raise ValueError(f"unknown imaging policy fields: {sorted(unknown)}")
        values = dict(raw)
        if "reading_institutions" in values:
            values["reading_institutions"] = tuple(values["reading_institutions"])
        policy = cls(**values)
        if policy.share_default_days > policy.share_max_days or policy.max_file_mb < 1:
            raise ValueError("share_default_days must not exceed share_max_days")
        return policy

    @property
    def max_file_bytes(self) -> int:
        return self.max_file_mb * 1024 * 1024

    def retry_delay(self, attempt: int) -> int:
        """Seconds before the next try of a failed ingest (attempt counts from 1)."""
        return int(min(self.retry_max_seconds, self.retry_base_seconds * 2 ** max(0, attempt - 1)))


# ------------------------------------------------------------------ object keys


@dataclass(frozen=True, slots=True)
class ObjectKey:
    consortium_id: str
    institution_id: str
    batch_id: str  # the upload batch, or "gateway" for files an institution's gateway puts
    key: str


def parse_object_key(key: str, consortium_id: str) -> ObjectKey:
    """dicom/{consortium}/{institution}/{batch}/.../{file}: the prefix names who uploaded."""
    parts = key.split("/")
    if len(parts) < 5 or parts[0] != OBJECT_PREFIX or not all(parts[1:]):
        raise DicomRejected(
            "WRONG_PREFIX", "imaging files go under dicom/{consortium}/{institution}/"
        )
    if parts[1] != consortium_id:
        raise DicomRejected("WRONG_PREFIX", "the file is under another consortium's prefix")
    return ObjectKey(parts[1], parts[2], parts[3], key)


def institution_of_key(key: str) -> str:
    """dicom/{consortium}/{institution}/...: who uploaded the object ("" for any other key)."""
    parts = key.split("/")
    return parts[2] if len(parts) > 3 and parts[0] == OBJECT_PREFIX else ""


def object_key(consortium_id: str, institution_id: str, batch_id: str, name: str) -> str:
    return f"{OBJECT_PREFIX}/{consortium_id}/{institution_id}/{batch_id}/{name}"


def safe_file_name(name: str, index: int) -> str:
    """A client's file name reduced to what is safe in a key; numbered so names never clash."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]", "_", name or "")[-80:].strip("._") or "file"
    return f"{index:05d}-{cleaned}"


def valid_uid(value: str) -> bool:
    return 0 < len(value) <= 64 and bool(UID_PATTERN.match(value))


# ------------------------------------------------------------------ QIDO-RS queries


def parse_date_range(raw: str | None) -> tuple[str, str] | None:
    """QIDO StudyDate: 20260101, 20260101-20261231, -20261231 or 20260101- (inclusive)."""
    if not raw:
        return None
    text = raw.strip()
    if "-" in text:
        lo, _, hi = text.partition("-")
    else:
        lo = hi = text
    lo, hi = lo.strip() or "00000000", hi.strip() or "99991231"
    if not (DICOM_DATE.match(lo) and DICOM_DATE.match(hi)) or lo > hi:
        raise InvalidInput("DATE_RANGE_INVALID", "StudyDate is YYYYMMDD or YYYYMMDD-YYYYMMDD")
    return lo, hi


def parse_modalities(raw: str | None) -> frozenset[str]:
    if not raw:
        return frozenset()
    mods = {m.strip().upper() for m in raw.replace("\\", ",").split(",") if m.strip()}
    if any(not re.fullmatch(r"[A-Z]{2,4}", m) for m in mods):
        raise InvalidInput(
            "MODALITY_INVALID", "ModalitiesInStudy are DICOM modality codes (CT, MR)"
        )
    return frozenset(mods)


# ------------------------------------------------------------------ reports


class ReportStatus(StrEnum):
    PRELIMINARY = "preliminary"  # 初步报告
    FINAL = "final"  # 审核签发
    AMENDED = "amended"  # 更正报告 (a final report changed)


REPORT_LIMITS = {"technique": 2000, "findings": 8000, "impression": 2000, "recommendation": 2000}


@dataclass(frozen=True, slots=True)
class ReportDraft:
    """结构化报告: what a radiologist writes."""

    findings: str  # 检查所见
    impression: str  # 诊断意见
    technique: str = ""  # 检查方法
    recommendation: str = ""  # 建议
    critical: bool = False  # 危急值
    final: bool = True


def parse_report(body: Mapping[str, Any]) -> ReportDraft:
    values: dict[str, str] = {}
    for name, limit in REPORT_LIMITS.items():
        raw = body.get(name, "")
        if not isinstance(raw, str):
            raise InvalidInput("REPORT_INVALID", f"{name} is text", field=name)
        text = raw.strip()
        if len(text) > limit:
            raise InvalidInput(
                "REPORT_TOO_LONG", f"{name} is at most {limit} characters", field=name
            )
        values[name] = text
    for required in ("findings", "impression"):
        if not values[required]:
            raise InvalidInput("REPORT_INCOMPLETE", f"{required} is required", field=required)
    status = str(body.get("status") or "final")
    if status not in ("preliminary", "final"):
        raise InvalidInput("REPORT_INVALID", "status is preliminary or final", field="status")
    return ReportDraft(
        findings=values["findings"],
        impression=values["impression"],
        technique=values["technique"],
        recommendation=values["recommendation"],
        critical=bool(body.get("critical", False)),
        final=status == "final",
    )


def next_report_status(current: str | None, draft: ReportDraft) -> ReportStatus:
    """A final report may be corrected (amended), never turned back into a preliminary one."""
    if current in (ReportStatus.FINAL, ReportStatus.AMENDED):
        if not draft.final:
            raise InvalidInput(
                "REPORT_ALREADY_FINAL", "a signed report can be amended, not made preliminary"
            )
        return ReportStatus.AMENDED
    return ReportStatus.FINAL if draft.final else ReportStatus.PRELIMINARY


# ------------------------------------------------------------------ cloud film (云胶片)

ACCESS_CODE = re.compile(r"^[0-9]{4,8}$")


@dataclass(frozen=True, slots=True)
class ShareLink:
    """A link anyone holding it may open until it expires or is revoked. Only the token's
    hash is stored: a copy of the table does not hand out live links."""

    link_id: str
    token_hash: str
    study_uid: str
    person_id: str
    consortium_id: str
    created_by: str
    created_by_name: str
    created_at: str
    expires_at: str
    code_hash: str = ""  # HMAC of the optional access code (提取码), keyed by the token
    revoked_at: str = ""
    failed_codes: int = 0
    views: int = 0
    label: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def has_code(self) -> bool:
        return bool(self.code_hash)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def code_hash(token: str, code: str) -> str:
    return hmac.new(token.encode(), code.encode(), hashlib.sha256).hexdigest()


def new_share_link(
    *,
    study_uid: str,
    person_id: str,
    consortium_id: str,
    created_by: str,
    created_by_name: str,
    body: Mapping[str, Any],
    now: datetime,
    policy: ImagingPolicy,
) -> tuple[ShareLink, str]:
    """(the link, its token). The token is shown once, to the creator."""
    days = body.get("days", policy.share_default_days)
    if (
        not isinstance(days, int)
        or isinstance(days, bool)
        or not 1 <= days <= policy.share_max_days
    ):
        raise InvalidInput(
            "SHARE_DAYS_INVALID",
            f"a share link lasts 1 to {policy.share_max_days} days",
            field="days",
        )
    code = body.get("access_code") or ""
    if code and (not isinstance(code, str) or not ACCESS_CODE.match(code)):
        raise InvalidInput(
            "ACCESS_CODE_INVALID", "an access code is 4 to 8 digits", field="access_code"
        )
    label = str(body.get("label") or "")[:60]
    token = secrets.token_urlsafe(24)
    digest = token_hash(token)
    link = ShareLink(
        link_id="s" + digest[:15],
        token_hash=digest,
        study_uid=study_uid,
        person_id=person_id,
        consortium_id=consortium_id,
        created_by=created_by,
        created_by_name=created_by_name,
        created_at=now.isoformat(timespec="seconds"),
        expires_at=(now + timedelta(days=days)).isoformat(timespec="seconds"),
        code_hash=code_hash(token, code) if code else "",
        label=label,
    )
    return link, token


def check_share(link: ShareLink, token: str, code: str | None, now: datetime) -> None:
    """May this request open the link? Raises with the reason a film page shows."""
    if link.revoked_at:
        raise Gone("SHARE_REVOKED", "this share link was revoked")
    if now.isoformat(timespec="seconds") >= link.expires_at:
        raise Gone("SHARE_EXPIRED", "this share link has expired", expired_at=link.expires_at)
    if not link.code_hash:
        return
    if link.failed_codes >= _attempts_limit(link):
        raise Forbidden("SHARE_LOCKED", "too many wrong access codes; ask for a new link")
    if not code:
        raise Forbidden("ACCESS_CODE_REQUIRED", "this link needs its access code (提取码)")
    if not hmac.compare_digest(code_hash(token, code), link.code_hash):
        raise Forbidden("ACCESS_CODE_WRONG", "the access code is wrong")


def _attempts_limit(link: ShareLink) -> int:
    return int(link.extra.get("code_attempts", ImagingPolicy().share_code_attempts))


# ------------------------------------------------------------------ patients in DICOM


@dataclass(frozen=True, slots=True)
class DicomPatient:
    """The patient as the modality wrote it: what links a study to the master index."""

    patient_id: str = ""  # the institution's local number (PatientID)
    name: str = ""
    sex: str = ""  # M / F / O / ""
    birth_date: str = ""  # YYYYMMDD
    id_card: str = ""  # 居民身份证号 when the tags carry one (never stored in clear)

    def registration(self, institution_id: str) -> dict[str, Any]:
        """The master index's registration shape, to match (never to register)."""
        identifiers = []
        if self.patient_id:
            identifiers.append(
                {"type": "local", "value": self.patient_id, "assigner": institution_id}
            )
        if self.id_card:
            identifiers.append({"type": "id_card", "value": self.id_card})
        born = self.birth_date
        iso = f"{born[:4]}-{born[4:6]}-{born[6:8]}" if DICOM_DATE.match(born) else born
        return {
            "name": self.name,
            "sex": {"M": "male", "F": "female"}.get(self.sex, self.sex),
            "birth_date": iso,
            "identifiers": identifiers,
        }


def mask_id_card(value: str) -> str:
    return value[:4] + "*" * max(0, len(value) - 8) + value[-4:] if len(value) > 8 else "****"


# ------------------------------------------------------------------ the report in the record

LOINC = "http://loinc.org"
DCM = "http://dicom.nema.org/resources/ontology/DCM"
V2_0074 = "http://terminology.hl7.org/CodeSystem/v2-0074"
SID = "https://yilian.example/fhir/sid"
IMAGING_REPORT_LOINC = ("18748-4", "影像检查报告")  # LOINC: Diagnostic imaging study


def imaging_study_resource(
    study: Mapping[str, Any], series: list[Mapping[str, Any]], person_id: str, when: str
) -> dict[str, Any]:
    """The study as a FHIR R4 ImagingStudy (no server id: the caller names it)."""
    uid = study["study_uid"]
    subject = {"reference": f"Patient/{person_id}"}
    modalities = study.get("modalities") or ["OT"]
    identifiers: list[dict[str, Any]] = [{"system": "urn:dicom:uid", "value": f"urn:oid:{uid}"}]
    if study.get("accession"):
        acsn = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203",
                            "code": "ACSN"}]}  # fmt: skip
        identifiers.append({"type": acsn, "value": study["accession"]})
    study_entry: dict[str, Any] = {
        "resourceType": "ImagingStudy", "status": "available",
        "identifier": identifiers,
        "modality": [{"system": DCM, "code": m} for m in modalities],
        "subject": subject, "started": when,
        "numberOfSeries": len(series),
        "numberOfInstances": sum(int(s.get("instance_count") or 0) for s in series),
        "description": study.get("description") or "影像检查",
        "series": [{"uid": s["series_uid"], "number": s.get("number") or 0,
                    "modality": {"system": DCM, "code": s.get("modality") or modalities[0]},
                    "numberOfInstances": int(s.get("instance_count") or 0),
                    **({"description": s["description"]} if s.get("description") else {})}
                   for s in series],
    }  # fmt: skip
    return study_entry


def report_bundle(
    study: Mapping[str, Any], series: list[Mapping[str, Any]], report: Mapping[str, Any],
    person_id: str,
) -> dict[str, Any]:  # fmt: skip
    """The signed report as a FHIR transaction: an ImagingStudy and the DiagnosticReport that
    reads it, named by the study's UID so an amendment is a new version of the same
    document (WS/T 500.6 检查报告 in the record)."""
    uid = study["study_uid"]
    subject = {"reference": f"Patient/{person_id}"}
    when = _fhir_datetime(study.get("date") or "", study.get("time") or "", report["signed_at"])
    modalities = study.get("modalities") or ["OT"]
    study_entry = imaging_study_resource(study, series, person_id, when)
    text = "\n".join(
        f"{label}：{report[key]}"
        for key, label in (("technique", "检查方法"), ("findings", "检查所见"),
                           ("impression", "诊断意见"), ("recommendation", "建议"))
        if report.get(key)
    )  # fmt: skip
    title = f"{study.get('description') or '影像检查'}报告"
    diagnostic = {
        "resourceType": "DiagnosticReport",
        "status": "amended" if report["status"] == ReportStatus.AMENDED else "final",
        "category": [{"coding": [{"system": V2_0074,
                                  "code": "US" if "US" in modalities else "RAD"}]}],
        "code": {"coding": [{"system": LOINC, "code": IMAGING_REPORT_LOINC[0],
                             "display": IMAGING_REPORT_LOINC[1]}], "text": title},
        "subject": subject, "effectiveDateTime": when,
        "issued": report["signed_at"],
        "performer": [{"display": report.get("signed_by_name") or ""},
                      {"reference": f"Organization/{report['institution_id']}"}],
        "imagingStudy": [{"reference": "urn:uuid:00000000-0000-4000-8000-000000000001"}],
        "conclusion": report["impression"],
        "presentedForm": [{"contentType": "text/plain; charset=utf-8", "language": "zh-CN",
                           "title": title, "data": base64.b64encode(text.encode()).decode()}],
    }  # fmt: skip
    return {
        "resourceType": "Bundle", "type": "transaction",
        "identifier": {"system": f"{SID}/document/{report['institution_id']}",
                       "value": "imgrpt-" + hashlib.sha256(uid.encode()).hexdigest()[:40]},
        "timestamp": report["signed_at"],
        "entry": [
            {"fullUrl": "urn:uuid:00000000-0000-4000-8000-000000000001", "resource": study_entry,
             "request": {"method": "POST", "url": "ImagingStudy"}},
            {"fullUrl": "urn:uuid:00000000-0000-4000-8000-000000000002", "resource": diagnostic,
             "request": {"method": "POST", "url": "DiagnosticReport"}},
        ],
    }  # fmt: skip


def _fhir_datetime(date: str, time: str, fallback: str) -> str:
    """DICOM DA/TM (China time) as a FHIR dateTime; the signing time when the study has none."""
    if not DICOM_DATE.match(date):
        return fallback
    hh, mm, ss = (time + "000000")[0:2], (time + "000000")[2:4], (time + "000000")[4:6]
    if not (hh + mm + ss).isdigit():
        hh = mm = ss = "00"
    return f"{date[:4]}-{date[4:6]}-{date[6:8]}T{hh}:{mm}:{ss}+08:00"
