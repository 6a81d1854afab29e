"""Tasks of the consultation state machine (statemachines/consultation.asl.json).

{"task": "start", "consultation_id"}                    -> outcome {status, stage, wait_seconds}
{"task": "await", "consultation_id", "stage", "token"}  the workflow entered a wait: keep its
                                                        task token (or complete it at once when
                                                        the consultation already moved on)
{"task": "timeout", "consultation_id", "stage"}         the wait's limit passed -> outcome
"""

from __future__ import annotations

import functools
import os
from typing import Any

from aws_lambda_powertools import Logger

from yilian.settings import Settings

logger = Logger(service="consultation-workflow")


@functools.cache
def build_service() -> Any:
    from yilian.adapters.consultation_wiring import CONSULTATION_SETTINGS, build_consultations

    return build_consultations(Settings.from_env(os.environ).require(*CONSULTATION_SETTINGS))


@logger.inject_lambda_context
def lambda_handler(event: dict, context: Any) -> dict:
    service = build_service()
    consultation_id = event["consultation_id"]
    logger.append_keys(consultation_id=consultation_id, task=event["task"])
    if event["task"] == "start":
        return service.start_workflow(consultation_id)
    if event["task"] == "await":
        return {"kept": service.await_stage(consultation_id, event["stage"], event["token"])}
    if event["task"] == "timeout":
        return service.on_timeout(consultation_id, event["stage"])
    raise ValueError(f"unknown task {event['task']!r}")
