"""One DICOM frame to a JPEG a browser shows: thumbnails, previews and WADO-RS rendered frames.

The grey pipeline is the standard one (PS3.3 C.11): stored value -> Modality LUT (rescale
slope/intercept) -> VOI linear window -> MONOCHROME1 inversion. It runs as a uint8 lookup table
over the frame's own value range, so a 512x512 CT slice renders in a few milliseconds.

Window choice, first that applies: the caller's (preset name or (center, width)) > the first
WindowCenter/WindowWidth in the tags > the modality default (CT: soft tissue) > the 0.5-99.5
percentile range of the frame. VOI LUT sequences and presentation states are not applied.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.pixels import as_pixel_options, convert_color_space, get_decoder

WINDOW_PRESETS: dict[str, tuple[float, float]] = {
    "lung": (-600, 1500),
    "bone": (300, 2000),
    "soft_tissue": (40, 400),
    "brain": (40, 80),
    "mediastinum": (50, 350),
    "abdomen": (60, 400),
}
MODALITY_DEFAULT_WINDOW: dict[str, tuple[float, float]] = {"CT": WINDOW_PRESETS["soft_tissue"]}

NO_DECODER = "NO_DECODER"
PIXEL_DATA_INVALID = "PIXEL_DATA_INVALID"

# A lookup table over more values than this would cost more than computing the window directly.
_MAX_LUT_SPAN = 1 << 17
_PERCENTILE_STEP = 4  # sample every 4th row and column for the automatic window

Window = str | tuple[float, float]


class Undecodable(Exception):
    """The pixel data cannot be turned into an image; `code` says why, for the status shown.

    NO_DECODER: no installed handler for the transfer syntax (index it, no thumbnail).
    PIXEL_DATA_INVALID: a handler exists but the data is broken (wrong size, bad codestream).
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def frame_count(ds: Dataset) -> int:
    """Number of frames in the instance (1 when NumberOfFrames is absent or empty)."""
    value = ds.get("NumberOfFrames")
    return max(int(value), 1) if value not in (None, "") else 1


def thumbnail(ds: Dataset, size: int = 256) -> bytes:
    """JPEG of the first frame, its longest side at most `size` pixels."""
    return render_jpeg(ds, frame=0, max_size=size)


def render_jpeg(
    ds: Dataset,
    *,
    frame: int = 0,
    window: Window | None = None,
    max_size: int | None = None,
    quality: int = 85,
) -> bytes:
    """Render frame `frame` (0-based) of `ds` as an 8-bit grey or RGB JPEG.

    Raises Undecodable for pixel data we cannot decode, IndexError for a frame that does not
    exist and ValueError for an unknown window preset.
    """
    frames = frame_count(ds)
    if not 0 <= frame < frames:
        raise IndexError(f"frame {frame} out of range: the instance has {frames} frame(s)")
    center_width = _explicit_window(window)
    pixels, photometric = decode_frame(ds, frame)
    if pixels.ndim == 3:
        image = Image.fromarray(_to_rgb8(pixels, photometric, ds), mode="RGB")
    else:
        grey = _grey8(pixels, ds, photometric, center_width)
        image = Image.fromarray(grey, mode="L")
    image = _square_pixels(image, ds)
    if max_size is not None and max(image.size) > max_size:
        image.thumbnail((max_size, max_size), Image.Resampling.LANCZOS, reducing_gap=2.0)
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=quality)
    return out.getvalue()


def decode_frame(ds: Dataset, frame: int = 0) -> tuple[np.ndarray, str]:
    """Decode one frame only (not the whole cine) and say its photometric interpretation.

    pydicom converts YBR to RGB on decode for most syntaxes; the returned interpretation is the
    one the array is actually in.
    """
    syntax = getattr(ds, "file_meta", Dataset()).get("TransferSyntaxUID")
    if not syntax:
        raise Undecodable(PIXEL_DATA_INVALID, "no Transfer Syntax UID in the File Meta")
    try:
        decoder = get_decoder(syntax)
    except NotImplementedError:
        raise Undecodable(NO_DECODER, f"no pixel decoder for transfer syntax {syntax}") from None
    if not decoder.is_available:
        raise Undecodable(
            NO_DECODER,
            f"no installed plugin decodes {syntax.name} ({syntax}); "
            f"missing: {'; '.join(decoder.missing_dependencies)}",
        )
    try:
        options: dict[str, Any] = as_pixel_options(ds)
        arr, meta = decoder.as_array(ds, index=frame, validate=True, **options)
    except (ValueError, RuntimeError, AttributeError, KeyError, TypeError) as exc:
        raise Undecodable(PIXEL_DATA_INVALID, f"pixel data could not be decoded: {exc}") from exc
    photometric = str(meta.get("photometric_interpretation", ds.get("PhotometricInterpretation")))
    return arr, photometric


def _explicit_window(window: Window | None) -> tuple[float, float] | None:
    if window is None:
        return None
    if isinstance(window, str):
        try:
            return WINDOW_PRESETS[window]
        except KeyError:
            raise ValueError(f"unknown window preset {window!r}") from None
    center, width = window
    return float(center), float(width)


def _first(value: Any) -> float | None:
    """First value of a possibly multi-valued DS (WindowCenter is often "40\\-600")."""
    if value is None or value == "":
        return None
    if isinstance(value, MultiValue | list | tuple):
        return float(value[0]) if len(value) else None
    return float(value)


def _tag_window(ds: Dataset) -> tuple[float, float] | None:
    center, width = _first(ds.get("WindowCenter")), _first(ds.get("WindowWidth"))
    if center is None or width is None or width < 1:
        return None
    return center, width


def _rescale(ds: Dataset) -> tuple[float, float]:
    slope = _first(ds.get("RescaleSlope"))
    intercept = _first(ds.get("RescaleIntercept"))
    return (slope if slope else 1.0), (intercept or 0.0)


def _auto_window(pixels: np.ndarray, slope: float, intercept: float) -> tuple[float, float]:
    """Robust min/max (0.5-99.5 percentiles of a subsample), in modality units."""
    sample = pixels[::_PERCENTILE_STEP, ::_PERCENTILE_STEP]
    low, high = np.percentile(sample, (0.5, 99.5))
    low, high = low * slope + intercept, high * slope + intercept
    if high <= low:
        high = low + 1
    return (low + high) / 2, high - low + 1


def _voi_linear(values: np.ndarray, center: float, width: float) -> np.ndarray:
    """DICOM linear VOI function (PS3.3 C.11.2.1.2.1) onto 0..255, as uint8."""
    width = max(width, 1.0)
    scaled = ((values - (center - 0.5)) / (width - 1 if width > 1 else 1) + 0.5) * 255.0
    return np.clip(scaled, 0, 255).astype(np.uint8)


def _grey8(
    pixels: np.ndarray, ds: Dataset, photometric: str, explicit: tuple[float, float] | None
) -> np.ndarray:
    slope, intercept = _rescale(ds)
    center, width = (
        explicit
        or _tag_window(ds)
        or MODALITY_DEFAULT_WINDOW.get(str(ds.get("Modality", "")))
        or _auto_window(pixels, slope, intercept)
    )
    invert = photometric == "MONOCHROME1"
    if pixels.dtype.kind in "iu":
        low, high = int(pixels.min()), int(pixels.max())
        if high - low < _MAX_LUT_SPAN:
            stored = np.arange(low, high + 1, dtype=np.float64)
            lut = _voi_linear(stored * slope + intercept, center, width)
            if invert:
                lut = 255 - lut
            offset = pixels.astype(np.int32, copy=False) - low if low else pixels
            return lut[offset]
    grey = _voi_linear(pixels.astype(np.float32) * slope + intercept, center, width)
    return 255 - grey if invert else grey


def _to_rgb8(pixels: np.ndarray, photometric: str, ds: Dataset) -> np.ndarray:
    if photometric.startswith("YBR"):
        pixels = convert_color_space(pixels, photometric, "RGB")
    if pixels.dtype != np.uint8:
        bits = int(ds.get("BitsStored", 8))
        pixels = np.clip(pixels.astype(np.int32) >> max(bits - 8, 0), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(pixels)


def _square_pixels(image: Image.Image, ds: Dataset) -> Image.Image:
    """Stretch the height when rows and columns are spaced differently, so anatomy is not
    squashed (PixelSpacing is row spacing, then column spacing)."""
    spacing = ds.get("PixelSpacing")
    if not spacing or len(spacing) != 2 or not float(spacing[1]):
        return image
    ratio = float(spacing[0]) / float(spacing[1])
    if abs(ratio - 1) < 0.01 or not 0.1 < ratio < 10:
        return image
    width, height = image.size
    return image.resize((width, max(round(height * ratio), 1)), Image.Resampling.BILINEAR)
