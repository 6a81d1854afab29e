"""Directory use cases: institutions and doctors of one consortium, managed by its admins.

Rules: only a consortium admin adds institutions; a type fixes the tier (a village clinic is
never a county hospital); a parent must be of a higher tier in the same consortium. Doctors
are added by the consortium admin or by the admin of their own institution. Residents see
the directory (to choose where to book) but never doctors' phone numbers.
"""

from __future__ import annotations

import dataclasses
import re
import uuid
from typing import Any, Protocol

from yilian.domain.directory import TIER_RANK, Doctor, Institution, InstitutionType, Tier
from yilian.domain.errors import Forbidden, InvalidInput, NotFound
from yilian.domain.passwords import MIN_LENGTH, hash_password
from yilian.domain.principal import Principal, Role

TIER_OF_TYPE = {
    InstitutionType.GENERAL_HOSPITAL: Tier.COUNTY,
    InstitutionType.TCM_HOSPITAL: Tier.COUNTY,
    InstitutionType.MATERNAL_CHILD: Tier.COUNTY,
    InstitutionType.TOWNSHIP_HEALTH_CENTRE: Tier.TOWNSHIP,
    InstitutionType.COMMUNITY_HEALTH_CENTRE: Tier.TOWNSHIP,
    InstitutionType.VILLAGE_CLINIC: Tier.VILLAGE,
    InstitutionType.COMMUNITY_HEALTH_STATION: Tier.VILLAGE,
    InstitutionType.REGIONAL_HOSPITAL: Tier.REGIONAL,
}
SLUG = re.compile(r"^[a-z0-9][a-z0-9-]{1,39}$")
USERNAME = re.compile(r"^[a-z0-9][a-z0-9._-]{2,39}$")
ASSIGNABLE_ROLES = {
    Role.DOCTOR,
    Role.INSTITUTION_ADMIN,
    Role.CONSORTIUM_ADMIN,
    Role.REFERRAL_CENTRE,
}
# Roles with consortium-wide reach only a consortium admin may hand out.
CONSORTIUM_ROLES = {Role.CONSORTIUM_ADMIN, Role.REFERRAL_CENTRE}


class DirectoryStorePort(Protocol):
    def add_institution(self, inst: Institution) -> None: ...
    def save_institution(self, inst: Institution) -> None: ...
    def get_institution(self, consortium_id: str, institution_id: str) -> Institution | None: ...
    def list_institutions(
        self, consortium_id: str, tier: Tier | None = None
    ) -> list[Institution]: ...
    def add_doctor(self, doctor: Doctor, password_hash: str | None) -> None: ...
    def save_doctor(self, doctor: Doctor) -> None: ...
    def get_doctor(self, consortium_id: str, doctor_id: str) -> Doctor | None: ...
    def list_doctors(self, consortium_id: str, institution_id: str) -> list[Doctor]: ...
    def get_account(self, username: str) -> dict[str, Any] | None: ...


def _new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


class DirectoryService:
    def __init__(self, store: DirectoryStorePort) -> None:
        self._store = store

    # institutions -------------------------------------------------------------------
    def create_institution(self, who: Principal, data: dict[str, Any]) -> Institution:
        who.require_role(Role.CONSORTIUM_ADMIN)
        inst_type = InstitutionType(data["type"])
        tier = TIER_OF_TYPE[inst_type]
        if data.get("tier") and Tier(data["tier"]) != tier:
            raise InvalidInput(
                "TIER_TYPE_MISMATCH", f"a {inst_type} is a {tier} institution", tier=str(tier)
            )
        inst_id = data.get("institution_id") or _new_id("inst")
        if not SLUG.match(inst_id):
            raise InvalidInput("INVALID_ID", "ids are 2-40 lowercase letters, digits or '-'")
        parent_id = data.get("parent_id") or None
        if parent_id:
            parent = self._institution(who, parent_id, code="UNKNOWN_PARENT")
            if TIER_RANK[parent.tier] <= TIER_RANK[tier]:
                raise InvalidInput("PARENT_TIER", "a parent must be of a higher tier")
        inst = Institution(
            institution_id=inst_id,
            consortium_id=who.consortium_id,
            name=data["name"].strip(),
            tier=tier,
            type=inst_type,
            parent_id=parent_id,
            code=data.get("code", ""),
            address=data.get("address", ""),
            phone=data.get("phone", ""),
        )
        if not inst.name:
            raise InvalidInput("NAME_REQUIRED", "an institution needs a name")
        self._store.add_institution(inst)
        return inst

    def update_institution(
        self, who: Principal, institution_id: str, changes: dict[str, Any]
    ) -> Institution:
        """Contact details by the institution's own admin; status by the consortium admin."""
        inst = self._institution(who, institution_id)
        own_admin = who.role is Role.INSTITUTION_ADMIN and who.institution_id == institution_id
        if who.role is not Role.CONSORTIUM_ADMIN and not own_admin:
            raise Forbidden("ROLE_NOT_ALLOWED", "only this institution's admin may edit it")
        allowed = {"name", "address", "phone", "code"}
        if who.role is Role.CONSORTIUM_ADMIN:
            allowed |= {"active"}
        unknown = set(changes) - allowed
        if unknown:
            raise InvalidInput(
                "FIELD_NOT_EDITABLE", "these fields cannot be edited", fields=sorted(unknown)
            )
        updated = dataclasses.replace(inst, **changes)
        self._store.save_institution(updated)
        return updated

    def get_institution(self, who: Principal, institution_id: str) -> Institution:
        return self._institution(who, institution_id)

    def list_institutions(self, who: Principal, tier: str | None = None) -> list[Institution]:
        return self._store.list_institutions(who.consortium_id, Tier(tier) if tier else None)

    # doctors ------------------------------------------------------------------------
    def create_doctor(self, who: Principal, data: dict[str, Any]) -> Doctor:
        institution_id = data["institution_id"]
        self._require_admin_of(who, institution_id)
        self._institution(who, institution_id, code="UNKNOWN_INSTITUTION")
        role = Role(data.get("role", Role.DOCTOR))
        if role not in ASSIGNABLE_ROLES or (
            role in CONSORTIUM_ROLES and who.role is not Role.CONSORTIUM_ADMIN
        ):
            raise Forbidden("ROLE_NOT_ASSIGNABLE", f"you may not create a {role}")
        username = (data.get("username") or "").strip().lower()
        password = data.get("password") or ""
        if username and not USERNAME.match(username):
            raise InvalidInput("INVALID_USERNAME", "usernames are 3-40 of a-z 0-9 . _ -")
        if username and len(password) < MIN_LENGTH:
            raise InvalidInput("WEAK_PASSWORD", f"a password needs at least {MIN_LENGTH} chars")
        doctor = Doctor(
            doctor_id=data.get("doctor_id") or _new_id("doc"),
            consortium_id=who.consortium_id,
            institution_id=institution_id,
            name=data["name"].strip(),
            department=data["department"].strip(),
            title=data.get("title", "").strip(),
            phone=data.get("phone", ""),
            username=username,
            role=str(role),
        )
        if not doctor.name:
            raise InvalidInput("NAME_REQUIRED", "a doctor needs a name")
        self._store.add_doctor(doctor, hash_password(password) if username else None)
        return doctor

    def update_doctor(self, who: Principal, doctor_id: str, changes: dict[str, Any]) -> Doctor:
        doctor = self._doctor(who, doctor_id)
        self._require_admin_of(who, doctor.institution_id)
        unknown = set(changes) - {"name", "department", "title", "phone", "active"}
        if unknown:
            raise InvalidInput(
                "FIELD_NOT_EDITABLE", "these fields cannot be edited", fields=sorted(unknown)
            )
        updated = dataclasses.replace(doctor, **changes)
        self._store.save_doctor(updated)
        return updated

    def get_doctor(self, who: Principal, doctor_id: str) -> dict[str, Any]:
        return self.public_view(who, self._doctor(who, doctor_id))

    def list_doctors(self, who: Principal, institution_id: str) -> list[dict[str, Any]]:
        self._institution(who, institution_id)
        return [
            self.public_view(who, d)
            for d in self._store.list_doctors(who.consortium_id, institution_id)
        ]

    @staticmethod
    def public_view(who: Principal, doctor: Doctor) -> dict[str, Any]:
        view = dataclasses.asdict(doctor)
        if who.role is Role.RESIDENT:
            for private in ("phone", "username", "role"):
                view.pop(private)
        return view

    # helpers ------------------------------------------------------------------------
    def _require_admin_of(self, who: Principal, institution_id: str) -> None:
        if who.role is Role.CONSORTIUM_ADMIN:
            return
        if who.role is Role.INSTITUTION_ADMIN and who.institution_id == institution_id:
            return
        raise Forbidden("ROLE_NOT_ALLOWED", "only this institution's admin may manage doctors")

    def _institution(
        self, who: Principal, institution_id: str, code: str = "NOT_FOUND"
    ) -> Institution:
        inst = self._store.get_institution(who.consortium_id, institution_id)
        if inst is None:
            error = InvalidInput if code != "NOT_FOUND" else NotFound
            raise error(code, f"no institution {institution_id} in this consortium")
        return inst

    def _doctor(self, who: Principal, doctor_id: str) -> Doctor:
        doctor = self._store.get_doctor(who.consortium_id, doctor_id)
        if doctor is None:
            raise NotFound("NOT_FOUND", f"no doctor {doctor_id} in this consortium")
        return doctor
