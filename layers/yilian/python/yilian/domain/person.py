"""The person of the patient index and what happens to it: registration, auto-link, link,
unlink, merge, unmerge, review decisions — each appended to the person's history.

Semantics follow FHIR Patient.link and HAPI MDM:
- link(a, b): the same individual, both records kept (Patient.link type 'seealso').
- merge(survivor, retired): the retired person's identifiers move to the survivor; the
  retired person becomes status 'merged' with merged_into (links 'replaced-by' /
  'replaces'). unmerge restores exactly what the merge moved.
- 'not a match' (distinct_from): a manual decision that two persons are different people;
  recorded by review decisions, unlink and unmerge, and never overturned by the engine.

Everything here is plain data; services decide, the store persists a Change atomically.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

from yilian.domain.errors import Conflict
from yilian.domain.identity import IdentifierType
from yilian.domain.matching import Candidate, IdKey, birth_block, name_block


class PersonStatus(StrEnum):
    ACTIVE = "active"
    MERGED = "merged"


class ReviewStatus(StrEnum):
    OPEN = "open"
    DECIDED = "decided"


class ReviewDecision(StrEnum):
    LINK = "link"
    MERGE = "merge"
    NOT_A_MATCH = "not_a_match"


def new_person_id() -> str:
    return secrets.token_hex(10)


@dataclass(frozen=True, slots=True)
class StoredIdentifier:
    """An identifier as the person holds it: blind index, sealed value, masked display."""

    type: IdentifierType
    hash: str
    sealed: str
    masked: str
    assigner: str | None = None
    added_at: str = ""
    source: str = ""  # register | import:{job} | match | merge:{person}

    @property
    def id_key(self) -> IdKey:
        return IdKey(self.type, self.hash, self.assigner or "")

    @property
    def key(self) -> str:
        return self.id_key.key


@dataclass(frozen=True, slots=True)
class Person:
    person_id: str
    consortium_id: str
    name: str
    pinyin: tuple[str, ...]
    sex: str
    birth_date: str
    phone_hash: str | None = None
    phone_sealed: str | None = None
    phone_masked: str | None = None
    address: str = ""
    household: str = ""
    identifiers: tuple[StoredIdentifier, ...] = ()
    status: PersonStatus = PersonStatus.ACTIVE
    merged_into: str | None = None
    replaces: tuple[str, ...] = ()
    links: tuple[str, ...] = ()
    distinct_from: tuple[str, ...] = ()
    created_at: str = ""
    created_by: str = ""
    updated_at: str = ""
    version: int = 0

    @property
    def active(self) -> bool:
        return self.status is PersonStatus.ACTIVE

    def candidate(self) -> Candidate:
        return Candidate.project(self.person_id, self, self.distinct_from)

    def block_keys(self) -> tuple[str, ...]:
        """Blocks an active person is filed under; a merged person is in none."""
        if not self.active:
            return ()
        return (name_block(self.pinyin), birth_block(self.birth_date))

    def identifier_keys(self) -> set[str]:
        return {i.key for i in self.identifiers}

    def bumped(self, at: str, **changes: Any) -> Person:
        return replace(self, **changes, updated_at=at, version=self.version + 1)


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    person_id: str
    at: str
    action: str  # registered | identifiers_attached | linked | unlinked | merged_into |
    #              absorbed | unmerged | restored | not_a_match | review_queued | review_decided
    actor: str  # subject of the principal (or import:{job})
    actor_role: str
    reason: str = ""
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ReviewItem:
    review_id: str
    consortium_id: str
    person_id: str  # the newer record
    candidate_id: str  # the person it may be
    score: float
    breakdown: dict[str, float]
    created_at: str
    status: ReviewStatus = ReviewStatus.OPEN
    decision: str | None = None
    decided_by: str | None = None
    decided_at: str | None = None
    reason: str | None = None


def review_id_for(consortium_id: str, a: str, b: str) -> str:
    """One review per pair, whichever way round: proposing a pair twice is a no-op."""
    lo, hi = sorted((a, b))
    return hashlib.sha256(f"{consortium_id}|{lo}|{hi}".encode()).hexdigest()[:20]


@dataclass(frozen=True, slots=True)
class MergeRecord:
    """Exactly what a merge changed, so unmerge can put it back."""

    retired_id: str
    survivor_id: str
    consortium_id: str
    moved: tuple[StoredIdentifier, ...]
    merged_at: str
    merged_by: str
    reason: str
    were_linked: bool = False


@dataclass
class Change:
    """One atomic unit of work on the index: person states before/after (before None for a
    new person), history to append, reviews to write, merge records to put or delete."""

    persons: list[tuple[Person | None, Person]] = field(default_factory=list)
    history: list[HistoryEntry] = field(default_factory=list)
    reviews: list[tuple[ReviewItem | None, ReviewItem]] = field(default_factory=list)
    merges_put: list[MergeRecord] = field(default_factory=list)
    merges_deleted: list[MergeRecord] = field(default_factory=list)

    def is_empty(self) -> bool:
        return not (
            self.persons or self.history or self.reviews or self.merges_put or self.merges_deleted
        )


def identifier_moves(change: Change) -> dict[str, tuple[str | None, str | None, Person | None]]:
    """key -> (owner before, owner after, person after) for every identifier whose owner
    changes in this change. A key that only changes hands inside the change (merge) is a
    move; one that appears is a claim; one that disappears is a release."""
    before: dict[str, str] = {}
    after: dict[str, tuple[str, Person]] = {}
    for old, new in change.persons:
        if old is not None:
            for k in old.identifier_keys():
                before[k] = old.person_id
        for k in new.identifier_keys():
            after[k] = (new.person_id, new)
    out: dict[str, tuple[str | None, str | None, Person | None]] = {}
    for k in before.keys() | after.keys():
        was = before.get(k)
        now, person = after.get(k, (None, None))
        if was != now:
            out[k] = (was, now, person)
    return out


def head_updates(change: Change) -> dict[str, dict[str, Candidate | None]]:
    """block key -> {person id: new projection, or None to remove} for every block whose
    members change in this change (new persons, projection changes, merges)."""
    out: dict[str, dict[str, Candidate | None]] = {}
    for old, new in change.persons:
        old_keys = set(old.block_keys()) if old is not None else set()
        new_keys = set(new.block_keys())
        projection = new.candidate()
        old_projection = old.candidate() if old is not None else None
        for key in old_keys - new_keys:
            out.setdefault(key, {})[new.person_id] = None
        for key in new_keys:
            if key not in old_keys or projection != old_projection:
                out.setdefault(key, {})[new.person_id] = projection
    return out


def find_stored(identifiers: Iterable[StoredIdentifier], key: str) -> StoredIdentifier | None:
    return next((i for i in identifiers if i.key == key), None)


# ------------------------------------------------------------------ what a store answers


@dataclass
class Lookup:
    """One round trip's worth of index reads: the owners of identifier keys and the members
    of blocks (block key -> person id -> projection; an absent key is an empty block)."""

    owners: dict[str, str] = field(default_factory=dict)
    blocks: dict[str, dict[str, Candidate]] = field(default_factory=dict)

    def members(self) -> dict[str, Candidate]:
        out: dict[str, Candidate] = {}
        for block in self.blocks.values():
            out.update(block)
        return out


@dataclass(frozen=True, slots=True)
class Fence:
    """A bulk job's lease on a consortium's index writes (see adapters/persons_store.py)."""

    consortium_id: str
    owner: str
    lease_until_ms: int


class IdentifierTaken(Conflict):
    """A commit tried to claim an identifier another person holds (a concurrent
    registration won). owners: identifier key -> the person holding it, where known."""

    def __init__(self, owners: dict[str, str]) -> None:
        super().__init__(
            "IDENTIFIER_TAKEN", "an identifier is already held by another person", owners=owners
        )
        self.owners = owners


class StaleVersion(Conflict):
    def __init__(self, person_id: str) -> None:
        super().__init__(
            "CONCURRENT_UPDATE", "the person changed meanwhile; try again", person_id=person_id
        )


class WriteFenceHeld(Conflict):
    def __init__(self) -> None:
        super().__init__(
            "IMPORT_IN_PROGRESS", "a bulk registration is writing; try again in a moment"
        )
