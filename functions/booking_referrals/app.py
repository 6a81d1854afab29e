"""EventBridge ReferralAccepted -> a place from the receiving department's reserved quota
(the referral issue's seam); the booking then shows on the referral."""

from __future__ import annotations

import functools
import os
from typing import Any

from aws_lambda_powertools import Logger

from yilian.settings import Settings

logger = Logger(service="booking-referrals")


@functools.cache
def build_service() -> Any:
    from yilian.adapters.booking_wiring import BOOKING_SETTINGS, build_booking

    return build_booking(Settings.from_env(os.environ).require(*BOOKING_SETTINGS)).service


@logger.inject_lambda_context
def lambda_handler(event: dict, context: Any) -> dict:
    detail = event.get("detail") or {}
    logger.append_keys(referral_id=detail.get("referral_id"))
    out = build_service().book_for_referral(detail)
    logger.info("referral booking", extra={"status": out["status"]})
    return {"status": out["status"]}
