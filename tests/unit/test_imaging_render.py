"""Rendering a DICOM frame to the JPEG a reader sees: windows, inversion, colour, frames."""

from __future__ import annotations

import io
import time

import numpy as np
import pytest
from PIL import Image
from pydicom import dcmread
from pydicom.dataset import Dataset, FileDataset
from pydicom.pixels import convert_color_space

from tests.support import dicom_factory as factory
from yilian.imaging.render import (
    NO_DECODER,
    PIXEL_DATA_INVALID,
    Undecodable,
    frame_count,
    render_jpeg,
    thumbnail,
)

# Where the phantom has what, in a 512x512 slice (rows, columns).
LUNG = (slice(235, 245), slice(165, 175))
MEDIASTINUM = (slice(250, 260), slice(250, 260))
CORNER = (slice(2, 12), slice(2, 12))


def read(data: bytes) -> FileDataset:
    return dcmread(io.BytesIO(data))


def decoded(jpeg: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(jpeg))
    assert image.format == "JPEG"
    return image


def mean_at(jpeg: bytes, region: tuple[slice, slice]) -> float:
    return float(np.asarray(decoded(jpeg))[region].mean())


def test_ct_thumbnail_is_a_grey_jpeg_of_the_requested_size() -> None:
    # Given
    ds = read(factory.ct_instance())

    # When
    image = decoded(thumbnail(ds, size=256))

    # Then
    assert image.mode == "L"
    assert image.size == (256, 256)


def test_lung_window_shows_lungs_grey_where_soft_tissue_window_shows_them_black() -> None:
    # Given
    ds = read(factory.ct_instance())

    # When
    lung = render_jpeg(ds, window="lung")
    soft = render_jpeg(ds, window="soft_tissue")

    # Then
    assert 50 < mean_at(lung, LUNG) < 180
    assert mean_at(soft, LUNG) < 10
    assert 100 < mean_at(soft, MEDIASTINUM) < 160


def test_window_from_the_tags_is_used_when_none_is_asked_for() -> None:
    # Given: WindowCenter/Width "40\-600" / "400\1500": the first pair is soft tissue
    ds = read(factory.ct_instance())

    # When
    default = render_jpeg(ds)

    # Then
    assert default == render_jpeg(ds, window=(40, 400))


def test_ct_without_window_tags_falls_back_to_soft_tissue() -> None:
    # Given
    ds = read(factory.ct_instance(rows=64, cols=64))
    del ds.WindowCenter, ds.WindowWidth

    # When / Then
    assert render_jpeg(ds) == render_jpeg(ds, window="soft_tissue")


def test_signed_and_unsigned_ct_of_the_same_anatomy_render_the_same() -> None:
    # Given: stored HU+1024 with intercept -1024, and stored HU with intercept 0
    unsigned = read(factory.ct_instance(rows=128, cols=128))
    signed = read(factory.ct_instance(rows=128, cols=128, signed=True))

    # When
    from_unsigned = np.asarray(decoded(render_jpeg(unsigned, window="lung"))).astype(int)
    from_signed = np.asarray(decoded(render_jpeg(signed, window="lung"))).astype(int)

    # Then: equal but for air below -1024 HU, which the unsigned form cannot store
    assert np.abs(from_unsigned - from_signed).mean() < 1
    assert mean_at(render_jpeg(signed, window="lung"), (slice(58, 62), slice(40, 44))) > 50


def test_monochrome1_shows_air_white_and_monochrome2_black() -> None:
    # Given: the same stored pixels, only the photometric interpretation differs
    inverted = read(factory.dx_instance(monochrome1=True))
    normal = read(factory.dx_instance(monochrome1=False))

    # When
    white_air = render_jpeg(inverted)
    black_air = render_jpeg(normal)

    # Then
    assert mean_at(white_air, CORNER) > 245
    assert mean_at(black_air, CORNER) < 10


def test_8_bit_image_without_window_is_stretched_to_its_range() -> None:
    # Given
    ds = read(factory.dx_instance(bits=8, monochrome1=False, with_window=False))

    # When
    pixels = np.asarray(decoded(render_jpeg(ds)))

    # Then
    assert pixels.min() < 20
    assert pixels.max() > 235


def test_mr_16_bit_renders_with_its_tag_window() -> None:
    # Given
    ds = read(factory.mr_instance())

    # When
    pixels = np.asarray(decoded(render_jpeg(ds)))

    # Then: background black, bright CSF white
    assert pixels.shape == (256, 256)
    assert pixels[:10, :10].mean() < 10
    assert pixels[110:120, 113:117].mean() > 240


def test_rgb_ultrasound_stays_in_colour() -> None:
    # Given: a red Doppler patch just above the centre
    ds = read(factory.us_rgb_instance())

    # When
    image = decoded(render_jpeg(ds))
    red = np.asarray(image)[222:228, 300:340].mean(axis=(0, 1))

    # Then
    assert image.mode == "RGB"
    assert image.size == (640, 480)
    assert red[0] > 150
    assert red[1] < 90


def test_ybr_full_is_converted_back_to_rgb() -> None:
    # Given: the same ultrasound frame stored as YBR_FULL
    rgb = read(factory.us_rgb_instance())
    ybr = read(factory.us_rgb_instance())
    ybr.PixelData = convert_color_space(ybr.pixel_array, "RGB", "YBR_FULL").tobytes()
    ybr.PhotometricInterpretation = "YBR_FULL"

    # When
    from_rgb = np.asarray(decoded(render_jpeg(rgb))).astype(int)
    from_ybr = np.asarray(decoded(render_jpeg(ybr))).astype(int)

    # Then
    assert np.abs(from_rgb - from_ybr).mean() < 3


def test_frame_index_picks_that_frame_of_a_multiframe() -> None:
    # Given: a dark disc moves from left (frame 0) to right (frame 9)
    ds = read(factory.multiframe_instance(frames=10))
    left = (slice(123, 133), slice(46, 56))

    # When
    first = render_jpeg(ds, frame=0)
    last = render_jpeg(ds, frame=9)

    # Then
    assert frame_count(ds) == 10
    assert mean_at(first, left) < 60
    assert mean_at(last, left) > 150


def test_frame_out_of_range_is_an_index_error() -> None:
    # Given
    ds = read(factory.multiframe_instance(frames=3))

    # When / Then
    with pytest.raises(IndexError):
        render_jpeg(ds, frame=3)


def test_multiframe_rgb_renders_in_colour() -> None:
    # Given
    ds = read(factory.multiframe_instance(frames=4, modality="US"))

    # When / Then
    assert decoded(thumbnail(ds, size=128)).mode == "RGB"


@pytest.mark.parametrize("compressed", [factory.rle_instance, factory.j2k_instance])
def test_lossless_compressed_renders_exactly_like_the_native_slice(compressed) -> None:
    # Given: the same slice (same seed and index), compressed and not
    native = read(factory.ct_instance(rows=256, cols=256))
    packed = read(compressed(rows=256, cols=256))

    # When / Then
    assert packed.file_meta.TransferSyntaxUID != native.file_meta.TransferSyntaxUID
    assert render_jpeg(packed) == render_jpeg(native)


def test_jpeg_lossless_without_a_decoder_is_undecodable_no_decoder() -> None:
    # Given
    ds = read(factory.jpeg_lossless_instance())

    # When
    with pytest.raises(Undecodable) as raised:
        thumbnail(ds)

    # Then
    assert raised.value.code == NO_DECODER


def test_unknown_transfer_syntax_is_undecodable_no_decoder() -> None:
    # Given
    ds = read(factory.unknown_transfer_syntax())

    # When / Then
    with pytest.raises(Undecodable) as raised:
        thumbnail(ds)
    assert raised.value.code == NO_DECODER


@pytest.mark.parametrize(
    "data",
    [factory.pixel_size_mismatch(), factory.truncated(factory.ct_instance(rows=64, cols=64))],
    ids=["size-mismatch", "truncated"],
)
def test_short_pixel_data_is_undecodable_pixel_data_invalid(data: bytes) -> None:
    # Given
    ds = read(data)

    # When / Then
    with pytest.raises(Undecodable) as raised:
        thumbnail(ds)
    assert raised.value.code == PIXEL_DATA_INVALID


def test_max_size_keeps_the_aspect_ratio() -> None:
    # Given: a 512-row by 420-column radiograph
    ds = read(factory.dx_instance())

    # When
    image = decoded(render_jpeg(ds, max_size=256))

    # Then
    assert image.size == (210, 256)


def test_unequal_pixel_spacing_is_shown_with_square_pixels() -> None:
    # Given: rows twice as far apart as columns
    ds: Dataset = read(factory.ct_instance(rows=64, cols=64))
    ds.PixelSpacing = [1.0, 0.5]

    # When
    image = decoded(render_jpeg(ds))

    # Then
    assert image.size == (64, 128)


def test_unknown_window_preset_is_refused() -> None:
    # Given
    ds = read(factory.ct_instance(rows=32, cols=32))

    # When / Then
    with pytest.raises(ValueError, match="unknown window preset"):
        render_jpeg(ds, window="sepia")


def test_ct_thumbnail_is_fast() -> None:
    # Given
    ds = read(factory.ct_instance())
    thumbnail(ds)

    # When
    timings = []
    for _ in range(10):
        start = time.perf_counter()
        thumbnail(ds)
        timings.append(time.perf_counter() - start)

    # Then: ~2-3 ms here; the bound leaves room for a loaded CI machine
    assert sorted(timings)[len(timings) // 2] < 0.05
