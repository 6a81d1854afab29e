"""Append-only audit trail in DynamoDB (the AuditSink port).

    PERSON#{c}#{person}   {recorded}#{id}   one item per person touched: "who saw my record"
        gsi1 ACTOR#{c}#{subject}  {recorded}#{id}   on the event's first item only: by actor
        gsi2 FLAG#{c}#{flag}      {recorded}#{id}   flagged events (break-glass) for review

Items are only ever put with attribute_not_exists: this module has no update or delete
path, and the functions' IAM policies grant PutItem and Query on the table, nothing else.
Retention: no TTL attribute; the table is retained on stack deletion (template.yaml) so the
six months the Cybersecurity Law asks for are a floor, not a schedule.
"""

from __future__ import annotations

import base64
import json
import uuid
from typing import Any

from yilian.domain.audit import AuditEvent
from yilian.domain.errors import InvalidInput


def _start_key(cursor: str) -> dict[str, Any]:
    """The next page's start, from the cursor a previous page returned."""
    try:
        key = json.loads(base64.urlsafe_b64decode(cursor.encode()))
    except (ValueError, TypeError):
        key = None
    if not isinstance(key, dict) or "pk" not in key:
        raise InvalidInput("CURSOR_INVALID", "the cursor is not one a previous page returned")
    return key


class DynamoAuditSink:
    def __init__(self, dynamodb: Any, table: str) -> None:
        self._db = dynamodb
        self._table = table

    def record(self, event: AuditEvent) -> None:
        event_id = uuid.uuid4().hex
        subjects = event.person_ids or ("-",)
        for n, person_id in enumerate(subjects):
            self._db.put_item(
                TableName=self._table,
                Item=self._item(event, event_id, person_id, first=n == 0),
                ConditionExpression="attribute_not_exists(pk)",
            )

    def for_person(self, consortium_id: str, person_id: str, limit: int = 100) -> list[dict]:
        """Newest first: the resident's 'who accessed my record' view."""
        return self.query("person", consortium_id, person_id, limit=limit)[0]

    def query(
        self,
        by: str,
        consortium_id: str,
        value: str,
        *,
        since: str = "",
        until: str = "",
        limit: int = 100,
        cursor: str | None = None,
    ) -> tuple[list[dict[str, Any]], str | None]:
        """Events by person, actor (subject) or flag, newest first, within [since, until]
        (ISO dates or times); returns (events, cursor for the next page)."""
        index, prefix = {"person": (None, "PERSON"), "actor": ("gsi1", "ACTOR"),
                         "flag": ("gsi2", "FLAG")}[by]  # fmt: skip
        pk, sk = ("pk", "sk") if index is None else (f"{index}pk", f"{index}sk")
        kwargs: dict[str, Any] = {
            "TableName": self._table,
            "KeyConditionExpression": f"{pk} = :pk AND {sk} BETWEEN :lo AND :hi",
            "ExpressionAttributeValues": {
                ":pk": {"S": f"{prefix}#{consortium_id}#{value}"},
                ":lo": {"S": since or "0"},
                ":hi": {"S": (until or "9999") + "~"},
            },
            "ScanIndexForward": False,
            "Limit": max(1, min(limit, 500)),
        }
        if index:
            kwargs["IndexName"] = index
        if cursor:
            kwargs["ExclusiveStartKey"] = _start_key(cursor)
        out = self._db.query(**kwargs)
        last = out.get("LastEvaluatedKey")
        token = base64.urlsafe_b64encode(json.dumps(last).encode()).decode() if last else None
        return [json.loads(i["event"]["S"]) for i in out.get("Items", [])], token

    @staticmethod
    def _item(event: AuditEvent, event_id: str, person_id: str, first: bool) -> dict[str, Any]:
        body = {
            "id": event_id,
            "recorded": event.recorded_at,
            "action": str(event.action),
            "what": event.what,
            "outcome": str(event.outcome),
            "purpose": event.purpose,
            "agent": {
                "subject": event.actor_subject,
                "name": event.actor_name,
                "role": event.actor_role,
                "institution": event.actor_institution,
            },
            "persons": list(event.person_ids),
            "detail": event.detail,
            "flag": event.flag,
        }
        sort = f"{event.recorded_at}#{event_id}"
        item: dict[str, Any] = {
            "pk": {"S": f"PERSON#{event.consortium_id}#{person_id}"},
            "sk": {"S": sort},
            "event": {"S": json.dumps(body, ensure_ascii=False)},
        }
        if first:
            item["gsi1pk"] = {"S": f"ACTOR#{event.consortium_id}#{event.actor_subject}"}
            item["gsi1sk"] = {"S": sort}
            if event.flag:
                item["gsi2pk"] = {"S": f"FLAG#{event.consortium_id}#{event.flag}"}
                item["gsi2sk"] = {"S": sort}
        return item
