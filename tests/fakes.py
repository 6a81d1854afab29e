"""In-memory fakes of the patient index's ports, behaving like the adapters (conditions,
conflicts, the bulk write fence, request counts), so unit tests run with no network and the
contract tests hold both to the same behaviour."""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Callable, Collection, Mapping
from dataclasses import replace
from typing import Any

from yilian.adapters.keyring import LocalKeyProtector
from yilian.domain.audit import AuditEvent
from yilian.domain.directory import Institution, InstitutionType, Tier
from yilian.domain.errors import Conflict, NotFound
from yilian.domain.matching import Candidate
from yilian.domain.person import (
    Change,
    Fence,
    HistoryEntry,
    IdentifierTaken,
    Lookup,
    MergeRecord,
    Person,
    PersonStatus,
    ReviewItem,
    ReviewStatus,
    StaleVersion,
    WriteFenceHeld,
    head_updates,
    identifier_moves,
)

CONSORTIUM = "demo-county"


def FakeProtector() -> LocalKeyProtector:  # noqa: N802 - reads like the class it stands for
    return LocalKeyProtector(b"k" * 64)


class FakeAuditSink:
    def __init__(self) -> None:
        self.events: list[AuditEvent] = []

    def record(self, event: AuditEvent) -> None:
        self.events.append(event)


class FakeDirectory:
    """The InstitutionDirectory port: a consortium's institutions by id."""

    def __init__(self, *institutions: Institution) -> None:
        self._by_key = {(i.consortium_id, i.institution_id): i for i in institutions}

    @classmethod
    def demo(cls) -> FakeDirectory:
        return cls(
            Institution(
                "county-hospital", CONSORTIUM, "示范县人民医院", Tier.COUNTY,
                InstitutionType.GENERAL_HOSPITAL,
            ),
            Institution(
                "qiaotou", CONSORTIUM, "桥头镇卫生院", Tier.TOWNSHIP,
                InstitutionType.TOWNSHIP_HEALTH_CENTRE, "county-hospital",
            ),
            Institution(
                "qiaotou-lijia", CONSORTIUM, "桥头镇李家村卫生室", Tier.VILLAGE,
                InstitutionType.VILLAGE_CLINIC, "qiaotou",
            ),
            Institution(
                "other-hospital", "other-county", "邻县人民医院", Tier.COUNTY,
                InstitutionType.GENERAL_HOSPITAL,
            ),
        )  # fmt: skip

    def get_institution(self, consortium_id: str, institution_id: str) -> Institution | None:
        return self._by_key.get((consortium_id, institution_id))


class FakeIdempotency:
    def __init__(self) -> None:
        self.records: dict[tuple[str, str], tuple[dict[str, Any], dict]] = {}

    def run(self, scope: str, key: str, payload: Mapping[str, Any], fn: Callable[[], dict]) -> dict:
        known = self.records.get((scope, key))
        if known is not None:
            if known[0] != dict(payload):
                raise Conflict("IDEMPOTENCY_KEY_REUSED", "this key was used for another request")
            return known[1]
        result = fn()
        self.records[(scope, key)] = (dict(payload), result)
        return result


def _batches(n: int, size: int) -> int:
    return math.ceil(n / size) if n else 0


class FakePersonsStore:
    """The PersonsRepository port in memory, with the DynamoDB adapter's semantics."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.requests: Counter[str] = Counter()
        self.persons: dict[str, Person] = {}
        self.owners: dict[tuple[str, str], str] = {}
        self.heads: dict[tuple[str, str], dict[str, Candidate]] = {}
        self.histories: dict[str, list[HistoryEntry]] = {}
        self.reviews: dict[str, ReviewItem] = {}
        self.merges: dict[str, MergeRecord] = {}
        self.fences: dict[str, Fence] = {}
        self._clock = clock

    # ---------------------------------------------------------------------- reads
    def lookup(
        self,
        consortium_id: str,
        id_keys: Collection[str],
        block_keys: Collection[str],
        *,
        consistent: bool = False,
    ) -> Lookup:
        ids, blocks = set(id_keys), set(block_keys)
        self.requests["BatchGetItem"] += _batches(len(ids) + len(blocks), 100)
        out = Lookup()
        for k in ids:
            if (consortium_id, k) in self.owners:
                out.owners[k] = self.owners[(consortium_id, k)]
        for b in blocks:
            members = self.heads.get((consortium_id, b))
            if members:
                out.blocks[b] = dict(members)
        return out

    def get_person(self, person_id: str) -> Person | None:
        self.requests["GetItem"] += 1
        return self.persons.get(person_id)

    def get_persons(self, person_ids: Collection[str]) -> dict[str, Person]:
        ids = set(person_ids)
        self.requests["BatchGetItem"] += _batches(len(ids), 100)
        return {i: self.persons[i] for i in ids if i in self.persons}

    def persons_by_phone(
        self, consortium_id: str, phone_hash: str, limit: int = 50
    ) -> list[Person]:
        self.requests["Query"] += 1
        hits = [
            p
            for p in self.persons.values()
            if p.consortium_id == consortium_id and p.active and p.phone_hash == phone_hash
        ]
        return sorted(hits, key=lambda p: p.person_id)[:limit]

    def history(self, person_id: str, limit: int = 200) -> list[HistoryEntry]:
        self.requests["Query"] += 1
        return sorted(self.histories.get(person_id, []), key=lambda h: h.at)[:limit]

    def get_review(self, review_id: str) -> ReviewItem | None:
        self.requests["GetItem"] += 1
        return self.reviews.get(review_id)

    def open_reviews(self, consortium_id: str, limit: int = 100) -> list[ReviewItem]:
        self.requests["Query"] += 1
        items = [
            r
            for r in self.reviews.values()
            if r.consortium_id == consortium_id and r.status is ReviewStatus.OPEN
        ]
        return sorted(items, key=lambda r: (r.created_at, r.review_id))[:limit]

    def get_merge(self, retired_id: str) -> MergeRecord | None:
        self.requests["GetItem"] += 1
        return self.merges.get(retired_id)

    # --------------------------------------------------------------------- writes
    def commit(self, change: Change) -> None:
        self.requests["TransactWriteItems"] += 1
        if change.is_empty():
            return
        for c in {p.consortium_id for _, p in change.persons}:
            if self._fence_live(c):
                raise WriteFenceHeld()
        self._check_identifiers(change)
        self._check_versions(change)
        self._apply(change, None)

    def _check_identifiers(self, change: Change) -> None:
        c_of = {p.person_id: p.consortium_id for _, p in change.persons}
        taken: dict[str, str] = {}
        for key, (was, _now, person) in identifier_moves(change).items():
            c = c_of.get(was or "") or (person.consortium_id if person else "")
            holder = self.owners.get((c, key))
            if holder != was:
                taken[key] = holder or ""
        if taken:
            raise IdentifierTaken(taken)

    def _check_versions(self, change: Change) -> None:
        for old, new in change.persons:
            stored = self.persons.get(new.person_id)
            expected = old.version if old is not None else None
            if (stored.version if stored is not None else None) != expected:
                raise StaleVersion(new.person_id)
        for old_r, new_r in change.reviews:
            stored_r = self.reviews.get(new_r.review_id)
            if old_r is None and stored_r is not None:
                raise Conflict("REVIEW_EXISTS", "this pair is already proposed")
            if old_r is not None and (stored_r is None or stored_r.status is not ReviewStatus.OPEN):
                raise Conflict("REVIEW_CLOSED", "this review item is already decided")
        if any(m.retired_id in self.merges for m in change.merges_put):
            raise StaleVersion(change.merges_put[0].retired_id)
        if any(m.retired_id not in self.merges for m in change.merges_deleted):
            raise StaleVersion(change.merges_deleted[0].retired_id)

    def acquire_fence(self, consortium_id: str, owner: str, lease_seconds: float) -> Fence:
        self.requests["PutItem"] += 1
        live = self.fences.get(consortium_id)
        if live is not None and live.owner != owner and self._fence_live(consortium_id):
            raise WriteFenceHeld()
        fence = Fence(consortium_id, owner, int((self._clock() + lease_seconds) * 1000))
        self.fences[consortium_id] = fence
        return fence

    def renew_fence(self, fence: Fence, lease_seconds: float) -> Fence:
        self.requests["UpdateItem"] += 1
        live = self.fences.get(fence.consortium_id)
        if live is None or live.owner != fence.owner or not self._fence_live(fence.consortium_id):
            raise WriteFenceHeld()
        renewed = replace(fence, lease_until_ms=int((self._clock() + lease_seconds) * 1000))
        self.fences[fence.consortium_id] = renewed
        return renewed

    def release_fence(self, fence: Fence) -> None:
        self.requests["DeleteItem"] += 1
        live = self.fences.get(fence.consortium_id)
        if live is not None and live.owner == fence.owner:
            del self.fences[fence.consortium_id]

    def bulk_write(
        self, fence: Fence, change: Change, heads: Mapping[str, Mapping[str, Candidate]]
    ) -> int:
        live = self.fences.get(fence.consortium_id)
        if live is None or live.owner != fence.owner or not self._fence_live(fence.consortium_id):
            raise WriteFenceHeld()
        items = self._apply(change, heads)
        self.requests["BatchWriteItem"] += _batches(items, 25)
        return items

    # -------------------------------------------------------------------- helpers
    def _fence_live(self, consortium_id: str) -> bool:
        fence = self.fences.get(consortium_id)
        return fence is not None and fence.lease_until_ms > self._clock() * 1000

    def _apply(self, change: Change, heads: Mapping[str, Mapping[str, Candidate]] | None) -> int:
        c_of = {p.person_id: p.consortium_id for _, p in change.persons}
        moves = identifier_moves(change)
        for key, (was, now, person) in moves.items():
            c = c_of.get(was or "") or (person.consortium_id if person else "")
            if now is None:
                self.owners.pop((c, key), None)
            else:
                self.owners[(c, key)] = now
        for _, new in change.persons:
            self.persons[new.person_id] = new
        updates = head_updates(change)
        for block, members in updates.items():
            c = next(c_of[pid] for pid in members)
            stored = self.heads.get((c, block), {})
            base = dict(heads.get(block, {}) if heads is not None else stored)
            for pid, proj in members.items():
                if proj is None:
                    base.pop(pid, None)
                else:
                    base[pid] = proj
            if base:
                self.heads[(c, block)] = base
            else:
                self.heads.pop((c, block), None)
        for h in change.history:
            self.histories.setdefault(h.person_id, []).append(h)
        for _, r in change.reviews:
            self.reviews[r.review_id] = r
        for m in change.merges_put:
            self.merges[m.retired_id] = m
        for m in change.merges_deleted:
            self.merges.pop(m.retired_id, None)
        return (
            len(change.persons) + len(moves) + len(updates) + len(change.history)
            + len(change.reviews) + len(change.merges_put) + len(change.merges_deleted)
        )  # fmt: skip

    # ------------------------------------------------------------ test helpers
    def item_count(self) -> int:
        """Everything stored, as the table would count items (for 'nothing stored')."""
        return (
            len(self.persons) + len(self.owners) + len(self.heads)
            + sum(len(h) for h in self.histories.values()) + len(self.reviews) + len(self.merges)
        )  # fmt: skip

    def active(self) -> list[Person]:
        return [p for p in self.persons.values() if p.status is PersonStatus.ACTIVE]

    def require(self, person_id: str) -> Person:
        if person_id not in self.persons:
            raise NotFound("PERSON_NOT_FOUND", person_id)
        return self.persons[person_id]


# ---------------------------------------------------------------- test data builders
_ID_WEIGHTS = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2]  # GB 11643, written out


def make_id_number(birth: str, sex: str, seq: int = 1, region: str = "330122") -> str:
    """A resident ID number with a correct check character, computed independently of the
    code under test: region + YYYYMMDD + order (odd male, even female) + check."""
    order = (seq % 500) * 2 + (1 if sex == "male" else 0)
    body = f"{region}{birth.replace('-', '')}{order:03d}"
    total = sum(int(d) * w for d, w in zip(body, _ID_WEIGHTS, strict=True))
    return body + "10X98765432"[total % 11]


def registration(
    name: str = "张伟",
    sex: str = "male",
    birth_date: str = "1985-03-12",
    *,
    id_card: str | bool | None = True,
    local: tuple[str, str] | None = ("V00001", "qiaotou-lijia"),
    seq: int = 1,
    phone: str | None = "13905711234",
    address: str | None = "示范县桥头镇李家村12号",
    household: str | None = "HH0001",
    **extra_ids: str,
) -> dict[str, Any]:
    """A registration body as the API takes it. id_card=True makes a valid one."""
    ids: list[dict[str, str]] = []
    if id_card is True:
        ids.append({"type": "id_card", "value": make_id_number(birth_date, sex, seq)})
    elif id_card:
        ids.append({"type": "id_card", "value": str(id_card)})
    if local:
        ids.append({"type": "local", "value": local[0], "assigner": local[1]})
    for kind, value in extra_ids.items():
        ids.append({"type": kind, "value": value})
    body: dict[str, Any] = {"name": name, "sex": sex, "birth_date": birth_date, "identifiers": ids}
    if phone:
        body["phone"] = phone
    if address:
        body["address"] = address
    if household:
        body["household"] = household
    return body


# ------------------------------------------------------------------------ bulk imports
class FakeImportFiles:
    """The import bucket: objects by key; presigned URLs are recognisable strings."""

    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}

    def presign_put(self, key: str, seconds: int) -> str:
        return f"https://s3.example/{key}?X-Amz-Expires={seconds}&method=PUT"

    def presign_get(self, key: str, seconds: int) -> str:
        return f"https://s3.example/{key}?X-Amz-Expires={seconds}"

    def read(self, key: str, max_bytes: int) -> bytes:
        from yilian.domain.errors import InvalidInput

        body = self.objects[key]
        if len(body) > max_bytes:
            raise InvalidInput("FILE_TOO_LARGE", "the file is too large")
        return body

    def write(self, key: str, body: bytes, content_type: str) -> None:
        self.objects[key] = body


class FakeImportJobs:
    def __init__(self) -> None:
        self.jobs: dict[tuple[str, str], Any] = {}

    def create(self, job: Any) -> None:
        key = (job.consortium_id, job.job_id)
        if key in self.jobs:
            raise Conflict("IMPORT_EXISTS", "job exists")
        self.jobs[key] = job

    def get(self, consortium_id: str, job_id: str) -> Any:
        return self.jobs.get((consortium_id, job_id))

    def start(self, job: Any, at: str) -> Any:
        current = self.jobs[(job.consortium_id, job.job_id)]
        if current.status not in ("awaiting_upload", "failed"):
            return None
        started = replace(current, status="running", started_at=at, error=None)
        self.jobs[(job.consortium_id, job.job_id)] = started
        return started

    def save(self, job: Any) -> None:
        self.jobs[(job.consortium_id, job.job_id)] = job
