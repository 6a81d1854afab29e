"""Master patient index API (主索引). Identifiers in responses are masked (3301**********1234).

POST   /persons                        register; body {name, sex: male|female, birth_date:
                                       YYYY-MM-DD, phone?, address?, household?, identifiers:
                                       [{type: id_card|health_card|insurance|local, value,
                                       assigner? (institution id, for local)}]}; header
                                       Idempotency-Key honoured. -> 201 (new person) or 200
                                       (matched) {person, match: {outcome: MATCH|POSSIBLE_MATCH|
                                       NO_MATCH, score, candidates: [{person_id, score}]}}
GET    /persons?id_card=|health_card=|insurance=|local=&assigner=|name=|pinyin=|phone=|
               birth_date=             search (AND); name by characters or pinyin
                                       -> {items: [person], count}
GET    /persons/{id}                   -> person
GET    /persons/{id}/fhir              -> FHIR R4 Patient (application/fhir+json)
GET    /persons/{id}/history           -> {person_id, items: [{at, action, by, reason, details}]}
POST   /persons/{id}/links             {other_id, reason} -> person          (consortium admin)
DELETE /persons/{id}/links/{other}     reason in ?reason= or body           (consortium admin)
POST   /persons/{id}/merge             {retired_id, reason} -> survivor     (consortium admin)
POST   /persons/{id}/unmerge           {reason}; {id} is the retired person (consortium admin)
GET    /reviews                        open review items -> {items, count}  (consortium admin)
POST   /reviews/{id}/decision          {decision: link|merge|not_a_match, reason,
                                       survivor_id?} -> review item         (consortium admin)
POST   /imports                        {format: csv|jsonl, institution_id?, content?}
                                       -> 202 {job, upload: {url, method, key, expires_in}}, or
                                       with inline content 201 {job} (processed)
GET    /imports/{id}                   -> {job: {job_id, status, counts, report?: {url}}}

person = {person_id, consortium_id, status, name, pinyin, sex, birth_date, phone, address,
          household, identifiers: [{type, value, assigner?}], links, merged_into, replaces,
          created_at, updated_at, version}
Errors: {"error": {"code", "message", "details"?}} (yilian.api.http).
"""

from __future__ import annotations

import functools
import json
import os
from typing import Annotated, Any, Literal

from aws_lambda_powertools import Logger
from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.logging import correlation_paths
from pydantic import BaseModel, ConfigDict, Field

from yilian.api.http import create_app, idempotency_key, principal_of
from yilian.settings import Settings

logger = Logger(service="empi")
app = create_app()

Reason = Annotated[str, Field(max_length=500)]


class Model(BaseModel):
    model_config = ConfigDict(defer_build=True)  # validators built on first use: cold start


Text = Annotated[str, Field(max_length=200)]


class IdentifierIn(Model):
    type: Annotated[str, Field(max_length=20)]
    value: Annotated[str, Field(max_length=64)]
    assigner: Annotated[str, Field(max_length=40)] | None = None


class Registration(Model):
    name: Annotated[str, Field(max_length=100)]
    sex: Annotated[str, Field(max_length=10)]
    birth_date: Annotated[str, Field(max_length=10)]
    phone: Annotated[str, Field(max_length=30)] | None = None
    address: Text | None = None
    household: Text | None = None
    identifiers: Annotated[list[IdentifierIn], Field(max_length=10)] = []


class LinkBody(Model):
    other_id: Annotated[str, Field(max_length=40)]
    reason: Reason


class MergeBody(Model):
    retired_id: Annotated[str, Field(max_length=40)]
    reason: Reason


class ReasonBody(Model):
    reason: Reason


class DecisionBody(Model):
    decision: Annotated[str, Field(max_length=20)]
    reason: Reason
    survivor_id: Annotated[str, Field(max_length=40)] | None = None


class ImportBody(Model):
    format: Literal["csv", "jsonl"]
    institution_id: Annotated[str, Field(max_length=40)] | None = None
    content: str | None = None


@functools.cache
def build_service() -> Any:
    from yilian.adapters.empi_wiring import EMPI_SETTINGS, build_empi

    return build_empi(Settings.from_env(os.environ).require(*EMPI_SETTINGS))


def _json(status: int, body: Any) -> Response[dict]:
    return Response(status, "application/json", body=body)


@app.post("/persons")
def register(body: Registration) -> Response[dict]:
    who, key = principal_of(app), idempotency_key(app)
    empi = build_service().bind(app.lambda_context)
    status, out = empi.service.register(who, body.model_dump(), key)
    return _json(status, out)


SEARCH_FIELDS = ("id_card", "health_card", "insurance", "local", "assigner", "name", "pinyin",
                 "phone", "birth_date")  # fmt: skip


@app.get("/persons")
def search() -> Response[dict]:
    query = app.current_event.query_string_parameters or {}
    criteria = {k: query[k][:120] for k in SEARCH_FIELDS if query.get(k)}
    return _json(200, build_service().service.search(principal_of(app), criteria))


@app.get("/persons/<person_id>")
def get_person(person_id: str) -> Response[dict]:
    return _json(200, build_service().service.get(principal_of(app), person_id))


@app.get("/persons/<person_id>/fhir")
def get_fhir(person_id: str) -> Response[str]:
    from yilian.api.fhir_patient import patient_resource

    person = build_service().service.read_person(principal_of(app), person_id, "Person.fhir")
    body = json.dumps(patient_resource(person), ensure_ascii=False)
    return Response(200, "application/fhir+json", body=body)


@app.get("/persons/<person_id>/history")
def get_history(person_id: str) -> Response[dict]:
    return _json(200, build_service().service.history(principal_of(app), person_id))


@app.post("/persons/<person_id>/links")
def link(person_id: str, body: LinkBody) -> Response[dict]:
    out = build_service().service.link(principal_of(app), person_id, body.other_id, body.reason)
    return _json(200, out)


@app.delete("/persons/<person_id>/links/<other_id>")
def unlink(person_id: str, other_id: str) -> Response[dict]:
    reason = app.current_event.get_query_string_value("reason")
    if not reason and app.current_event.body:
        reason = _body_reason(app.current_event.body)
    out = build_service().service.unlink(principal_of(app), person_id, other_id, reason or "")
    return _json(200, out)


def _body_reason(raw: str) -> str:
    from yilian.domain.errors import InvalidInput

    try:
        data = json.loads(raw)
    except ValueError:
        raise InvalidInput("MALFORMED_JSON", "the request body is not valid JSON") from None
    return str(data.get("reason") or "") if isinstance(data, dict) else ""


@app.post("/persons/<person_id>/merge")
def merge(person_id: str, body: MergeBody) -> Response[dict]:
    out = build_service().service.merge(principal_of(app), person_id, body.retired_id, body.reason)
    return _json(200, out)


@app.post("/persons/<person_id>/unmerge")
def unmerge(person_id: str, body: ReasonBody) -> Response[dict]:
    return _json(200, build_service().service.unmerge(principal_of(app), person_id, body.reason))


@app.get("/reviews")
def reviews() -> Response[dict]:
    return _json(200, build_service().service.reviews(principal_of(app)))


@app.post("/reviews/<review_id>/decision")
def decide(review_id: str, body: DecisionBody) -> Response[dict]:
    who = principal_of(app)
    out = build_service().service.decide(
        who, review_id, body.decision, body.reason, body.survivor_id
    )
    return _json(200, out)


@app.post("/imports")
def start_import(body: ImportBody) -> Response[dict]:
    who = principal_of(app)
    status, out = build_service().importer.start(
        who, body.format, body.institution_id, body.content
    )
    return _json(status, out)


@app.get("/imports/<job_id>")
def import_status(job_id: str) -> Response[dict]:
    return _json(200, build_service().importer.status(principal_of(app), job_id))


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST)
def lambda_handler(event: dict, context: Any) -> dict:
    return app.resolve(event, context)
