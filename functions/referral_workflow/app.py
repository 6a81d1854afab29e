"""Tasks of the referral state machine (statemachines/referral.asl.json).

{"task": "await", "referral_id", "stage", "token"}   the workflow entered a wait: keep its
                                                   task token (or complete it at once when
                                                   the referral already moved on)
{"task": "timeout", "referral_id", "stage"}         the wait's time limit passed -> outcome
                                                   {status, direction, wait_seconds}
"""

from __future__ import annotations

import functools
import os
from typing import Any

from aws_lambda_powertools import Logger

from yilian.settings import Settings

logger = Logger(service="referral-workflow")


@functools.cache
def build_service() -> Any:
    from yilian.adapters.referral_wiring import REFERRAL_SETTINGS, build_referrals

    return build_referrals(Settings.from_env(os.environ).require(*REFERRAL_SETTINGS)).service


@logger.inject_lambda_context
def lambda_handler(event: dict, context: Any) -> dict:
    from yilian.domain.referral import Stage

    service = build_service()
    stage = Stage(event["stage"])
    logger.append_keys(referral_id=event["referral_id"], stage=str(stage))
    if event["task"] == "await":
        kept = service.await_stage(event["referral_id"], stage, event["token"])
        return {"kept": kept}
    if event["task"] == "timeout":
        return dict(service.on_timeout(event["referral_id"], stage))
    raise ValueError(f"unknown task {event['task']!r}")
