"""The in-app inbox (a notification Channel) in the platform table:
`INBOX#{c}#{recipient}` / `{at}#{id}`, kept 90 days (TTL attribute `expires`)."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import Any

from yilian.services.notifications import Notification

KEEP_SECONDS = 90 * 86400


class DynamoInbox:
    def __init__(self, dynamodb: Any, table: str) -> None:
        self._db = dynamodb
        self._table = table

    def deliver(self, n: Notification) -> None:
        """Idempotent on the notification id (a redelivered event writes the same item)."""
        self._db.put_item(
            TableName=self._table,
            Item={
                "pk": {"S": f"INBOX#{n.consortium_id}#{n.recipient}"},
                "sk": {"S": f"{n.at}#{n.notification_id}"},
                "body": {"S": json.dumps(n.to_json(), ensure_ascii=False)},
                "expires": {"N": str(int(time.time()) + KEEP_SECONDS)},
            },
        )

    def for_recipients(
        self, consortium_id: str, recipients: Sequence[str], limit: int = 50
    ) -> list[dict]:
        items: list[dict] = []
        for recipient in recipients:
            out = self._db.query(
                TableName=self._table,
                KeyConditionExpression="pk = :pk",
                ExpressionAttributeValues={":pk": {"S": f"INBOX#{consortium_id}#{recipient}"}},
                ScanIndexForward=False,
                Limit=limit,
            )
            items.extend(json.loads(i["body"]["S"]) for i in out.get("Items", []))
        items.sort(key=lambda n: n["at"], reverse=True)
        return items[:limit]
