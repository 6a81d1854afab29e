"""De-identified export (PS3.15 basic profile): nobody is recognisable, the study still holds."""

from __future__ import annotations

import io

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import CTImageStorage

from tests.support import dicom_factory as factory
from yilian.imaging.deid import burned_in_risk, deidentify

NAME, PATIENT_ID, ID_CARD = "张三", "P20261120", "430725197001011234"
ACCESSION, INSTITUTION = "ACC-77881", "桃源县人民医院"
REFERRER, READER = "Li^Si=李四", "Wang^Wu=王五"
IDENTIFYING = [
    NAME,
    PATIENT_ID,
    ID_CARD,
    ACCESSION,
    INSTITUTION,
    "李四",
    "王五",
    "Wang^Wu",
    "SN-0001",
]


def identified_ct(**kw: object) -> Dataset:
    """A CT slice carrying identity everywhere: top level, sequences, private tags."""
    ds = factory.ct_dataset(
        rows=32,
        cols=32,
        patient_name=NAME,
        patient_id=PATIENT_ID,
        id_card=ID_CARD,
        accession=ACCESSION,
        institution=INSTITUTION,
        **kw,
    )
    ds.NameOfPhysiciansReadingStudy = READER
    ds.PatientAddress = "桃源县漳江镇"
    ds.AcquisitionDateTime = "20261120093512.250000+0800"
    request = Dataset()
    request.AccessionNumber = ACCESSION
    request.RequestedProcedureID = "RP1"
    ds.RequestAttributesSequence = Sequence([request])
    step = Dataset()
    step.PerformedProcedureStepStartDate = "20261120"
    step.ConsultingPhysicianName = READER  # a person name the table does not list
    ds.ProcedureCodeSequence = Sequence([step])
    block = ds.private_block(0x0009, "YILIAN VENDOR", create=True)
    block.add_new(0x10, "LO", f"{NAME} {PATIENT_ID}")
    return ds


def serialised(ds: Dataset) -> bytes:
    return factory.to_bytes(ds)


def test_no_identity_is_left_anywhere_in_the_file() -> None:
    # Given
    original = identified_ct()
    assert all(term.encode() in serialised(original) for term in IDENTIFYING)

    # When
    out = deidentify(original, subject_code="TEACH-0001", date_shift_days=-37)

    # Then
    data = serialised(out)
    leaked = [term for term in IDENTIFYING if term.encode() in data]
    assert leaked == []
    assert out.PatientName == "TEACH-0001"
    assert out.PatientID == "TEACH-0001"
    assert "OtherPatientIDsSequence" not in out
    assert out.PatientBirthDate == ""
    assert (out.PatientSex, out.PatientAge) == ("M", "056Y")


def test_private_tags_are_gone_including_in_sequences() -> None:
    # Given
    original = identified_ct()
    original.ProcedureCodeSequence[0].add_new(0x00111001, "LO", "vendor note")

    # When
    out = deidentify(original, subject_code="S1", date_shift_days=0)

    # Then
    tags = [elem.tag for elem in out.iterall()]
    assert not any(tag.is_private for tag in tags)


def test_dates_move_by_exactly_the_shift_and_times_stay() -> None:
    # Given
    original = identified_ct()

    # When
    out = deidentify(original, subject_code="S1", date_shift_days=-37)

    # Then: 2026-11-20 minus 37 days is 2026-10-14
    assert out.StudyDate == out.SeriesDate == out.ContentDate == "20261014"
    assert out.StudyTime == "093000"
    assert out.AcquisitionDateTime == "20261014093512.250000+0800"
    assert out.ProcedureCodeSequence[0].PerformedProcedureStepStartDate == "20261014"
    assert out.LongitudinalTemporalInformationModified == "MODIFIED"


def test_uids_are_remapped_consistently_across_a_study() -> None:
    # Given: two slices of one series; the second refers to the first
    first = factory.ct_dataset(rows=16, cols=16, study_uid="1.2.3.4", series_uid="1.2.3.4.5")
    second = factory.ct_dataset(rows=16, cols=16, study_uid="1.2.3.4", series_uid="1.2.3.4.5")
    reference = Dataset()
    reference.ReferencedSOPClassUID = CTImageStorage
    reference.ReferencedSOPInstanceUID = first.SOPInstanceUID
    second.ReferencedImageSequence = Sequence([reference])
    uid_map: dict[str, str] = {}

    # When
    out_first = deidentify(first, subject_code="S1", date_shift_days=5, uid_map=uid_map)
    out_second = deidentify(second, subject_code="S1", date_shift_days=5, uid_map=uid_map)

    # Then
    assert out_first.StudyInstanceUID == out_second.StudyInstanceUID != "1.2.3.4"
    assert out_first.SeriesInstanceUID == out_second.SeriesInstanceUID != "1.2.3.4.5"
    assert out_first.FrameOfReferenceUID == out_second.FrameOfReferenceUID
    assert out_first.SOPInstanceUID != out_second.SOPInstanceUID
    moved = out_second.ReferencedImageSequence[0]
    assert moved.ReferencedSOPInstanceUID == out_first.SOPInstanceUID
    assert moved.ReferencedSOPClassUID == CTImageStorage
    assert out_first.file_meta.MediaStorageSOPInstanceUID == out_first.SOPInstanceUID
    assert out_first.SOPClassUID == CTImageStorage
    assert uid_map["1.2.3.4"] == out_first.StudyInstanceUID
    assert out_first.StudyInstanceUID.startswith("2.25.")


def test_a_secret_makes_the_mapping_repeatable_across_exports() -> None:
    # Given
    original = factory.ct_dataset(rows=16, cols=16)

    # When: two exports with separate maps but the same secret, and one with another secret
    one = deidentify(original, subject_code="S1", date_shift_days=1, uid_secret="k1")
    two = deidentify(original, subject_code="S1", date_shift_days=1, uid_secret="k1")
    other = deidentify(original, subject_code="S1", date_shift_days=1, uid_secret="k2")

    # Then
    assert one.SOPInstanceUID == two.SOPInstanceUID != other.SOPInstanceUID


def test_uid_root_is_used_for_new_uids() -> None:
    # Given
    original = factory.ct_dataset(rows=16, cols=16)

    # When
    out = deidentify(original, subject_code="S1", date_shift_days=1, uid_root="1.2.826.0.1.99.")

    # Then
    assert out.StudyInstanceUID.startswith("1.2.826.0.1.99.")
    assert len(out.StudyInstanceUID) <= 64


def test_the_original_is_not_changed() -> None:
    # Given
    original = identified_ct()
    before = serialised(original)

    # When
    deidentify(original, subject_code="S1", date_shift_days=-10, uid_map={})

    # Then
    assert serialised(original) == before


def test_output_records_the_method_and_keeps_the_pixels() -> None:
    # Given
    original = identified_ct()

    # When
    out = deidentify(original, subject_code="S1", date_shift_days=3)
    reread = dcmread(io.BytesIO(serialised(out)))

    # Then
    assert reread.PatientIdentityRemoved == "YES"
    assert reread.DeidentificationMethod[0].startswith("PS3.15 Basic Application Level")
    codes = {item.CodeValue for item in reread.DeidentificationMethodCodeSequence}
    assert {"113100", "113107"} <= codes
    assert reread.PixelData == original.PixelData


@pytest.mark.parametrize(
    ("build", "risky"),
    [
        (lambda: factory.us_rgb_dataset(rows=32, cols=32), True),
        (lambda: factory.ct_dataset(rows=16, cols=16), False),
        (lambda: factory.dx_dataset(rows=16, cols=16), False),
    ],
    ids=["ultrasound", "ct", "dx"],
)
def test_burned_in_risk_flags_ultrasound_but_not_ct(build, risky: bool) -> None:
    # Given / When / Then
    assert burned_in_risk(build()) is risky


def test_burned_in_annotation_tag_decides_when_present() -> None:
    # Given
    clean_us = factory.us_rgb_dataset(rows=32, cols=32)
    clean_us.BurnedInAnnotation = "NO"
    marked_ct = factory.ct_dataset(rows=16, cols=16)
    marked_ct.BurnedInAnnotation = "YES"

    # When / Then
    assert burned_in_risk(clean_us) is False
    assert burned_in_risk(marked_ct) is True
