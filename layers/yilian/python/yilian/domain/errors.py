"""Typed domain errors. Each carries a machine-readable code; the API edge maps the class
(never the message) to an HTTP status in one place: yilian.api.errors."""

from __future__ import annotations

from typing import Any


class DomainError(Exception):
    """Base of every error a caller can be told about. `code` is stable and machine-readable."""

    def __init__(self, code: str, message: str, **details: Any) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = details


class InvalidInput(DomainError):
    """The request is well-formed JSON but breaks a rule (bad check digit, future birth date)."""


class Unauthenticated(DomainError):
    """No valid credentials (missing, expired or tampered token)."""


class Forbidden(DomainError):
    """Authenticated, but this role, consortium or person may not do this."""


class NotFound(DomainError):
    """The addressed thing does not exist in the caller's consortium."""


class Conflict(DomainError):
    """The request collides with current state (already merged, duplicate identifier)."""


class PayloadTooLarge(DomainError):
    """The request body exceeds the limit the endpoint accepts."""


class Gone(DomainError):
    """The addressed thing existed but may no longer be used (an expired or revoked share link)."""
