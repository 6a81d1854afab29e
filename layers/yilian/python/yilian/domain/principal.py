"""Who is calling: the verified claims of a JWT, as the authorizer passes them on.

Roles, from least to most reach: a resident sees only their own person; a doctor works for
one institution; an institution admin manages one institution; a consortium admin manages
the consortium. Nobody ever reaches outside their consortium.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from yilian.domain.errors import Forbidden


class Role(StrEnum):
    RESIDENT = "resident"
    DOCTOR = "doctor"
    INSTITUTION_ADMIN = "institution_admin"
    CONSORTIUM_ADMIN = "consortium_admin"
    # 转诊中心: staff of the consortium's referral centre; consortium-wide reach on referrals
    # (escalated referrals, reassigning a target, deciding on a receiver's behalf).
    REFERRAL_CENTRE = "referral_centre"


CLINICAL_ROLES = frozenset(
    {Role.DOCTOR, Role.INSTITUTION_ADMIN, Role.CONSORTIUM_ADMIN, Role.REFERRAL_CENTRE}
)


@dataclass(frozen=True, slots=True)
class Principal:
    subject: str
    role: Role
    consortium_id: str
    institution_id: str | None = None
    person_id: str | None = None
    name: str = ""

    def require_role(self, *roles: Role) -> None:
        if self.role not in roles:
            raise Forbidden(
                "ROLE_NOT_ALLOWED",
                f"role {self.role} may not do this",
                allowed=[str(r) for r in roles],
            )

    def require_consortium(self, consortium_id: str) -> None:
        """Every record carries its consortium; a mismatch is refused, never filtered."""
        if consortium_id != self.consortium_id:
            raise Forbidden("CROSS_CONSORTIUM", "this record belongs to another consortium")

    def require_person_access(self, person_id: str) -> None:
        """A resident reaches only their own person (demographics in the patient index);
        clinical roles pass. Clinical records are behind RecordAccess.open instead
        (yilian.domain.access.decide: care relationship, consent, break-glass, proxies)."""
        if self.role is Role.RESIDENT and person_id != self.person_id:
            raise Forbidden("NOT_YOUR_RECORD", "a resident may only read their own record")

    def to_context(self) -> dict[str, str]:
        """Flat string map, as API Gateway carries an authorizer context."""
        return {
            "sub": self.subject,
            "role": str(self.role),
            "consortium_id": self.consortium_id,
            "institution_id": self.institution_id or "",
            "person_id": self.person_id or "",
            "name": self.name,
        }

    @classmethod
    def from_context(cls, ctx: dict[str, str]) -> Principal:
        return cls(
            subject=ctx["sub"],
            role=Role(ctx["role"]),
            consortium_id=ctx["consortium_id"],
            institution_id=ctx.get("institution_id") or None,
            person_id=ctx.get("person_id") or None,
            name=ctx.get("name", ""),
        )
