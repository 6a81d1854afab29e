"""Cross-institution health records (健康档案调阅): contribute FHIR R4 documents, read a
person's record. Every read passes the record-access rules and is audited, allowed or not.

Contribute (doctor or institution admin; the document belongs to the caller's institution):
POST /records/documents              a FHIR Bundle (document | transaction), ≤ 6 MB
                                     -> 201 {status: created, doc_id, version, kind, ...};
                                     the same bundle again -> 200 {status: unchanged}
PUT  /records/documents/{doc_id}     a new version (earlier versions stay readable)
POST /records/uploads                a bundle over 6 MB: -> 201 {upload_id, method: PUT, url,
                                     headers, expires_in, max_bytes}; PUT the file there
GET  /records/uploads/{upload_id}    -> {state: waiting|running|done|failed, outcome}
Read (doctor with a care relationship, consent or break-glass; the resident; a proxy):
GET  /records/documents/{doc_id}?version=     the document: its resources, versions
GET  /records/persons/{id}/timeline?kind=&from=&to=&institution_id=
GET  /records/persons/{id}/summary            problems, medications, allergies, vitals, labs
GET  /records/persons/{id}/recognition?item=  互认: a recent equivalent result (item key or
                                              LOINC code, e.g. cbc, 58410-2, chest_ct)
GET  /me/record?person_id=                    the resident's own (or dependent's) timeline
                                              and summary
FHIR (application/fhir+json; errors as OperationOutcome):
GET  /fhir/Observation?patient=&code=&category=&date=   searchset
GET  /fhir/DiagnosticReport?patient=&code=&date=        searchset
GET  /fhir/Patient/{id}/$everything                     the whole record as one Bundle

A bundle over 6 MB (Lambda's request limit) is refused with 413 PAYLOAD_TOO_LARGE, saying
how to send it: POST /records/uploads for a presigned S3 upload (up to 100 MB), submitted
with the same checks by functions/records_ingest.
"""

from __future__ import annotations

import functools
import json
import os
from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.logging import correlation_paths

from yilian.api.http import create_app, principal_of
from yilian.settings import Settings

logger = Logger(service="records")
MAX_BUNDLE_BYTES = 6 * 1024 * 1024
app = create_app(
    max_body_bytes=MAX_BUNDLE_BYTES,
    too_large_hint="send a larger Bundle through POST /records/uploads (a presigned S3 "
    "upload of up to 100 MB, checked the same way)",
)


@functools.cache
def build_service() -> Any:
    from yilian.adapters.records_wiring import RECORD_SETTINGS, build_records

    return build_records(Settings.from_env(os.environ).require(*RECORD_SETTINGS))


def _json(status: int, body: Any) -> Response[dict]:
    return Response(status, "application/json", body=body)


def _fhir(body: Any) -> Response[str]:
    return Response(200, "application/fhir+json", body=json.dumps(body, ensure_ascii=False))


def _query() -> dict[str, str]:
    return {k: v[:200] for k, v in (app.current_event.query_string_parameters or {}).items()}


def _bundle() -> Any:
    from yilian.domain.errors import InvalidInput

    try:
        return json.loads(app.current_event.body or "")
    except ValueError:
        raise InvalidInput("MALFORMED_JSON", "the request body is not valid JSON") from None


@app.post("/records/documents")
def submit() -> Response[dict]:
    status, out = build_service().service.submit(principal_of(app), _bundle())
    return _json(status, out)


@app.post("/records/uploads")
def start_upload() -> Response[dict]:
    return _json(201, build_service().service.start_upload(principal_of(app)))


@app.get("/records/uploads/<upload_id>")
def upload_status(upload_id: str) -> Response[dict]:
    return _json(200, build_service().service.upload_status(principal_of(app), upload_id))


@app.put("/records/documents/<doc_id>")
def update(doc_id: str) -> Response[dict]:
    return _json(200, build_service().service.update(principal_of(app), doc_id[:40], _bundle()))


@app.get("/records/documents/<doc_id>")
def document(doc_id: str) -> Response[dict]:
    version = app.current_event.get_query_string_value("version")
    n = int(version) if version and version.isdigit() else None
    return _json(200, build_service().service.document(principal_of(app), doc_id, n))


@app.get("/records/persons/<person_id>/timeline")
def timeline(person_id: str) -> Response[dict]:
    return _json(200, build_service().service.timeline(principal_of(app), person_id, _query()))


@app.get("/records/persons/<person_id>/summary")
def summary(person_id: str) -> Response[dict]:
    return _json(200, build_service().service.summary(principal_of(app), person_id))


@app.get("/records/persons/<person_id>/recognition")
def recognition(person_id: str) -> Response[dict]:
    item = _query().get("item") or _query().get("code") or ""
    return _json(200, build_service().service.recognition(principal_of(app), person_id, item))


@app.get("/me/record")
def my_record() -> Response[dict]:
    who = principal_of(app)
    person_id = _query().get("person_id") or who.person_id or ""
    service = build_service().service
    return _json(200, {"timeline": service.timeline(who, person_id, _query()),
                       "summary": service.summary(who, person_id)})  # fmt: skip


@app.get("/fhir/<resource_type>")
def fhir_search(resource_type: str) -> Response[str]:
    from yilian.api.fhir_record import searchset

    q = _query()
    dates = app.current_event.multi_value_query_string_parameters or {}
    q["date_list"] = ",".join(dates.get("date") or [])
    found = build_service().service.search(principal_of(app), resource_type, q)
    return _fhir(searchset(found, _base()))


@app.get("/fhir/Patient/<person_id>/<operation>")
def fhir_everything(person_id: str, operation: str) -> Response[str]:
    from yilian.api.fhir_patient import patient_resource
    from yilian.api.fhir_record import everything
    from yilian.domain.errors import NotFound

    if operation != "$everything":
        raise NotFound("OPERATION_NOT_SUPPORTED", f"Patient/{operation} is not supported")
    person, resources = build_service().service.everything(principal_of(app), person_id)
    return _fhir(everything(patient_resource(person), resources, _base()))


def _base() -> str:
    headers = app.current_event.headers or {}
    host = next((v for k, v in headers.items() if k.lower() == "host"), "")
    stage = app.current_event.request_context.stage or ""
    prefix = f"/{stage}" if stage and stage != "$default" and "localhost" not in host else ""
    return f"https://{host}{prefix}/fhir" if host else "/fhir"


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST)
def lambda_handler(event: dict, context: Any) -> dict:
    return app.resolve(event, context)
