"""DICOM arriving in the imaging bucket (dicom/{consortium}/{institution}/...) is indexed here.

S3 ObjectCreated -> the ingest queue -> this function, a batch of messages at a time. A bad
file is rejected with its reason (never retried); an unexpected error is kept on the file's
status, the message's visibility is pushed out (back-off: base x 2^(attempt-1)) and it is
reported as a batch item failure, so SQS retries it and, after the queue's maxReceiveCount,
moves it to the dead-letter queue for the re-drive screen. Nothing is lost or skipped.
"""

from __future__ import annotations

import functools
import json
import os
from typing import Any
from urllib.parse import unquote_plus

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.batch import (
    BatchProcessor,
    EventType,
    process_partial_response,
)
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

from yilian.settings import Settings

logger = Logger(service="imaging-ingest")


@functools.cache
def build() -> Any:
    from yilian.adapters.imaging_wiring import INGEST_SETTINGS, build_ingest

    return build_ingest(Settings.from_env(os.environ).require(*INGEST_SETTINGS))


def handle(record: SQSRecord) -> None:
    wiring = build()
    attempt = int(record.attributes.approximate_receive_count or 1)
    body = json.loads(record.body or "{}")
    for s3 in body.get("Records", []):  # an s3:TestEvent has none
        key = unquote_plus(s3["s3"]["object"]["key"])
        size = s3["s3"]["object"].get("size")
        try:
            status = wiring.ingest.ingest(wiring.consortium_id, key, size, attempt)
        except Exception as error:
            wiring.ingest.record_failure(key, attempt, error)
            wiring.retry_later(record.receipt_handle, attempt)
            logger.exception("imaging ingest failed", extra={"key": key, "attempt": attempt})
            raise
        logger.info("imaging object", extra={k: status.get(k) for k in ("key", "status", "code")})


@logger.inject_lambda_context(clear_state=True)
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    # A processor per invocation: it keeps the batch's outcomes on itself, and the local
    # stack runs concurrent invocations of one module in threads.
    processor = BatchProcessor(event_type=EventType.SQS)
    return process_partial_response(
        event=event, record_handler=handle, processor=processor, context=context
    )
