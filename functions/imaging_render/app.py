"""Imaging pixels (imaging layer: pydicom, numpy, pillow): previews with window presets,
WADO-RS rendered and raw frames, de-identified exports. Access is the same one check as the
imaging API (ImagingService.open_study), made once per viewing and audited.

GET  /imaging/studies/{uid}/instances/{sop}/preview?frame=0&window=lung|bone|soft_tissue|
     brain|mediastinum|abdomen|default                        image/jpeg (cached in S3)
GET  /film/{token}/instances/{sop}/preview?code=&frame=&window=   the same, for a share link
POST /imaging/studies/{uid}/exports {purpose: teaching|research}  a de-identified zip (PS3.15
     basic profile, dates shifted, UIDs remapped) -> {export_id, url}
GET  /dicomweb/studies/{uid}/series/{series}/instances/{sop}/rendered          image/jpeg
GET  /dicomweb/studies/{uid}/series/{series}/instances/{sop}/frames/{n}/rendered image/jpeg
GET  /dicomweb/studies/{uid}/series/{series}/instances/{sop}/frames/{n}
     multipart/related; type="application/octet-stream" (decoded, little endian)
"""

from __future__ import annotations

import functools
import os
import secrets
from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.logging import correlation_paths

from yilian.api.http import create_app, json_object, json_response, principal_of, query_params
from yilian.settings import Settings

logger = Logger(service="imaging-render")
app = create_app()
# Routes answering bytes carry no return annotation: Powertools would validate the body
# against it as a model (JPEG is not UTF-8).
INSTANCE = "/dicomweb/studies/<study_uid>/series/<series_uid>/instances/<sop_uid>"


@functools.cache
def build_service() -> Any:
    from yilian.adapters.imaging_wiring import IMAGING_SETTINGS, build_imaging

    return build_imaging(Settings.from_env(os.environ).require(*IMAGING_SETTINGS), render=True)


def _frame(raw: str | None, base: int = 0) -> int:
    from yilian.domain.errors import InvalidInput

    if raw is None or raw == "":
        return 0
    if not raw.isdigit():
        raise InvalidInput("FRAME_INVALID", "frame is a number")
    return int(raw) - base


def _jpeg(data: bytes) -> Response:
    return Response(200, "image/jpeg", body=data, headers={"Cache-Control": "private, max-age=300"})


@app.get("/imaging/studies/<study_uid>/instances/<sop_uid>/preview")
def preview(study_uid: str, sop_uid: str):
    q = query_params(app)
    return _jpeg(build_service().preview(principal_of(app), study_uid, sop_uid,
                                         _frame(q.get("frame")), q.get("window")))  # fmt: skip


@app.get("/film/<token>/instances/<sop_uid>/preview")
def film_preview(token: str, sop_uid: str):
    q = query_params(app)
    code = q.get("code") or (app.current_event.headers or {}).get("x-access-code")
    return _jpeg(build_service().film_preview(token, code, sop_uid, _frame(q.get("frame")),
                                              q.get("window")))  # fmt: skip


@app.post("/imaging/studies/<study_uid>/exports")
def export(study_uid: str) -> Response[dict]:
    return json_response(201, build_service().export(principal_of(app), study_uid,
                                                     json_object(app)))  # fmt: skip


@app.get(f"{INSTANCE}/rendered")
def rendered(study_uid: str, series_uid: str, sop_uid: str):
    q = query_params(app)
    return _jpeg(build_service().preview(principal_of(app), study_uid, sop_uid, 0,
                                         q.get("window")))  # fmt: skip


@app.get(
    "/dicomweb/studies/<study_uid>/series/<series_uid>/instances/<sop_uid>/frames/<n>/rendered"
)
def frame_rendered(study_uid: str, series_uid: str, sop_uid: str, n: str):
    return _jpeg(build_service().preview(principal_of(app), study_uid, sop_uid, _frame(n, 1),
                                         query_params(app).get("window")))  # fmt: skip


@app.get(f"{INSTANCE}/frames/<n>")
def frame(study_uid: str, series_uid: str, sop_uid: str, n: str):
    data = build_service().frame_pixels(principal_of(app), study_uid, sop_uid, _frame(n, 1))
    boundary = secrets.token_hex(12)
    body = (
        f"--{boundary}\r\nContent-Type: application/octet-stream\r\n\r\n".encode()
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )
    content_type = f'multipart/related; type="application/octet-stream"; boundary={boundary}'
    return Response(200, content_type, body=body)


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST)
def lambda_handler(event: dict, context: Any) -> dict:
    return app.resolve(event, context)
