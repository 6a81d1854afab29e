"""Scheduled (every 15 minutes): appointments whose slot has ended become no-shows; repeated
no-shows suspend a resident's booking for the penalty window."""

from __future__ import annotations

import functools
import os
from typing import Any

from aws_lambda_powertools import Logger

from yilian.settings import Settings

logger = Logger(service="booking-sweep")


@functools.cache
def build_service() -> Any:
    from yilian.adapters.booking_wiring import BOOKING_SETTINGS, build_booking

    settings = Settings.from_env(os.environ).require(*BOOKING_SETTINGS)
    return build_booking(settings).service, settings.consortium_id


@logger.inject_lambda_context
def lambda_handler(event: dict, context: Any) -> dict:
    service, consortium_id = build_service()
    out = service.mark_no_shows(consortium_id, event.get("days") or None)
    logger.info("no-show sweep", extra=out)
    return dict(out)
