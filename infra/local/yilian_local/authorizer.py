"""Lambda authorizers with API Gateway's semantics (REST APIs, TOKEN and REQUEST types).

What the gateway relies on, as API Gateway does it:
- a missing identity source answers 401 UNAUTHORIZED without calling the function (TOKEN
  always; REQUEST when results are cached, i.e. TTL > 0);
- the function raising ``Exception("Unauthorized")`` answers 401 UNAUTHORIZED, any other
  error 500 AUTHORIZER_FAILURE, a malformed result 500 AUTHORIZER_CONFIGURATION_ERROR;
- the returned policy is cached per identity-source value for the TTL and evaluated against
  each request's methodArn (``*`` and ``?`` wildcards; an explicit Deny wins);
- Deny → ACCESS_DENIED, whose template may read ``$context.authorizer.<key>`` from the
  result's context; Allow → the context (values as strings) plus ``principalId`` reach the
  integration as ``requestContext.authorizer``.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

Invoke = Callable[[str, dict[str, Any]], tuple[str, bool]]


@dataclass
class Decision:
    """Outcome for one request: ``denial`` is a gateway response type, or None when allowed."""

    denial: str | None
    context: dict[str, Any] = field(default_factory=dict)
    message: str | None = None


@dataclass
class _Result:
    principal: str
    policy: dict[str, Any]
    context: dict[str, str]


class Authorizer:
    def __init__(self, spec: dict[str, Any], function_name: str, invoke: Invoke) -> None:
        self.type = spec.get("type", "token").upper()
        self.ttl = int(spec.get("authorizerResultTtlInSeconds", 300))
        self.sources = [s.strip() for s in spec.get("identitySource", "").split(",") if s.strip()]
        self.validation = spec.get("identityValidationExpression")
        self.function_name = function_name
        self._invoke = invoke
        self._cache: dict[tuple[str, ...], tuple[float, _Result]] = {}
        self._lock = threading.Lock()

    def decide(self, event: dict[str, Any], method_arn: str) -> Decision:
        identity = tuple(self._identity_value(source, event) for source in self.sources)
        if (self.type == "TOKEN" or self.ttl > 0) and not all(identity):
            return Decision("UNAUTHORIZED", message="Unauthorized")
        if (
            self.type == "TOKEN"
            and self.validation
            and not re.fullmatch(self.validation, identity[0])
        ):
            return Decision("UNAUTHORIZED", message="Unauthorized")
        result = self._cached(identity)
        if result is None:
            outcome = self._call(event, method_arn, identity)
            if isinstance(outcome, Decision):
                return outcome
            result = outcome
            if self.ttl > 0:
                with self._lock:
                    self._cache[identity] = (time.monotonic() + self.ttl, result)
        effect = evaluate(result.policy, method_arn)
        if effect == "Allow":
            return Decision(None, {**result.context, "principalId": result.principal})
        detail = " with an explicit deny" if effect == "Deny" else ""
        return Decision(
            "ACCESS_DENIED",
            result.context,
            f"User is not authorized to access this resource{detail}",
        )

    def _cached(self, identity: tuple[str, ...]) -> _Result | None:
        if self.ttl <= 0:
            return None
        with self._lock:
            entry = self._cache.get(identity)
        if entry is None or entry[0] < time.monotonic():
            return None
        return entry[1]

    def _call(
        self, event: dict[str, Any], method_arn: str, identity: tuple[str, ...]
    ) -> _Result | Decision:
        if self.type == "TOKEN":
            request = {"type": "TOKEN", "authorizationToken": identity[0], "methodArn": method_arn}
        else:
            request = {k: v for k, v in event.items() if k not in ("body", "isBase64Encoded")}
            request.update({"type": "REQUEST", "methodArn": method_arn})
        payload, errored = self._invoke(self.function_name, request)
        if errored:
            message = _json_or_none(payload) or {}
            if isinstance(message, dict) and message.get("errorMessage") == "Unauthorized":
                return Decision("UNAUTHORIZED", message="Unauthorized")
            return Decision("AUTHORIZER_FAILURE")
        return _parse_result(_json_or_none(payload))

    @staticmethod
    def _identity_value(source: str, event: dict[str, Any]) -> str:
        for prefix, bag in (
            ("method.request.header.", "headers"),
            ("method.request.querystring.", "queryStringParameters"),
            ("stageVariables.", "stageVariables"),
        ):
            if source.startswith(prefix):
                name = source[len(prefix) :]
                values = event.get(bag) or {}
                if bag == "headers":
                    values = {k.lower(): v for k, v in values.items()}
                    name = name.lower()
                return values.get(name) or ""
        if source.startswith("context."):
            return str(event["requestContext"].get(source[len("context.") :], ""))
        return ""


def _parse_result(result: Any) -> _Result | Decision:
    """Validate the authorizer's output as API Gateway does; malformed → configuration error."""
    misconfigured = Decision("AUTHORIZER_CONFIGURATION_ERROR")
    if not isinstance(result, dict) or "principalId" not in result:
        return misconfigured
    policy = result.get("policyDocument")
    if not isinstance(policy, dict) or "Statement" not in policy:
        return misconfigured
    context = result.get("context") or {}
    if not isinstance(context, dict) or any(
        isinstance(v, dict | list) or v is None for v in context.values()
    ):
        return misconfigured  # API Gateway accepts only string, number and boolean values
    as_text = {k: (str(v).lower() if isinstance(v, bool) else str(v)) for k, v in context.items()}
    return _Result(str(result["principalId"]), policy, as_text)


def evaluate(policy: dict[str, Any], method_arn: str) -> str | None:
    """ "Deny" if a statement denies, "Allow" if one allows, else None (implicit deny)."""
    statements = policy.get("Statement", [])
    allowed = False
    for statement in [statements] if isinstance(statements, dict) else statements:
        actions = _as_list(statement.get("Action"))
        resources = _as_list(statement.get("Resource"))
        if not any(_matches(a, "execute-api:Invoke") for a in actions):
            continue
        if not any(_matches(r, method_arn) for r in resources):
            continue
        if statement.get("Effect") == "Deny":
            return "Deny"
        allowed = allowed or statement.get("Effect") == "Allow"
    return "Allow" if allowed else None


def _matches(pattern: str, value: str) -> bool:
    regex = re.escape(pattern).replace(r"\*", ".*").replace(r"\?", ".")
    return re.fullmatch(regex, value) is not None


def _as_list(value: Any) -> list[str]:
    if value is None:
        return []
    return [value] if isinstance(value, str) else list(value)


def _json_or_none(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return None
