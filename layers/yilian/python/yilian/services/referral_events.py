"""From stored referral changes to the workflow and to events (the transactional outbox).

functions/referral_events reads the referrals table's stream: a new referral starts its
workflow (one execution per referral, named after it, so a retried batch starts nothing
twice) and every status change becomes an EventBridge event. Other services subscribe:
the notifier today; booking (green-channel slots from the reserved quota, on
ReferralAccepted), the health record and the indicators later. Events carry ids and codes,
never a patient's name.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any, Protocol

from yilian.domain.clock import now as china_now
from yilian.domain.referral import Direction, Referral, Status, stage_outcome

APPLIED = "ReferralApplied"
STATUS_CHANGED = "ReferralStatusChanged"
# The booking seam: an accepted upward referral wants a slot from the receiving
# department's reserved quota (the green channel for emergencies).
ACCEPTED = "ReferralAccepted"


class Starter(Protocol):
    def start(self, state_machine_arn: str, name: str, payload: Mapping[str, Any]) -> bool: ...


class Publisher(Protocol):
    def publish(self, events: Sequence[tuple[str, Mapping[str, Any]]]) -> None: ...


def event_detail(r: Referral, previous: Status | None) -> dict[str, Any]:
    last = r.history[-1] if r.history else {}
    detail: dict[str, Any] = {
        "referral_id": r.referral_id,
        "consortium_id": r.consortium_id,
        "status": str(r.status),
        "previous_status": str(previous) if previous else None,
        "action": last.get("action"),
        "at": last.get("at", r.updated_at),
        "by": (last.get("by") or {}).get("sub"),
        "direction": str(r.direction),
        "urgency": str(r.urgency),
        "person_id": r.person_id,
        "from_institution": r.source.institution_id,
        "to_institution": r.target.institution_id,
        "to_in_county": r.target.in_county,
        "target_department": r.target_department,
        "target_doctor_id": (r.target_doctor or {}).get("doctor_id"),
        "referring_doctor": r.referring_doctor.get("sub"),
        "due_at": r.due_at,
    }
    if r.decision and r.decision.get("proposed_time"):
        detail["proposed_time"] = r.decision["proposed_time"]
    return detail


def events_for(old: Referral | None, new: Referral) -> list[tuple[str, dict[str, Any]]]:
    """The events one stored change means (none for a wait token being kept)."""
    if old is None:
        return [(APPLIED, event_detail(new, None))]
    if old.status is new.status and old.target == new.target:
        return []
    out = [(STATUS_CHANGED, event_detail(new, old.status))]
    if new.status is Status.ACCEPTED and new.direction is Direction.UP:
        out.append((ACCEPTED, event_detail(new, old.status)))
    return out


class ReferralEventRelay:
    def __init__(
        self,
        starter: Starter,
        publisher: Publisher,
        state_machine_arn: str,
        clock: Callable[[], datetime] = china_now,
    ) -> None:
        self.starter = starter
        self.publisher = publisher
        self.state_machine_arn = state_machine_arn
        self.clock = clock

    def relay(self, changes: Sequence[tuple[Referral | None, Referral]]) -> int:
        """Start workflows for new referrals and publish every change's events, in stream
        order. Returns the number of events published. The workflow's input: the referral
        and how long its first wait may last."""
        events: list[tuple[str, Mapping[str, Any]]] = []
        for old, new in changes:
            if old is None:
                payload = {
                    "referral_id": new.referral_id,
                    "outcome": stage_outcome(new, self.clock()),
                }
                self.starter.start(self.state_machine_arn, new.referral_id, payload)
            events.extend(events_for(old, new))
        if events:
            self.publisher.publish(events)
        return len(events)
