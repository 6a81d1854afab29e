"""Imaging wired to AWS from Settings: functions/imaging_ingest (imaging layer),
functions/imaging (API, no pydicom), functions/imaging_render (imaging layer), the demo seed
and the benchmark.

    ingest = build_ingest(Settings.from_env(os.environ).require(*INGEST_SETTINGS))
    ingest.ingest.ingest(consortium_id, key, size)
    imaging = build_imaging(settings)            # the API's service
    imaging = build_imaging(settings, render=True)  # + previews, frames, de-identified export

Clients are built on first use, never at import time; pydicom only loads when `render` or the
ingest asks for it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from yilian.settings import Settings

INGEST_SETTINGS = (
    "consortium_id",
    "imaging_table",
    "imaging_bucket",
    "imaging_queue_url",
    "persons_table",
    "directory_table",
    "platform_table",
    "audit_table",
    "data_key",
)
IMAGING_SETTINGS = (
    "consortium_id",
    "imaging_table",
    "imaging_bucket",
    "records_table",
    "records_bucket",
    "persons_table",
    "directory_table",
    "audit_table",
    "referrals_table",
    "referral_stats_table",
    "bookings_table",
    "platform_table",
)


def imaging_policy(settings: Settings) -> Any:
    from yilian.domain.imaging import ImagingPolicy

    return ImagingPolicy.from_mapping(json.loads(settings.imaging_policy or "{}"))


@dataclass(frozen=True)
class Ingest:
    consortium_id: str
    ingest: Any  # yilian.services.imaging_ingest.ImagingIngest
    sqs: Any
    queue_url: str

    def retry_later(self, receipt_handle: str, attempt: int) -> None:
        """Back-off: the failed message stays invisible for base x 2^(attempt-1) seconds."""
        delay = self.ingest.policy.retry_delay(attempt)
        try:
            self.sqs.change_message_visibility(
                QueueUrl=self.queue_url, ReceiptHandle=receipt_handle, VisibilityTimeout=delay
            )
        except Exception:  # noqa: BLE001 - the retry still happens, only sooner
            return


def build_ingest(settings: Settings) -> Ingest:
    from yilian.adapters.aws import client
    from yilian.adapters.directory_store import DirectoryStore
    from yilian.adapters.empi_wiring import build_empi
    from yilian.adapters.imaging_store import DynamoImagingStore, RaceLost, S3ImagingFiles
    from yilian.imaging.dicom import parse
    from yilian.imaging.render import Undecodable, thumbnail
    from yilian.services.imaging_ingest import EmpiPatientLinker, ImagingIngest

    db = client(settings, "dynamodb")
    empi = build_empi(settings)
    service = ImagingIngest(
        DynamoImagingStore(db, settings.imaging_table),
        S3ImagingFiles(client(settings, "s3"), settings.imaging_bucket),
        EmpiPatientLinker(empi.service),
        DirectoryStore(settings.directory_table, settings.aws_endpoint_url, settings.region),
        parse=parse,
        thumbnail=lambda ds, size: thumbnail(ds, size=size),
        undecodable=Undecodable,
        race_lost=RaceLost,
        policy=imaging_policy(settings),
    )
    return Ingest(settings.consortium_id, service, client(settings, "sqs"),
                  settings.imaging_queue_url)  # fmt: skip


def build_imaging(settings: Settings, *, render: bool = False) -> Any:
    from yilian.adapters.aws import client
    from yilian.adapters.imaging_store import DynamoImagingStore, RaceLost, S3ImagingFiles
    from yilian.adapters.records_wiring import build_records
    from yilian.services.imaging import DeadLetters, ImagingService

    db = client(settings, "dynamodb")
    records = build_records(settings)
    renderer = None
    if render:
        from yilian.imaging.rendering_port import PydicomRenderer

        renderer = PydicomRenderer()
    dead_letters = None
    if settings.imaging_queue_url and settings.imaging_dead_letter_url:
        dead_letters = DeadLetters(client(settings, "sqs"), settings.imaging_queue_url,
                                   settings.imaging_dead_letter_url)  # fmt: skip
    return ImagingService(
        DynamoImagingStore(db, settings.imaging_table),
        S3ImagingFiles(client(settings, "s3"), settings.imaging_bucket),
        records.access,
        records.service,
        policy=imaging_policy(settings),
        race_lost=RaceLost,
        renderer=renderer,
        dead_letters=dead_letters,
    )
