"""Resolves a bundle's subject named by identifier (ID card, an institution's local patient
number) through the master patient index's blind indexes: the clear value is hashed with
the deployment's identifier key and looked up, never stored or logged."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from yilian.domain.errors import InvalidInput
from yilian.domain.identity import IdentifierType, normalise_identifier
from yilian.domain.matching import IdKey
from yilian.domain.record import Subject


class IndexSubjectResolver:
    def __init__(self, persons: Any, protector: Callable[[], Any]) -> None:
        self._persons = persons
        self._protector = protector  # loaded on first use: KMS is asked only when needed

    def resolve(self, consortium_id: str, subject: Subject) -> str | None:
        if subject.id_card:
            ident = normalise_identifier(str(IdentifierType.ID_CARD), subject.id_card)
        elif subject.local_number:
            ident = normalise_identifier(
                str(IdentifierType.LOCAL), subject.local_number, subject.local_assigner
            )
        else:
            raise InvalidInput("SUBJECT_MISSING", "the Bundle does not name its subject")
        digest = self._protector().blind_index(ident.index_kind, ident.index_value)
        key = IdKey(ident.type, digest, ident.assigner or "").key
        owners = self._persons.lookup(consortium_id, [key], []).owners
        return owners.get(key)
