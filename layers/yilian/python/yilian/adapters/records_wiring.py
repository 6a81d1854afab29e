"""The health record wired to AWS from Settings: used by functions/records,
functions/record_access, the demo seed and the benchmark.

    records = build_records(Settings.from_env(os.environ).require(*RECORD_SETTINGS))
    records.service.timeline(principal, person_id, query)
    records.access.open(principal, person_id, AuditAction.READ, "ImagingStudy.read")

Clients are built on first use, never at import time.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from typing import Any

from yilian.settings import Settings

RECORD_SETTINGS = (
    "consortium_id",
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


@dataclass(frozen=True)
class Records:
    service: Any  # yilian.services.records.RecordService
    access: Any  # yilian.services.record_access.RecordAccess
    store: Any  # yilian.adapters.records_store.DynamoRecordsStore


def build_access(settings: Settings, db: Any = None) -> Any:
    """The record-access guard alone (other features call `open` before showing a
    person's clinical data: imaging, consultations)."""
    from yilian.adapters.audit_store import DynamoAuditSink
    from yilian.adapters.aws import client
    from yilian.adapters.booking_store import DynamoBookingStore
    from yilian.adapters.care_relationships import BookingCare, CareRelationships, ReferralCare
    from yilian.adapters.directory_store import DirectoryStore
    from yilian.adapters.inbox_store import DynamoInbox
    from yilian.adapters.persons_store import DynamoPersonsStore
    from yilian.adapters.records_store import DynamoRecordsStore
    from yilian.adapters.referral_store import DynamoReferralStore
    from yilian.domain.access import RecordPolicy
    from yilian.services.record_access import RecordAccess

    db = db or client(settings, "dynamodb")
    policy = RecordPolicy.from_mapping(json.loads(settings.record_policy or "{}"))
    sources: list[Any] = [
        ReferralCare(DynamoReferralStore(db, settings.referrals_table,
                                         settings.referral_stats_table), policy),
        BookingCare(DynamoBookingStore(db, settings.bookings_table), policy),
    ]  # fmt: skip
    if settings.consultations_table:
        from yilian.adapters.care_relationships import ConsultationCare
        from yilian.adapters.consultation_store import DynamoConsultationStore

        sources.append(ConsultationCare(DynamoConsultationStore(db, settings.consultations_table)))
    care = CareRelationships(sources)
    audit = DynamoAuditSink(db, settings.audit_table)
    return RecordAccess(
        DynamoRecordsStore(db, settings.records_table),
        DynamoPersonsStore(db, settings.persons_table),
        care,
        audit,
        DirectoryStore(settings.directory_table, settings.aws_endpoint_url, settings.region),
        audit_reader=audit,
        notices=DynamoInbox(db, settings.platform_table),
        policy=policy,
    )


def build_records(settings: Settings) -> Records:
    from yilian.adapters.aws import client
    from yilian.adapters.persons_store import DynamoPersonsStore
    from yilian.adapters.records_store import DynamoRecordsStore, DynamoUploads, StaleDocument
    from yilian.adapters.subject_index import IndexSubjectResolver
    from yilian.api.fhir_record import validate_bundle
    from yilian.services.records import RecordService

    db = client(settings, "dynamodb")
    access = build_access(settings, db)
    s3 = client(settings, "s3")
    store = DynamoRecordsStore(db, settings.records_table, s3, settings.records_bucket)

    @functools.cache
    def protector() -> Any:
        from yilian.adapters.keyring import load_protector

        return load_protector(client(settings, "kms"), db, settings.platform_table,
                              settings.data_key)  # fmt: skip

    service = RecordService(
        store,
        access,
        IndexSubjectResolver(DynamoPersonsStore(db, settings.persons_table), protector),
        access.audit,
        access.directory,
        validate_fhir=validate_bundle,
        stale=StaleDocument,
        uploads=DynamoUploads(db, settings.records_table, s3, settings.records_bucket),
    )
    return Records(service=service, access=access, store=store)
