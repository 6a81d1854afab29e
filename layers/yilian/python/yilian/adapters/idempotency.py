"""The Idempotency port over Powertools' idempotency utility and the IdempotencyTable
(id = {prefix}#{hash of scope and key}, TTL `expiration`).

A replay with the same payload returns the stored result; the same key with another payload
is refused (IDEMPOTENCY_KEY_REUSED); a replay while the first call still runs is refused
(REQUEST_IN_PROGRESS). A call that raises stores nothing, so the client may retry it.
Powertools is imported on first use only (it costs ~0.15 s).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from yilian.domain.errors import Conflict

EXPIRES_AFTER_SECONDS = 24 * 3600


class PowertoolsIdempotency:
    def __init__(self, table: str, dynamodb: Any, expires_after: int = EXPIRES_AFTER_SECONDS):
        self._table = table
        self._db = dynamodb
        self._expires = expires_after
        self._persistence: Any = None
        self._config: Any = None
        self._context: Any = None

    def register_lambda_context(self, context: Any) -> None:
        """The invocation's context: an in-progress record then expires with the invocation
        (a timed-out call does not block its key for the whole TTL)."""
        self._context = context

    def run(self, scope: str, key: str, payload: Mapping[str, Any], fn: Callable[[], dict]) -> dict:
        from aws_lambda_powertools.utilities.idempotency import idempotent_function
        from aws_lambda_powertools.utilities.idempotency.exceptions import (
            IdempotencyAlreadyInProgressError,
            IdempotencyValidationError,
        )

        persistence, config = self._layer()
        if self._context is not None:
            config.register_lambda_context(self._context)

        @idempotent_function(
            data_keyword_argument="request",
            persistence_store=persistence,
            config=config,
            key_prefix=scope,
        )
        def once(request: dict[str, Any]) -> dict:
            return fn()

        try:
            return dict(once(request={"key": key, "payload": dict(payload)}))
        except IdempotencyValidationError:
            raise Conflict(
                "IDEMPOTENCY_KEY_REUSED", "this Idempotency-Key was used for another request"
            ) from None
        except IdempotencyAlreadyInProgressError:
            raise Conflict(
                "REQUEST_IN_PROGRESS", "a request with this Idempotency-Key is still running"
            ) from None

    def _layer(self) -> tuple[Any, Any]:
        if self._persistence is None:
            from aws_lambda_powertools.utilities.idempotency import (
                DynamoDBPersistenceLayer,
                IdempotencyConfig,
            )

            self._persistence = DynamoDBPersistenceLayer(
                table_name=self._table, boto3_client=self._db
            )
            self._config = IdempotencyConfig(
                event_key_jmespath="key",
                payload_validation_jmespath="payload",
                expires_after_seconds=self._expires,
                raise_on_no_idempotency_key=True,
            )
        return self._persistence, self._config
