"""Step Functions and EventBridge for the referral (and later consultation) workflows.

Task tokens stay on the server: the workflow hands one to functions/referral_workflow, the
store keeps it, and only the service spends it here. A spent, timed-out or forged token is
refused by Step Functions; `resume` reports that as False (the workflow's own timeout path
then reconciles with the referral's state), never as a client-visible error.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

EVENT_SOURCE = "yilian.referrals"
BOOKING_EVENT_SOURCE = "yilian.booking"
PUT_EVENTS_BATCH = 10  # EventBridge's limit per PutEvents call


class StepFunctionsCallbacks:
    def __init__(self, sfn: Any) -> None:
        self._sfn = sfn

    def resume(self, token: str, outcome: Mapping[str, Any]) -> bool:
        """Complete the wait holding `token` with `outcome`; False if the token is no longer
        (or never was) a live wait."""
        errors = (
            self._sfn.exceptions.TaskTimedOut,
            self._sfn.exceptions.InvalidToken,
            self._sfn.exceptions.TaskDoesNotExist,
        )
        try:
            self._sfn.send_task_success(taskToken=token, output=json.dumps(dict(outcome)))
        except errors:
            return False
        return True

    def start(self, state_machine_arn: str, name: str, payload: Mapping[str, Any]) -> bool:
        """Start one execution per referral, named after it: a repeated start (a retried
        stream batch) is a no-op. False when it already existed."""
        try:
            self._sfn.start_execution(
                stateMachineArn=state_machine_arn, name=name, input=json.dumps(dict(payload))
            )
        except self._sfn.exceptions.ExecutionAlreadyExists:
            return False
        return True


class EventBridgePublisher:
    def __init__(self, events: Any, bus_name: str, source: str = EVENT_SOURCE) -> None:
        self._events = events
        self._bus = bus_name
        self._source = source

    def publish(self, events: Sequence[tuple[str, Mapping[str, Any]]]) -> None:
        """(detail-type, detail) pairs; raises if any entry failed, so a stream batch is
        retried rather than an event silently dropped."""
        for start in range(0, len(events), PUT_EVENTS_BATCH):
            chunk = events[start : start + PUT_EVENTS_BATCH]
            out = self._events.put_events(
                Entries=[
                    {
                        "Source": self._source,
                        "DetailType": detail_type,
                        "Detail": json.dumps(dict(detail), ensure_ascii=False),
                        "EventBusName": self._bus,
                    }
                    for detail_type, detail in chunk
                ]
            )
            if out.get("FailedEntryCount"):
                raise RuntimeError(f"EventBridge refused {out['FailedEntryCount']} events")
