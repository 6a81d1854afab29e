"""The patient index in DynamoDB: the PersonsRepository port over the PersonsTable.

Item layout (PersonsTable: pk/sk, gsi1 = gsi1pk/gsi1sk, projection ALL)

  what                 pk                          sk                 gsi1pk / gsi1sk
  person profile       P#{person}                  PROFILE            PH#{c}#{phone hash} / {person}
                                                                      (active persons with a phone)
  history entry        P#{person}                  H#{iso time}#{rnd}
  merge record         P#{retired}                 MERGE              (what the merge moved)
  identifier           ID#{c}#{type}#{blind index} ID                 (person_id: its one holder)
  block                B#{c}#N#{fuzzy name}        BLOCK              (m_{person} per member: the
                       B#{c}#D#{birth date}        BLOCK               member's match projection)
  review item          RV#{review}                 REVIEW             RQ#{c} / {created}#{review}
                                                                      (while open: the queue)
  write fence          FENCE#{c}                   FENCE              (owner, lease_until ms)

{c} is the consortium; a person id is global, and the profile carries its consortium, so a
read of another consortium's person is refused (CROSS_CONSORTIUM) rather than not found.
A profile's `data` is the person as JSON; `version` is its optimistic-lock counter.

Identifiers are unique per consortium by construction: one item per (type, blind index),
claimed with attribute_not_exists, moved (merge/unmerge) with `person_id = :previous`.
Blocks are one item per key whose attributes are the members' projections (name, pinyin,
sex, birth date, phone hash, address, identifier hashes, not-a-match ids) — so matching
needs no read beyond one BatchGetItem of the record's identifier items and its two blocks,
plus one BatchGetItem of profiles only when an identifier's holder is in neither block:
at most 2 requests, and 3 with the write that follows. A transaction updates a member with
`SET m_{person} = :projection`, so concurrent registrations into one block never lose each
other (the block item is the unit DynamoDB serialises).

Writes. commit() is one TransactWriteItems: profile (version condition), identifier claims
and moves (conditions), block member updates, history, review items, merge records, and a
ConditionCheck that no bulk job holds the consortium's write fence. A concurrent duplicate
registration therefore cannot create two persons: the loser's identifier condition fails
(its current holder comes back with ALL_OLD) and the service plans again, to a MATCH.

Bulk registration writes with BatchWriteItem (no conditions) under the write fence: a lease
item a job takes with a conditional put and renews while it writes. Every commit() checks
it, so while a job holds it no transaction changes identifiers, blocks or profiles, and the
job's reads (consistent) stay true until its writes land: uniqueness holds without a
conditional write per identifier, and blocks are rewritten whole from what was read.

Why boto3's low-level client and not pynamodb models here: one BatchGetItem mixes identifier
and block items (the request budget of a match), block members are attributes named per
person, and the loser-gets-MATCH path needs CancellationReasons with the holder's item.
"""

from __future__ import annotations

import json
import time
import uuid
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Mapping
from functools import lru_cache
from typing import Any

from yilian.domain.errors import Conflict
from yilian.domain.identity import IdentifierType
from yilian.domain.matching import Candidate, IdKey
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
    StoredIdentifier,
    WriteFenceHeld,
    head_updates,
    identifier_moves,
)

MEMBER = "m_"
BATCH_GET = 100
BATCH_WRITE = 25
RENEW_MARGIN_S = 10.0


# ------------------------------------------------------------------------ (de)serialising


def _s(value: str) -> dict[str, str]:
    return {"S": value}


def _n(value: int) -> dict[str, str]:
    return {"N": str(value)}


def _stored_to_json(i: StoredIdentifier) -> dict[str, Any]:
    return {
        "type": str(i.type),
        "hash": i.hash,
        "sealed": i.sealed,
        "masked": i.masked,
        "assigner": i.assigner,
        "added_at": i.added_at,
        "source": i.source,
    }


def _stored_from_json(d: Mapping[str, Any]) -> StoredIdentifier:
    return StoredIdentifier(**{**d, "type": IdentifierType(d["type"])})


def person_to_json(p: Person) -> dict[str, Any]:
    return {
        "person_id": p.person_id,
        "consortium_id": p.consortium_id,
        "name": p.name,
        "pinyin": list(p.pinyin),
        "sex": p.sex,
        "birth_date": p.birth_date,
        "phone_hash": p.phone_hash,
        "phone_sealed": p.phone_sealed,
        "phone_masked": p.phone_masked,
        "address": p.address,
        "household": p.household,
        "identifiers": [_stored_to_json(i) for i in p.identifiers],
        "status": str(p.status),
        "merged_into": p.merged_into,
        "replaces": list(p.replaces),
        "links": list(p.links),
        "distinct_from": list(p.distinct_from),
        "created_at": p.created_at,
        "created_by": p.created_by,
        "updated_at": p.updated_at,
        "version": p.version,
    }


def person_from_json(d: Mapping[str, Any]) -> Person:
    return Person(
        **{
            **d,
            "pinyin": tuple(d["pinyin"]),
            "identifiers": tuple(_stored_from_json(i) for i in d["identifiers"]),
            "status": PersonStatus(d["status"]),
            "replaces": tuple(d["replaces"]),
            "links": tuple(d["links"]),
            "distinct_from": tuple(d["distinct_from"]),
        }
    )


@lru_cache(maxsize=100_000)  # a block is re-read and rewritten by each chunk that touches it
def projection_to_json(c: Candidate) -> str:
    body: dict[str, Any] = {
        "n": c.name,
        "p": " ".join(c.pinyin),
        "s": c.sex,
        "b": c.birth_date,
        "i": [[str(k.type), k.assigner, k.hash] for k in c.ids],
    }
    if c.phone:
        body["t"] = c.phone
    if c.address:
        body["a"] = c.address
    if c.distinct_from:
        body["x"] = sorted(c.distinct_from)
    return json.dumps(body, ensure_ascii=False, separators=(",", ":"))


@lru_cache(maxsize=100_000)
def projection_from_json(person_id: str, raw: str) -> Candidate:
    d = json.loads(raw)
    return Candidate(
        person_id=person_id,
        name=d["n"],
        pinyin=tuple(d["p"].split()) if d["p"] else (),
        sex=d["s"],
        birth_date=d["b"],
        phone=d.get("t"),
        address=d.get("a", ""),
        ids=tuple(IdKey(IdentifierType(t), h, a) for t, a, h in d["i"]),
        distinct_from=frozenset(d.get("x", ())),
    )


def _review_to_json(r: ReviewItem) -> dict[str, Any]:
    return {
        "review_id": r.review_id,
        "consortium_id": r.consortium_id,
        "person_id": r.person_id,
        "candidate_id": r.candidate_id,
        "score": r.score,
        "breakdown": r.breakdown,
        "created_at": r.created_at,
        "status": str(r.status),
        "decision": r.decision,
        "decided_by": r.decided_by,
        "decided_at": r.decided_at,
        "reason": r.reason,
    }


def _review_from_json(d: Mapping[str, Any]) -> ReviewItem:
    return ReviewItem(**{**d, "status": ReviewStatus(d["status"])})


def _merge_to_json(m: MergeRecord) -> dict[str, Any]:
    return {
        "retired_id": m.retired_id,
        "survivor_id": m.survivor_id,
        "consortium_id": m.consortium_id,
        "moved": [_stored_to_json(i) for i in m.moved],
        "merged_at": m.merged_at,
        "merged_by": m.merged_by,
        "reason": m.reason,
        "were_linked": m.were_linked,
    }


def _merge_from_json(d: Mapping[str, Any]) -> MergeRecord:
    return MergeRecord(**{**d, "moved": tuple(_stored_from_json(i) for i in d["moved"])})


def _data(item: Mapping[str, Any]) -> Any:
    return json.loads(item["data"]["S"])


# ---------------------------------------------------------------------------- the store


class DynamoPersonsStore:
    """PersonsRepository over a DynamoDB client (boto3 low-level). `requests` counts the
    DynamoDB requests made, by operation name (benchmarks read it)."""

    def __init__(
        self,
        dynamodb: Any,
        table: str,
        *,
        clock: Callable[[], float] = time.time,
        lease_seconds: float = 60.0,
    ) -> None:
        self._db = dynamodb
        self._table = table
        self._clock = clock
        self._lease_seconds = lease_seconds
        self.requests: Counter[str] = Counter()

    # ------------------------------------------------------------------- keys
    @staticmethod
    def _profile_key(person_id: str) -> dict[str, Any]:
        return {"pk": _s(f"P#{person_id}"), "sk": _s("PROFILE")}

    @staticmethod
    def _id_key(consortium_id: str, key: str) -> dict[str, Any]:
        return {"pk": _s(f"ID#{consortium_id}#{key}"), "sk": _s("ID")}

    @staticmethod
    def _block_key(consortium_id: str, block: str) -> dict[str, Any]:
        return {"pk": _s(f"B#{consortium_id}#{block}"), "sk": _s("BLOCK")}

    @staticmethod
    def _fence_key(consortium_id: str) -> dict[str, Any]:
        return {"pk": _s(f"FENCE#{consortium_id}"), "sk": _s("FENCE")}

    @staticmethod
    def _review_key(review_id: str) -> dict[str, Any]:
        return {"pk": _s(f"RV#{review_id}"), "sk": _s("REVIEW")}

    @staticmethod
    def _merge_key(retired_id: str) -> dict[str, Any]:
        return {"pk": _s(f"P#{retired_id}"), "sk": _s("MERGE")}

    def _call(self, op: str, method: str, **kwargs: Any) -> Any:
        self.requests[op] += 1
        return getattr(self._db, method)(**kwargs)

    # ------------------------------------------------------------------ reads
    def lookup(
        self,
        consortium_id: str,
        id_keys: Collection[str],
        block_keys: Collection[str],
        *,
        consistent: bool = False,
    ) -> Lookup:
        wanted: dict[str, tuple[str, str]] = {}
        for k in set(id_keys):
            wanted[f"ID#{consortium_id}#{k}"] = ("id", k)
        for b in set(block_keys):
            wanted[f"B#{consortium_id}#{b}"] = ("block", b)
        keys = [
            {"pk": _s(pk), "sk": _s("ID" if kind == "id" else "BLOCK")}
            for pk, (kind, _) in wanted.items()
        ]
        out = Lookup()
        for item in self._batch_get(keys, consistent):
            kind, name = wanted[item["pk"]["S"]]
            if kind == "id":
                out.owners[name] = item["person_id"]["S"]
            else:
                members = {
                    attr[len(MEMBER) :]: projection_from_json(attr[len(MEMBER) :], v["S"])
                    for attr, v in item.items()
                    if attr.startswith(MEMBER)
                }
                if members:
                    out.blocks[name] = members
        return out

    def get_person(self, person_id: str) -> Person | None:
        item = self._call(
            "GetItem",
            "get_item",
            TableName=self._table,
            Key=self._profile_key(person_id),
            ConsistentRead=True,
        ).get("Item")
        return person_from_json(_data(item)) if item else None

    def get_persons(self, person_ids: Collection[str]) -> dict[str, Person]:
        keys = [self._profile_key(p) for p in set(person_ids)]
        return {
            p.person_id: p
            for p in (person_from_json(_data(i)) for i in self._batch_get(keys, True))
        }

    def persons_by_phone(
        self, consortium_id: str, phone_hash: str, limit: int = 50
    ) -> list[Person]:
        items = self._query(
            IndexName="gsi1",
            KeyConditionExpression="gsi1pk = :pk",
            ExpressionAttributeValues={":pk": _s(f"PH#{consortium_id}#{phone_hash}")},
            Limit=limit,
        )
        return [person_from_json(_data(i)) for i in items][:limit]

    def history(self, person_id: str, limit: int = 200) -> list[HistoryEntry]:
        items = self._query(
            KeyConditionExpression="pk = :pk AND begins_with(sk, :h)",
            ExpressionAttributeValues={":pk": _s(f"P#{person_id}"), ":h": _s("H#")},
            Limit=limit,
        )
        return [HistoryEntry(**_data(i)) for i in items][:limit]

    def get_review(self, review_id: str) -> ReviewItem | None:
        item = self._call(
            "GetItem",
            "get_item",
            TableName=self._table,
            Key=self._review_key(review_id),
            ConsistentRead=True,
        ).get("Item")
        return _review_from_json(_data(item)) if item else None

    def open_reviews(self, consortium_id: str, limit: int = 100) -> list[ReviewItem]:
        items = self._query(
            IndexName="gsi1",
            KeyConditionExpression="gsi1pk = :pk",
            ExpressionAttributeValues={":pk": _s(f"RQ#{consortium_id}")},
            Limit=limit,
        )
        return [_review_from_json(_data(i)) for i in items][:limit]

    def get_merge(self, retired_id: str) -> MergeRecord | None:
        item = self._call(
            "GetItem",
            "get_item",
            TableName=self._table,
            Key=self._merge_key(retired_id),
            ConsistentRead=True,
        ).get("Item")
        return _merge_from_json(_data(item)) if item else None

    def _query(self, **kwargs: Any) -> list[dict[str, Any]]:
        limit = kwargs.get("Limit", 1000)
        items: list[dict[str, Any]] = []
        start = None
        while True:
            page = self._call(
                "Query",
                "query",
                TableName=self._table,
                **kwargs,
                **({"ExclusiveStartKey": start} if start else {}),
            )
            items.extend(page.get("Items", []))
            start = page.get("LastEvaluatedKey")
            if not start or len(items) >= limit:
                return items

    def _batch_get(self, keys: list[dict[str, Any]], consistent: bool) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for i in range(0, len(keys), BATCH_GET):
            pending: dict[str, Any] = {
                self._table: {"Keys": keys[i : i + BATCH_GET], "ConsistentRead": consistent}
            }
            delay = 0.02
            while pending:
                resp = self._call("BatchGetItem", "batch_get_item", RequestItems=pending)
                out.extend(resp.get("Responses", {}).get(self._table, []))
                pending = resp.get("UnprocessedKeys") or {}
                if pending:
                    time.sleep(delay)
                    delay = min(delay * 2, 1.0)
        return out

    # ----------------------------------------------------------------- writes
    def commit(self, change: Change) -> None:
        if change.is_empty():
            return
        planned = self._transaction(change)
        if len(planned) > 100:
            raise Conflict("CHANGE_TOO_LARGE", "a change touches more than 100 items")
        try:
            self._call(
                "TransactWriteItems",
                "transact_write_items",
                TransactItems=[action for _, action in planned],
            )
        except self._db.exceptions.TransactionCanceledException as exc:
            reasons = exc.response.get("CancellationReasons") or []
            raise self._cancellation(reasons, [role for role, _ in planned]) from exc

    def _transaction(self, change: Change) -> list[tuple[tuple[str, str], dict[str, Any]]]:
        """(role, action) pairs: roles explain a cancellation reason at the same index."""
        now_ms = int(self._clock() * 1000)
        out: list[tuple[tuple[str, str], dict[str, Any]]] = []
        for c in sorted({p.consortium_id for _, p in change.persons}):
            out.append((("fence", c), {"ConditionCheck": {
                "TableName": self._table, "Key": self._fence_key(c),
                "ConditionExpression": "attribute_not_exists(pk) OR lease_until < :now",
                "ExpressionAttributeValues": {":now": _n(now_ms)},
            }}))  # fmt: skip
        for key, action in self._identifier_writes(change, conditional=True):
            out.append((("identifier", key), action))
        for old, new in change.persons:
            put: dict[str, Any] = {"TableName": self._table, "Item": self._profile_item(new)}
            if old is None:
                put["ConditionExpression"] = "attribute_not_exists(pk)"
            else:
                put["ConditionExpression"] = "version = :v"
                put["ExpressionAttributeValues"] = {":v": _n(old.version)}
            out.append((("person", new.person_id), {"Put": put}))
        consortium_of = {p.person_id: p.consortium_id for _, p in change.persons}
        for block, members in head_updates(change).items():
            c = consortium_of[next(iter(members))]
            out.append((("block", block), {"Update": self._member_update(c, block, members)}))
        return out + self._record_writes(change)

    def _record_writes(self, change: Change) -> list[tuple[tuple[str, str], dict[str, Any]]]:
        """History, review items and merge records of a change, each with its condition."""
        new_only = "attribute_not_exists(pk)"
        out: list[tuple[tuple[str, str], dict[str, Any]]] = [
            (("history", h.person_id), {"Put": {
                "TableName": self._table, "Item": self._history_item(h),
                "ConditionExpression": new_only,
            }})
            for h in change.history
        ]  # fmt: skip
        for old_r, new_r in change.reviews:
            put: dict[str, Any] = {"TableName": self._table, "Item": self._review_item(new_r)}
            if old_r is None:
                put["ConditionExpression"] = new_only
            else:
                put["ConditionExpression"] = "#st = :open"
                put["ExpressionAttributeNames"] = {"#st": "status"}
                put["ExpressionAttributeValues"] = {":open": _s(str(ReviewStatus.OPEN))}
            out.append((("review", new_r.review_id), {"Put": put}))
        for m in change.merges_put:
            out.append((("merge", m.retired_id), {"Put": {
                "TableName": self._table, "Item": self._merge_item(m),
                "ConditionExpression": new_only,
            }}))  # fmt: skip
        for m in change.merges_deleted:
            out.append((("merge", m.retired_id), {"Delete": {
                "TableName": self._table, "Key": self._merge_key(m.retired_id),
                "ConditionExpression": "attribute_exists(pk)",
            }}))  # fmt: skip
        return out

    @staticmethod
    def _cancellation(reasons: list[dict[str, Any]], roles: list[tuple[str, str]]) -> Exception:
        taken: dict[str, str] = {}
        for reason, (role, name) in zip(reasons, roles, strict=False):
            code = reason.get("Code")
            if code in (None, "None"):
                continue
            if code != "ConditionalCheckFailed":
                return StaleVersion(name)  # TransactionConflict and the like: try again
            if role == "fence":
                return WriteFenceHeld()
            if role == "identifier":
                holder = reason.get("Item", {}).get("person_id", {}).get("S", "")
                taken[name] = holder
            elif role == "review":
                return Conflict("REVIEW_CLOSED", "this review item is already decided")
            elif role != "history":
                return StaleVersion(name)
        if taken:
            return IdentifierTaken(taken)
        return StaleVersion("")

    def _identifier_writes(
        self, change: Change, conditional: bool
    ) -> Iterable[tuple[str, dict[str, Any]]]:
        consortium_of = {p.person_id: p.consortium_id for _, p in change.persons}
        for key, (was, now, person) in sorted(identifier_moves(change).items()):
            c = consortium_of.get(was or "") or (person.consortium_id if person else "")
            if now is None:
                op: dict[str, Any] = {"TableName": self._table, "Key": self._id_key(c, key)}
                verb = "Delete"
            else:
                item = {
                    **self._id_key(c, key),
                    "kind": _s("identifier"),
                    "consortium_id": _s(c),
                    "person_id": _s(now),
                }
                op = {"TableName": self._table, "Item": item}
                verb = "Put"
            if conditional:
                op["ReturnValuesOnConditionCheckFailure"] = "ALL_OLD"
                if was is None:
                    op["ConditionExpression"] = "attribute_not_exists(pk)"
                else:
                    op["ConditionExpression"] = "person_id = :was"
                    op["ExpressionAttributeValues"] = {":was": _s(was)}
            yield key, {verb: op}

    def _member_update(
        self, consortium_id: str, block: str, members: Mapping[str, Candidate | None]
    ) -> dict[str, Any]:
        names: dict[str, str] = {"#k": "kind"}
        values: dict[str, Any] = {":k": _s("block")}
        sets, removes = ["#k = :k"], []
        for i, (pid, projection) in enumerate(sorted(members.items())):
            names[f"#m{i}"] = MEMBER + pid
            if projection is None:
                removes.append(f"#m{i}")
            else:
                values[f":m{i}"] = _s(projection_to_json(projection))
                sets.append(f"#m{i} = :m{i}")
        expression = "SET " + ", ".join(sets) + (" REMOVE " + ", ".join(removes) if removes else "")
        return {
            "TableName": self._table,
            "Key": self._block_key(consortium_id, block),
            "UpdateExpression": expression,
            "ExpressionAttributeNames": names,
            "ExpressionAttributeValues": values,
        }

    def _profile_item(self, p: Person) -> dict[str, Any]:
        item = {
            **self._profile_key(p.person_id),
            "kind": _s("person"),
            "consortium_id": _s(p.consortium_id),
            "status": _s(str(p.status)),
            "version": _n(p.version),
            "data": _s(json.dumps(person_to_json(p), ensure_ascii=False)),
        }
        if p.active and p.phone_hash:
            item["gsi1pk"] = _s(f"PH#{p.consortium_id}#{p.phone_hash}")
            item["gsi1sk"] = _s(p.person_id)
        return item

    @staticmethod
    def _history_item(h: HistoryEntry) -> dict[str, Any]:
        body = {
            "person_id": h.person_id,
            "at": h.at,
            "action": h.action,
            "actor": h.actor,
            "actor_role": h.actor_role,
            "reason": h.reason,
            "details": h.details,
        }
        return {
            "pk": _s(f"P#{h.person_id}"),
            "sk": _s(f"H#{h.at}#{uuid.uuid4().hex[:8]}"),
            "kind": _s("history"),
            "data": _s(json.dumps(body, ensure_ascii=False, default=str)),
        }

    def _review_item(self, r: ReviewItem) -> dict[str, Any]:
        item = {
            **self._review_key(r.review_id),
            "kind": _s("review"),
            "consortium_id": _s(r.consortium_id),
            "status": _s(str(r.status)),
            "data": _s(json.dumps(_review_to_json(r), ensure_ascii=False)),
        }
        if r.status is ReviewStatus.OPEN:
            item["gsi1pk"] = _s(f"RQ#{r.consortium_id}")
            item["gsi1sk"] = _s(f"{r.created_at}#{r.review_id}")
        return item

    def _merge_item(self, m: MergeRecord) -> dict[str, Any]:
        return {
            **self._merge_key(m.retired_id),
            "kind": _s("merge"),
            "data": _s(json.dumps(_merge_to_json(m), ensure_ascii=False)),
        }

    # ------------------------------------------------------- bulk: the write fence
    def acquire_fence(self, consortium_id: str, owner: str, lease_seconds: float) -> Fence:
        now = self._clock()
        until = int((now + lease_seconds) * 1000)
        try:
            self._call(
                "PutItem",
                "put_item",
                TableName=self._table,
                Item={
                    **self._fence_key(consortium_id),
                    "kind": _s("fence"),
                    "owner": _s(owner),
                    "lease_until": _n(until),
                },
                ConditionExpression="attribute_not_exists(pk) OR lease_until < :now OR #o = :me",
                ExpressionAttributeNames={"#o": "owner"},
                ExpressionAttributeValues={":now": _n(int(now * 1000)), ":me": _s(owner)},
            )
        except self._db.exceptions.ConditionalCheckFailedException:
            raise WriteFenceHeld() from None
        return Fence(consortium_id, owner, until)

    def renew_fence(self, fence: Fence, lease_seconds: float) -> Fence:
        until = int((self._clock() + lease_seconds) * 1000)
        try:
            self._call(
                "UpdateItem",
                "update_item",
                TableName=self._table,
                Key=self._fence_key(fence.consortium_id),
                UpdateExpression="SET lease_until = :until",
                # an expired lease is not renewed: a commit may have passed meanwhile
                ConditionExpression="#o = :me AND lease_until >= :now",
                ExpressionAttributeNames={"#o": "owner"},
                ExpressionAttributeValues={
                    ":until": _n(until),
                    ":me": _s(fence.owner),
                    ":now": _n(int(self._clock() * 1000)),
                },
            )
        except self._db.exceptions.ConditionalCheckFailedException:
            raise WriteFenceHeld() from None
        return Fence(fence.consortium_id, fence.owner, until)

    def release_fence(self, fence: Fence) -> None:
        try:
            self._call(
                "DeleteItem",
                "delete_item",
                TableName=self._table,
                Key=self._fence_key(fence.consortium_id),
                ConditionExpression="#o = :me",
                ExpressionAttributeNames={"#o": "owner"},
                ExpressionAttributeValues={":me": _s(fence.owner)},
            )
        except self._db.exceptions.ConditionalCheckFailedException:
            pass  # expired and taken by another: nothing of ours to release

    def bulk_write(
        self, fence: Fence, change: Change, heads: Mapping[str, Mapping[str, Candidate]]
    ) -> int:
        """Write a change made under the fence with BatchWriteItem. Blocks are written whole:
        the members read under the fence (`heads`) with this change's updates applied. The
        lease is renewed whenever less than RENEW_MARGIN_S of it is left."""
        # Identifier items go last: a job that dies half-way leaves persons that the blocks
        # still find (their projections carry the identifiers), so a re-run matches them
        # and claims the identifiers, instead of identifiers pointing at nobody.
        requests: list[dict[str, Any]] = [
            {"PutRequest": {"Item": self._profile_item(new)}} for _, new in change.persons
        ]
        for block, updates in head_updates(change).items():
            members = dict(heads.get(block, {}))
            for pid, projection in updates.items():
                if projection is None:
                    members.pop(pid, None)
                else:
                    members[pid] = projection
            item = {**self._block_key(fence.consortium_id, block), "kind": _s("block")}
            for pid, member in members.items():
                item[MEMBER + pid] = _s(projection_to_json(member))
            requests.append({"PutRequest": {"Item": item}})
        requests += [{"PutRequest": {"Item": self._history_item(h)}} for h in change.history]
        requests += [{"PutRequest": {"Item": self._review_item(r)}} for _, r in change.reviews]
        requests += [{"PutRequest": {"Item": self._merge_item(m)}} for m in change.merges_put]
        requests += [
            {"DeleteRequest": {"Key": self._merge_key(m.retired_id)}} for m in change.merges_deleted
        ]
        for _, action in self._identifier_writes(change, conditional=False):
            if "Put" in action:
                requests.append({"PutRequest": {"Item": action["Put"]["Item"]}})
            else:
                requests.append({"DeleteRequest": {"Key": action["Delete"]["Key"]}})
        lease = fence
        for i in range(0, len(requests), BATCH_WRITE):
            if lease.lease_until_ms / 1000 - self._clock() < RENEW_MARGIN_S:
                lease = self.renew_fence(lease, self._lease_seconds)
            self._batch_write(requests[i : i + BATCH_WRITE])
        return len(requests)

    def _batch_write(self, chunk: list[dict[str, Any]]) -> None:
        pending: dict[str, Any] = {self._table: chunk}
        delay = 0.02
        while pending:
            resp = self._call("BatchWriteItem", "batch_write_item", RequestItems=pending)
            pending = resp.get("UnprocessedItems") or {}
            if pending:
                time.sleep(delay)
                delay = min(delay * 2, 1.0)
