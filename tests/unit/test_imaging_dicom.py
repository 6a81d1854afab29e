"""Reading one uploaded DICOM file for the index (yilian.imaging.dicom.parse): the header
fields the study list shows, and a clear DicomRejected code for every bad input."""

from __future__ import annotations

import warnings

import pytest

from tests.support import dicom_factory as factory
from yilian.domain.imaging import DicomRejected
from yilian.imaging.dicom import parse

ID_CARD = "430725197001010014"  # valid check digit; born 1970-01-01, male
SMALL = {"rows": 64, "cols": 64}


def rejected(data: bytes) -> DicomRejected:
    with pytest.raises(DicomRejected) as refused:
        parse(data)
    return refused.value


# ----------------------------------------------------------------------------- good files
def test_a_ct_slice_gives_the_uids_patient_study_and_window() -> None:
    # Given a CT slice of 张三 with his ID card in OtherPatientIDsSequence
    study_uid, series_uid, sop_uid = factory.uid(), factory.uid(), factory.uid()
    data = factory.ct_instance(
        **SMALL, study_uid=study_uid, series_uid=series_uid, sop_uid=sop_uid,
        patient_id="QT0042", patient_name="Zhang^San=张三", id_card=ID_CARD,
        study_date="20261118", accession="ACC-7",
    )  # fmt: skip
    # When parsed
    p = parse(data)
    # Then the index gets what the study list and linking need
    assert (p.study_uid, p.series_uid, p.sop_uid) == (study_uid, series_uid, sop_uid)
    assert p.sop_class_uid == "1.2.840.10008.5.1.4.1.1.2" and p.modality == "CT"
    assert p.transfer_syntax == "1.2.840.10008.1.2.1"
    assert (p.patient.patient_id, p.patient.name, p.patient.id_card) == ("QT0042", "张三", ID_CARD)
    assert (p.patient.sex, p.patient.birth_date) == ("M", "19700101")
    assert p.study["date"] == "20261118" and p.study["accession"] == "ACC-7"
    assert p.study["description"] == "胸部CT平扫" and p.study["referrer"] == "李四"
    assert p.series["body_part"] == "CHEST" and p.series["number"] == 1
    assert p.instance["window"] == [40.0, 400.0] and p.instance["frames"] == 1
    assert p.has_pixels


def test_viewer_metadata_carries_what_a_dicomweb_viewer_needs() -> None:
    p = parse(factory.ct_instance(**SMALL))
    meta = p.viewer_metadata
    assert meta["00280010"]["Value"] == [64] and meta["00280011"]["Value"] == [64]  # Rows, Cols
    assert meta["0020000D"]["Value"] == [p.study_uid]
    assert meta["00020010"]["Value"] == [p.transfer_syntax]
    assert "00100010" not in meta  # the patient's name is not viewer metadata


def test_an_id_card_given_as_patient_id_is_not_kept_as_a_local_number() -> None:
    p = parse(factory.ct_instance(**SMALL, patient_id=ID_CARD))
    assert (p.patient.patient_id, p.patient.id_card) == ("", ID_CARD)


@pytest.mark.parametrize(
    "patient_id",
    ["QT2026112000012345", "430725197001010015"],  # an 18-character local number; a bad check
    ids=["local-number", "bad-check-digit"],
)
def test_an_18_character_patient_id_that_is_no_id_card_stays_the_local_number(
    patient_id: str,
) -> None:
    # Given a township centre whose local numbers happen to be 18 characters long
    p = parse(factory.ct_instance(**SMALL, patient_id=patient_id))
    # Then it links by that local number, not as a (bogus) ID card
    assert (p.patient.patient_id, p.patient.id_card) == (patient_id, "")


@pytest.mark.parametrize(
    ("data", "modality", "photometric", "frames", "bits"),
    [
        (lambda: factory.mr_instance(**SMALL), "MR", "MONOCHROME2", 1, 16),
        (lambda: factory.dx_instance(**SMALL), "DX", "MONOCHROME1", 1, 12),
        (lambda: factory.us_rgb_instance(**SMALL), "US", "RGB", 1, 8),
        (lambda: factory.multiframe_instance(4, **SMALL), "XA", "MONOCHROME2", 4, 8),
    ],
    ids=["mr", "dx", "us-rgb", "multiframe"],
)
def test_each_modality_parses_with_its_image_shape(
    data: object, modality: str, photometric: str, frames: int, bits: int
) -> None:
    p = parse(data())  # type: ignore[operator]
    assert p.modality == modality == p.series["modality"]
    assert (p.instance["rows"], p.instance["columns"]) == (64, 64)
    assert (p.instance["photometric"], p.instance["frames"]) == (photometric, frames)
    assert p.instance["bits_stored"] == bits and p.has_pixels


@pytest.mark.parametrize(
    ("make", "syntax"),
    [
        (lambda: factory.rle_instance("ct", **SMALL), "1.2.840.10008.1.2.5"),
        (lambda: factory.j2k_instance("ct", **SMALL), "1.2.840.10008.1.2.4.90"),
        (lambda: factory.jpeg_lossless_instance(), "1.2.840.10008.1.2.4.70"),
    ],
    ids=["rle", "j2k", "jpeg-lossless"],
)
def test_compressed_files_parse_without_decoding_pixels(make: object, syntax: str) -> None:
    p = parse(make())  # type: ignore[operator]
    assert p.transfer_syntax == syntax and p.has_pixels
    assert p.modality == "CT" and p.instance["rows"] == 64


def test_a_file_without_pixel_data_parses_without_pixels() -> None:
    ds = factory.ct_dataset(**SMALL)
    del ds.PixelData
    p = parse(factory.to_bytes(ds))
    assert not p.has_pixels


# ----------------------------------------------------------------------------- bad inputs
@pytest.mark.parametrize("kind", ["png", "text"])
def test_a_file_that_is_not_dicom_is_not_dicom(kind: str) -> None:
    assert rejected(factory.not_dicom(kind)).code == "NOT_DICOM"  # type: ignore[arg-type]


def test_an_empty_file_is_not_dicom() -> None:
    assert rejected(b"").code == "NOT_DICOM"


@pytest.mark.parametrize(
    ("which", "name"),
    [("sop", "SOPInstanceUID"), ("study", "StudyInstanceUID"), ("series", "SeriesInstanceUID")],
)
def test_a_missing_uid_is_named(which: str, name: str) -> None:
    refused = rejected(factory.missing_uids(which))  # type: ignore[arg-type]
    assert refused.code == "MISSING_UID" and name in refused.details["missing"]


def test_a_file_cut_inside_its_pixel_data_is_truncated() -> None:
    data = factory.ct_instance(**SMALL)
    for keep in (0.95, 0.7, 0.5):
        refused = rejected(factory.truncated(data, keep))
        assert refused.code == "TRUNCATED", keep
        assert refused.details["read"] < refused.details["declared"]


@pytest.mark.parametrize("keep", [0.3, 0.1, 0.05, 0.03, 0.02, 0.015])
def test_a_file_cut_anywhere_in_its_header_is_rejected(keep: float) -> None:
    # Given an upload interrupted inside the header (or the File Meta)
    data = factory.truncated(factory.ct_instance(**SMALL), keep)
    # When parsed / Then it is rejected (never indexed), with a code of a broken file
    refused = rejected(data)
    assert refused.code in {"TRUNCATED", "MISSING_UID", "NOT_DICOM", "UNKNOWN_TRANSFER_SYNTAX"}


def test_a_file_cut_inside_its_file_meta_says_truncated() -> None:
    # Given an upload interrupted 180 bytes in (inside the File Meta group)
    data = factory.ct_instance(**SMALL)[:180]
    # When parsed / Then the status tells the uploader the file is cut short
    assert rejected(data).code == "TRUNCATED"


def test_an_unknown_transfer_syntax_is_named() -> None:
    refused = rejected(factory.unknown_transfer_syntax())
    assert refused.code == "UNKNOWN_TRANSFER_SYNTAX"
    assert refused.details["transfer_syntax"] == factory.UNKNOWN_TRANSFER_SYNTAX


@pytest.mark.parametrize("keep", [0.5, 0.99])
def test_pixel_data_shorter_than_declared_is_a_size_mismatch(keep: float) -> None:
    refused = rejected(factory.pixel_size_mismatch(keep))
    assert refused.code == "PIXEL_SIZE_MISMATCH"
    assert refused.details["actual"] < refused.details["expected"] == 64 * 64 * 2


def test_pixel_data_without_rows_is_a_size_mismatch() -> None:
    ds = factory.ct_dataset(**SMALL)
    del ds.Rows
    assert rejected(factory.to_bytes(ds)).code == "PIXEL_SIZE_MISMATCH"


@pytest.mark.parametrize(
    ("keyword", "value"),
    [
        ("SeriesInstanceUID", "1.2.abc"),
        ("StudyInstanceUID", "1.2.03.4"),
        ("SOPInstanceUID", "1." + "2" * 70),
    ],
)
def test_an_invalid_uid_string_is_refused(keyword: str, value: str) -> None:
    # Given a modality that wrote a malformed UID
    ds = factory.ct_dataset(**SMALL)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns about the value it writes and reads
        setattr(ds, keyword, value)
        data = factory.to_bytes(ds)
        # When parsed / Then it is refused and the field named
        refused = rejected(data)
    assert refused.code == "INVALID_UID" and keyword in refused.details["fields"]
