"""Scheduled rules for the embedded stack: moto stores `rate(...)` rules but never fires them
(the booking no-show sweep is one). A daemon thread fires each rule's Lambda targets on its
rate with the event EventBridge would send; `fire_all()` fires them now (tests, the CLI)."""

from __future__ import annotations

import json
import logging
import re
import threading
import time
import uuid
from datetime import UTC, datetime
from typing import Any

LOG = logging.getLogger(__name__)
RATE = re.compile(r"^rate\((\d+) (minute|minutes|hour|hours|day|days)\)$")
SECONDS = {"minute": 60, "hour": 3600, "day": 86400}


def rate_seconds(expression: str) -> int | None:
    """Seconds between firings of a rate() expression; None for cron() (not fired locally)."""
    match = RATE.match(expression.strip())
    if not match:
        return None
    return int(match.group(1)) * SECONDS[match.group(2).rstrip("s")]


class Scheduler:
    def __init__(self, events: Any, lambda_client: Any, region: str, account: str) -> None:
        self._events, self._lambda = events, lambda_client
        self._region, self._account = region, account
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._next: dict[str, float] = {}

    def rules(self) -> list[tuple[dict[str, Any], int]]:
        """(rule, seconds) for every rate() rule on the default bus."""
        out = []
        for rule in self._events.list_rules().get("Rules", []):
            seconds = rate_seconds(rule.get("ScheduleExpression") or "")
            if seconds and rule.get("State", "ENABLED") == "ENABLED":
                out.append((rule, seconds))
        return out

    def fire(self, rule: dict[str, Any]) -> list[Any]:
        event = {
            "version": "0", "id": str(uuid.uuid4()), "detail-type": "Scheduled Event",
            "source": "aws.events", "account": self._account,
            "time": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"), "region": self._region,
            "resources": [rule["Arn"]], "detail": {},
        }  # fmt: skip
        results = []
        for target in self._events.list_targets_by_rule(Rule=rule["Name"]).get("Targets", []):
            if ":lambda:" not in target["Arn"] and ":function:" not in target["Arn"]:
                continue
            payload = target.get("Input") or json.dumps(event)
            out = self._lambda.invoke(FunctionName=target["Arn"], Payload=payload.encode())
            results.append(json.loads(out["Payload"].read() or b"null"))
        return results

    def fire_all(self) -> dict[str, list[Any]]:
        return {rule["Name"]: self.fire(rule) for rule, _ in self.rules()}

    def start(self, tick: float = 5.0) -> None:
        now = time.monotonic()
        self._next = {rule["Name"]: now + seconds for rule, seconds in self.rules()}
        self._thread = threading.Thread(target=self._run, args=(tick,), daemon=True,
                                        name="yilian-scheduler")  # fmt: skip
        self._thread.start()

    def _run(self, tick: float) -> None:
        while not self._stop.wait(tick):
            try:
                rules = self.rules()
            except Exception:  # noqa: BLE001 - an unreachable emulator must not stop the clock
                LOG.exception("could not list the scheduled rules")
                continue
            for rule, seconds in rules:
                due = self._next.setdefault(rule["Name"], time.monotonic() + seconds)
                if time.monotonic() >= due:
                    self._next[rule["Name"]] = time.monotonic() + seconds
                    try:
                        self.fire(rule)
                    except Exception:  # noqa: BLE001 - a failing target must not stop the clock
                        LOG.exception("scheduled rule %s failed", rule["Name"])

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
