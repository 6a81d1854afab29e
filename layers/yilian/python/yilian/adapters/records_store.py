"""Health-record documents and record-access grants in DynamoDB (RecordsTable) and S3.

    DOC#{doc_id}        HEAD                       the current version, person, timeline key
    DOC#{doc_id}        V#{version:06d}            every version ever submitted (never removed)
    PERSON#{person}     DOC#{effective}#{doc_id}   the timeline entry (+ gzip'd facts)
    ACCESS#{person}     CONSENT#{consent_id}       consents the person granted
    ACCESS#{person}     PROXY#{proxy_person}       who may read for the person
        gsi1 PROXYOF#{proxy_person}  {person}      a resident's dependents
    ACCESS#{person}     GLASS#{subject}#{started}  break-glass grants on the person
    UPLOAD#{upload_id}  UPLOAD                     a large bundle sent through S3, its outcome

A person's timeline, summary and searches are one query of their PERSON# partition: the
cost follows their own documents, never the table. A document's bundle is stored inline
(gzip) when small, in the records bucket when large; versions are kept by key, and a
submit is ONE transaction (head with its version condition, the version, the timeline
entry), so nothing is ever half-written.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterable, Mapping
from dataclasses import asdict
from typing import Any

from yilian.domain.access import BreakGlass, Consent, Proxy, Relation
from yilian.domain.record import Entry, Kind

INLINE_LIMIT = 96 * 1024  # compressed bytes kept in the item; larger goes to S3
TIMELINE_FIELDS = (
    "doc_id", "person_id", "institution_id", "source_id", "kind", "effective", "title",
    "author", "version", "submitted_at", "submitted_by", "resource_count",
)  # fmt: skip


class StaleDocument(Exception):
    """The document changed (or appeared) since it was read: the caller re-reads."""


def _s(v: str) -> dict[str, str]:
    return {"S": v}


def _zip(value: Any) -> bytes:
    return gzip.compress(json.dumps(value, ensure_ascii=False).encode(), compresslevel=5)


def _unzip(blob: bytes) -> Any:
    return json.loads(gzip.decompress(blob))


class DynamoRecordsStore:
    def __init__(self, dynamodb: Any, table: str, s3: Any = None, bucket: str = "") -> None:
        self._db = dynamodb
        self._table = table
        self._s3 = s3
        self._bucket = bucket

    # ------------------------------------------------------------------ blobs
    def _blob(self, key: str, value: Any) -> dict[str, Any]:
        """An attribute holding `value`: inline gzip, or a pointer to S3 when large. The S3
        object is written before the transaction; its key is content-addressed by the
        caller, so a failed transaction leaves only an unreferenced duplicate."""
        data = _zip(value)
        if len(data) <= INLINE_LIMIT or self._s3 is None:
            return {"B": data}
        self._s3.put_object(
            Bucket=self._bucket, Key=key, Body=data, ContentType="application/json",
            ContentEncoding="gzip", ServerSideEncryption="AES256",
        )  # fmt: skip
        return {"S": f"s3:{key}"}

    def _unblob(self, attr: Mapping[str, Any] | None) -> Any:
        if not attr:
            return None
        if "B" in attr:
            return _unzip(bytes(attr["B"]))
        key = str(attr["S"])[3:]
        return _unzip(self._s3.get_object(Bucket=self._bucket, Key=key)["Body"].read())

    # ------------------------------------------------------------------ documents
    def head(self, doc_id: str) -> dict[str, Any] | None:
        item = self._db.get_item(
            TableName=self._table, Key={"pk": _s(f"DOC#{doc_id}"), "sk": _s("HEAD")},
            ConsistentRead=True,
        ).get("Item")  # fmt: skip
        return json.loads(item["data"]["S"]) if item else None

    def save_version(
        self,
        entry: Entry,
        bundle: Mapping[str, Any],
        body_hash: str,
        previous: Mapping[str, Any] | None,
    ) -> None:
        """Version `entry.version` of a document in one transaction. `previous` is the head
        read before (None for a new document): the write fails if it changed since."""
        doc, v = entry.doc_id, entry.version
        tl_sk = f"DOC#{entry.effective}#{doc}"
        head = {
            "doc_id": doc, "person_id": entry.person_id, "institution_id": entry.institution_id,
            "source_id": entry.source_id, "version": v, "body_hash": body_hash,
            "timeline_sk": tl_sk, "kind": str(entry.kind), "effective": entry.effective,
        }  # fmt: skip
        head_put: dict[str, Any] = {
            "TableName": self._table,
            "Item": {"pk": _s(f"DOC#{doc}"), "sk": _s("HEAD"), "data": _s(json.dumps(head)),
                     "version": {"N": str(v)}},
        }  # fmt: skip
        if previous is None:
            head_put["ConditionExpression"] = "attribute_not_exists(pk)"
        else:
            head_put["ConditionExpression"] = "version = :v"
            head_put["ExpressionAttributeValues"] = {":v": {"N": str(previous["version"])}}
        version_item = {
            "pk": _s(f"DOC#{doc}"), "sk": _s(f"V#{v:06d}"),
            "body": self._blob(f"bodies/{doc}/{body_hash}.json.gz", bundle),
            "body_hash": _s(body_hash), "submitted_at": _s(entry.submitted_at),
            "submitted_by": _s(entry.submitted_by),
        }  # fmt: skip
        entry_item = {
            "pk": _s(f"PERSON#{entry.person_id}"), "sk": _s(tl_sk),
            "entry": _s(json.dumps({f: _plain(getattr(entry, f)) for f in TIMELINE_FIELDS},
                                   ensure_ascii=False)),
            "kind": _s(str(entry.kind)), "institution_id": _s(entry.institution_id),
            "facts": self._blob(f"facts/{doc}/{body_hash}.json.gz", list(entry.facts)),
        }  # fmt: skip
        writes: list[dict[str, Any]] = [
            {"Put": head_put},
            {"Put": {"TableName": self._table, "Item": version_item,
                     "ConditionExpression": "attribute_not_exists(pk)"}},
            {"Put": {"TableName": self._table, "Item": entry_item}},
        ]  # fmt: skip
        if previous is not None and previous["timeline_sk"] != tl_sk:
            old = {"pk": _s(f"PERSON#{previous['person_id']}"), "sk": _s(previous["timeline_sk"])}
            writes.append({"Delete": {"TableName": self._table, "Key": old}})
        try:
            self._db.transact_write_items(TransactItems=writes)
        except self._db.exceptions.TransactionCanceledException as exc:
            raise StaleDocument(doc) from exc

    def version(self, doc_id: str, version: int) -> dict[str, Any] | None:
        item = self._db.get_item(
            TableName=self._table, Key={"pk": _s(f"DOC#{doc_id}"), "sk": _s(f"V#{version:06d}")},
        ).get("Item")  # fmt: skip
        if not item:
            return None
        return {
            "bundle": self._unblob(item["body"]),
            "body_hash": item["body_hash"]["S"],
            "submitted_at": item["submitted_at"]["S"],
            "submitted_by": item["submitted_by"]["S"],
        }

    def versions(self, doc_id: str) -> list[dict[str, Any]]:
        out = self._query(
            KeyConditionExpression="pk = :pk AND begins_with(sk, :v)",
            ExpressionAttributeValues={":pk": _s(f"DOC#{doc_id}"), ":v": _s("V#")},
            ProjectionExpression="sk, body_hash, submitted_at, submitted_by",
        )
        return [
            {"version": int(i["sk"]["S"][2:]), "body_hash": i["body_hash"]["S"],
             "submitted_at": i["submitted_at"]["S"], "submitted_by": i["submitted_by"]["S"]}
            for i in out
        ]  # fmt: skip

    def timeline(
        self,
        person_ids: Iterable[str],
        *,
        since: str = "",
        until: str = "",
        kinds: Iterable[str] = (),
        institution_id: str = "",
        with_facts: bool = False,
    ) -> list[Entry]:
        """Every document of these persons (a survivor and the persons merged into it),
        newest first; one query per person, filtered inside DynamoDB."""
        entries: list[Entry] = []
        for person_id in person_ids:
            values: dict[str, Any] = {
                ":pk": _s(f"PERSON#{person_id}"),
                ":lo": _s(f"DOC#{since}"),
                ":hi": _s(f"DOC#{until or '9999'}~"),
            }
            kwargs: dict[str, Any] = {
                "KeyConditionExpression": "pk = :pk AND sk BETWEEN :lo AND :hi",
                "ScanIndexForward": False,
            }
            filters, names = [], {}
            kinds = list(kinds)
            if kinds:
                names["#k"] = "kind"
                keys = [f":k{n}" for n in range(len(kinds))]
                filters.append(f"#k IN ({', '.join(keys)})")
                values.update({k: _s(v) for k, v in zip(keys, kinds, strict=True)})
            if institution_id:
                filters.append("institution_id = :inst")
                values[":inst"] = _s(institution_id)
            if filters:
                kwargs["FilterExpression"] = " AND ".join(filters)
            if names:
                kwargs["ExpressionAttributeNames"] = names
            if not with_facts:
                kwargs["ProjectionExpression"] = "entry"
            kwargs["ExpressionAttributeValues"] = values
            for item in self._query(**kwargs):
                entries.append(self._entry(item, with_facts))
        entries.sort(key=lambda e: (e.effective, e.doc_id), reverse=True)
        return entries

    def entry(self, head: Mapping[str, Any]) -> Entry | None:
        """A document's timeline entry, from its head (one GetItem, no facts)."""
        item = self._db.get_item(
            TableName=self._table,
            Key={"pk": _s(f"PERSON#{head['person_id']}"), "sk": _s(head["timeline_sk"])},
            ProjectionExpression="entry",
        ).get("Item")
        return self._entry(item, False) if item else None

    def _entry(self, item: Mapping[str, Any], with_facts: bool) -> Entry:
        data = json.loads(item["entry"]["S"])
        data["kind"] = Kind(data["kind"])
        facts = tuple(self._unblob(item.get("facts")) or ()) if with_facts else ()
        return Entry(**data, facts=facts)

    def _query(self, **kwargs: Any) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        while True:
            page = self._db.query(TableName=self._table, **kwargs)
            items.extend(page.get("Items", []))
            if "LastEvaluatedKey" not in page:
                return items
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    # ------------------------------------------------------------------ access grants
    def access_facts(self, person_id: str) -> tuple[list[Consent], list[Proxy], list[BreakGlass]]:
        """Consents, proxies and break-glass grants on a person: one query."""
        consents, proxies, glass = [], [], []
        for item in self._query(
            KeyConditionExpression="pk = :pk",
            ExpressionAttributeValues={":pk": _s(f"ACCESS#{person_id}")},
            ConsistentRead=True,
        ):
            sk, data = item["sk"]["S"], json.loads(item["data"]["S"])
            if sk.startswith("CONSENT#"):
                consents.append(Consent(**data))
            elif sk.startswith("PROXY#"):
                proxies.append(Proxy(**{**data, "relation": Relation(data["relation"])}))
            elif sk.startswith("GLASS#"):
                glass.append(BreakGlass(**data))
        return consents, proxies, glass

    def put_consent(self, consent: Consent, *, new: bool) -> None:
        item = {
            "pk": _s(f"ACCESS#{consent.person_id}"), "sk": _s(f"CONSENT#{consent.consent_id}"),
            "data": _s(json.dumps(asdict(consent), ensure_ascii=False)),
        }  # fmt: skip
        cond = "attribute_not_exists(pk)" if new else "attribute_exists(pk)"
        self._db.put_item(TableName=self._table, Item=item, ConditionExpression=cond)

    def put_proxy(self, proxy: Proxy) -> None:
        data = {**asdict(proxy), "relation": str(proxy.relation)}
        self._db.put_item(
            TableName=self._table,
            Item={
                "pk": _s(f"ACCESS#{proxy.person_id}"), "sk": _s(f"PROXY#{proxy.proxy_person_id}"),
                "gsi1pk": _s(f"PROXYOF#{proxy.proxy_person_id}"), "gsi1sk": _s(proxy.person_id),
                "data": _s(json.dumps(data, ensure_ascii=False)),
            },
        )  # fmt: skip

    def dependents(self, proxy_person_id: str) -> list[Proxy]:
        items = self._query(
            IndexName="gsi1",
            KeyConditionExpression="gsi1pk = :pk",
            ExpressionAttributeValues={":pk": _s(f"PROXYOF#{proxy_person_id}")},
        )
        out = []
        for item in items:
            data = json.loads(item["data"]["S"])
            out.append(Proxy(**{**data, "relation": Relation(data["relation"])}))
        return out

    def put_break_glass(self, grant: BreakGlass) -> None:
        self._db.put_item(
            TableName=self._table,
            Item={
                "pk": _s(f"ACCESS#{grant.person_id}"),
                "sk": _s(f"GLASS#{grant.actor_subject}#{grant.started_at}#{grant.grant_id}"),
                "data": _s(json.dumps(asdict(grant), ensure_ascii=False)),
            },
            ConditionExpression="attribute_not_exists(pk)",
        )


class DynamoUploads:
    """Bundles too large for the API (> 6 MB) arrive by presigned S3 PUT under
    uploads/{consortium}/{institution}/{upload_id}.json; the upload item remembers who asked
    (the caller the document is submitted as) and, later, the outcome."""

    def __init__(self, dynamodb: Any, table: str, s3: Any, bucket: str) -> None:
        self._db = dynamodb
        self._table = table
        self._s3 = s3
        self._bucket = bucket

    @staticmethod
    def _key(upload_id: str) -> dict[str, Any]:
        return {"pk": _s(f"UPLOAD#{upload_id}"), "sk": _s("UPLOAD")}

    def create(self, upload: Mapping[str, Any], seconds: int) -> str:
        self._db.put_item(
            TableName=self._table,
            Item={**self._key(upload["upload_id"]), "data": _s(json.dumps(upload)),
                  "state": _s("waiting")},
            ConditionExpression="attribute_not_exists(pk)",
        )  # fmt: skip
        return str(
            self._s3.generate_presigned_url(
                "put_object",
                Params={"Bucket": self._bucket, "Key": upload["key"],
                        "ContentType": "application/fhir+json"},
                ExpiresIn=seconds,
            )
        )  # fmt: skip

    def get(self, upload_id: str) -> dict[str, Any] | None:
        item = self._db.get_item(
            TableName=self._table, Key=self._key(upload_id), ConsistentRead=True
        ).get("Item")
        if not item:
            return None
        out = json.loads(item["data"]["S"])
        out["state"] = item["state"]["S"]
        if "outcome" in item:
            out["outcome"] = json.loads(item["outcome"]["S"])
        return dict(out)

    def claim(self, upload_id: str) -> bool:
        """waiting -> running, once: S3 delivers its event at least once."""
        try:
            self._db.update_item(
                TableName=self._table, Key=self._key(upload_id),
                UpdateExpression="SET #s = :running",
                ConditionExpression="#s = :waiting",
                ExpressionAttributeNames={"#s": "state"},
                ExpressionAttributeValues={":running": _s("running"), ":waiting": _s("waiting")},
            )  # fmt: skip
        except self._db.exceptions.ConditionalCheckFailedException:
            return False
        return True

    def finish(self, upload_id: str, state: str, outcome: Mapping[str, Any]) -> None:
        self._db.update_item(
            TableName=self._table, Key=self._key(upload_id),
            UpdateExpression="SET #s = :state, outcome = :outcome",
            ExpressionAttributeNames={"#s": "state"},
            ExpressionAttributeValues={":state": _s(state),
                                       ":outcome": _s(json.dumps(outcome, ensure_ascii=False))},
        )  # fmt: skip

    def read(self, key: str, max_bytes: int) -> bytes | None:
        """The uploaded body, or None when it is larger than `max_bytes`."""
        head = self._s3.head_object(Bucket=self._bucket, Key=key)
        if int(head.get("ContentLength") or 0) > max_bytes:
            return None
        return bytes(self._s3.get_object(Bucket=self._bucket, Key=key)["Body"].read())


def _plain(value: Any) -> Any:
    return str(value) if isinstance(value, Kind) else value
