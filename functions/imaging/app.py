"""Regional imaging (区域影像中心, 云胶片): uploads, studies, reports, reconciliation, share
links and the DICOMweb subset a viewer needs. No pydicom here: pixels are the render
function's (imaging layer); this function answers from the index and S3.

Upload (doctor / institution admin, into their own institution's prefix):
POST /imaging/uploads                      {files: [{name, size}]} -> presigned POST + PUT per file
GET  /imaging/uploads/{batch_id}           each file: pending | indexed | duplicate | rejected
                                           (code, message) | failed (retrying)
Read (the producing institution, the reading institutions, else the record-access rules):
GET  /imaging/studies?institution_id=&StudyDate=&ModalitiesInStudy=&unreported=1
                                           (institution_id=*: a reading centre's whole worklist)
GET  /imaging/persons/{person_id}/studies  GET /me/imaging?person_id=
GET  /imaging/studies/{study_uid}          series (thumbnail URLs), instances, report, shares
GET  /imaging/studies/{uid}/instances/{sop}/original   a short-lived presigned GET
Report, link, share:
POST /imaging/studies/{uid}/report         {findings, impression, technique?, recommendation?,
                                           critical?, status: preliminary|final, version?}
GET  /imaging/reconciliation               studies that matched nobody;  POST .../{uid}/link
POST /imaging/studies/{uid}/shares         {days, access_code?, label?} -> {token, path}
POST /imaging/studies/{uid}/shares/{link_id}/revoke
GET  /film/{token}?code=                   the cloud-film page's data, no sign-in (audited)
GET  /fhir/ImagingStudy/{uid}              the study as a FHIR R4 ImagingStudy (linked studies)
Dead letters (admins): GET /imaging/dead-letters, POST /imaging/dead-letters/redrive
DICOMweb (application/dicom+json), the subset implemented:
GET  /dicomweb/studies?PatientID=&StudyDate=&ModalitiesInStudy=&AccessionNumber=
     &StudyInstanceUID=&limit=&offset=                       QIDO-RS studies
GET  /dicomweb/studies/{uid}/series                          QIDO-RS series
GET  /dicomweb/studies/{uid}/series/{series}/instances       QIDO-RS instances
GET  /dicomweb/studies/{uid}/series/{series}/metadata        WADO-RS metadata
GET  /dicomweb/studies/{uid}/series/{series}/instances/{sop} WADO-RS instance
     (multipart/related; type="application/dicom"; over 4 MB: 303 to a presigned URL)
"""

from __future__ import annotations

import functools
import json
import os
import secrets
from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.logging import correlation_paths

from yilian.api.http import create_app, json_object, json_response, principal_of, query_params
from yilian.settings import Settings

logger = Logger(service="imaging")
app = create_app()
DICOM_JSON = "application/dicom+json"


@functools.cache
def build_service() -> Any:
    from yilian.adapters.imaging_wiring import IMAGING_SETTINGS, build_imaging

    return build_imaging(Settings.from_env(os.environ).require(*IMAGING_SETTINGS))


@app.post("/imaging/uploads")
def start_upload() -> Response[dict]:
    return json_response(201, build_service().start_upload(principal_of(app), json_object(app)))


@app.get("/imaging/uploads/<batch_id>")
def upload_status(batch_id: str) -> Response[dict]:
    return json_response(200, build_service().upload_status(principal_of(app), batch_id))


@app.get("/imaging/studies")
def institution_studies() -> Response[dict]:
    q = query_params(app)
    who = principal_of(app)
    return json_response(200, build_service().institution_studies(who, q.get("institution_id"), q))


@app.get("/imaging/persons/<person_id>/studies")
def person_studies(person_id: str) -> Response[dict]:
    return json_response(200, build_service().person_studies(principal_of(app), person_id))


@app.get("/me/imaging")
def my_studies() -> Response[dict]:
    return json_response(
        200, build_service().person_studies(principal_of(app), query_params(app).get("person_id"))
    )


@app.get("/imaging/studies/<study_uid>")
def study(study_uid: str) -> Response[dict]:
    return json_response(200, build_service().study(principal_of(app), study_uid))


@app.get("/imaging/studies/<study_uid>/instances/<sop_uid>/original")
def original(study_uid: str, sop_uid: str) -> Response[dict]:
    return json_response(200, build_service().original_url(principal_of(app), study_uid, sop_uid))


@app.post("/imaging/studies/<study_uid>/report")
def report(study_uid: str) -> Response[dict]:
    return json_response(
        200, build_service().file_report(principal_of(app), study_uid, json_object(app))
    )


@app.get("/imaging/reconciliation")
def reconciliation() -> Response[dict]:
    return json_response(200, build_service().reconciliation(principal_of(app)))


@app.post("/imaging/studies/<study_uid>/link")
def link(study_uid: str) -> Response[dict]:
    return json_response(200, build_service().link(principal_of(app), study_uid, json_object(app)))


@app.post("/imaging/studies/<study_uid>/shares")
def create_share(study_uid: str) -> Response[dict]:
    return json_response(
        201, build_service().create_share(principal_of(app), study_uid, json_object(app))
    )


@app.post("/imaging/studies/<study_uid>/shares/<link_id>/revoke")
def revoke_share(study_uid: str, link_id: str) -> Response[dict]:
    return json_response(200, build_service().revoke_share(principal_of(app), study_uid, link_id))


@app.get("/film/<token>")
def film(token: str) -> Response[dict]:
    code = query_params(app).get("code") or (app.current_event.headers or {}).get("x-access-code")
    return json_response(200, build_service().film(token, code))


@app.get("/imaging/dead-letters")
def dead_letters() -> Response[dict]:
    return json_response(200, build_service().dead_letter_list(principal_of(app)))


@app.post("/imaging/dead-letters/redrive")
def redrive() -> Response[dict]:
    return json_response(200, build_service().redrive(principal_of(app)))


@app.get("/fhir/ImagingStudy/<study_uid>")
def fhir_study(study_uid: str) -> Response[str]:
    body = build_service().fhir_study(principal_of(app), study_uid)
    return Response(200, "application/fhir+json", body=json.dumps(body, ensure_ascii=False))


# ---------------------------------------------------------------------- DICOMweb


def _dicomjson_response(body: Any) -> Response[str]:
    return Response(200, DICOM_JSON, body=json.dumps(body, ensure_ascii=False))


@app.get("/dicomweb/studies")
def qido_studies() -> Response[str]:
    return _dicomjson_response(build_service().qido_studies(principal_of(app), query_params(app)))


@app.get("/dicomweb/studies/<study_uid>/series")
def qido_series(study_uid: str) -> Response[str]:
    return _dicomjson_response(build_service().qido_series(principal_of(app), study_uid))


@app.get("/dicomweb/studies/<study_uid>/series/<series_uid>/instances")
def qido_instances(study_uid: str, series_uid: str) -> Response[str]:
    return _dicomjson_response(
        build_service().qido_instances(principal_of(app), study_uid, series_uid)
    )


@app.get("/dicomweb/studies/<study_uid>/series/<series_uid>/metadata")
def wado_metadata(study_uid: str, series_uid: str) -> Response[str]:
    return _dicomjson_response(
        build_service().series_metadata(principal_of(app), study_uid, series_uid)
    )


@app.get("/dicomweb/studies/<study_uid>/series/<series_uid>/instances/<sop_uid>")
def wado_instance(study_uid: str, series_uid: str, sop_uid: str):  # binary: no model validation
    data, url = build_service().instance_bytes(principal_of(app), study_uid, sop_uid)
    if url:
        return Response(303, "text/plain", body="see the presigned URL", headers={"Location": url})
    boundary = secrets.token_hex(12)
    body = (
        f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode()
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )
    content_type = f'multipart/related; type="application/dicom"; boundary={boundary}'
    return Response(200, content_type, body=body)


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST)
def lambda_handler(event: dict, context: Any) -> dict:
    return app.resolve(event, context)
