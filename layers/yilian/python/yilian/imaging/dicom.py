"""Reading one uploaded DICOM file for the index: the header and a check of the pixel data's
size, never a pixel decode (that is the thumbnail's job, once per series).

`parse` refuses what the platform will not index with a DicomRejected code (the file stays in
the bucket and its status says why): not DICOM, truncated, required UIDs missing or malformed,
a transfer syntax nobody knows, native pixel data shorter than its declared shape.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any

import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import UID

from yilian.domain.errors import InvalidInput
from yilian.domain.identity import parse_id_card
from yilian.domain.imaging import DicomPatient, DicomRejected, valid_uid

REQUIRED_UIDS = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID")
# What a DICOMweb viewer needs of each instance (WADO-RS metadata), kept in the index so the
# metadata of a series is one query, not a read of every file.
VIEWER_ATTRIBUTES = (
    "SpecificCharacterSet", "SOPClassUID", "SOPInstanceUID", "StudyInstanceUID",
    "SeriesInstanceUID", "Modality", "InstanceNumber", "SeriesNumber", "Rows", "Columns",
    "SamplesPerPixel", "PhotometricInterpretation", "PlanarConfiguration", "BitsAllocated",
    "BitsStored", "HighBit", "PixelRepresentation", "NumberOfFrames", "PixelSpacing",
    "ImagerPixelSpacing", "SliceThickness", "SliceLocation", "SpacingBetweenSlices",
    "ImagePositionPatient", "ImageOrientationPatient", "FrameOfReferenceUID", "RescaleSlope",
    "RescaleIntercept", "RescaleType", "WindowCenter", "WindowWidth", "ImageType",
    "AcquisitionNumber", "FrameTime", "PixelAspectRatio", "Laterality", "ViewPosition",
    "BodyPartExamined", "ContentDate", "ContentTime",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Parsed:
    """One instance as the index sees it."""

    study_uid: str
    series_uid: str
    sop_uid: str
    sop_class_uid: str
    transfer_syntax: str
    modality: str
    patient: DicomPatient
    study: dict[str, Any]  # date, time, description, accession, institution_name, referrer
    series: dict[str, Any]  # number, description, body_part, modality
    instance: dict[str, Any]  # number, rows, columns, frames, bits, photometric, window
    viewer_metadata: dict[str, Any]  # DICOM JSON of VIEWER_ATTRIBUTES
    has_pixels: bool
    dataset: Dataset  # kept for the thumbnail (no pixels decoded yet)


def parse(data: bytes) -> Parsed:
    ds = _read(data)
    meta = getattr(ds, "file_meta", None)
    syntax = str(getattr(meta, "TransferSyntaxUID", "") or "")
    if not syntax and len(ds) == 0:
        raise DicomRejected("TRUNCATED", "the file ends inside its File Meta")
    if not syntax or not UID(syntax).is_transfer_syntax:
        raise DicomRejected(
            "UNKNOWN_TRANSFER_SYNTAX",
            "the file's transfer syntax is not one DICOM defines",
            transfer_syntax=syntax[:64],
        )
    uids = {name: str(ds.get(name, "") or "").strip() for name in REQUIRED_UIDS}
    missing = [name for name, value in uids.items() if not value]
    if missing:
        raise DicomRejected("MISSING_UID", "required UIDs are missing", missing=missing)
    bad = [name for name, value in uids.items() if not valid_uid(value)]
    if bad:
        raise DicomRejected("INVALID_UID", "UIDs must be dotted digits, at most 64", fields=bad)
    has_pixels = _check_pixels(ds, UID(syntax))
    modality = _text(ds, "Modality").upper()[:16]
    return Parsed(
        study_uid=uids["StudyInstanceUID"],
        series_uid=uids["SeriesInstanceUID"],
        sop_uid=uids["SOPInstanceUID"],
        sop_class_uid=uids["SOPClassUID"],
        transfer_syntax=syntax,
        modality=modality,
        patient=_patient(ds),
        study={
            "date": _date(ds, "StudyDate"),
            "time": _text(ds, "StudyTime")[:6],
            "description": _text(ds, "StudyDescription")[:200],
            "accession": _text(ds, "AccessionNumber")[:64],
            "institution_name": _text(ds, "InstitutionName")[:100],
            "referrer": _person_name(ds.get("ReferringPhysicianName"))[:60],
        },
        series={
            "number": _int(ds, "SeriesNumber"),
            "description": _text(ds, "SeriesDescription")[:200],
            "body_part": _text(ds, "BodyPartExamined").upper()[:32],
            "modality": modality,
        },
        instance={
            "number": _int(ds, "InstanceNumber"),
            "rows": _int(ds, "Rows"),
            "columns": _int(ds, "Columns"),
            "frames": max(1, _int(ds, "NumberOfFrames") or 1),
            "bits_stored": _int(ds, "BitsStored"),
            "photometric": _text(ds, "PhotometricInterpretation"),
            "window": _window(ds),
        },
        viewer_metadata=_viewer_metadata(ds, syntax),
        has_pixels=has_pixels,
        dataset=ds,
    )


def _read(data: bytes) -> Dataset:
    if len(data) < 132 and not data.startswith(b"\x08\x00"):
        raise DicomRejected("NOT_DICOM", "the file is not DICOM (too short for a Part 10 file)")
    try:
        return pydicom.dcmread(io.BytesIO(data), force=False)
    except InvalidDicomError as error:
        raise DicomRejected("NOT_DICOM", "the file is not DICOM (no DICM preamble)") from error
    except (EOFError, OSError, ValueError, KeyError, TypeError, OverflowError) as error:
        raise DicomRejected("TRUNCATED", f"the file ends or breaks mid-element: {error}") from error


def _check_pixels(ds: Dataset, syntax: UID) -> bool:
    """Pixel data present and, for native syntaxes, as long as Rows x Columns x samples x
    bits x frames says; encapsulated data must at least hold its item structure."""
    raw = ds.get_item("PixelData") if "PixelData" in ds else None
    if raw is None:
        return False
    value = raw.value or b""
    declared = getattr(raw, "length", None)
    if isinstance(declared, int) and declared != 0xFFFFFFFF and len(value) < declared:
        raise DicomRejected(
            "TRUNCATED", "the file ends inside its pixel data", declared=declared, read=len(value)
        )
    if syntax.is_encapsulated:
        if len(value) < 8 or value[:4] != b"\xfe\xff\x00\xe0":
            raise DicomRejected("TRUNCATED", "encapsulated pixel data lacks its item structure")
        return True
    rows, cols = _int(ds, "Rows"), _int(ds, "Columns")
    samples = _int(ds, "SamplesPerPixel") or 1
    bits = _int(ds, "BitsAllocated")
    frames = max(1, _int(ds, "NumberOfFrames") or 1)
    if not (rows and cols and bits):
        raise DicomRejected(
            "PIXEL_SIZE_MISMATCH", "pixel data without Rows, Columns, BitsAllocated"
        )
    expected = (rows * cols * samples * frames * bits + 7) // 8
    if len(value) < expected:
        raise DicomRejected(
            "PIXEL_SIZE_MISMATCH",
            "the pixel data is shorter than its declared size",
            expected=expected,
            actual=len(value),
        )
    return True


def _patient(ds: Dataset) -> DicomPatient:
    patient_id = _text(ds, "PatientID")[:64]
    candidates = [patient_id, *_other_ids(ds)]
    id_card = next((c for c in candidates if _is_id_card(c)), "")
    return DicomPatient(
        patient_id="" if patient_id == id_card else patient_id,
        name=_person_name(ds.get("PatientName"))[:40],
        sex=_text(ds, "PatientSex").upper()[:1],
        birth_date=_date(ds, "PatientBirthDate"),
        id_card=id_card,
    )


def _other_ids(ds: Dataset) -> list[str]:
    out = [str(v) for v in _values(ds.get("OtherPatientIDs"))]
    for item in ds.get("OtherPatientIDsSequence", None) or []:
        out.append(str(item.get("PatientID", "") or ""))
    return [v.strip() for v in out if v and v.strip()]


def _is_id_card(value: str) -> bool:
    if len(value) != 18:
        return False
    try:
        parse_id_card(value)  # shape, region, birth date, check digit
    except InvalidInput:
        return False
    return True


def _person_name(value: Any) -> str:
    """The ideographic form (张三) when the modality wrote one, else the alphabetic one."""
    if not value:
        return ""
    ideographic = str(getattr(value, "ideographic", "") or "")
    chosen = ideographic or str(getattr(value, "alphabetic", "") or value)
    parts = [p for p in chosen.split("^") if p]
    if ideographic or all(_is_cjk(p) for p in parts):
        return "".join(parts).strip()
    return " ".join(parts).strip()


def _is_cjk(text: str) -> bool:
    return all("\u3400" <= ch <= "\u9fff" for ch in text)


def _window(ds: Dataset) -> list[float] | None:
    centre, width = ds.get("WindowCenter"), ds.get("WindowWidth")
    try:
        c = float(_values(centre)[0]) if centre is not None else None
        w = float(_values(width)[0]) if width is not None else None
    except (IndexError, TypeError, ValueError):
        return None
    return [c, w] if c is not None and w else None


def _viewer_metadata(ds: Dataset, syntax: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for keyword in VIEWER_ATTRIBUTES:
        if keyword in ds:
            element = ds[keyword]
            try:
                out[f"{element.tag:08X}"] = element.to_json_dict(None, 1024)
            except (TypeError, ValueError):
                continue  # a malformed optional value is left out, never fatal
    out["00020010"] = {"vr": "UI", "Value": [syntax]}
    return out


def _values(value: Any) -> list[Any]:
    if value is None or value == "":
        return []
    if isinstance(value, list | tuple) or type(value).__name__ == "MultiValue":
        return list(value)
    return [value]


def _text(ds: Dataset, keyword: str) -> str:
    value = ds.get(keyword, "")
    return str(value).strip() if value is not None else ""


def _int(ds: Dataset, keyword: str) -> int:
    value = ds.get(keyword)
    try:
        return int(value) if value not in (None, "") else 0
    except (TypeError, ValueError):
        return 0


def _date(ds: Dataset, keyword: str) -> str:
    value = _text(ds, keyword)[:8]
    return value if value.isdigit() and len(value) == 8 else ""
