"""Realistic DICOM Part 10 files, generated in memory, for tests, the demo seed and the bench.

Every function returns the bytes of a file (128-byte preamble, ``DICM``, File Meta group, data
set) or a list of them. Only pydicom and numpy are used, so the module imports without pytest.

Pixel content is a synthetic body phantom (air, soft tissue, two lungs, a bone ring, a spine) so
thumbnails and window presets show something a reader recognises: the lung window makes the
lungs mid-grey, the soft-tissue window makes them black.

Identity conventions the ingest relies on:

* ``PatientID`` is the institution's local number.
* The resident ID-card number (身份证号), when given, is carried in ``OtherPatientIDsSequence``
  as one item ``{PatientID: <number>, IssuerOfPatientID: "身份证", TypeOfPatientID: "TEXT"}``
  (see :data:`ID_CARD_ISSUER`); the retired ``OtherPatientIDs`` (0010,1000) is not written.
* Names are written with ``SpecificCharacterSet = "ISO_IR 192"`` (UTF-8), so both ``张三`` and
  the three-group form ``Zhang^San=张三`` round-trip.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterable
from functools import lru_cache
from io import BytesIO
from typing import Any, Literal

import numpy as np
from pydicom import Dataset, dcmwrite
from pydicom.dataset import FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pydicom.sequence import Sequence
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    CTImageStorage,
    DigitalXRayImageStorageForPresentation,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLosslessSV1,
    MRImageStorage,
    RLELossless,
    UltrasoundImageStorage,
    UltrasoundMultiFrameImageStorage,
    XRayAngiographicImageStorage,
    generate_uid,
)

UID_PREFIX = "1.2.826.0.1.3680043.10.1234."
ID_CARD_ISSUER = "身份证"
UNKNOWN_TRANSFER_SYNTAX = "1.2.3.4.5.6.7"

_AIR_HU = -1000
_LUNG_HU = -850
_SOFT_TISSUE_HU = 40
_FAT_HU = -90
_BONE_HU = 700


def uid(prefix: str = UID_PREFIX) -> str:
    """A fresh UID under the test organisation root."""
    return str(generate_uid(prefix=prefix))


# --------------------------------------------------------------------------------------------
# Phantom pixels
# --------------------------------------------------------------------------------------------


def _ellipse(rows: int, cols: int, cy: float, cx: float, ry: float, rx: float) -> np.ndarray:
    """Boolean mask of an axis-aligned ellipse; centre and radii are fractions of the image."""
    y, x = np.ogrid[:rows, :cols]
    return ((y - cy * rows) / (ry * rows)) ** 2 + ((x - cx * cols) / (rx * cols)) ** 2 <= 1.0


@lru_cache(maxsize=8)
def body_phantom_hu(rows: int = 512, cols: int = 512) -> np.ndarray:
    """An axial chest slice in Hounsfield units (int16): body, fat rim, lungs, ribs, spine.

    Cached and read-only: callers copy before changing it.
    """
    hu = np.full((rows, cols), _AIR_HU, dtype=np.int16)
    body = _ellipse(rows, cols, 0.5, 0.5, 0.36, 0.44)
    hu[body] = _FAT_HU
    hu[_ellipse(rows, cols, 0.5, 0.5, 0.33, 0.41)] = _SOFT_TISSUE_HU
    ring = _ellipse(rows, cols, 0.5, 0.5, 0.31, 0.39) & ~_ellipse(rows, cols, 0.5, 0.5, 0.29, 0.37)
    hu[ring] = _BONE_HU
    hu[_ellipse(rows, cols, 0.47, 0.33, 0.2, 0.12)] = _LUNG_HU
    hu[_ellipse(rows, cols, 0.47, 0.67, 0.2, 0.12)] = _LUNG_HU
    hu[_ellipse(rows, cols, 0.5, 0.5, 0.08, 0.07)] = 45  # heart / mediastinum
    hu[_ellipse(rows, cols, 0.76, 0.5, 0.05, 0.045)] = _BONE_HU + 300  # vertebral body
    hu.flags.writeable = False
    return hu


@lru_cache(maxsize=8)
def _noise(rows: int, cols: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    noise = rng.normal(0, 12, size=(rows, cols)).astype(np.int16)
    noise.flags.writeable = False
    return noise


def _ct_slice_hu(rows: int, cols: int, index: int, seed: int) -> np.ndarray:
    """One slice: the phantom plus rolled noise and a small nodule that moves with the index."""
    hu = body_phantom_hu(rows, cols) + np.roll(_noise(rows, cols, seed), index * 7, axis=1)
    nodule = (0.35 + 0.002 * (index % 100), 0.3)
    hu[_ellipse(rows, cols, nodule[0], nodule[1], 0.015, 0.015)] = 30
    return hu


# --------------------------------------------------------------------------------------------
# Data set building blocks
# --------------------------------------------------------------------------------------------


def _file_meta(sop_class: str, sop_instance: str, syntax: str) -> FileMetaDataset:
    meta = FileMetaDataset()
    meta.FileMetaInformationVersion = b"\x00\x01"
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_instance
    meta.TransferSyntaxUID = syntax
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    meta.ImplementationVersionName = "YILIAN_TEST"
    return meta


def _base(
    *,
    modality: str,
    sop_class: str,
    study_uid: str | None,
    series_uid: str | None,
    sop_uid: str | None,
    patient_id: str,
    patient_name: str,
    sex: str,
    birth_date: str,
    id_card: str | None,
    study_date: str,
    study_time: str,
    accession: str | None,
    institution: str,
    study_description: str,
    series_description: str,
    series_number: int,
    instance_number: int,
    body_part: str,
) -> Dataset:
    """Patient, study, series, equipment and SOP common modules shared by every kind."""
    ds = Dataset()
    sop_uid = sop_uid or uid()
    ds.file_meta = _file_meta(sop_class, sop_uid, ExplicitVRLittleEndian)
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"] if modality == "CT" else ["ORIGINAL", "PRIMARY"]
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_uid
    ds.StudyDate = study_date
    ds.SeriesDate = study_date
    ds.ContentDate = study_date
    ds.StudyTime = study_time
    ds.SeriesTime = study_time
    ds.ContentTime = study_time
    ds.AccessionNumber = accession if accession is not None else f"A{study_date}{patient_id[-4:]}"
    ds.Modality = modality
    ds.Manufacturer = "YILIAN PHANTOM"
    ds.InstitutionName = institution
    ds.InstitutionAddress = "湖南省常德市某县人民路1号"
    ds.ReferringPhysicianName = "Li^Si=李四"
    ds.StationName = "CT01" if modality == "CT" else f"{modality}01"
    ds.StudyDescription = study_description
    ds.SeriesDescription = series_description
    ds.PatientName = patient_name
    ds.PatientID = patient_id
    ds.IssuerOfPatientID = institution
    ds.PatientBirthDate = birth_date
    ds.PatientSex = sex
    ds.PatientAge = _age(birth_date, study_date)
    if id_card:
        other = Dataset()
        other.PatientID = id_card
        other.IssuerOfPatientID = ID_CARD_ISSUER
        other.TypeOfPatientID = "TEXT"
        ds.OtherPatientIDsSequence = Sequence([other])
    ds.BodyPartExamined = body_part
    ds.DeviceSerialNumber = "SN-0001"
    ds.SoftwareVersions = "1.0"
    ds.StudyInstanceUID = study_uid or uid()
    ds.SeriesInstanceUID = series_uid or uid()
    ds.StudyID = "1"
    ds.SeriesNumber = series_number
    ds.InstanceNumber = instance_number
    return ds


def _age(birth_date: str, study_date: str) -> str:
    years = int(study_date[:4]) - int(birth_date[:4])
    if study_date[4:] < birth_date[4:]:
        years -= 1
    return f"{max(years, 0):03d}Y"


def _set_pixels(
    ds: Dataset,
    arr: np.ndarray,
    *,
    photometric: str,
    bits_stored: int,
    signed: bool = False,
) -> None:
    """Image Pixel module from an array shaped (rows, cols[, 3]) or (frames, rows, cols[, 3])."""
    samples = 3 if photometric in ("RGB", "YBR_FULL") else 1
    frames = arr.shape[0] if arr.ndim == (4 if samples == 3 else 3) else 1
    rows, cols = arr.shape[-3:-1] if samples == 3 else arr.shape[-2:]
    ds.SamplesPerPixel = samples
    ds.PhotometricInterpretation = photometric
    if samples == 3:
        ds.PlanarConfiguration = 0
    if frames > 1:
        ds.NumberOfFrames = frames
    ds.Rows = rows
    ds.Columns = cols
    ds.BitsAllocated = arr.dtype.itemsize * 8
    ds.BitsStored = bits_stored
    ds.HighBit = bits_stored - 1
    ds.PixelRepresentation = 1 if signed else 0
    ds.PixelData = np.ascontiguousarray(arr).tobytes()
    ds["PixelData"].VR = "OW" if ds.BitsAllocated > 8 else "OB"


def _to_bytes(ds: Dataset) -> bytes:
    buffer = BytesIO()
    dcmwrite(buffer, ds, enforce_file_format=True)
    return buffer.getvalue()


def _assemble(ds: Dataset, meta_elements: Dataset) -> bytes:
    """Write a Part 10 file by hand, for files pydicom refuses to write (broken on purpose).

    The body is always explicit VR little endian, whatever the meta claims.
    """
    meta_body = DicomBytesIO()
    meta_body.is_little_endian, meta_body.is_implicit_VR = True, False
    write_dataset(meta_body, meta_elements)
    group_length = struct.pack("<HH2sHI", 0x0002, 0x0000, b"UL", 4, len(meta_body.getvalue()))
    body = DicomBytesIO()
    body.is_little_endian, body.is_implicit_VR = True, False
    write_dataset(body, ds)
    return b"\0" * 128 + b"DICM" + group_length + meta_body.getvalue() + body.getvalue()


_COMMON_DEFAULTS: dict[str, Any] = {
    "study_uid": None,
    "series_uid": None,
    "sop_uid": None,
    "patient_id": "P0001",
    "patient_name": "张三",
    "sex": "M",
    "birth_date": "19700101",
    "id_card": None,
    "study_date": "20261120",
    "study_time": "093000",
    "accession": None,
    "institution": "桃源县人民医院",
    "series_number": 1,
    "instance_number": 1,
}


def _common(kw: dict[str, Any], **defaults: Any) -> dict[str, Any]:
    unknown = set(kw) - set(_COMMON_DEFAULTS) - set(defaults)
    if unknown:
        raise TypeError(f"unknown keyword arguments: {sorted(unknown)}")
    return {**_COMMON_DEFAULTS, **defaults, **kw}


# --------------------------------------------------------------------------------------------
# CT
# --------------------------------------------------------------------------------------------


def _ct_dataset(
    *,
    rows: int,
    cols: int,
    index: int,
    seed: int,
    signed: bool,
    slice_thickness: float,
    **common: Any,
) -> Dataset:
    ds = _base(modality="CT", sop_class=CTImageStorage, **common)
    ds.SliceThickness = slice_thickness
    ds.KVP = 120
    ds.PatientPosition = "HFS"
    ds.FrameOfReferenceUID = _frame_of_reference(ds.StudyInstanceUID)
    ds.PositionReferenceIndicator = ""
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    spacing = round(350.0 / cols, 4)
    ds.PixelSpacing = [spacing, spacing]
    ds.WindowCenter = [40, -600]
    ds.WindowWidth = [400, 1500]
    ds.WindowCenterWidthExplanation = ["SOFT_TISSUE", "LUNG"]
    ds.RescaleIntercept = 0 if signed else -1024
    ds.RescaleSlope = 1
    ds.RescaleType = "HU"
    _place_ct_slice(
        ds, rows=rows, cols=cols, index=index, seed=seed, signed=signed, thick=slice_thickness
    )
    return ds


def _frame_of_reference(study_uid: str) -> str:
    """One frame of reference per study, derived so every slice of a series agrees."""
    return str(generate_uid(prefix=UID_PREFIX, entropy_srcs=["FoR", study_uid]))


def _place_ct_slice(
    ds: Dataset, *, rows: int, cols: int, index: int, seed: int, signed: bool, thick: float
) -> None:
    """Position, instance number and pixels of slice `index` (0-based, head to feet)."""
    z = float(-index) * thick
    ds.ImagePositionPatient = [-175.0, -175.0, z]
    ds.SliceLocation = z
    hu = _ct_slice_hu(rows, cols, index, seed)
    stored = hu if signed else (hu + 1024)
    stored = np.clip(stored, -2048 if signed else 0, 2047 if signed else 4095)
    _set_pixels(
        ds,
        stored.astype(np.int16 if signed else np.uint16),
        photometric="MONOCHROME2",
        bits_stored=12,
        signed=signed,
    )


def ct_series(
    n: int = 300,
    *,
    rows: int = 512,
    cols: int = 512,
    seed: int = 0,
    signed: bool = False,
    slice_thickness: float = 1.25,
    study_description: str = "胸部CT平扫",
    series_description: str = "Chest 1.25mm",
    body_part: str = "CHEST",
    **common: Any,
) -> list[bytes]:
    """`n` axial CT slices of one series (same study/series/frame of reference UIDs).

    12-bit stored in 16 (unsigned with RescaleIntercept -1024 by default; ``signed=True`` gives
    PixelRepresentation 1 with intercept 0). One data set is reused and re-pointed per slice,
    so 300 slices of 512x512 take well under three seconds.
    """
    kw = _common(common)
    kw["study_uid"] = kw["study_uid"] or uid()
    kw["series_uid"] = kw["series_uid"] or uid()
    ds = _ct_dataset(
        rows=rows,
        cols=cols,
        index=0,
        seed=seed,
        signed=signed,
        slice_thickness=slice_thickness,
        study_description=study_description,
        series_description=series_description,
        body_part=body_part,
        **kw,
    )
    files = []
    for index in range(n):
        sop_uid = uid()
        ds.SOPInstanceUID = sop_uid
        ds.file_meta.MediaStorageSOPInstanceUID = sop_uid
        ds.InstanceNumber = index + 1
        if index:
            _place_ct_slice(
                ds,
                rows=rows,
                cols=cols,
                index=index,
                seed=seed,
                signed=signed,
                thick=slice_thickness,
            )
        files.append(_to_bytes(ds))
    return files


def ct_dataset(
    *,
    rows: int = 512,
    cols: int = 512,
    index: int = 0,
    seed: int = 0,
    signed: bool = False,
    slice_thickness: float = 1.25,
    study_description: str = "胸部CT平扫",
    series_description: str = "Chest 1.25mm",
    body_part: str = "CHEST",
    **common: Any,
) -> Dataset:
    """One CT slice as a pydicom Dataset (with ``file_meta``), for tests that adjust tags."""
    return _ct_dataset(
        rows=rows,
        cols=cols,
        index=index,
        seed=seed,
        signed=signed,
        slice_thickness=slice_thickness,
        study_description=study_description,
        series_description=series_description,
        body_part=body_part,
        **_common(common),
    )


def ct_instance(**kw: Any) -> bytes:
    """One CT slice; takes the keyword arguments of :func:`ct_dataset`."""
    return _to_bytes(ct_dataset(**kw))


def to_bytes(ds: Dataset) -> bytes:
    """Serialise a Dataset built here (after a test changed it) as a Part 10 file."""
    return _to_bytes(ds)


# --------------------------------------------------------------------------------------------
# MR, DX, US, multi-frame
# --------------------------------------------------------------------------------------------


def mr_dataset(
    *,
    rows: int = 256,
    cols: int = 256,
    seed: int = 0,
    study_description: str = "头颅MR平扫",
    series_description: str = "T2 AX",
    body_part: str = "HEAD",
    **common: Any,
) -> Dataset:
    """An axial head MR slice: 16-bit unsigned MONOCHROME2, no rescale, window in the tags."""
    ds = _base(
        modality="MR",
        sop_class=MRImageStorage,
        study_description=study_description,
        series_description=series_description,
        body_part=body_part,
        **_common(common),
    )
    ds.ScanningSequence = "SE"
    ds.SequenceVariant = "NONE"
    ds.MagneticFieldStrength = 1.5
    ds.SliceThickness = 5.0
    ds.FrameOfReferenceUID = _frame_of_reference(ds.StudyInstanceUID)
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.ImagePositionPatient = [-115.0, -115.0, 0.0]
    ds.PixelSpacing = [round(230.0 / rows, 4), round(230.0 / cols, 4)]
    img = np.zeros((rows, cols), dtype=np.float32)
    img[_ellipse(rows, cols, 0.5, 0.5, 0.42, 0.36)] = 900  # scalp
    img[_ellipse(rows, cols, 0.5, 0.5, 0.39, 0.33)] = 150  # skull
    img[_ellipse(rows, cols, 0.5, 0.5, 0.37, 0.31)] = 700  # grey matter
    img[_ellipse(rows, cols, 0.5, 0.5, 0.28, 0.22)] = 550  # white matter
    img[_ellipse(rows, cols, 0.45, 0.45, 0.08, 0.03)] = 2000  # ventricles (CSF bright on T2)
    img[_ellipse(rows, cols, 0.45, 0.55, 0.08, 0.03)] = 2000
    img += np.random.default_rng(seed).normal(0, 15, size=img.shape).astype(np.float32)
    _set_pixels(
        ds, np.clip(img, 0, 65535).astype(np.uint16), photometric="MONOCHROME2", bits_stored=16
    )
    ds.WindowCenter = 800
    ds.WindowWidth = 1600
    return ds


def mr_instance(**kw: Any) -> bytes:
    """One MR slice; takes the keyword arguments of :func:`mr_dataset`."""
    return _to_bytes(mr_dataset(**kw))


def dx_dataset(
    *,
    rows: int = 512,
    cols: int = 420,
    monochrome1: bool = True,
    bits: Literal[8, 16] = 16,
    with_window: bool = True,
    study_description: str = "胸部正位片",
    series_description: str = "PA",
    body_part: str = "CHEST",
    **common: Any,
) -> Dataset:
    """A PA chest radiograph.

    Stored values are the same for MONOCHROME1 and MONOCHROME2 (air low, bone high), so a test
    can compare the two: MONOCHROME1 shows air white, MONOCHROME2 shows it black.
    """
    ds = _base(
        modality="DX",
        sop_class=DigitalXRayImageStorageForPresentation,
        study_description=study_description,
        series_description=series_description,
        body_part=body_part,
        **_common(common),
    )
    ds.ViewPosition = "PA"
    ds.PresentationIntentType = "FOR PRESENTATION"
    ds.ImagerPixelSpacing = [0.7, 0.7]
    ds.PixelSpacing = [0.7, 0.7]
    hu = body_phantom_hu(rows, cols).astype(np.float32)
    top = (bits == 16) and 4095 or 255
    img = (hu + 1000) / 2000 * top
    stored = np.clip(img, 0, top).astype(np.uint16 if bits == 16 else np.uint8)
    _set_pixels(
        ds,
        stored,
        photometric="MONOCHROME1" if monochrome1 else "MONOCHROME2",
        bits_stored=12 if bits == 16 else 8,
    )
    ds.RescaleIntercept = 0
    ds.RescaleSlope = 1
    ds.RescaleType = "US"
    if with_window:
        ds.WindowCenter = top // 2
        ds.WindowWidth = top
    return ds


def dx_instance(**kw: Any) -> bytes:
    """One DX image (MONOCHROME1 by default); takes the keyword arguments of :func:`dx_dataset`."""
    return _to_bytes(dx_dataset(**kw))


def _us_frame(rows: int, cols: int, shift: int = 0) -> np.ndarray:
    """An ultrasound sector: grey speckle in a fan plus a red/blue Doppler patch."""
    y, x = np.ogrid[:rows, :cols]
    angle = np.arctan2(x - cols / 2, y + rows * 0.1)
    radius = np.hypot(x - cols / 2, y + rows * 0.1)
    fan = (np.abs(angle) < 0.6) & (radius < rows * 1.0) & (radius > rows * 0.15)
    speckle = np.random.default_rng(7).integers(40, 160, size=(rows, cols), dtype=np.uint8)
    grey = np.where(fan, speckle, 0).astype(np.uint8)
    rgb = np.repeat(grey[:, :, None], 3, axis=2)
    cy, cx = rows // 2, cols // 2 + shift
    rgb[cy - 30 : cy, cx - 40 : cx + 40] = (200, 30, 30)
    rgb[cy : cy + 30, cx - 40 : cx + 40] = (30, 60, 220)
    return rgb


def us_rgb_dataset(
    *,
    rows: int = 480,
    cols: int = 640,
    study_description: str = "腹部彩超",
    series_description: str = "Doppler",
    body_part: str = "ABDOMEN",
    **common: Any,
) -> Dataset:
    """An ultrasound colour Doppler frame: RGB, 8-bit, PlanarConfiguration 0, burned-in text."""
    ds = _base(
        modality="US",
        sop_class=UltrasoundImageStorage,
        study_description=study_description,
        series_description=series_description,
        body_part=body_part,
        **_common(common),
    )
    ds.BurnedInAnnotation = "YES"
    _set_pixels(ds, _us_frame(rows, cols), photometric="RGB", bits_stored=8)
    return ds


def us_rgb_instance(**kw: Any) -> bytes:
    """One US RGB image; takes the keyword arguments of :func:`us_rgb_dataset`."""
    return _to_bytes(us_rgb_dataset(**kw))


def multiframe_dataset(
    frames: int = 10,
    *,
    rows: int = 256,
    cols: int = 256,
    modality: Literal["XA", "US"] = "XA",
    study_description: str = "冠状动脉造影",
    series_description: str = "LCA RAO",
    body_part: str = "HEART",
    **common: Any,
) -> Dataset:
    """A multi-frame cine: XA (8-bit MONOCHROME2) or US (RGB); a dark disc moves per frame."""
    sop_class = (
        XRayAngiographicImageStorage if modality == "XA" else UltrasoundMultiFrameImageStorage
    )
    ds = _base(
        modality=modality,
        sop_class=sop_class,
        study_description=study_description,
        series_description=series_description,
        body_part=body_part,
        **_common(common),
    )
    ds.FrameTime = 66.7
    ds.CineRate = 15
    ds.FrameIncrementPointer = 0x00181063  # FrameTime
    if modality == "XA":
        stack = np.full((frames, rows, cols), 180, dtype=np.uint8)
        for f in range(frames):
            cx = 0.2 + 0.6 * f / max(frames - 1, 1)
            stack[f][_ellipse(rows, cols, 0.5, cx, 0.12, 0.12)] = 30
        _set_pixels(ds, stack, photometric="MONOCHROME2", bits_stored=8)
        ds.WindowCenter = 128
        ds.WindowWidth = 256
    else:
        step = cols // (2 * max(frames, 1))
        stack_rgb = np.stack(
            [_us_frame(rows, cols, shift=f * step - cols // 4) for f in range(frames)]
        )
        _set_pixels(ds, stack_rgb, photometric="RGB", bits_stored=8)
    return ds


def multiframe_instance(frames: int = 10, **kw: Any) -> bytes:
    """One multi-frame instance; takes the keyword arguments of :func:`multiframe_dataset`."""
    return _to_bytes(multiframe_dataset(frames, **kw))


# --------------------------------------------------------------------------------------------
# Compressed transfer syntaxes
# --------------------------------------------------------------------------------------------


def _compressed(syntax: str, plugin: str, kind: str, kw: dict[str, Any]) -> bytes:
    ds = _dataset_of_kind(kind, kw)
    # generate_instance_uid=False: pydicom would otherwise give the compressed copy a new UID.
    ds.compress(syntax, encoding_plugin=plugin, generate_instance_uid=False)
    return _to_bytes(ds)


def _dataset_of_kind(kind: str, kw: dict[str, Any]) -> Dataset:
    builders = {
        "ct": ct_dataset,
        "mr": mr_dataset,
        "dx": dx_dataset,
        "us": us_rgb_dataset,
        "multiframe": multiframe_dataset,
    }
    return builders[kind](**kw)


def rle_instance(kind: str = "ct", **kw: Any) -> bytes:
    """RLE Lossless (1.2.840.10008.1.2.5), encoded by pydicom's own RLE encoder.

    ``kind`` is one of ct, mr, dx, us, multiframe; the rest goes to that builder.
    """
    return _compressed(RLELossless, "", kind, kw)


def j2k_instance(kind: str = "ct", **kw: Any) -> bytes:
    """JPEG 2000 Lossless (1.2.840.10008.1.2.4.90), encoded with pylibjpeg-openjpeg."""
    return _compressed(JPEG2000Lossless, "pylibjpeg", kind, kw)


def _fake_jpeg_lossless_frame(rows: int, cols: int) -> bytes:
    """A JPEG lossless (process 14, SOF3) frame with a plausible header and junk entropy data.

    Nothing in the shipped stack decodes JPEG lossless, so the content only needs to look right
    to a header parser; a decoder, if one were installed, may well reject it.
    """
    sof3 = struct.pack(">HBHHB", 11, 16, rows, cols, 1) + bytes([1, 0x11, 0])
    dht = struct.pack(">H", 3 + 16 + 1) + bytes([0x00]) + bytes([1] + [0] * 15) + bytes([0])
    sos = struct.pack(">HB", 8, 1) + bytes([1, 0x00]) + bytes([1, 0, 0])
    scan = bytes(range(1, 255)) * 4
    return (
        b"\xff\xd8"
        + b"\xff\xc3"
        + sof3
        + b"\xff\xc4"
        + dht
        + b"\xff\xda"
        + sos
        + scan
        + b"\xff\xd9"
    )


def jpeg_lossless_instance(*, rows: int = 64, cols: int = 64, **kw: Any) -> bytes:
    """JPEG Lossless SV1 (1.2.840.10008.1.2.4.70): reads fine, decodes nowhere we ship.

    A CT header with valid encapsulation (empty basic offset table, one fragment); only a pixel
    decode fails, which is the "indexed without a thumbnail" path.
    """
    ds = ct_dataset(rows=rows, cols=cols, **kw)
    ds.file_meta.TransferSyntaxUID = JPEGLosslessSV1
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelData = encapsulate([_fake_jpeg_lossless_frame(rows, cols)])
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    return _to_bytes(ds)


# --------------------------------------------------------------------------------------------
# Bad inputs
# --------------------------------------------------------------------------------------------


def not_dicom(kind: Literal["png", "text"] = "png") -> bytes:
    """A file that is not DICOM: a 1x1 PNG, or a plain text note."""
    if kind == "text":
        return "这不是DICOM文件 / this is not a DICOM file\n".encode()

    def chunk(tag: bytes, data: bytes) -> bytes:
        body = tag + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", 1, 1, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00\x80"))
        + chunk(b"IEND", b"")
    )


_MISSING = {
    "sop": ("SOPInstanceUID",),
    "study": ("StudyInstanceUID",),
    "series": ("SeriesInstanceUID",),
}


def missing_uids(which: Literal["sop", "study", "series"] = "sop", **kw: Any) -> bytes:
    """A small CT slice without one required UID.

    For ``which="sop"`` the File Meta MediaStorageSOPInstanceUID is dropped as well, so a reader
    cannot fall back to it.
    """
    ds = ct_dataset(rows=kw.pop("rows", 64), cols=kw.pop("cols", 64), **kw)
    for keyword in _MISSING[which]:
        delattr(ds, keyword)
    meta = Dataset()
    meta.update(ds.file_meta)
    if which == "sop":
        del meta.MediaStorageSOPInstanceUID
    return _assemble(ds, meta)


def truncated(data: bytes, keep: float = 0.5) -> bytes:
    """The first `keep` fraction of a file, as an interrupted upload leaves it.

    Beware: pydicom 3 does not raise on a truncated file. ``dcmread`` stops at end of data and
    returns what it has: with a cut inside Pixel Data the header is complete and only the pixel
    length is short; with a cut inside the header (``keep`` ~0.1 of a 64x64 slice) required
    elements are simply absent. A reader must check both.
    """
    return data[: int(len(data) * keep)]


def unknown_transfer_syntax(**kw: Any) -> bytes:
    """A small CT slice whose File Meta claims TransferSyntaxUID 1.2.3.4.5.6.7.

    The body is explicit VR little endian; the claim is what an ingest must refuse or flag.
    """
    ds = ct_dataset(rows=kw.pop("rows", 64), cols=kw.pop("cols", 64), **kw)
    meta = Dataset()
    meta.update(ds.file_meta)
    meta.TransferSyntaxUID = UNKNOWN_TRANSFER_SYNTAX
    return _assemble(ds, meta)


def pixel_size_mismatch(keep: float = 0.5, **kw: Any) -> bytes:
    """A native (uncompressed) CT slice whose PixelData is shorter than Rows x Columns says."""
    ds = ct_dataset(rows=kw.pop("rows", 64), cols=kw.pop("cols", 64), **kw)
    length = int(len(ds.PixelData) * keep) // 2 * 2
    ds.PixelData = ds.PixelData[:length]
    return _to_bytes(ds)


def study(
    series: Iterable[tuple[str, int]] = (("ct", 3), ("mr", 1)),
    **common: Any,
) -> list[bytes]:
    """Several series of one study (same StudyInstanceUID and patient), for index/deid tests."""
    common = dict(common)
    common["study_uid"] = common.get("study_uid") or uid()
    files: list[bytes] = []
    for number, (kind, count) in enumerate(series, start=1):
        series_uid = uid()
        for i in range(count):
            kw = {
                **common,
                "series_uid": series_uid,
                "series_number": number,
                "instance_number": i + 1,
            }
            if kind == "ct":
                files.append(ct_instance(index=i, rows=64, cols=64, **kw))
            else:
                files.append(_to_bytes(_dataset_of_kind(kind, kw)))
    return files
