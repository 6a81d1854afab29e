"""Who may read a person's health record: the rules, in one place (`decide`).

- A resident: their own record, and a dependent's (a child until 18, or an elder who
  delegated to them), while that proxy relationship is active.
- A doctor: with an active care relationship at their institution (an open or recent
  referral, a booking, a consultation, a family-doctor contract: see CareRelationships), or
  the resident's consent for the doctor's institution within its time window, or an active
  break-glass grant they opened themselves with a stated reason.
- Everyone else (admins, the referral centre, other roles) reads no clinical record; admins
  audit instead. A person of another consortium is never readable.
The decision carries its basis; every decision, allowed or denied, is audited by the caller.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta
from enum import StrEnum
from typing import Any

from yilian.domain.clock import iso
from yilian.domain.errors import InvalidInput
from yilian.domain.principal import Principal, Role


class Basis(StrEnum):
    SELF = "self"
    PROXY = "proxy"
    CARE = "care_relationship"
    CONSENT = "consent"
    BREAK_GLASS = "break_glass"


class Relation(StrEnum):
    CHILD = "child"  # a guardian of a minor: until the child's 18th birthday
    DELEGATED = "delegated"  # an adult (an elder) delegated reading to a family member


@dataclass(frozen=True, slots=True)
class RecordPolicy:
    """The consortium's access rules (template parameter RecordPolicy)."""

    care_window_days: int = 30  # a closed referral or past booking still counts this long
    booking_lead_days: int = 14  # a future booking counts from this long before it
    consent_max_days: int = 366
    break_glass_hours: int = 4
    break_glass_min_reason: int = 10  # characters
    delegation_max_days: int = 3 * 366

    @classmethod
    def from_mapping(cls, data: dict[str, Any]) -> RecordPolicy:
        known = set(cls.__dataclass_fields__)
        return cls(**{k: int(v) for k, v in data.items() if k in known})


@dataclass(frozen=True, slots=True)
class Consent:
    consent_id: str
    person_id: str
    institution_id: str
    valid_from: str  # ISO date-time
    valid_until: str
    granted_by: str  # subject of the resident (or proxy) who granted it
    granted_at: str
    note: str = ""
    revoked_at: str | None = None
    revoked_by: str | None = None

    def active(self, now: datetime) -> bool:
        t = iso(now)
        return self.revoked_at is None and self.valid_from <= t < self.valid_until

    def view(self, now: datetime) -> dict[str, Any]:
        return {
            "consent_id": self.consent_id,
            "person_id": self.person_id,
            "institution_id": self.institution_id,
            "valid_from": self.valid_from,
            "valid_until": self.valid_until,
            "granted_by": self.granted_by,
            "granted_at": self.granted_at,
            "note": self.note,
            "revoked_at": self.revoked_at,
            "active": self.active(now),
        }


@dataclass(frozen=True, slots=True)
class Proxy:
    """`proxy_person_id` may read `person_id`'s record (and act for them on consents)."""

    person_id: str
    proxy_person_id: str
    relation: Relation
    valid_from: str
    valid_until: str
    created_by: str
    created_at: str
    revoked_at: str | None = None

    def active(self, now: datetime) -> bool:
        t = iso(now)
        return self.revoked_at is None and self.valid_from <= t < self.valid_until

    def view(self, now: datetime) -> dict[str, Any]:
        return {
            "person_id": self.person_id,
            "proxy_person_id": self.proxy_person_id,
            "relation": str(self.relation),
            "valid_from": self.valid_from,
            "valid_until": self.valid_until,
            "active": self.active(now),
            "revoked_at": self.revoked_at,
        }


@dataclass(frozen=True, slots=True)
class BreakGlass:
    grant_id: str
    person_id: str
    actor_subject: str
    actor_name: str
    institution_id: str
    reason: str
    started_at: str
    expires_at: str

    def active(self, now: datetime) -> bool:
        return self.started_at <= iso(now) < self.expires_at


@dataclass(frozen=True, slots=True)
class AccessFacts:
    """What `decide` needs to know, gathered by the service (cheapest first, lazily)."""

    proxies: tuple[Proxy, ...] = ()
    consents: tuple[Consent, ...] = ()
    care: str | None = None  # e.g. "referral:ZZ...", "booking:A..."
    break_glass: tuple[BreakGlass, ...] = ()


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    basis: Basis | None = None
    code: str = ""  # why not, machine-readable
    detail: dict[str, str] = field(default_factory=dict)
    break_glass_allowed: bool = False

    @property
    def emergency(self) -> bool:
        return self.basis is Basis.BREAK_GLASS


def decide(who: Principal, person_id: str, facts: AccessFacts, now: datetime) -> Decision:
    """The one place the record-access rules live. Assumes the person is in the caller's
    consortium (checked before, with the person's own record)."""
    if who.role is Role.RESIDENT:
        if who.person_id and who.person_id == person_id:
            return Decision(True, Basis.SELF)
        for p in facts.proxies:
            if p.proxy_person_id == who.person_id and p.person_id == person_id and p.active(now):
                return Decision(True, Basis.PROXY, detail={"relation": str(p.relation)})
        return Decision(False, code="NOT_YOUR_RECORD")
    if who.role is not Role.DOCTOR or not who.institution_id:
        return Decision(False, code="ROLE_NOT_ALLOWED")
    if facts.care:
        return Decision(True, Basis.CARE, detail={"relationship": facts.care})
    for c in facts.consents:
        if c.person_id == person_id and c.institution_id == who.institution_id and c.active(now):
            return Decision(True, Basis.CONSENT, detail={"consent_id": c.consent_id})
    for g in facts.break_glass:
        if g.actor_subject == who.subject and g.person_id == person_id and g.active(now):
            return Decision(
                True, Basis.BREAK_GLASS, detail={"grant_id": g.grant_id, "reason": g.reason}
            )
    return Decision(False, code="NO_CARE_RELATIONSHIP", break_glass_allowed=True)


# ----------------------------------------------------------------- constructing grants
def new_consent(
    consent_id: str,
    person_id: str,
    institution_id: str,
    valid_from: datetime,
    valid_until: datetime,
    who: Principal,
    now: datetime,
    policy: RecordPolicy,
    note: str = "",
) -> Consent:
    if valid_until <= valid_from:
        raise InvalidInput("CONSENT_WINDOW_EMPTY", "valid_until must be after valid_from")
    if valid_until <= now:
        raise InvalidInput("CONSENT_IN_PAST", "a consent must end in the future")
    if valid_from < now - timedelta(minutes=5):
        valid_from = now  # consent is not retroactive
    if (valid_until - valid_from).days > policy.consent_max_days:
        raise InvalidInput(
            "CONSENT_TOO_LONG",
            f"a consent lasts at most {policy.consent_max_days} days",
            limit_days=policy.consent_max_days,
        )
    return Consent(
        consent_id=consent_id,
        person_id=person_id,
        institution_id=institution_id,
        valid_from=iso(valid_from),
        valid_until=iso(valid_until),
        granted_by=who.subject,
        granted_at=iso(now),
        note=note,
    )


def revoke(consent: Consent, who: Principal, now: datetime) -> Consent:
    return replace(consent, revoked_at=iso(now), revoked_by=who.subject)


def guardian_until(child_birth_date: str) -> str:
    """A guardian reads a child's record until the child's 18th birthday."""
    born = date.fromisoformat(child_birth_date)
    try:
        adult = born.replace(year=born.year + 18)
    except ValueError:  # born on 29 February
        adult = born.replace(year=born.year + 18, day=28)
    return f"{adult.isoformat()}T00:00:00+08:00"


def is_minor(birth_date: str, today: date) -> bool:
    return guardian_until(birth_date)[:10] > today.isoformat()


def new_break_glass(
    grant_id: str, person_id: str, who: Principal, reason: str, now: datetime,
    policy: RecordPolicy,
) -> BreakGlass:  # fmt: skip
    text = " ".join((reason or "").split())
    if len(text) < policy.break_glass_min_reason:
        raise InvalidInput(
            "REASON_REQUIRED",
            f"emergency access needs a stated reason of at least "
            f"{policy.break_glass_min_reason} characters",
            min_length=policy.break_glass_min_reason,
        )
    return BreakGlass(
        grant_id=grant_id,
        person_id=person_id,
        actor_subject=who.subject,
        actor_name=who.name,
        institution_id=who.institution_id or "",
        reason=text[:500],
        started_at=iso(now),
        expires_at=iso(now + timedelta(hours=policy.break_glass_hours)),
    )
