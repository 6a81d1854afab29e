"""Appointment booking API (预约挂号). Times are ISO-8601 with +08:00 (Asia/Shanghai); dates
YYYY-MM-DD. Residents book for themselves; doctors for patients of the master index;
reserved places only for accepted referrals. The OpenAPI description of these routes is
served at GET /booking-api/openapi.json (public).

Schedules (institution admin; consortium admin with institution_id):
POST /schedules                      {department, date, period: am|pm|evening, start: HH:MM,
                                      end, slot_minutes (<= 60), capacity, visit_type?,
                                      fee_cents?, doctor_id?, institution_id?} -> 201
                                      {session, slots}
POST /schedules/{id}/cancel          {reason}: the session and its bookings, with notice
POST /schedules/leave                {doctor_id, from, to, reason}: a doctor's leave
GET|POST /schedules/templates        weekly templates {weekday: 1-7, ...session fields}
POST /schedules/templates/publish    {from, weeks}: sessions from every template
GET|PUT /schedules/quotas            {department, reserved_share, release_hours}
Slots and appointments:
GET  /slots?institution_id=&department=&doctor_id=&date=|from=&to=   free slots
GET  /slots/{id}/fhir                FHIR R4 Slot
POST /appointments                   {slot_id, person_id? (clinicians), referral_id?,
                                      reserved?}; Idempotency-Key honoured -> 201
GET  /appointments                   a resident's own; ?date=&institution_id= a day list
GET  /appointments/{id}              (/fhir: FHIR R4 Appointment)
POST /appointments/{id}/cancel       {reason}
POST /appointments/{id}/reschedule   {slot_id}
POST /appointments/{id}/check-in     {}
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

logger = Logger(service="booking")
app = create_app()

Id = Annotated[str, Field(max_length=80)]
Short = Annotated[str, Field(max_length=100)]
Day = Annotated[str, Field(max_length=10, description="YYYY-MM-DD")]
Clock = Annotated[str, Field(max_length=5, description="HH:MM, Asia/Shanghai")]


class Model(BaseModel):
    model_config = ConfigDict(defer_build=True, extra="forbid")


class SessionFields(Model):
    """What a session and a weekly template share."""

    department: Short
    period: Literal["am", "pm", "evening"]
    start: Clock
    end: Clock
    slot_minutes: Annotated[int, Field(ge=1, le=240)]
    capacity: Annotated[int, Field(ge=1, le=500)]
    visit_type: Literal["general", "specialist", "special_disease"] = "general"
    fee_cents: Annotated[int, Field(ge=0, le=10_000_00)] = 0
    doctor_id: Id | None = None
    institution_id: Id | None = None


class SessionBody(SessionFields):
    date: Day


class TemplateBody(SessionFields):
    weekday: Annotated[int, Field(ge=1, le=7)]
    template_id: Id | None = None


class PublishBody(Model):
    from_: Annotated[Day, Field(alias="from")]
    weeks: Annotated[int, Field(ge=1, le=12)] = 1
    institution_id: Id | None = None


class QuotaBody(Model):
    department: Short
    reserved_share: Annotated[float, Field(ge=0, le=0.8)]
    release_hours: Annotated[int, Field(ge=0, le=336)]
    institution_id: Id | None = None


class LeaveBody(Model):
    doctor_id: Id
    from_: Annotated[Day, Field(alias="from")]
    to: Day
    reason: Annotated[str, Field(min_length=1, max_length=500)]


class ReasonBody(Model):
    reason: Annotated[str, Field(max_length=500)] = ""


class BookBody(Model):
    slot_id: Id
    person_id: Id | None = None
    referral_id: Id | None = None
    reserved: bool = False


class RescheduleBody(Model):
    slot_id: Id


class Empty(Model):
    pass


@functools.cache
def build_service() -> Any:
    from yilian.adapters.booking_wiring import BOOKING_SETTINGS, build_booking

    return build_booking(Settings.from_env(os.environ).require(*BOOKING_SETTINGS))


def _json(status: int, body: Any) -> Response[dict]:
    return Response(status, "application/json", body=body)


def _service() -> Any:
    return build_service().bind(app.lambda_context).service


@app.post("/schedules")
def publish(body: SessionBody) -> Response[dict]:
    from yilian.domain.booking import SessionSpec

    data = body.model_dump()
    institution_id = data.pop("institution_id")
    return _json(201, _service().publish(principal_of(app), SessionSpec(**data), institution_id))


@app.post("/schedules/<session_id>/cancel")
def cancel_session(session_id: str, body: ReasonBody) -> Response[dict]:
    return _json(200, _service().cancel_session(principal_of(app), session_id, body.reason))


@app.post("/schedules/leave")
def leave(body: LeaveBody) -> Response[dict]:
    out = _service().doctor_leave(
        principal_of(app), body.doctor_id, body.from_, body.to, body.reason
    )
    return _json(200, out)


@app.get("/schedules/templates")
def templates() -> Response[dict]:
    institution_id = app.current_event.get_query_string_value("institution_id")
    return _json(200, _service().templates(principal_of(app), institution_id))


@app.post("/schedules/templates")
def save_template(body: TemplateBody) -> Response[dict]:
    return _json(201, _service().save_template(principal_of(app), body.model_dump()))


@app.post("/schedules/templates/publish")
def publish_templates(body: PublishBody) -> Response[dict]:
    out = _service().publish_templates(
        principal_of(app), body.from_, body.weeks, body.institution_id
    )
    return _json(200, out)


@app.get("/schedules/quotas")
def quotas() -> Response[dict]:
    institution_id = app.current_event.get_query_string_value("institution_id")
    return _json(200, _service().quotas(principal_of(app), institution_id))


@app.put("/schedules/quotas")
def set_quota(body: QuotaBody) -> Response[dict]:
    out = _service().set_quota(
        principal_of(app),
        body.department,
        body.reserved_share,
        body.release_hours,
        body.institution_id,
    )
    return _json(200, out)


SEARCH_FIELDS = ("institution_id", "department", "doctor_id", "date", "from", "to")


@app.get("/slots")
def search() -> Response[dict]:
    q = app.current_event.query_string_parameters or {}
    query = {k: str(q[k])[:80] for k in SEARCH_FIELDS if q.get(k)}
    return _json(200, _service().search(principal_of(app), query))


@app.get("/slots/<slot_id>/fhir")
def slot_fhir(slot_id: str) -> Response[str]:
    from yilian.api.fhir_booking import slot_resource

    slot = _service().slot_for_fhir(principal_of(app), slot_id)
    return Response(200, "application/fhir+json", body=json.dumps(slot_resource(slot)))


@app.post("/appointments")
def book(body: BookBody) -> Response[dict]:
    who, key = principal_of(app), idempotency_key(app)
    return _json(201, _service().book(who, body.model_dump(exclude_none=True), key))


@app.get("/appointments")
def appointments() -> Response[dict]:
    from yilian.domain.principal import Role

    who = principal_of(app)
    if who.role is Role.RESIDENT:
        return _json(200, _service().mine(who))
    q = app.current_event.get_query_string_value
    return _json(200, _service().day_list(who, q("institution_id"), (q("date") or "")[:10]))


@app.get("/appointments/<appointment_id>")
def get_appointment(appointment_id: str) -> Response[dict]:
    return _json(200, _service().get(principal_of(app), appointment_id))


@app.get("/appointments/<appointment_id>/fhir")
def appointment_fhir(appointment_id: str) -> Response[str]:
    from yilian.api.fhir_booking import appointment_resource

    appt = _service().appointment_for_fhir(principal_of(app), appointment_id)
    body = json.dumps(appointment_resource(appt), ensure_ascii=False)
    return Response(200, "application/fhir+json", body=body)


@app.post("/appointments/<appointment_id>/cancel")
def cancel(appointment_id: str, body: ReasonBody) -> Response[dict]:
    return _json(200, _service().cancel(principal_of(app), appointment_id, body.reason))


@app.post("/appointments/<appointment_id>/reschedule")
def reschedule(appointment_id: str, body: RescheduleBody) -> Response[dict]:
    return _json(200, _service().reschedule(principal_of(app), appointment_id, body.slot_id))


@app.post("/appointments/<appointment_id>/check-in")
def check_in(appointment_id: str, body: Empty) -> Response[dict]:
    return _json(200, _service().check_in(principal_of(app), appointment_id))


@app.get("/booking-api/openapi.json")
def openapi() -> Response[str]:
    """The OpenAPI description of the routes above (for the mini-program's developers)."""
    schema = app.get_openapi_json_schema(
        title="Yilian booking (预约挂号)",
        version="1.0.0",
        description=(__doc__ or "").split("\n\n")[0],
    )
    return Response(200, "application/json", body=schema)


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST)
def lambda_handler(event: dict, context: Any) -> dict:
    return app.resolve(event, context)
