"""EventBridge → notifications: every referral event becomes messages for the people it
concerns, delivered through each channel (in-app inbox today; SMS/WeChat adapters later)."""

from __future__ import annotations

import functools
import os
from typing import Any

from aws_lambda_powertools import Logger

from yilian.settings import Settings

logger = Logger(service="notifier")


@functools.cache
def build_notifier() -> Any:
    from yilian.adapters.aws import client
    from yilian.adapters.inbox_store import DynamoInbox
    from yilian.services.notifications import Notifier

    settings = Settings.from_env(os.environ).require("platform_table")
    return Notifier([DynamoInbox(client(settings, "dynamodb"), settings.platform_table)])


@logger.inject_lambda_context
def lambda_handler(event: dict, context: Any) -> dict:
    sent = build_notifier().handle(event.get("detail-type", ""), event.get("detail") or {})
    logger.info("notified", extra={"detail_type": event.get("detail-type"), "sent": sent})
    return {"sent": sent}
