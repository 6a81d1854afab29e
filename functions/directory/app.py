"""Directory API: the consortium's institutions and doctors.

GET  /institutions[?tier=]            any signed-in caller of the consortium
POST /institutions                    consortium_admin
GET  /institutions/{id}
PATCH /institutions/{id}              consortium_admin, or that institution's admin
GET  /institutions/{id}/doctors       residents see no phone numbers
POST /doctors                         consortium_admin, or the institution's admin
GET  /doctors/{id}
PATCH /doctors/{id}
"""

from __future__ import annotations

import dataclasses
import functools
import os
from typing import Annotated, Any, Literal

from aws_lambda_powertools import Logger
from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.logging import correlation_paths
from pydantic import BaseModel, Field

from yilian.api.http import create_app, principal_of
from yilian.settings import Settings

logger = Logger(service="directory")
app = create_app()

InstitutionTypeName = Literal[
    "general_hospital", "tcm_hospital", "maternal_child", "township_health_centre",
    "community_health_centre", "village_clinic", "community_health_station", "regional_hospital",
]  # fmt: skip
Text = Annotated[str, Field(min_length=1, max_length=100)]


class NewInstitution(BaseModel):
    name: Text
    type: InstitutionTypeName
    tier: Literal["county", "township", "village", "regional"] | None = None
    institution_id: str | None = None
    parent_id: str | None = None
    code: str = Field("", max_length=40)
    address: str = Field("", max_length=200)
    phone: str = Field("", max_length=30)


class InstitutionChanges(BaseModel, extra="forbid"):
    name: Text | None = None
    address: str | None = Field(None, max_length=200)
    phone: str | None = Field(None, max_length=30)
    code: str | None = Field(None, max_length=40)
    active: bool | None = None


class NewDoctor(BaseModel):
    institution_id: str
    name: Text
    department: Text
    title: str = Field("", max_length=40)
    phone: str = Field("", max_length=30)
    doctor_id: str | None = None
    username: str | None = None
    password: str | None = Field(None, max_length=200)
    role: Literal["doctor", "institution_admin", "consortium_admin", "referral_centre"] = "doctor"


class DoctorChanges(BaseModel, extra="forbid"):
    name: Text | None = None
    department: Text | None = None
    title: str | None = Field(None, max_length=40)
    phone: str | None = Field(None, max_length=30)
    active: bool | None = None


@functools.cache
def service() -> Any:
    from yilian.adapters.directory_store import DirectoryStore
    from yilian.services.directory import DirectoryService

    s = Settings.from_env(os.environ).require("directory_table")
    return DirectoryService(DirectoryStore(s.directory_table, s.aws_endpoint_url, s.region))


def _changes(model: BaseModel) -> dict[str, Any]:
    return model.model_dump(exclude_unset=True)


@app.get("/institutions")
def list_institutions(tier: str | None = None) -> dict:
    items = service().list_institutions(principal_of(app), tier)
    return {"items": [dataclasses.asdict(i) for i in items]}


@app.post("/institutions")
def create_institution(body: NewInstitution) -> Response[dict]:
    inst = service().create_institution(principal_of(app), body.model_dump())
    return Response(201, "application/json", body=dataclasses.asdict(inst))


@app.get("/institutions/<institution_id>")
def get_institution(institution_id: str) -> dict:
    return dataclasses.asdict(service().get_institution(principal_of(app), institution_id))


@app.patch("/institutions/<institution_id>")
def update_institution(institution_id: str, body: InstitutionChanges) -> dict:
    inst = service().update_institution(principal_of(app), institution_id, _changes(body))
    return dataclasses.asdict(inst)


@app.get("/institutions/<institution_id>/doctors")
def list_doctors(institution_id: str) -> dict:
    return {"items": service().list_doctors(principal_of(app), institution_id)}


@app.post("/doctors")
def create_doctor(body: NewDoctor) -> Response[dict]:
    who = principal_of(app)
    doctor = service().create_doctor(who, body.model_dump())
    return Response(201, "application/json", body=service().public_view(who, doctor))


@app.get("/doctors/<doctor_id>")
def get_doctor(doctor_id: str) -> dict:
    return service().get_doctor(principal_of(app), doctor_id)


@app.patch("/doctors/<doctor_id>")
def update_doctor(doctor_id: str, body: DoctorChanges) -> dict:
    who = principal_of(app)
    return service().public_view(who, service().update_doctor(who, doctor_id, _changes(body)))


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST)
def lambda_handler(event: dict, context: Any) -> dict:
    return app.resolve(event, context)
