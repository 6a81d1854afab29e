"""Audit events: who touched whose data, when, why and with what outcome.

Shaped after FHIR AuditEvent (agent, entity, action, outcome, purposeOfEvent) so the
health-record issue can export them as FHIR without a new store. Append-only: there is no
update or delete path anywhere in the code.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from yilian.domain.clock import now_iso


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
