"""The Renderer the imaging service asks for previews, raw frames and de-identified copies
(services.imaging.Renderer), backed by pydicom: imaging layer only."""

from __future__ import annotations

import io

import numpy as np
import pydicom

from yilian.domain.errors import InvalidInput
from yilian.imaging.deid import deidentify
from yilian.imaging.render import WINDOW_PRESETS, Undecodable, decode_frame, render_jpeg


class PydicomRenderer:
    def preview(self, data: bytes, frame: int, window: str | None, size: int) -> bytes:
        if window and window != "default" and window not in WINDOW_PRESETS:
            raise InvalidInput(
                "WINDOW_UNKNOWN", "unknown window preset", presets=sorted(WINDOW_PRESETS)
            )
        ds = pydicom.dcmread(io.BytesIO(data))
        preset = None if window in (None, "", "default") else window
        try:
            return render_jpeg(ds, frame=frame, window=preset, max_size=size)
        except Undecodable as error:
            raise InvalidInput(error.code, str(error)) from error

    def frame(self, data: bytes, frame: int) -> bytes:
        """One frame's pixels, decoded, native little-endian (WADO-RS frames)."""
        ds = pydicom.dcmread(io.BytesIO(data))
        try:
            pixels, _ = decode_frame(ds, frame)
        except Undecodable as error:
            raise InvalidInput(error.code, str(error)) from error
        return bytes(np.ascontiguousarray(pixels).astype(pixels.dtype.newbyteorder("<")).tobytes())

    def deidentify(self, files: list[bytes], subject_code: str, shift_days: int) -> list[bytes]:
        uid_map: dict[str, str] = {}
        out = []
        for data in files:
            ds = deidentify(pydicom.dcmread(io.BytesIO(data)), subject_code=subject_code,
                            date_shift_days=shift_days, uid_map=uid_map)  # fmt: skip
            buffer = io.BytesIO()
            ds.save_as(buffer, enforce_file_format=True)
            out.append(buffer.getvalue())
        return out
