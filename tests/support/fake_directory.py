"""In-memory directory store with the DirectoryStore adapter's behaviour (conflicts included)."""

from __future__ import annotations

from typing import Any

from yilian.domain.directory import Doctor, Institution, Tier
from yilian.domain.errors import Conflict


class FakeDirectoryStore:
    def __init__(self) -> None:
        self.institutions: dict[tuple[str, str], Institution] = {}
        self.doctors: dict[tuple[str, str], Doctor] = {}
        self.accounts: dict[str, dict[str, Any]] = {}

    def add_institution(self, inst: Institution) -> None:
        key = (inst.consortium_id, inst.institution_id)
        if key in self.institutions:
            raise Conflict("INSTITUTION_EXISTS", "it already exists")
        self.institutions[key] = inst

    def save_institution(self, inst: Institution) -> None:
        self.institutions[(inst.consortium_id, inst.institution_id)] = inst

    def get_institution(self, consortium_id: str, institution_id: str) -> Institution | None:
        return self.institutions.get((consortium_id, institution_id))

    def list_institutions(self, consortium_id: str, tier: Tier | None = None) -> list[Institution]:
        return [
            i
            for (c, _), i in sorted(self.institutions.items())
            if c == consortium_id and (tier is None or i.tier == tier)
        ]

    def add_doctor(self, doctor: Doctor, password_hash: str | None) -> None:
        if (doctor.consortium_id, doctor.doctor_id) in self.doctors:
            raise Conflict("DOCTOR_EXISTS", "a doctor with that id exists")
        if doctor.username and doctor.username in self.accounts:
            raise Conflict("USERNAME_TAKEN", "that username is already in use")
        self.doctors[(doctor.consortium_id, doctor.doctor_id)] = doctor
        if doctor.username:
            self.accounts[doctor.username] = {
                "doctor_id": doctor.doctor_id,
                "consortium_id": doctor.consortium_id,
                "password_hash": password_hash or "",
            }

    def save_doctor(self, doctor: Doctor) -> None:
        self.doctors[(doctor.consortium_id, doctor.doctor_id)] = doctor

    def get_doctor(self, consortium_id: str, doctor_id: str) -> Doctor | None:
        return self.doctors.get((consortium_id, doctor_id))

    def list_doctors(self, consortium_id: str, institution_id: str) -> list[Doctor]:
        return [
            d
            for (c, _), d in sorted(self.doctors.items())
            if c == consortium_id and d.institution_id == institution_id
        ]

    def get_account(self, username: str) -> dict[str, Any] | None:
        return self.accounts.get(username)
