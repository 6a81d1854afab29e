"""In-app notifications (the inbox the notifier fills).

GET /notifications?limit=   -> {items: [{notification_id, at, kind, title, body,
                                         referral_id}]}  newest first, for the caller, their
                                         institution (or, for a resident, their person) and
                                         the referral centre if they staff it
"""

from __future__ import annotations

import functools
import os
from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.logging import correlation_paths

from yilian.api.http import create_app, principal_of
from yilian.settings import Settings

logger = Logger(service="notifications")
app = create_app()


@functools.cache
def build_inbox() -> Any:
    from yilian.adapters.aws import client
    from yilian.adapters.inbox_store import DynamoInbox

    settings = Settings.from_env(os.environ).require("platform_table")
    return DynamoInbox(client(settings, "dynamodb"), settings.platform_table)


@app.get("/notifications")
def notifications() -> Response[dict]:
    from yilian.services.notifications import recipients_of

    who = principal_of(app)
    limit = min(100, max(1, int(app.current_event.get_query_string_value("limit") or 50)))
    items = build_inbox().for_recipients(who.consortium_id, recipients_of(who), limit)
    return Response(200, "application/json", body={"items": items, "count": len(items)})


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST)
def lambda_handler(event: dict, context: Any) -> dict:
    return app.resolve(event, context)
