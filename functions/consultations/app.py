"""Remote consultation (远程会诊) API.

POST /consultations                          会诊申请 (doctors): {person_id, centre_institution_id,
                                             kind: routine|urgent|mdt, mode: video|written,
                                             specialty, question, summary, attachments:
                                             {documents, studies}, preferred_times} -> 201
GET  /consultations?box=board|mine           the centre's board (open ones) | a doctor's
                                             worklist (invitations, requests, calendar)
GET  /consultations/{id}                     the consultation (parties; a resident: the summary
                                             and the signed report)
POST /consultations/{id}/{action}            every step names the version it saw ({version}):
    accept   {experts: [{doctor_id, lead}], required_accepts?}   the centre (MDT: several)
    return   {reason}  decline {reason}  schedule {start, minutes}  no_show {party, reason}
    amend    {summary}  cancel {reason}  acknowledge               the requester
    respond  {answer: accept|decline, reason?}                     an invited expert
    opinion  {findings, recommendations}                           an accepted expert
    sign     {findings, recommendations, recommend_referral?}      the lead expert
GET  /consultations/{id}/candidates          experts of the specialty, least busy first
GET  /consultations/accounting?from=YYYY-MM&to=YYYY-MM   工作量/费用 per expert, department,
                                             institution (centre, admins; a doctor: their own)
GET  /me/consultations                       a resident's consultations and signed reports
Errors: 400 bad input, 403 not a party / wrong role, 404, 409 REPLAYED (a step already
taken), CONSULTATION_CLOSED, WRONG_STATE, ALREADY_SIGNED, EXPERT_BUSY.
"""

from __future__ import annotations

import functools
import os
from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.logging import correlation_paths

from yilian.api.http import create_app, json_object, json_response, principal_of, query_params
from yilian.settings import Settings

logger = Logger(service="consultations")
app = create_app()


@functools.cache
def build_service() -> Any:
    from yilian.adapters.consultation_wiring import CONSULTATION_SETTINGS, build_consultations

    return build_consultations(Settings.from_env(os.environ).require(*CONSULTATION_SETTINGS))


@app.post("/consultations")
def request() -> Response[dict]:
    return json_response(201, build_service().request(principal_of(app), json_object(app)))


@app.get("/consultations")
def lists() -> Response[dict]:
    who = principal_of(app)
    if query_params(app).get("box") == "board":
        return json_response(200, build_service().board(who))
    return json_response(200, build_service().worklist(who))


@app.get("/consultations/accounting")
def accounting() -> Response[dict]:
    return json_response(200, build_service().accounting(principal_of(app), query_params(app)))


@app.get("/consultations/<consultation_id>")
def get(consultation_id: str) -> Response[dict]:
    return json_response(200, build_service().get(principal_of(app), consultation_id))


@app.get("/consultations/<consultation_id>/candidates")
def candidates(consultation_id: str) -> Response[dict]:
    return json_response(200, build_service().candidate_list(principal_of(app), consultation_id))


@app.post("/consultations/<consultation_id>/<action>")
def act(consultation_id: str, action: str) -> Response[dict]:
    return json_response(
        200, build_service().act(principal_of(app), consultation_id, action, json_object(app))
    )


@app.get("/me/consultations")
def mine() -> Response[dict]:
    who = principal_of(app)
    return json_response(200, build_service().for_resident(who, query_params(app).get("person_id")))


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST)
def lambda_handler(event: dict, context: Any) -> dict:
    return app.resolve(event, context)
