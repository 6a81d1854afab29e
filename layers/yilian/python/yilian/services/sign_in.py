"""Clinician sign-in: check the account's password, then issue a token for its doctor."""

from __future__ import annotations

import dataclasses
from typing import Any

from yilian.domain.errors import Unauthenticated
from yilian.domain.passwords import verify_password
from yilian.domain.principal import Principal, Role
from yilian.services.directory import DirectoryStorePort
from yilian.services.tokens import TokenIssuer

# Spent when the username is unknown, so timing does not tell which usernames exist.
_DUMMY_HASH = "scrypt$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"


class SignInService:
    def __init__(self, store: DirectoryStorePort, issuer: TokenIssuer) -> None:
        self._store = store
        self._issuer = issuer

    def sign_in(self, username: str, password: str) -> dict[str, Any]:
        account = self._store.get_account(username.strip().lower())
        ok = verify_password(password, account["password_hash"] if account else _DUMMY_HASH)
        doctor = (
            self._store.get_doctor(account["consortium_id"], account["doctor_id"])
            if ok and account
            else None
        )
        if doctor is None or not doctor.active:
            raise Unauthenticated("BAD_CREDENTIALS", "wrong username or password")
        principal = Principal(
            subject=doctor.doctor_id,
            role=Role(doctor.role),
            consortium_id=doctor.consortium_id,
            institution_id=doctor.institution_id,
            name=doctor.name,
        )
        token = self._issuer.issue(principal)
        user = {k: v for k, v in dataclasses.asdict(doctor).items() if k != "phone"}
        institution = self._store.get_institution(doctor.consortium_id, doctor.institution_id)
        user["institution_name"] = institution.name if institution else ""
        return {**token, "user": user}
