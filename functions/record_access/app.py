"""Who may read a health record, and who did: consents, proxies, break-glass, access logs
and the admins' audit search.

Residents (the mini-program; person_id= acts for a dependent they are proxy for):
GET  /me/access-log?person_id=            who read my record: newest first, break-glass marked
GET  /me/consents?person_id=              consents I gave
POST /me/consents                         {institution_id, valid_until, valid_from?, note?,
                                           person_id?} -> 201 consent
POST /me/consents/{id}/revoke             {person_id?} -> the revoked consent
GET  /me/dependents                       {dependents: whose records I read, proxies: who
                                           reads mine}
POST /me/delegations/{proxy_person_id}/revoke     end a delegation I gave
Clinicians:
POST /records/break-glass                 {person_id, reason (≥ 10 characters)} -> 201 grant
                                          (doctor; a few hours; flagged, the resident told)
POST /records/proxies                     {person_id, proxy_person_id, relation: child |
                                           delegated, valid_until? (delegated)} (staff who
                                           saw the papers: doctor or institution admin)
Admins:
GET  /audit?actor=|person=|flag=break_glass&from=&to=&limit=&cursor=&format=fhir
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

from yilian.api.http import create_app, principal_of
from yilian.settings import Settings

logger = Logger(service="record_access")
app = create_app()

Id = Annotated[str, Field(max_length=64)]
Time = Annotated[str, Field(max_length=40)]


class Model(BaseModel):
    model_config = ConfigDict(defer_build=True, extra="forbid")


class ConsentBody(Model):
    institution_id: Id
    valid_until: Time
    valid_from: Time | None = None
    note: Annotated[str, Field(max_length=200)] = ""
    person_id: Id | None = None


class ForPerson(Model):
    person_id: Id | None = None


class BreakGlassBody(Model):
    person_id: Id
    reason: Annotated[str, Field(max_length=500)]


class ProxyBody(Model):
    person_id: Id
    proxy_person_id: Id
    relation: Literal["child", "delegated"]
    valid_until: Time | None = None


@functools.cache
def build_access() -> Any:
    from yilian.adapters.records_wiring import RECORD_SETTINGS, build_access

    return build_access(Settings.from_env(os.environ).require(*RECORD_SETTINGS))


def _json(status: int, body: Any) -> Response[dict]:
    return Response(status, "application/json", body=body)


def _q(name: str) -> str | None:
    value = app.current_event.get_query_string_value(name)
    return value[:80] if value else None


@app.get("/me/access-log")
def access_log() -> Response[dict]:
    return _json(200, build_access().access_log(principal_of(app), _q("person_id")))


@app.get("/me/consents")
def consents() -> Response[dict]:
    return _json(200, build_access().consents(principal_of(app), _q("person_id")))


@app.post("/me/consents")
def grant_consent(body: ConsentBody) -> Response[dict]:
    return _json(201, build_access().grant_consent(principal_of(app), body.model_dump()))


@app.post("/me/consents/<consent_id>/revoke")
def revoke_consent(consent_id: str, body: ForPerson) -> Response[dict]:
    out = build_access().revoke_consent(principal_of(app), consent_id[:40], body.person_id)
    return _json(200, out)


@app.get("/me/dependents")
def dependents() -> Response[dict]:
    return _json(200, build_access().dependents(principal_of(app)))


@app.post("/me/delegations/<proxy_person_id>/revoke")
def revoke_delegation(proxy_person_id: str) -> Response[dict]:
    out = build_access().revoke_delegation(principal_of(app), proxy_person_id[:64])
    return _json(200, out)


@app.post("/records/break-glass")
def break_glass(body: BreakGlassBody) -> Response[dict]:
    out = build_access().break_glass(principal_of(app), body.person_id, body.reason)
    return _json(201, out)


@app.post("/records/proxies")
def add_proxy(body: ProxyBody) -> Response[dict]:
    return _json(201, build_access().add_proxy(principal_of(app), body.model_dump()))


@app.get("/audit")
def audit() -> Response[Any]:
    who = principal_of(app)
    query = {k: v[:80] for k, v in (app.current_event.query_string_parameters or {}).items()}
    out = build_access().search_audit(who, query)
    if query.get("format") == "fhir":
        from yilian.api.fhir_record import audit_events

        body = json.dumps(audit_events(out["items"], who.consortium_id), ensure_ascii=False)
        return Response(200, "application/fhir+json", body=body)
    return _json(200, out)


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST)
def lambda_handler(event: dict, context: Any) -> dict:
    return app.resolve(event, context)
