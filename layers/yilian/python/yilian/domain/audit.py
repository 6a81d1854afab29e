"""Audit events: who touched whose data, when, why and with what outcome.

Shaped after FHIR AuditEvent (agent, entity, action, outcome, purposeOfEvent) so the
health-record issue can export them as FHIR without a new store. Append-only: there is no
update or delete path anywhere in the code.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING

from yilian.domain.clock import now_iso

if TYPE_CHECKING:
    from yilian.domain.principal import Principal


class AuditAction(StrEnum):
    CREATE = "C"
    READ = "R"
    UPDATE = "U"
    SEARCH = "E"  # FHIR AuditEvent action code E = execute (a query)
    EXPORT = "X"


class AuditOutcome(StrEnum):
    SUCCESS = "0"
    DENIED = "4"  # FHIR: minor failure; a refused access


@dataclass(frozen=True, slots=True)
class AuditEvent:
    consortium_id: str
    actor_subject: str
    actor_role: str
    actor_institution: str | None
    action: AuditAction
    what: str  # e.g. "Person", "Person.search", "Person.merge"
    person_ids: tuple[str, ...]  # whose data: every person touched
    outcome: AuditOutcome = AuditOutcome.SUCCESS
    purpose: str = "treatment"
    detail: dict[str, str] = field(default_factory=dict)  # never identifiers in clear
    recorded_at: str = field(default_factory=now_iso)
    actor_name: str = ""
    # Flags an admin reviews (e.g. "break_glass": emergency access outside the usual rules).
    flag: str = ""

    @classmethod
    def by(
        cls,
        who: Principal,
        action: AuditAction,
        what: str,
        person_ids: Iterable[str],
        *,
        outcome: AuditOutcome = AuditOutcome.SUCCESS,
        detail: dict[str, str] | None = None,
        consortium_id: str | None = None,
        purpose: str = "treatment",
        flag: str = "",
    ) -> AuditEvent:
        """An event whose actor is the caller (the usual case)."""
        return cls(
            consortium_id=consortium_id or who.consortium_id,
            actor_subject=who.subject,
            actor_role=str(who.role),
            actor_institution=who.institution_id,
            action=action,
            what=what,
            person_ids=tuple(person_ids),
            outcome=outcome,
            purpose=purpose,
            detail=detail or {},
            actor_name=who.name,
            flag=flag,
        )
