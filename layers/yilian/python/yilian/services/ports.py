"""Ports the services take in their constructors. Adapters implement them against AWS;
unit tests pass the in-memory fakes in tests/fakes.py."""

from __future__ import annotations

from typing import Protocol

from yilian.domain.audit import AuditEvent
from yilian.domain.directory import Institution


class IdentifierProtector(Protocol):
    """Keyed hashing and encryption of personal identifiers (ID-card numbers, phones...).

    blind_index: deterministic keyed hash (HMAC) of a normalised value, for equality lookup.
    seal/unseal: authenticated encryption of the clear value, for display to the entitled.
    """

    def blind_index(self, kind: str, value: str) -> str: ...

    def seal(self, value: str) -> str: ...

    def unseal(self, sealed: str) -> str: ...


class AuditSink(Protocol):
    """Append-only audit trail."""

    def record(self, event: AuditEvent) -> None: ...


class InstitutionDirectory(Protocol):
    """Read side of the directory that other services need (e.g. 'is this institution ours')."""

    def get_institution(self, consortium_id: str, institution_id: str) -> Institution | None: ...
