"""SQS -> Lambda event source mappings that behave like Lambda's poller (moto 5.2.5 gaps).

moto delivers a queue's messages to a mapped function only inside SendMessage, one message
per invocation with ApproximateReceiveCount "1", deletes every message when the function
did not raise (so the batch item failures a function reports with ReportBatchItemFailures
are deleted, i.e. lost) and never looks at the queue again, so a failed message is never
retried and never reaches the dead-letter queue.

Here, for mappings whose function is ours (runner.REGISTRY):
- a send delivers at once (as moto does: the test or the user sees the effect), in batches
  up to the mapping's BatchSize, with the real receive counts;
- only the messages that succeeded are deleted: a function error leaves the batch, a
  batchItemFailures list leaves those messages, in flight until their visibility timeout
  (which the function may have changed: back-off);
- a poller thread redelivers whatever became visible again, so retries happen, and moto's
  own receive moves a message past the queue's maxReceiveCount to its dead-letter queue.
"""

from __future__ import annotations

import json
import logging
import threading
from typing import Any

from moto.awslambda.utils import get_backend as lambda_backend
from moto.sqs.models import Queue, sqs_backends

from yilian_local.runner import REGISTRY

LOG = logging.getLogger(__name__)
_swap = threading.Lock()
_poller: threading.Thread | None = None
_stop = threading.Event()


def install(poll_seconds: float = 0.5) -> None:
    """Replace moto's delivery for our functions and start the poller (once per process)."""
    global _poller
    original = Queue.add_message

    def add_message(self: Queue, message: Any) -> None:
        ours = {arn: m for arn, m in self.lambda_event_source_mappings.items() if _ours(arn)}
        if not ours:
            return original(self, message)
        with _swap:  # moto's own loop would deliver and delete; hide our mappings from it
            saved = self.lambda_event_source_mappings
            self.lambda_event_source_mappings = {a: m for a, m in saved.items() if a not in ours}
            try:
                original(self, message)
            finally:
                self.lambda_event_source_mappings = saved
        deliver(self)

    add_message.__yilian_hook__ = True  # type: ignore[attr-defined]
    Queue.add_message = add_message  # type: ignore[method-assign]
    _poller = threading.Thread(target=_poll, args=(poll_seconds,), daemon=True,
                               name="yilian-sqs-poller")  # fmt: skip
    _poller.start()


def _ours(function_arn: str) -> bool:
    return REGISTRY.knows(function_arn.split(":function:")[-1].split(":")[0])


def deliver(queue: Queue) -> int:
    """Deliver the queue's visible messages to its mappings; returns how many succeeded."""
    done = 0
    for arn, mapping in list(queue.lambda_event_source_mappings.items()):
        if not mapping.enabled or not _ours(arn):
            continue
        backend = sqs_backends[queue.account_id][queue.region]
        while True:
            messages = backend.receive_message(
                queue.name, int(mapping.batch_size or 10), 0, int(queue.visibility_timeout or 30)
            )
            if not messages:
                break
            failed = _invoke(queue, arn, mapping, messages)
            for m in messages:
                if m.id not in failed:
                    backend.delete_message(queue.name, m.receipt_handle)
                    done += 1
            if failed:
                break  # the rest waits for the poller, as Lambda backs off a failing batch
    return done


def _invoke(queue: Queue, arn: str, mapping: Any, messages: list[Any]) -> set[str]:
    """Run the batch; the ids of the messages that failed."""
    event = {"Records": [_record(queue, m) for m in messages]}
    headers: dict[str, Any] = {}
    try:
        payload = lambda_backend(queue.account_id, queue.region).invoke(
            function_name=arn, qualifier=None, body=json.dumps(event), headers={},
            response_headers=headers,
        )  # fmt: skip
    except Exception:  # noqa: BLE001 - an invoke error is a failed batch, retried later
        LOG.exception("SQS delivery to %s failed", arn)
        return {m.id for m in messages}
    if "x-amz-function-error" in headers:
        return {m.id for m in messages}
    if "ReportBatchItemFailures" not in (mapping.function_response_types or []):
        return set()
    try:
        result = json.loads(payload or "null")
    except (TypeError, ValueError):
        return set()
    failures = (result or {}).get("batchItemFailures") if isinstance(result, dict) else None
    return {str(f.get("itemIdentifier")) for f in failures or []}


def _record(queue: Queue, m: Any) -> dict[str, Any]:
    return {
        "messageId": m.id, "receiptHandle": m.receipt_handle, "body": m.body,
        "attributes": {
            "ApproximateReceiveCount": str(m.approximate_receive_count),
            "SentTimestamp": str(m.sent_timestamp),
            "SenderId": "AIDAIENQZJOLO23YVJ4VO",
            "ApproximateFirstReceiveTimestamp": str(m.approximate_first_receive_timestamp),
        },
        "messageAttributes": {}, "md5OfBody": m.body_md5, "eventSource": "aws:sqs",
        "eventSourceARN": queue.queue_arn, "awsRegion": queue.region,
    }  # fmt: skip


def _poll(seconds: float) -> None:
    while not _stop.wait(seconds):
        try:
            for regions in list(sqs_backends.values()):
                for backend in list(regions.values()):
                    for queue in list(backend.queues.values()):
                        mapped = any(_ours(a) for a in queue.lambda_event_source_mappings)
                        if mapped and any(m.visible for m in list(queue._messages)):
                            deliver(queue)
        except Exception:  # noqa: BLE001 - the poller must outlive a bad tick
            LOG.exception("SQS poller tick failed")
