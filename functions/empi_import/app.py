"""Bulk registration runner: S3 ObjectCreated on imports/{consortium}/{institution}/{job}.{csv|
jsonl} runs that job (services/bulk_import.py): rows matched, new, queued or rejected, a report
at reports/..., the job's status and counts in the platform table. A key no job expects is
ignored; a job already running or done is left alone (S3 delivers at least once).
"""

from __future__ import annotations

import functools
import os
from typing import Any
from urllib.parse import unquote_plus

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.data_classes import S3Event, event_source

from yilian.settings import Settings

logger = Logger(service="empi-import")


@functools.cache
def build_importer() -> Any:
    from yilian.adapters.empi_wiring import EMPI_SETTINGS, build_empi

    return build_empi(Settings.from_env(os.environ).require(*EMPI_SETTINGS)).importer


@logger.inject_lambda_context(clear_state=True)
@event_source(data_class=S3Event)
def lambda_handler(event: S3Event, context: Any) -> dict[str, Any]:
    jobs = []
    for record in event.records:
        key = unquote_plus(record.s3.get_object.key)  # keys come URL-encoded; ids only inside
        job = build_importer().run_uploaded(key)
        outcome = {"key": key, "status": job.status if job else "ignored"}
        if job:
            outcome |= {"job_id": job.job_id, "counts": job.counts, "error": job.error}
        logger.info("import file", extra=outcome)
        jobs.append(outcome)
    return {"jobs": jobs}
