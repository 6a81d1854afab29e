"""Care relationships (诊疗关系) that let a doctor read a person's record, read from the
stores that own them: referrals, bookings and consultations; family-doctor contracts plug in
here as a further source when their issue lands.

A source answers `find(who, person_id, now)` with a short basis ("referral:ZZ…",
"booking:A…") or None. Each costs one query over the person's own referrals or bookings.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any, Protocol

from yilian.domain.access import RecordPolicy
from yilian.domain.clock import iso
from yilian.domain.principal import Principal


class CareSource(Protocol):
    def find(self, who: Principal, person_id: str, now: datetime) -> str | None: ...


class ReferralCare:
    """An open referral from or to the doctor's institution; after it closes, the receiving
    side (arrived, acknowledged) and the referring side keep access for the care window."""

    def __init__(self, store: Any, policy: RecordPolicy) -> None:
        self._store = store
        self._policy = policy

    def find(self, who: Principal, person_id: str, now: datetime) -> str | None:
        from yilian.domain.referral import Status

        since = iso(now - timedelta(days=self._policy.care_window_days))
        for r in self._store.for_patient(who.consortium_id, person_id):
            source = r.source.institution_id == who.institution_id
            target = r.target.institution_id == who.institution_id
            if not (source or target):
                continue
            treated = r.status in (Status.ARRIVED, Status.ACKNOWLEDGED)
            if r.is_open or (r.updated_at >= since and (source or treated)):
                return f"referral:{r.referral_id}"
        return None


class BookingCare:
    """A booking at the doctor's institution, from `booking_lead_days` before its day until
    the care window after it (a cancelled one does not count)."""

    def __init__(self, store: Any, policy: RecordPolicy) -> None:
        self._store = store
        self._policy = policy

    def find(self, who: Principal, person_id: str, now: datetime) -> str | None:
        from yilian.domain.booking import AppointmentStatus

        earliest = (now - timedelta(days=self._policy.care_window_days)).date().isoformat()
        latest = (now + timedelta(days=self._policy.booking_lead_days)).date().isoformat()
        for a in self._store.for_person(who.consortium_id, person_id):
            if (
                a.institution_id == who.institution_id
                and a.status is not AppointmentStatus.CANCELLED
                and earliest <= a.day <= latest
            ):
                return f"booking:{a.appointment_id}"
        return None


class ConsultationCare:
    """An active consultation about the person: its assigned (accepted) experts and the
    requesting doctor read the record while it lasts (远程会诊 needs the materials)."""

    def __init__(self, store: Any) -> None:
        self._store = store

    def find(self, who: Principal, person_id: str, now: datetime) -> str | None:
        from yilian.domain.consultation import ACTIVE, InviteState

        for c in self._store.for_patient(who.consortium_id, person_id):
            if c.status not in ACTIVE:
                continue
            mine = c.invitation_of(who.subject)
            if who.subject == c.requester.subject or (
                mine is not None and mine.state is InviteState.ACCEPTED
            ):
                return f"consultation:{c.consultation_id}"
        return None


class CareRelationships:
    """Asks each source in turn; the first relationship found is the basis."""

    def __init__(self, sources: Sequence[CareSource]) -> None:
        self._sources = tuple(sources)

    def find(self, who: Principal, person_id: str, now: datetime) -> str | None:
        for source in self._sources:
            if basis := source.find(who, person_id, now):
                return basis
        return None
