"""Two-way referral API (双向转诊). A referral is read by its patient, the two institutions'
staff and the referral centre; doctors act, residents follow.

POST /referrals                       apply (doctor); Idempotency-Key honoured -> 201 referral
      {patient_id, direction: up|down, urgency: routine|urgent|emergency,
       target_institution_id, target_department?, target_doctor_id?, reason,
       diagnosis: {code: ICD-10, text}, clinical_summary, attachments?: [{kind, ref, title}],
       discharge_summary?, follow_up_plan?: [{item, due_date}]}          (the last two: down)
GET  /referrals?box=to_review|awaiting_patient|overdue|sent|escalated
                                      -> {box, items, count, counts}; a resident: their own
GET  /referrals/stats?from=&to=&institution_id=   -> {period, totals, by_institution, daily}
GET  /referrals/{id}                  -> referral (history, overdue, actions for the caller)
GET  /referrals/{id}/fhir             -> FHIR R4 Bundle: ServiceRequest + Task
POST /referrals/{id}/accept           {proposed_time?, department?, doctor_id?, note?}
POST /referrals/{id}/acknowledge      {note?}                            (downward)
POST /referrals/{id}/reject           {reason_code, note?}
POST /referrals/{id}/request-info     {question}
POST /referrals/{id}/amend            {note, clinical_summary?, diagnosis?, attachments?}
POST /referrals/{id}/cancel           {reason}
POST /referrals/{id}/reassign         {target_institution_id, target_department?,
                                       target_doctor_id?, reason}        (referral centre)
POST /referrals/{id}/arrive           {note?}
GET  /codes/icd10?q=&limit=           -> {items: [{code, name}]}

Errors: {"error": {"code", "message", "details"?}}; a forbidden state change is 409.
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

logger = Logger(service="referrals")
app = create_app()

Id = Annotated[str, Field(max_length=40)]
Short = Annotated[str, Field(max_length=200)]
Long = Annotated[str, Field(max_length=4000)]


class Model(BaseModel):
    # Unknown fields are refused: a client never sends a task token, a status or a version.
    model_config = ConfigDict(defer_build=True, extra="forbid")


class Diagnosis(Model):
    code: Annotated[str, Field(max_length=10)]
    text: Short


class Attachment(Model):
    kind: Literal["record", "imaging", "document"]
    ref: Short
    title: Short = ""


class FollowUp(Model):
    item: Short
    due_date: Annotated[str, Field(max_length=10)]


class ApplyBody(Model):
    patient_id: Id
    direction: Literal["up", "down"]
    urgency: Literal["routine", "urgent", "emergency"]
    target_institution_id: Id
    target_department: Short = ""
    target_doctor_id: Id | None = None
    reason: Long
    diagnosis: Diagnosis
    clinical_summary: Long = ""
    attachments: Annotated[list[Attachment], Field(max_length=20)] = []
    discharge_summary: Long = ""
    follow_up_plan: Annotated[list[FollowUp], Field(max_length=30)] = []


class AcceptBody(Model):
    proposed_time: Annotated[str, Field(max_length=40)] | None = None
    department: Short = ""
    doctor_id: Id | None = None
    note: Long = ""


class NoteBody(Model):
    note: Long = ""


class RejectBody(Model):
    reason_code: Annotated[str, Field(max_length=30)]
    note: Long = ""


class QuestionBody(Model):
    question: Long


class AmendBody(Model):
    note: Long
    clinical_summary: Long = ""
    diagnosis: Diagnosis | None = None
    attachments: Annotated[list[Attachment], Field(max_length=20)] = []


class CancelBody(Model):
    reason: Long


class ReassignBody(Model):
    target_institution_id: Id
    target_department: Short = ""
    target_doctor_id: Id | None = None
    reason: Long


@functools.cache
def build_service() -> Any:
    from yilian.adapters.referral_wiring import REFERRAL_SETTINGS, build_referrals

    return build_referrals(Settings.from_env(os.environ).require(*REFERRAL_SETTINGS))


def _json(status: int, body: Any) -> Response[dict]:
    return Response(status, "application/json", body=body)


@app.post("/referrals")
def apply(body: ApplyBody) -> Response[dict]:
    from yilian.domain.referral import Application

    who, key = principal_of(app), idempotency_key(app)
    referrals = build_service().bind(app.lambda_context)
    application = Application(**body.model_dump())
    return _json(201, referrals.service.apply(who, application, key))


@app.get("/referrals")
def worklist() -> Response[dict]:
    box = app.current_event.get_query_string_value("box") or "to_review"
    return _json(200, build_service().service.worklist(principal_of(app), box[:30]))


@app.get("/referrals/stats")
def stats() -> Response[dict]:
    q = app.current_event.get_query_string_value
    out = build_service().service.stats(
        principal_of(app), (q("from") or "")[:10], (q("to") or "")[:10],
        (q("institution_id") or "")[:40] or None,
    )  # fmt: skip
    return _json(200, out)


@app.get("/referrals/<referral_id>")
def get_referral(referral_id: str) -> Response[dict]:
    return _json(200, build_service().service.get(principal_of(app), referral_id))


@app.get("/referrals/<referral_id>/fhir")
def get_fhir(referral_id: str) -> Response[str]:
    from yilian.api.fhir_referral import referral_bundle

    referral = build_service().service.referral_for_fhir(principal_of(app), referral_id)
    body = json.dumps(referral_bundle(referral), ensure_ascii=False)
    return Response(200, "application/fhir+json", body=body)


def _act(referral_id: str, action: str, data: dict[str, Any]) -> Response[dict]:
    from yilian.domain.referral import Action

    out = build_service().service.act(principal_of(app), referral_id, Action(action), data)
    return _json(200, out)


@app.post("/referrals/<referral_id>/accept")
def accept(referral_id: str, body: AcceptBody) -> Response[dict]:
    return _act(referral_id, "accept", body.model_dump())


@app.post("/referrals/<referral_id>/acknowledge")
def acknowledge(referral_id: str, body: NoteBody) -> Response[dict]:
    return _act(referral_id, "acknowledge", body.model_dump())


@app.post("/referrals/<referral_id>/reject")
def reject(referral_id: str, body: RejectBody) -> Response[dict]:
    return _act(referral_id, "reject", body.model_dump())


@app.post("/referrals/<referral_id>/request-info")
def request_info(referral_id: str, body: QuestionBody) -> Response[dict]:
    return _act(referral_id, "request_info", body.model_dump())


@app.post("/referrals/<referral_id>/amend")
def amend(referral_id: str, body: AmendBody) -> Response[dict]:
    return _act(referral_id, "amend", body.model_dump(exclude_none=True))


@app.post("/referrals/<referral_id>/cancel")
def cancel(referral_id: str, body: CancelBody) -> Response[dict]:
    return _act(referral_id, "cancel", body.model_dump())


@app.post("/referrals/<referral_id>/reassign")
def reassign(referral_id: str, body: ReassignBody) -> Response[dict]:
    return _act(referral_id, "reassign", body.model_dump())


@app.post("/referrals/<referral_id>/arrive")
def arrive(referral_id: str, body: NoteBody) -> Response[dict]:
    return _act(referral_id, "arrive", body.model_dump())


@app.get("/codes/icd10")
def icd10() -> Response[dict]:
    from yilian.domain.terminology.icd10 import search

    principal_of(app)
    q = (app.current_event.get_query_string_value("q") or "")[:40]
    limit = min(50, max(1, int(app.current_event.get_query_string_value("limit") or 20)))
    items = [{"code": c.code, "name": c.name} for c in search(q, limit=limit)]
    return _json(200, {"items": items})


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST)
def lambda_handler(event: dict, context: Any) -> dict:
    return app.resolve(event, context)
