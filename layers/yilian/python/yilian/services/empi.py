"""Master patient index (主索引) use cases: register with matching, search, read (plain and
FHIR), link / unlink / merge / unmerge, and the review queue.

Rules enforced here, via the caller's Principal:
- residents read only their own person, and cannot register, search or administer;
- doctors and admins register and search within their consortium;
- link, unlink, merge, unmerge and review decisions need a consortium admin and a reason;
- a record of another consortium is refused (CROSS_CONSORTIUM), never filtered silently;
- every read or search of person data is audited (the AuditSink), refusals included.

Matching (see domain/matching.py): one BatchGetItem fetches the owners of the record's
identifiers and both of its blocks with their members' projections; a second read happens
only when an identifier's owner is outside both blocks. A manual decision is never undone
by the engine: it only attaches identifiers (MATCH) or proposes a review, and a pair marked
'not a match' is never proposed again.
"""

from __future__ import annotations

import re
import time
import unicodedata
from collections import Counter
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, datetime
from typing import Any, Protocol

from yilian.domain import clock
from yilian.domain.audit import AuditAction, AuditEvent, AuditOutcome
from yilian.domain.errors import Conflict, Forbidden, InvalidInput, NotFound
from yilian.domain.identity import (
    SINGLE_VALUED,
    Identifier,
    IdentifierType,
    mask,
    normalise_identifier,
    verify_id_card,
)
from yilian.domain.matching import (
    Candidate,
    Outcome,
    birth_block,
    contradicts,
    decide,
    name_agreement,
    name_block,
)
from yilian.domain.names import has_han, name_pinyin, normalise_name, parse_pinyin
from yilian.domain.person import (
    Change,
    Fence,
    HistoryEntry,
    IdentifierTaken,
    Lookup,
    MergeRecord,
    Person,
    PersonStatus,
    ReviewDecision,
    ReviewItem,
    ReviewStatus,
    StaleVersion,
    StoredIdentifier,
    WriteFenceHeld,
    new_person_id,
    review_id_for,
)
from yilian.domain.principal import CLINICAL_ROLES, Principal, Role
from yilian.services.ports import AuditSink, IdentifierProtector, InstitutionDirectory

MAX_IDENTIFIERS = 10
MAX_REASON = 500
SEARCH_LIMIT = 50
_PHONE_DIGITS = re.compile(r"^\+?(86)?(\d{7,15})$")


# ---------------------------------------------------------------------------------- ports


class PersonsRepository(Protocol):
    """The persons table, aggregate-wise. adapters/persons_store.py against DynamoDB;
    tests/fakes.py in memory. `requests` counts DynamoDB requests by operation."""

    requests: Counter[str]

    def lookup(
        self,
        consortium_id: str,
        id_keys: Collection[str],
        block_keys: Collection[str],
        *,
        consistent: bool = False,
    ) -> Lookup: ...

    def get_person(self, person_id: str) -> Person | None: ...

    def get_persons(self, person_ids: Collection[str]) -> dict[str, Person]: ...

    def persons_by_phone(
        self, consortium_id: str, phone_hash: str, limit: int = SEARCH_LIMIT
    ) -> list[Person]: ...

    def history(self, person_id: str, limit: int = 200) -> list[HistoryEntry]: ...

    def get_review(self, review_id: str) -> ReviewItem | None: ...

    def open_reviews(self, consortium_id: str, limit: int = 100) -> list[ReviewItem]: ...

    def get_merge(self, retired_id: str) -> MergeRecord | None: ...

    def commit(self, change: Change) -> None:
        """All of it or nothing (one TransactWriteItems). Raises IdentifierTaken,
        StaleVersion or WriteFenceHeld."""

    def acquire_fence(self, consortium_id: str, owner: str, lease_seconds: float) -> Fence:
        """Raises WriteFenceHeld while another live lease exists."""

    def renew_fence(self, fence: Fence, lease_seconds: float) -> Fence: ...

    def release_fence(self, fence: Fence) -> None: ...

    def bulk_write(
        self, fence: Fence, change: Change, heads: Mapping[str, Mapping[str, Candidate]]
    ) -> int:
        """BatchWriteItem of a change made under the fence; `heads` are the blocks' full
        member maps as read under the fence. Returns the number of items written."""


class Idempotency(Protocol):
    """Runs fn once per (scope, key); a replay with the same payload returns the first
    result, a different payload under the same key is refused (409)."""

    def run(
        self, scope: str, key: str, payload: Mapping[str, Any], fn: Callable[[], dict]
    ) -> dict: ...


class RunEveryTime:
    """The Idempotency used when no table is configured (and by default in unit tests)."""

    def run(self, scope: str, key: str, payload: Mapping[str, Any], fn: Callable[[], dict]) -> dict:
        return fn()


# ------------------------------------------------------------------ validated records


@dataclass(frozen=True, slots=True)
class NewRecord:
    """A registration, validated and with its identifiers protected (never in clear)."""

    name: str
    pinyin: tuple[str, ...]
    sex: str
    birth_date: str
    phone_hash: str | None
    phone_sealed: str | None
    phone_masked: str | None
    address: str
    household: str
    identifiers: tuple[StoredIdentifier, ...]

    def candidate(self) -> Candidate:
        return Candidate.project("", self)

    def id_keys(self) -> list[str]:
        return [i.key for i in self.identifiers]

    def block_keys(self) -> list[str]:
        return [name_block(self.pinyin), birth_block(self.birth_date)]


SEX_WORDS = {
    "male": "male",
    "m": "male",
    "男": "male",
    "1": "male",
    "female": "female",
    "f": "female",
    "女": "female",
    "2": "female",
}  # fmt: skip  (GB/T 2261.1: 1 male, 2 female)


def parse_birth_date(raw: Any, today: date) -> date:
    text = unicodedata.normalize("NFKC", str(raw or "")).strip()
    m = re.match(r"^(\d{4})[-/.]?(\d{1,2})[-/.]?(\d{1,2})$", text)
    if not m:
        raise InvalidInput("BIRTH_DATE_FORMAT", "birth_date is YYYY-MM-DD", field="birth_date")
    try:
        born = date(int(m[1]), int(m[2]), int(m[3]))
    except ValueError:
        raise InvalidInput(
            "BIRTH_DATE_FORMAT", "birth_date is not a date", field="birth_date"
        ) from None
    if born > today:
        raise InvalidInput(
            "BIRTH_DATE_IN_FUTURE", "birth_date is in the future", field="birth_date"
        )
    if born.year < 1880:
        raise InvalidInput("BIRTH_DATE_FORMAT", "birth_date is before 1880", field="birth_date")
    return born


def normalise_phone(raw: str) -> str:
    digits = re.sub(r"[\s()\-]", "", unicodedata.normalize("NFKC", raw))
    m = _PHONE_DIGITS.match(digits)
    if not m:
        raise InvalidInput("PHONE_FORMAT", "a phone number has 7-15 digits", field="phone")
    return m[2]


def mask_phone(phone: str) -> str:
    return phone[:3] + "****" + phone[-4:] if len(phone) == 11 else mask(phone)


class RecordPreparer:
    """Validates a registration and protects its identifiers. One per request or per import
    job: it remembers the institutions it has checked."""

    def __init__(
        self,
        consortium_id: str,
        protector: IdentifierProtector,
        directory: InstitutionDirectory,
        today: date,
        now_iso: str,
    ) -> None:
        self._consortium = consortium_id
        self._protector = protector
        self.directory = directory
        self._today = today
        self._now = now_iso
        self._known: dict[str, bool] = {}

    def prepare(self, data: Mapping[str, Any], source: str) -> NewRecord:
        name = normalise_name(data.get("name"))
        sex = SEX_WORDS.get(str(data.get("sex") or "").strip().lower())
        if sex is None:
            raise InvalidInput("SEX_INVALID", "sex is male or female", field="sex")
        born = parse_birth_date(data.get("birth_date"), self._today)
        raw_ids = list(data.get("identifiers") or [])
        if len(raw_ids) > MAX_IDENTIFIERS:
            raise InvalidInput("TOO_MANY_IDENTIFIERS", f"at most {MAX_IDENTIFIERS} identifiers")
        idents: dict[tuple[str, str | None, str], Identifier] = {}
        for raw in raw_ids:
            ident = normalise_identifier(
                str(raw.get("type") or ""), str(raw.get("value") or ""), raw.get("assigner")
            )
            if ident.type is IdentifierType.ID_CARD:
                verify_id_card(ident.value, born, sex, self._today)
            if ident.type is IdentifierType.LOCAL:
                self._require_institution(str(ident.assigner))
            idents[(ident.type, ident.assigner, ident.value)] = ident
        kinds = Counter(i.type for i in idents.values() if i.type in SINGLE_VALUED)
        if any(n > 1 for n in kinds.values()):
            raise InvalidInput(
                "DUPLICATE_IDENTIFIER_TYPE", "at most one ID card, health card and insurance number"
            )
        phone = normalise_phone(str(data["phone"])) if data.get("phone") else None
        address = unicodedata.normalize("NFKC", str(data.get("address") or "")).strip()
        household = unicodedata.normalize("NFKC", str(data.get("household") or "")).strip()
        if len(address) > 200 or len(household) > 100:
            raise InvalidInput("FIELD_TOO_LONG", "address <= 200, household <= 100 characters")
        p = self._protector
        return NewRecord(
            name=name,
            pinyin=name_pinyin(name),
            sex=sex,
            birth_date=born.isoformat(),
            phone_hash=p.blind_index("phone", phone) if phone else None,
            phone_sealed=p.seal(phone) if phone else None,
            phone_masked=mask_phone(phone) if phone else None,
            address=address,
            household=household,
            identifiers=tuple(self.protect(i, source) for i in idents.values()),
        )

    def protect(self, ident: Identifier, source: str) -> StoredIdentifier:
        return StoredIdentifier(
            type=ident.type,
            hash=self._protector.blind_index(ident.index_kind, ident.index_value),
            sealed=self._protector.seal(ident.value),
            masked=ident.masked(),
            assigner=ident.assigner,
            added_at=self._now,
            source=source,
        )

    def _require_institution(self, institution_id: str) -> None:
        if institution_id not in self._known:
            inst = self.directory.get_institution(self._consortium, institution_id)
            self._known[institution_id] = inst is not None and inst.active
        if not self._known[institution_id]:
            raise InvalidInput(
                "UNKNOWN_INSTITUTION",
                "the assigner of a local number must be an institution of this consortium",
                assigner=institution_id,
            )


# ---------------------------------------------------------------------------- matching


@dataclass(frozen=True, slots=True)
class Plan:
    outcome: Outcome
    score: float
    person_id: str | None  # MATCH: the person the record is
    candidates: tuple[tuple[str, float, dict[str, float]], ...] = ()  # id, score, breakdown
    deterministic: bool = False


def plan_match(
    record: NewRecord,
    lookup: Lookup,
    extra: Mapping[str, Candidate],
    match_threshold: float,
    review_threshold: float,
) -> Plan:
    """The outcome for a record given what the index holds (lookup, plus the projections of
    identifier owners outside the record's blocks in `extra`)."""
    probe = record.candidate()
    owners = {lookup.owners[k] for k in record.id_keys() if k in lookup.owners}
    if len(owners) > 1:
        raise Conflict(
            "IDENTIFIERS_SPLIT",
            "these identifiers belong to different persons; link or merge them first",
            person_ids=sorted(owners),
        )
    members = lookup.members()
    if owners:
        (owner,) = owners
        held = members.get(owner) or extra.get(owner)
        if held is not None:
            why = contradicts(probe, held)
            if why:
                raise Conflict(
                    "IDENTIFIER_CONFLICT",
                    f"an identifier matches a person whose record disagrees ({why})",
                    person_id=owner,
                )
            return Plan(Outcome.MATCH, 1.0, owner, deterministic=True)
    d = decide(probe, list(members.values()), match_threshold, review_threshold)
    cands = tuple((s.person_id, s.score, s.breakdown) for s in d.candidates)
    return Plan(d.outcome, d.score, d.person_id, cands)


@dataclass
class SearchQuery:
    id_keys: list[str] = field(default_factory=list)
    blocks: list[str] = field(default_factory=list)
    probe: Candidate | None = None
    born: str | None = None
    phone_hash: str | None = None

    def block_hits(self, members: Mapping[str, Candidate], ranks: dict[str, int]) -> set[str]:
        """Members of the searched block that answer the query: by name (identical,
        homophone, fuzzy pinyin, ranked in that order), else by birth date."""
        levels = ("exact", "homophone", "fuzzy")
        hits = set()
        for pid, m in members.items():
            if self.probe is not None:
                level = name_agreement(self.probe, m)
                if level in levels:
                    hits.add(pid)
                    ranks[pid] = levels.index(level)
            elif m.birth_date == self.born:
                hits.add(pid)
        return hits


# ------------------------------------------------------------------------------- views


def person_view(p: Person) -> dict[str, Any]:
    return {
        "person_id": p.person_id,
        "consortium_id": p.consortium_id,
        "status": str(p.status),
        "name": p.name,
        "pinyin": " ".join(p.pinyin),
        "sex": p.sex,
        "birth_date": p.birth_date,
        "phone": p.phone_masked,
        "address": p.address,
        "household": p.household,
        "identifiers": [
            {
                "type": str(i.type),
                "value": i.masked,
                **({"assigner": i.assigner} if i.assigner else {}),
            }
            for i in p.identifiers
        ],
        "links": list(p.links),
        "merged_into": p.merged_into,
        "replaces": list(p.replaces),
        "created_at": p.created_at,
        "updated_at": p.updated_at,
        "version": p.version,
    }


def history_view(h: HistoryEntry) -> dict[str, Any]:
    return {
        "at": h.at,
        "action": h.action,
        "by": {"subject": h.actor, "role": h.actor_role},
        "reason": h.reason,
        "details": h.details,
    }


def review_view(r: ReviewItem, persons: Mapping[str, Person]) -> dict[str, Any]:
    def summary(pid: str) -> dict[str, Any] | None:
        p = persons.get(pid)
        return person_view(p) if p else None

    return {
        "review_id": r.review_id,
        "status": str(r.status),
        "score": r.score,
        "breakdown": r.breakdown,
        "created_at": r.created_at,
        "person": summary(r.person_id) or {"person_id": r.person_id},
        "candidate": summary(r.candidate_id) or {"person_id": r.candidate_id},
        "decision": r.decision,
        "decided_by": r.decided_by,
        "decided_at": r.decided_at,
        "reason": r.reason,
    }


# ----------------------------------------------------------------------------- service


class EmpiService:
    def __init__(
        self,
        store: PersonsRepository,
        protector: IdentifierProtector,
        directory: InstitutionDirectory,
        audit: AuditSink,
        *,
        match_threshold: float = 0.92,
        review_threshold: float = 0.70,
        idempotency: Idempotency | None = None,
        now: Callable[[], datetime] = clock.now,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not 0 < review_threshold <= match_threshold <= 1:
            raise ValueError("need 0 < review_threshold <= match_threshold <= 1")
        self.store = store
        self._protector = protector
        self.directory = directory
        self.audit = audit
        self.match_threshold = match_threshold
        self.review_threshold = review_threshold
        self._idempotency = idempotency or RunEveryTime()
        self._now = now
        self._sleep = sleep

    # -------------------------------------------------------------- registration
    def preparer(self, consortium_id: str) -> RecordPreparer:
        now = self._now()
        return RecordPreparer(
            consortium_id, self._protector, self.directory, now.date(), now.isoformat()
        )

    def register(
        self, who: Principal, data: Mapping[str, Any], idempotency_key: str | None = None
    ) -> tuple[int, dict[str, Any]]:
        """Validate, match and store a registration. Returns (HTTP status, body): 201 with a
        new person (NO_MATCH, POSSIBLE_MATCH), 200 with the existing one (MATCH)."""
        self._require_clinical(who)
        record = self.preparer(who.consortium_id).prepare(data, source="register")
        if idempotency_key:
            scope = f"empi.register#{who.consortium_id}#{who.subject}"
            result = self._idempotency.run(
                scope, idempotency_key, dict(data), lambda: self._register(who, record)
            )
        else:
            result = self._register(who, record)
        return int(result["status"]), result["body"]

    def match(self, who: Principal, data: Mapping[str, Any]) -> Plan:
        """The matching step alone (no writes): what register would decide."""
        self._require_clinical(who)
        record = self.preparer(who.consortium_id).prepare(data, source="register")
        return self.plan(who.consortium_id, record)

    def plan(self, consortium_id: str, record: NewRecord, consistent: bool = False) -> Plan:
        lookup = self.store.lookup(
            consortium_id, record.id_keys(), record.block_keys(), consistent=consistent
        )
        members = lookup.members()
        outside = {
            lookup.owners[k]
            for k in record.id_keys()
            if k in lookup.owners and lookup.owners[k] not in members
        }
        extra = {}
        if outside:
            extra = {pid: p.candidate() for pid, p in self.store.get_persons(outside).items()}
        return plan_match(record, lookup, extra, self.match_threshold, self.review_threshold)

    def _register(self, who: Principal, record: NewRecord) -> dict[str, Any]:
        for attempt in range(6):
            try:
                plan = self.plan(who.consortium_id, record, consistent=attempt > 0)
                if plan.outcome is Outcome.MATCH:
                    assert plan.person_id is not None
                    person = self._attach(who, plan, record)
                    status = 200
                else:
                    person = self._create(who, record, plan)
                    status = 201
            except (IdentifierTaken, StaleVersion):
                continue  # a concurrent registration won: plan again, now it is a MATCH
            except WriteFenceHeld:
                self._sleep(min(2.0, 0.05 * 2**attempt))
                continue
            self._record(
                who,
                AuditAction.CREATE if status == 201 else AuditAction.UPDATE,
                "Person.register",
                (person.person_id,),
                outcome_code=str(plan.outcome),
            )
            body = {
                "person": person_view(person),
                "match": {
                    "outcome": str(plan.outcome),
                    "score": plan.score,
                    "candidates": [{"person_id": c[0], "score": c[1]} for c in plan.candidates],
                },
            }
            return {"status": status, "body": body}
        raise Conflict("CONCURRENT_UPDATE", "the index is busy; try again")

    def _attach(self, who: Principal, plan: Plan, record: NewRecord) -> Person:
        assert plan.person_id is not None
        person = self.store.get_person(plan.person_id)
        if person is None or not person.active:
            raise StaleVersion(plan.person_id)
        have = person.identifier_keys()
        new = tuple(replace(i, source="match") for i in record.identifiers if i.key not in have)
        if not new:
            return person
        at = self._now().isoformat()
        updated = person.bumped(at, identifiers=person.identifiers + new)
        entry = self._history(
            who,
            person.person_id,
            "identifiers_attached",
            details={
                "score": plan.score,
                "deterministic": plan.deterministic,
                "identifiers": [{"type": str(i.type), "value": i.masked} for i in new],
            },
        )
        self.store.commit(Change(persons=[(person, updated)], history=[entry]))
        return updated

    def _create(self, who: Principal, record: NewRecord, plan: Plan) -> Person:
        change = new_person_change(
            who.consortium_id,
            record,
            plan,
            self._now().isoformat(),
            actor=who.subject,
            actor_role=str(who.role),
        )
        self.store.commit(change)
        return change.persons[0][1]

    # -------------------------------------------------------------------- reads
    def get(self, who: Principal, person_id: str) -> dict[str, Any]:
        return person_view(self.read_person(who, person_id))

    def history(self, who: Principal, person_id: str) -> dict[str, Any]:
        self._readable(who, person_id, "Person.history")
        items = self.store.history(person_id)
        self._record(who, AuditAction.READ, "Person.history", (person_id,))
        return {"person_id": person_id, "items": [history_view(h) for h in items]}

    def read_person(self, who: Principal, person_id: str, what: str = "Person.read") -> Person:
        """The person itself, for other representations (the FHIR Patient view); audited."""
        person = self._readable(who, person_id, what)
        self._record(who, AuditAction.READ, what, (person_id,))
        return person

    def search(self, who: Principal, criteria: Mapping[str, str | None]) -> dict[str, Any]:
        """Search by identifier (id_card, health_card, insurance, local + assigner), name
        (characters or pinyin), pinyin, phone and birth_date; criteria combine with AND.
        Costs at most 2 reads (one BatchGetItem of identifier owners and the name or birth
        block, one of the profiles), plus a gsi1 Query for a phone."""
        self._require_clinical(who)
        c = who.consortium_id
        q = self._query(c, criteria)
        found: list[set[str]] = []
        ranks: dict[str, int] = {}
        if q.id_keys or q.blocks:
            lookup = self.store.lookup(c, q.id_keys, q.blocks)
            if q.id_keys:
                found.append({lookup.owners[k] for k in q.id_keys if k in lookup.owners})
            if q.blocks:
                found.append(q.block_hits(lookup.members(), ranks))
        persons: dict[str, Person] = {}
        if q.phone_hash:
            persons = {p.person_id: p for p in self.store.persons_by_phone(c, q.phone_hash)}
            found.append(set(persons))
        if not found:
            raise InvalidInput(
                "SEARCH_CRITERIA_REQUIRED",
                "search by id_card, health_card, insurance, local (+assigner), name, pinyin,"
                " phone or birth_date",
            )
        ids = set.intersection(*found)
        if ids - persons.keys():
            persons.update(self.store.get_persons(ids - persons.keys()))
        results = [
            persons[i]
            for i in ids
            if i in persons
            and persons[i].consortium_id == c
            and (q.born is None or persons[i].birth_date == q.born)
        ]
        results.sort(key=lambda p: (ranks.get(p.person_id, 0), p.name, p.birth_date))
        results = results[:SEARCH_LIMIT]
        self._record(who, AuditAction.SEARCH, "Person.search", tuple(p.person_id for p in results))
        return {"items": [person_view(p) for p in results], "count": len(results)}

    def _query(self, consortium_id: str, criteria: Mapping[str, str | None]) -> SearchQuery:
        prep = self.preparer(consortium_id)
        q = SearchQuery()
        for kind in ("id_card", "health_card", "insurance", "local"):
            if criteria.get(kind):
                ident = normalise_identifier(kind, str(criteria[kind]), criteria.get("assigner"))
                q.id_keys.append(prep.protect(ident, "search").key)
        if criteria.get("birth_date"):
            q.born = parse_birth_date(criteria["birth_date"], self._now().date()).isoformat()
        name_query = criteria.get("name") or criteria.get("pinyin")
        if name_query:
            if has_han(name_query):
                n = normalise_name(name_query)
                q.probe = Candidate("", n, name_pinyin(n), "", "")
            else:
                q.probe = Candidate("", "", parse_pinyin(name_query), "", "")
            q.blocks.append(name_block(q.probe.pinyin))
        elif q.born:
            q.blocks.append(birth_block(q.born))
        if criteria.get("phone"):
            phone = normalise_phone(str(criteria["phone"]))
            q.phone_hash = self._protector.blind_index("phone", phone)
        return q

    # ------------------------------------------------------------- admin: links
    def link(self, who: Principal, person_id: str, other_id: str, reason: str) -> dict[str, Any]:
        reason = self._admin(who, reason)
        a, b = self._pair(who, person_id, other_id)
        if other_id in a.links:
            raise Conflict("ALREADY_LINKED", "these persons are already linked")
        change = self._link_change(who, a, b, reason)
        self._close_review(who, change, a.person_id, b.person_id, "link", reason)
        self._commit_admin(change)
        self._record(who, AuditAction.UPDATE, "Person.link", (a.person_id, b.person_id))
        return person_view(change.persons[0][1])

    def unlink(self, who: Principal, person_id: str, other_id: str, reason: str) -> dict[str, Any]:
        reason = self._admin(who, reason)
        a, b = self._pair(who, person_id, other_id, allow_merged=True)
        if other_id not in a.links:
            raise Conflict("NOT_LINKED", "these persons are not linked")
        at = self._now().isoformat()
        a2 = a.bumped(
            at,
            links=_without(a.links, b.person_id),
            distinct_from=_with(a.distinct_from, b.person_id),
        )
        b2 = b.bumped(
            at,
            links=_without(b.links, a.person_id),
            distinct_from=_with(b.distinct_from, a.person_id),
        )
        change = Change(
            persons=[(a, a2), (b, b2)],
            history=[
                self._history(who, a.person_id, "unlinked", reason, other=b.person_id),
                self._history(who, b.person_id, "unlinked", reason, other=a.person_id),
            ],
        )
        self._close_review(who, change, a.person_id, b.person_id, "unlink", reason)
        self._commit_admin(change)
        self._record(who, AuditAction.UPDATE, "Person.unlink", (a.person_id, b.person_id))
        return person_view(a2)

    def merge(
        self, who: Principal, survivor_id: str, retired_id: str, reason: str
    ) -> dict[str, Any]:
        reason = self._admin(who, reason)
        s, r = self._pair(who, survivor_id, retired_id)
        change = self._merge_change(who, s, r, reason)
        self._close_review(who, change, s.person_id, r.person_id, "merge", reason)
        self._commit_admin(change)
        self._record(who, AuditAction.UPDATE, "Person.merge", (s.person_id, r.person_id))
        return person_view(change.persons[0][1])

    def unmerge(self, who: Principal, retired_id: str, reason: str) -> dict[str, Any]:
        reason = self._admin(who, reason)
        r = self._load(who, retired_id)
        if r.status is not PersonStatus.MERGED or not r.merged_into:
            raise Conflict("NOT_MERGED", "this person is not merged into another")
        record = self.store.get_merge(retired_id)
        s = self.store.get_person(r.merged_into)
        if record is None or s is None:
            raise Conflict("UNMERGE_BLOCKED", "the merge record is missing")
        moved = {i.key for i in record.moved}
        if not s.active or not moved <= s.identifier_keys():
            raise Conflict(
                "UNMERGE_BLOCKED",
                "the survivor no longer holds what the merge moved (merged on, or changed)",
                survivor_id=s.person_id,
            )
        at = self._now().isoformat()
        s2 = s.bumped(
            at,
            identifiers=tuple(i for i in s.identifiers if i.key not in moved),
            replaces=_without(s.replaces, r.person_id),
            distinct_from=_with(s.distinct_from, r.person_id),
        )
        r2 = r.bumped(
            at,
            identifiers=record.moved,
            status=PersonStatus.ACTIVE,
            merged_into=None,
            distinct_from=_with(r.distinct_from, s.person_id),
        )
        details = {"identifiers": [{"type": str(i.type), "value": i.masked} for i in record.moved]}
        change = Change(
            persons=[(r, r2), (s, s2)],
            history=[
                self._history(
                    who, r.person_id, "unmerged", reason, other=s.person_id, details=details
                ),
                self._history(
                    who, s.person_id, "restored", reason, other=r.person_id, details=details
                ),
            ],
            merges_deleted=[record],
        )
        self._commit_admin(change)
        self._record(who, AuditAction.UPDATE, "Person.unmerge", (r.person_id, s.person_id))
        return person_view(r2)

    # ------------------------------------------------------------- review queue
    def reviews(self, who: Principal) -> dict[str, Any]:
        who.require_role(Role.CONSORTIUM_ADMIN)
        items = self.store.open_reviews(who.consortium_id)
        ids = {i.person_id for i in items} | {i.candidate_id for i in items}
        persons = self.store.get_persons(ids) if ids else {}
        self._record(who, AuditAction.SEARCH, "Person.reviews", tuple(sorted(ids)))
        return {"items": [review_view(i, persons) for i in items], "count": len(items)}

    def decide(
        self,
        who: Principal,
        review_id: str,
        decision: str,
        reason: str,
        survivor_id: str | None = None,
    ) -> dict[str, Any]:
        reason = self._admin(who, reason)
        try:
            verdict = ReviewDecision(decision)
        except ValueError:
            raise InvalidInput(
                "DECISION_INVALID",
                "decision is link, merge or not_a_match",
                allowed=[d.value for d in ReviewDecision],
            ) from None
        review = self.store.get_review(review_id)
        if review is None:
            raise NotFound("REVIEW_NOT_FOUND", "no such review item")
        who.require_consortium(review.consortium_id)
        if review.status is not ReviewStatus.OPEN:
            raise Conflict("REVIEW_CLOSED", "this review item is already decided")
        a, b = self._pair(who, review.candidate_id, review.person_id)
        if verdict is ReviewDecision.LINK:
            change = self._link_change(who, a, b, reason)
        elif verdict is ReviewDecision.MERGE:
            if survivor_id not in (None, a.person_id, b.person_id):
                raise InvalidInput(
                    "SURVIVOR_INVALID", "the survivor is one of the two persons of the review"
                )
            s, r = (b, a) if survivor_id == b.person_id else (a, b)
            change = self._merge_change(who, s, r, reason)
        else:
            change = self._not_a_match_change(who, a, b, reason)
        self._close_review(who, change, a.person_id, b.person_id, str(verdict), reason, review)
        self._commit_admin(change)
        self._record(who, AuditAction.UPDATE, "Person.review", (a.person_id, b.person_id))
        closed = next(new for _, new in change.reviews if new.review_id == review_id)
        persons = {p.person_id: p for _, p in change.persons}
        return review_view(closed, persons)

    # --------------------------------------------------------------- change builders
    def _link_change(self, who: Principal, a: Person, b: Person, reason: str) -> Change:
        at = self._now().isoformat()
        a2 = a.bumped(
            at,
            links=_with(a.links, b.person_id),
            distinct_from=_without(a.distinct_from, b.person_id),
        )
        b2 = b.bumped(
            at,
            links=_with(b.links, a.person_id),
            distinct_from=_without(b.distinct_from, a.person_id),
        )
        return Change(
            persons=[(a, a2), (b, b2)],
            history=[
                self._history(who, a.person_id, "linked", reason, other=b.person_id),
                self._history(who, b.person_id, "linked", reason, other=a.person_id),
            ],
        )

    def _not_a_match_change(self, who: Principal, a: Person, b: Person, reason: str) -> Change:
        at = self._now().isoformat()
        a2 = a.bumped(at, distinct_from=_with(a.distinct_from, b.person_id))
        b2 = b.bumped(at, distinct_from=_with(b.distinct_from, a.person_id))
        return Change(
            persons=[(a, a2), (b, b2)],
            history=[
                self._history(who, a.person_id, "not_a_match", reason, other=b.person_id),
                self._history(who, b.person_id, "not_a_match", reason, other=a.person_id),
            ],
        )

    def _merge_change(self, who: Principal, s: Person, r: Person, reason: str) -> Change:
        clash = [
            str(i.type)
            for i in r.identifiers
            if i.type in SINGLE_VALUED
            and any(j.type == i.type and j.hash != i.hash for j in s.identifiers)
        ]
        if clash:
            raise Conflict(
                "MERGE_IDENTIFIER_CONFLICT",
                "both persons hold a different national identifier of the same kind",
                types=clash,
            )
        at = self._now().isoformat()
        have = s.identifier_keys()
        moved = tuple(i for i in r.identifiers if i.key not in have)
        were_linked = r.person_id in s.links
        s2 = s.bumped(
            at,
            identifiers=s.identifiers
            + tuple(replace(i, source=f"merge:{r.person_id}") for i in moved),
            replaces=_with(s.replaces, r.person_id),
            links=_without(s.links, r.person_id),
            distinct_from=_without(s.distinct_from, r.person_id),
        )
        r2 = r.bumped(
            at,
            identifiers=tuple(i for i in r.identifiers if i.key in have),
            status=PersonStatus.MERGED,
            merged_into=s.person_id,
            links=_without(r.links, s.person_id),
            distinct_from=_without(r.distinct_from, s.person_id),
        )
        # identifiers both held (impossible by uniqueness, kept for safety) stay put
        record = MergeRecord(
            retired_id=r.person_id,
            survivor_id=s.person_id,
            consortium_id=s.consortium_id,
            moved=moved,
            merged_at=at,
            merged_by=who.subject,
            reason=reason,
            were_linked=were_linked,
        )
        details = {"identifiers": [{"type": str(i.type), "value": i.masked} for i in moved]}
        return Change(
            persons=[(s, s2), (r, r2)],
            history=[
                self._history(
                    who, s.person_id, "absorbed", reason, other=r.person_id, details=details
                ),
                self._history(
                    who, r.person_id, "merged_into", reason, other=s.person_id, details=details
                ),
            ],
            merges_put=[record],
        )

    def _close_review(
        self,
        who: Principal,
        change: Change,
        a: str,
        b: str,
        decision: str,
        reason: str,
        review: ReviewItem | None = None,
    ) -> None:
        if review is None:
            review = self.store.get_review(review_id_for(who.consortium_id, a, b))
            if review is None or review.status is not ReviewStatus.OPEN:
                return
        closed = replace(
            review,
            status=ReviewStatus.DECIDED,
            decision=decision,
            decided_by=who.subject,
            decided_at=self._now().isoformat(),
            reason=reason,
        )
        change.reviews.append((review, closed))

    # ------------------------------------------------------------------- helpers
    def _commit_admin(self, change: Change) -> None:
        for attempt in range(6):
            try:
                self.store.commit(change)
                return
            except WriteFenceHeld:
                self._sleep(min(2.0, 0.05 * 2**attempt))
        raise WriteFenceHeld()

    def _history(
        self,
        who: Principal,
        person_id: str,
        action: str,
        reason: str = "",
        details: dict[str, Any] | None = None,
        **more: Any,
    ) -> HistoryEntry:
        return HistoryEntry(
            person_id=person_id,
            at=self._now().isoformat(),
            action=action,
            actor=who.subject,
            actor_role=str(who.role),
            reason=reason,
            details={**(details or {}), **more},
        )

    def _require_clinical(self, who: Principal) -> None:
        who.require_role(*CLINICAL_ROLES)

    def _admin(self, who: Principal, reason: str | None) -> str:
        who.require_role(Role.CONSORTIUM_ADMIN)
        text = (reason or "").strip()
        if not text:
            raise InvalidInput("REASON_REQUIRED", "a reason is required", field="reason")
        if len(text) > MAX_REASON:
            raise InvalidInput("REASON_TOO_LONG", f"a reason has at most {MAX_REASON} characters")
        return text

    def _load(self, who: Principal, person_id: str) -> Person:
        person = self.store.get_person(person_id)
        if person is None:
            raise NotFound("PERSON_NOT_FOUND", "no such person")
        who.require_consortium(person.consortium_id)
        return person

    def _pair(
        self, who: Principal, a_id: str, b_id: str, allow_merged: bool = False
    ) -> tuple[Person, Person]:
        if a_id == b_id:
            raise InvalidInput("SAME_PERSON", "a person cannot be paired with itself")
        found = self.store.get_persons([a_id, b_id])
        for pid in (a_id, b_id):
            if pid not in found:
                raise NotFound("PERSON_NOT_FOUND", "no such person", person_id=pid)
            who.require_consortium(found[pid].consortium_id)
            if not allow_merged and not found[pid].active:
                raise Conflict(
                    "PERSON_MERGED", "this person is merged; use its survivor", person_id=pid
                )
        return found[a_id], found[b_id]

    def _readable(self, who: Principal, person_id: str, what: str) -> Person:
        """Access rules for reading one person; a refusal is audited too."""
        try:
            if who.role is Role.RESIDENT:
                who.require_person_access(person_id)
            return self._load(who, person_id)
        except Forbidden as exc:
            self._record(who, AuditAction.READ, what, (person_id,), AuditOutcome.DENIED, exc.code)
            raise

    def _record(
        self,
        who: Principal,
        action: AuditAction,
        what: str,
        person_ids: Sequence[str],
        outcome: AuditOutcome = AuditOutcome.SUCCESS,
        outcome_code: str = "",
    ) -> None:
        self.audit.record(
            AuditEvent.by(
                who,
                action,
                what,
                person_ids,
                outcome=outcome,
                detail={"code": outcome_code} if outcome_code else {},
            )
        )


def new_person_change(
    consortium_id: str,
    record: NewRecord,
    plan: Plan,
    at: str,
    *,
    actor: str,
    actor_role: str,
    source: dict[str, Any] | None = None,
) -> Change:
    """A new person from a record (NO_MATCH or POSSIBLE_MATCH), its history, and one review
    item per candidate of a possible match."""
    person = Person(
        person_id=new_person_id(),
        consortium_id=consortium_id,
        name=record.name,
        pinyin=record.pinyin,
        sex=record.sex,
        birth_date=record.birth_date,
        phone_hash=record.phone_hash,
        phone_sealed=record.phone_sealed,
        phone_masked=record.phone_masked,
        address=record.address,
        household=record.household,
        identifiers=record.identifiers,
        created_at=at,
        created_by=actor,
        updated_at=at,
        version=1,
    )
    details: dict[str, Any] = {"outcome": str(plan.outcome), "score": plan.score, **(source or {})}
    if plan.candidates:
        details["candidates"] = [{"person_id": c[0], "score": c[1]} for c in plan.candidates]
    change = Change(
        persons=[(None, person)],
        history=[HistoryEntry(person.person_id, at, "registered", actor, actor_role, "", details)],
    )
    if plan.outcome is Outcome.POSSIBLE_MATCH:
        for cand_id, cand_score, breakdown in plan.candidates:
            change.reviews.append(
                (
                    None,
                    ReviewItem(
                        review_id=review_id_for(consortium_id, person.person_id, cand_id),
                        consortium_id=consortium_id,
                        person_id=person.person_id,
                        candidate_id=cand_id,
                        score=cand_score,
                        breakdown=breakdown,
                        created_at=at,
                    ),
                )
            )
    return change


def _with(items: tuple[str, ...], x: str) -> tuple[str, ...]:
    return items if x in items else (*items, x)


def _without(items: tuple[str, ...], x: str) -> tuple[str, ...]:
    return tuple(i for i in items if i != x)
