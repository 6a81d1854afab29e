"""The referral service wired to AWS from Settings: used by functions/referrals,
functions/referral_workflow, functions/referral_events and the benchmark.

    referrals = build_referrals(Settings.from_env(os.environ).require(*REFERRAL_SETTINGS))
    referrals.service.apply(principal, application, idempotency_key)

Clients are built on first use, never at import time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from yilian.settings import Settings

REFERRAL_SETTINGS = (
    "consortium_id",
    "referrals_table",
    "referral_stats_table",
    "persons_table",
    "directory_table",
    "audit_table",
)


@dataclass(frozen=True)
class Referrals:
    service: Any  # yilian.services.referrals.ReferralService
    store: Any  # yilian.adapters.referral_store.DynamoReferralStore
    callbacks: Any  # yilian.adapters.workflow.StepFunctionsCallbacks
    idempotency: Any = None

    def bind(self, context: Any) -> Referrals:
        """Per invocation: the Lambda context, for idempotency records' in-progress expiry."""
        if self.idempotency is not None and context is not None:
            self.idempotency.register_lambda_context(context)
        return self


def build_referrals(settings: Settings) -> Referrals:
    from yilian.adapters.audit_store import DynamoAuditSink
    from yilian.adapters.aws import client
    from yilian.adapters.directory_store import DirectoryStore
    from yilian.adapters.persons_store import DynamoPersonsStore
    from yilian.adapters.referral_store import DynamoReferralStore
    from yilian.adapters.workflow import StepFunctionsCallbacks
    from yilian.domain.referral import TimeLimits
    from yilian.services.referrals import ReferralService

    db = client(settings, "dynamodb")
    idempotency = None
    if settings.idempotency_table:
        from yilian.adapters.idempotency import PowertoolsIdempotency

        idempotency = PowertoolsIdempotency(settings.idempotency_table, db)
    store = DynamoReferralStore(db, settings.referrals_table, settings.referral_stats_table)
    callbacks = StepFunctionsCallbacks(client(settings, "stepfunctions"))
    service = ReferralService(
        store,
        DynamoPersonsStore(db, settings.persons_table),
        DirectoryStore(settings.directory_table, settings.aws_endpoint_url, settings.region),
        DynamoAuditSink(db, settings.audit_table),
        callbacks,
        limits=TimeLimits.from_json(settings.referral_limits),
        idempotency=idempotency,
    )
    return Referrals(service=service, store=store, callbacks=callbacks, idempotency=idempotency)
