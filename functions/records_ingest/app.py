"""Large health-record bundles (over the API's 6 MB): S3 ObjectCreated on
uploads/{consortium}/{institution}/{upload_id}.json submits the bundle as the clinician who
asked for the upload URL (POST /records/uploads), with the same checks as the API; the
outcome (created / unchanged, or the error) is kept on the upload for
GET /records/uploads/{id}. A key no upload expects, or a second delivery, is ignored.
"""

from __future__ import annotations

import functools
import os
from typing import Any
from urllib.parse import unquote_plus

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.data_classes import S3Event, event_source

from yilian.settings import Settings

logger = Logger(service="records-ingest")


@functools.cache
def build_service() -> Any:
    from yilian.adapters.records_wiring import RECORD_SETTINGS, build_records

    return build_records(Settings.from_env(os.environ).require(*RECORD_SETTINGS)).service


@logger.inject_lambda_context(clear_state=True)
@event_source(data_class=S3Event)
def lambda_handler(event: S3Event, context: Any) -> dict[str, Any]:
    outcomes = []
    for record in event.records:
        key = unquote_plus(record.s3.get_object.key)
        result = build_service().ingest_upload(key)
        outcome = {"key": key, "handled": result is not None}
        if result and "error" in result:
            outcome["error"] = result["error"]["code"]
        logger.info("records upload", extra=outcome)
        outcomes.append(outcome)
    return {"uploads": outcomes}
