"""The patient index wired to AWS from Settings: used by functions/empi_api, functions/
empi_import and benchmarks (any endpoint: Settings.aws_endpoint_url).

    from yilian.adapters.empi_wiring import build_empi
    empi = build_empi(Settings.from_env(os.environ).require(*EMPI_SETTINGS))
    empi.service.register(principal, body)          # one registration
    empi.importer.import_rows(principal, "qiaotou", rows)  # bulk, rows in memory
    empi.store.requests                              # DynamoDB requests made, by operation

Clients are built here, on first use, never at import time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from yilian.settings import Settings

EMPI_SETTINGS = (
    "consortium_id",
    "persons_table",
    "directory_table",
    "platform_table",
    "audit_table",
    "data_key",
    "import_bucket",
)


@dataclass(frozen=True)
class Empi:
    service: Any  # yilian.services.empi.EmpiService
    importer: Any  # yilian.services.bulk_import.BulkImporter
    store: Any  # yilian.adapters.persons_store.DynamoPersonsStore
    idempotency: Any = None  # yilian.adapters.idempotency.PowertoolsIdempotency

    def bind(self, context: Any) -> Empi:
        """Per invocation: the Lambda context, for idempotency records' in-progress expiry."""
        if self.idempotency is not None and context is not None:
            self.idempotency.register_lambda_context(context)
        return self


def build_empi(settings: Settings, *, protector: Any = None, chunk_size: int = 500) -> Empi:
    """Service, bulk importer and store over the settings' tables, bucket and data key.
    `protector` replaces the KMS-wrapped identifier key (benchmarks may pass a
    LocalKeyProtector); the idempotency table is used when configured."""
    from yilian.adapters.audit_store import DynamoAuditSink
    from yilian.adapters.aws import client
    from yilian.adapters.directory_store import DirectoryStore
    from yilian.adapters.import_files import DynamoImportJobs, S3ImportFiles
    from yilian.adapters.keyring import load_protector
    from yilian.adapters.persons_store import DynamoPersonsStore
    from yilian.services.bulk_import import BulkImporter
    from yilian.services.empi import EmpiService

    db = client(settings, "dynamodb")
    if protector is None:
        kms = client(settings, "kms")
        protector = load_protector(kms, db, settings.platform_table, settings.data_key)
    idempotency = None
    if settings.idempotency_table:
        from yilian.adapters.idempotency import PowertoolsIdempotency

        idempotency = PowertoolsIdempotency(settings.idempotency_table, db)
    store = DynamoPersonsStore(db, settings.persons_table)
    service = EmpiService(
        store,
        protector,
        DirectoryStore(settings.directory_table, settings.aws_endpoint_url, settings.region),
        DynamoAuditSink(db, settings.audit_table),
        match_threshold=settings.match_threshold,
        review_threshold=settings.review_threshold,
        idempotency=idempotency,
    )
    files = S3ImportFiles(client(settings, "s3"), settings.import_bucket)
    importer = BulkImporter(
        service, files, DynamoImportJobs(db, settings.platform_table), chunk_size=chunk_size
    )
    return Empi(service=service, importer=importer, store=store, idempotency=idempotency)
