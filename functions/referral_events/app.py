"""The referrals table's stream: start each new referral's workflow, publish every status
change to the event bus (yilian.services.referral_events). A failing batch is retried
(bisected) by the event source mapping and lands in the dead-letter queue after that."""

from __future__ import annotations

import functools
import os
from typing import Any

from aws_lambda_powertools import Logger

from yilian.settings import Settings

logger = Logger(service="referral-events")


@functools.cache
def build_relay() -> Any:
    from yilian.adapters.aws import client
    from yilian.adapters.workflow import EventBridgePublisher, StepFunctionsCallbacks
    from yilian.services.referral_events import ReferralEventRelay

    settings = Settings.from_env(os.environ).require("referral_state_machine", "event_bus")
    return ReferralEventRelay(
        StepFunctionsCallbacks(client(settings, "stepfunctions")),
        EventBridgePublisher(client(settings, "events"), settings.event_bus),
        settings.referral_state_machine,
    )


@logger.inject_lambda_context
def lambda_handler(event: dict, context: Any) -> dict:
    from yilian.adapters.referral_store import referral_from_image

    changes = []
    for record in event.get("Records", []):
        images = record.get("dynamodb", {})
        new = images.get("NewImage")
        if not new or not new.get("pk", {}).get("S", "").startswith("REF#"):
            continue
        old = images.get("OldImage")
        changes.append((referral_from_image(old) if old else None, referral_from_image(new)))
    published = build_relay().relay(changes)
    logger.info("relayed referral changes", extra={"changes": len(changes), "events": published})
    return {"changes": len(changes), "events": published}
