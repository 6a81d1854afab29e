"""The generated DICOM is what the imaging tests, seed and bench think it is."""

from __future__ import annotations

import io
from collections.abc import Callable

import pytest
from pydicom import dcmread
from pydicom.dataset import FileDataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import (
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLosslessSV1,
    RLELossless,
)

from tests.support import dicom_factory as factory


def read(data: bytes, **kw: object) -> FileDataset:
    return dcmread(io.BytesIO(data), **kw)  # type: ignore[arg-type]


KINDS: list[tuple[str, Callable[[], bytes], str, tuple[int, ...], str]] = [
    ("ct", lambda: factory.ct_instance(), ExplicitVRLittleEndian, (512, 512), "MONOCHROME2"),
    ("mr", lambda: factory.mr_instance(), ExplicitVRLittleEndian, (256, 256), "MONOCHROME2"),
    ("dx", lambda: factory.dx_instance(), ExplicitVRLittleEndian, (512, 420), "MONOCHROME1"),
    ("us", lambda: factory.us_rgb_instance(), ExplicitVRLittleEndian, (480, 640, 3), "RGB"),
    (
        "multiframe",
        lambda: factory.multiframe_instance(frames=10),
        ExplicitVRLittleEndian,
        (10, 256, 256),
        "MONOCHROME2",
    ),
    ("rle", lambda: factory.rle_instance(), RLELossless, (512, 512), "MONOCHROME2"),
    ("j2k", lambda: factory.j2k_instance(), JPEG2000Lossless, (512, 512), "MONOCHROME2"),
]


@pytest.mark.parametrize(
    ("kind", "build", "syntax", "shape", "photometric"), KINDS, ids=[k[0] for k in KINDS]
)
def test_each_kind_reads_back_with_its_syntax_and_shape(
    kind: str, build: Callable[[], bytes], syntax: str, shape: tuple[int, ...], photometric: str
) -> None:
    # Given / When
    ds = read(build())

    # Then
    assert ds.file_meta.TransferSyntaxUID == syntax
    assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
    assert ds.PhotometricInterpretation == photometric
    assert ds.pixel_array.shape == shape
    for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "SOPClassUID", "Modality"):
        assert ds.get(keyword), keyword


def test_ct_series_is_one_series_of_distinct_ordered_slices() -> None:
    # Given / When
    files = factory.ct_series(5, rows=64, cols=64, accession="ACC1")
    slices = [read(f) for f in files]

    # Then
    assert len({s.StudyInstanceUID for s in slices}) == 1
    assert len({s.SeriesInstanceUID for s in slices}) == 1
    assert len({s.FrameOfReferenceUID for s in slices}) == 1
    assert len({s.SOPInstanceUID for s in slices}) == 5
    assert [s.InstanceNumber for s in slices] == [1, 2, 3, 4, 5]
    assert [float(s.ImagePositionPatient[2]) for s in slices] == [0.0, -1.25, -2.5, -3.75, -5.0]
    first = slices[0]
    assert (first.BitsAllocated, first.BitsStored, first.HighBit) == (16, 12, 11)
    assert (first.RescaleIntercept, first.RescaleSlope) == (-1024, 1)
    assert first.AccessionNumber == "ACC1"
    assert slices[0].PixelData != slices[1].PixelData


def test_ct_pixels_are_a_body_in_hounsfield_units() -> None:
    # Given
    ds = read(factory.ct_instance())

    # When
    hu = ds.pixel_array.astype(int) * int(ds.RescaleSlope) + int(ds.RescaleIntercept)

    # Then: air in the corner, lung on the left, soft tissue in the middle
    assert hu[5:15, 5:15].mean() < -950
    assert -950 < hu[235:245, 165:175].mean() < -750
    assert 0 < hu[250:260, 250:260].mean() < 100


def test_chinese_names_and_id_card_round_trip() -> None:
    # Given
    data = factory.ct_instance(
        rows=32, cols=32, patient_name="Zhang^San=张三", id_card="430725197001011234"
    )

    # When
    ds = read(data)

    # Then
    assert ds.SpecificCharacterSet == "ISO_IR 192"
    assert str(ds.PatientName) == "Zhang^San=张三"
    assert ds.PatientName.ideographic == "张三"
    other = ds.OtherPatientIDsSequence[0]
    assert (other.PatientID, other.IssuerOfPatientID) == ("430725197001011234", "身份证")


def test_signed_ct_keeps_the_same_hounsfield_values() -> None:
    # Given
    unsigned = read(factory.ct_instance(rows=64, cols=64))
    signed = read(factory.ct_instance(rows=64, cols=64, signed=True))

    # When
    hu_unsigned = unsigned.pixel_array.astype(int) + int(unsigned.RescaleIntercept)
    hu_signed = signed.pixel_array.astype(int) + int(signed.RescaleIntercept)

    # Then
    assert signed.PixelRepresentation == 1
    assert (hu_signed.clip(-1024) == hu_unsigned).all()


def test_dx_8_bit_option() -> None:
    # Given / When
    ds = read(factory.dx_instance(bits=8, monochrome1=False))

    # Then
    assert (ds.BitsAllocated, ds.BitsStored, ds.PhotometricInterpretation) == (8, 8, "MONOCHROME2")


def test_jpeg_lossless_parses_but_does_not_decode() -> None:
    # Given
    data = factory.jpeg_lossless_instance()

    # When
    header = read(data, stop_before_pixels=True)
    full = read(data)

    # Then
    assert header.file_meta.TransferSyntaxUID == JPEGLosslessSV1
    assert header.SOPInstanceUID
    with pytest.raises(RuntimeError):
        _ = full.pixel_array


def test_not_dicom_is_refused_by_pydicom() -> None:
    for data in (factory.not_dicom(), factory.not_dicom("text")):
        with pytest.raises(InvalidDicomError):
            read(data)
    assert factory.not_dicom().startswith(b"\x89PNG")


@pytest.mark.parametrize(
    ("which", "keyword"),
    [("sop", "SOPInstanceUID"), ("study", "StudyInstanceUID"), ("series", "SeriesInstanceUID")],
)
def test_missing_uids_lack_exactly_that_uid(which: str, keyword: str) -> None:
    # Given / When
    ds = read(factory.missing_uids(which), stop_before_pixels=True)  # type: ignore[arg-type]

    # Then
    assert keyword not in ds
    assert ds.Modality == "CT"
    if which == "sop":
        assert "MediaStorageSOPInstanceUID" not in ds.file_meta


def test_truncated_file_has_short_pixel_data() -> None:
    # Given
    whole = factory.ct_instance(rows=64, cols=64)

    # When
    ds = read(factory.truncated(whole, keep=0.5))

    # Then: pydicom reads it without complaint; only the pixel length gives it away
    assert len(ds.PixelData) < 64 * 64 * 2
    with pytest.raises(ValueError):
        _ = ds.pixel_array


def test_unknown_transfer_syntax_is_claimed_in_the_file_meta() -> None:
    # Given / When
    ds = read(factory.unknown_transfer_syntax(), stop_before_pixels=True)

    # Then
    assert ds.file_meta.TransferSyntaxUID == "1.2.3.4.5.6.7"


def test_pixel_size_mismatch_is_shorter_than_declared() -> None:
    # Given / When
    ds = read(factory.pixel_size_mismatch())

    # Then
    assert ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert len(ds.PixelData) < ds.Rows * ds.Columns * ds.BitsAllocated // 8


def test_study_groups_series_under_one_study() -> None:
    # Given / When
    files = [read(f) for f in factory.study((("ct", 2), ("mr", 1)), patient_id="P9")]

    # Then
    assert len({f.StudyInstanceUID for f in files}) == 1
    assert [f.Modality for f in files] == ["CT", "CT", "MR"]
    assert {f.PatientID for f in files} == {"P9"}
