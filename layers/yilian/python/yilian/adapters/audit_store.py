"""Append-only audit trail in DynamoDB (the AuditSink port).

One item per person touched, keyed by person then time, so "who looked at my record" is a
single query. Items are only ever put with attribute_not_exists: this module has no update
or delete path, by design.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from yilian.domain.audit import AuditEvent


class DynamoAuditSink:
    def __init__(self, dynamodb: Any, table: str) -> None:
        self._db = dynamodb
        self._table = table

    def record(self, event: AuditEvent) -> None:
        event_id = uuid.uuid4().hex
        subjects = event.person_ids or ("-",)
        for person_id in subjects:
            self._db.put_item(
                TableName=self._table,
                Item=self._item(event, event_id, person_id),
                ConditionExpression="attribute_not_exists(pk)",
            )

    def for_person(self, consortium_id: str, person_id: str, limit: int = 100) -> list[dict]:
        """Newest first: the resident's 'who accessed my record' view."""
        out = self._db.query(
            TableName=self._table,
            KeyConditionExpression="pk = :pk",
            ExpressionAttributeValues={":pk": {"S": f"PERSON#{consortium_id}#{person_id}"}},
            ScanIndexForward=False,
            Limit=limit,
        )
        return [json.loads(i["event"]["S"]) for i in out.get("Items", [])]

    @staticmethod
    def _item(event: AuditEvent, event_id: str, person_id: str) -> dict[str, Any]:
        body = {
            "id": event_id,
            "recorded": event.recorded_at,
            "action": str(event.action),
            "what": event.what,
            "outcome": str(event.outcome),
            "purpose": event.purpose,
            "agent": {
                "subject": event.actor_subject,
                "role": event.actor_role,
                "institution": event.actor_institution,
            },
            "persons": list(event.person_ids),
            "detail": event.detail,
        }
        return {
            "pk": {"S": f"PERSON#{event.consortium_id}#{person_id}"},
            "sk": {"S": f"{event.recorded_at}#{event_id}"},
            "event": {"S": json.dumps(body, ensure_ascii=False)},
        }
