"""The booking service wired to AWS from Settings: used by functions/booking,
functions/booking_sweep, functions/booking_referrals and the benchmark.

    booking = build_booking(Settings.from_env(os.environ).require(*BOOKING_SETTINGS))
    booking.service.book(principal, {"slot_id": ...}, idempotency_key)
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from yilian.settings import Settings

BOOKING_SETTINGS = (
    "consortium_id",
    "bookings_table",
    "referrals_table",
    "persons_table",
    "directory_table",
    "audit_table",
)


class ReferralSeam:
    """What booking needs of referrals: read one, show the booking on it."""

    def __init__(self, store: Any) -> None:
        self._store = store

    def get(self, referral_id: str) -> Any:
        found = self._store.get(referral_id)
        return found[0] if found else None

    def attach_appointment(self, referral_id: str, appointment: Mapping[str, Any]) -> None:
        self._store.attach_appointment(referral_id, appointment)


@dataclass(frozen=True)
class Booking:
    service: Any  # yilian.services.booking.BookingService
    store: Any  # yilian.adapters.booking_store.DynamoBookingStore
    idempotency: Any = None

    def bind(self, context: Any) -> Booking:
        if self.idempotency is not None and context is not None:
            self.idempotency.register_lambda_context(context)
        return self


def build_booking(settings: Settings) -> Booking:
    from yilian.adapters.audit_store import DynamoAuditSink
    from yilian.adapters.aws import client
    from yilian.adapters.booking_store import DynamoBookingStore
    from yilian.adapters.directory_store import DirectoryStore
    from yilian.adapters.persons_store import DynamoPersonsStore
    from yilian.adapters.referral_store import DynamoReferralStore
    from yilian.domain.booking import BookingPolicy
    from yilian.services.booking import BookingService

    db = client(settings, "dynamodb")
    idempotency = None
    if settings.idempotency_table:
        from yilian.adapters.idempotency import PowertoolsIdempotency

        idempotency = PowertoolsIdempotency(settings.idempotency_table, db)
    publisher = None
    if settings.event_bus:
        from yilian.adapters.workflow import BOOKING_EVENT_SOURCE, EventBridgePublisher

        publisher = EventBridgePublisher(
            client(settings, "events"), settings.event_bus, source=BOOKING_EVENT_SOURCE
        )
    store = DynamoBookingStore(db, settings.bookings_table)
    referrals = DynamoReferralStore(db, settings.referrals_table, settings.referral_stats_table)
    policy = BookingPolicy.from_mapping(json.loads(settings.booking_policy or "{}"))
    service = BookingService(
        store,
        DirectoryStore(settings.directory_table, settings.aws_endpoint_url, settings.region),
        DynamoPersonsStore(db, settings.persons_table),
        ReferralSeam(referrals),
        DynamoAuditSink(db, settings.audit_table),
        policy=policy,
        publisher=publisher,
        idempotency=idempotency,
    )
    return Booking(service=service, store=store, idempotency=idempotency)
