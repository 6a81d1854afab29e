"""The HTTP edge shared by every API function: resolver factory, the caller's principal, and
the single mapping of domain errors to HTTP statuses.

Error bodies are always {"error": {"code": <machine-readable>, "message": ..., "details"?}}.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from aws_lambda_powertools.event_handler import APIGatewayRestResolver, CORSConfig, Response
from aws_lambda_powertools.event_handler.openapi.exceptions import RequestValidationError

from yilian.domain.errors import (
    Conflict,
    DomainError,
    Forbidden,
    Gone,
    InvalidInput,
    NotFound,
    PayloadTooLarge,
    Unauthenticated,
)
from yilian.domain.principal import Principal

MAX_JSON_BODY_BYTES = 256 * 1024  # JSON requests; bulk files go to S3, never through the API

STATUS_BY_ERROR: dict[type[DomainError], int] = {
    InvalidInput: 400,
    Unauthenticated: 401,
    Forbidden: 403,
    NotFound: 404,
    Conflict: 409,
    Gone: 410,
    PayloadTooLarge: 413,
}


def error_response(status: int, code: str, message: str, /, **details: Any) -> Response:
    body: dict[str, Any] = {"code": code, "message": message}
    if details:
        body["details"] = details
    return Response(
        status_code=status,
        content_type="application/json",
        body=json.dumps({"error": body}, ensure_ascii=False, default=str),
    )


FHIR_ISSUE_TYPE = {400: "invalid", 401: "login", 403: "forbidden", 404: "not-found",
                   409: "conflict", 410: "deleted", 413: "too-long"}  # fmt: skip


def operation_outcome(status: int, code: str, message: str, /, **details: Any) -> Response:
    """The same error where FHIR is spoken (/fhir/...): an OperationOutcome whose
    issue.details.coding carries the machine-readable code."""
    issue = {
        "severity": "error",
        "code": FHIR_ISSUE_TYPE.get(status, "processing"),
        "details": {
            "coding": [{"system": "https://yilian.example/fhir/CodeSystem/error", "code": code}],
            "text": message,
        },
    }
    if details:
        issue["diagnostics"] = json.dumps(details, ensure_ascii=False, default=str)
    body = {"resourceType": "OperationOutcome", "issue": [issue]}
    return Response(
        status_code=status,
        content_type="application/fhir+json",
        body=json.dumps(body, ensure_ascii=False),
    )


def _to_json(obj: Any) -> str:
    """UTF-8 JSON (Chinese names stay readable), with Powertools' encoder for the rest."""
    from aws_lambda_powertools.shared.json_encoder import Encoder

    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"), cls=Encoder)


class YilianResolver(APIGatewayRestResolver):
    """Powertools' REST resolver that refuses oversized bodies before anything parses them."""

    def __init__(self, *, max_body_bytes: int, too_large_hint: str = "", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.max_body_bytes = max_body_bytes
        self.too_large_hint = too_large_hint

    def resolve(self, event: Mapping[str, Any], context: Any) -> dict[str, Any]:
        body = event.get("body") or ""
        if len(body) > self.max_body_bytes or len(body.encode("utf-8")) > self.max_body_bytes:
            message = f"request body exceeds {self.max_body_bytes} bytes"
            error = {
                "code": "PAYLOAD_TOO_LARGE",
                "message": f"{message}: {self.too_large_hint}" if self.too_large_hint else message,
                "details": {"limit": self.max_body_bytes},
            }
            return {
                "statusCode": 413,
                "headers": {"Content-Type": "application/json", "Access-Control-Allow-Origin": "*"},
                "body": json.dumps({"error": error}),
                "isBase64Encoded": False,
            }
        return super().resolve(event, context)


def create_app(
    max_body_bytes: int = MAX_JSON_BODY_BYTES, too_large_hint: str = ""
) -> YilianResolver:
    """A resolver with validation, CORS headers and the project's error mapping."""
    app = YilianResolver(
        max_body_bytes=max_body_bytes,
        too_large_hint=too_large_hint,
        enable_validation=True,
        serializer=_to_json,
        cors=CORSConfig(
            allow_origin="*",
            allow_headers=["Authorization", "Content-Type", "Idempotency-Key", "X-Correlation-Id"],
            max_age=600,
        ),
    )

    @app.exception_handler(DomainError)
    def _domain_error(exc: DomainError) -> Response:
        status = next(
            (s for cls, s in STATUS_BY_ERROR.items() if isinstance(exc, cls)),
            400,
        )
        if (app.current_event.path or "").startswith("/fhir/"):
            return operation_outcome(status, exc.code, exc.message, **exc.details)
        return error_response(status, exc.code, exc.message, **exc.details)

    @app.exception_handler(RequestValidationError)
    def _validation_error(exc: RequestValidationError) -> Response:
        errors = exc.errors()
        if any(e.get("type") == "json_invalid" for e in errors):
            return error_response(400, "MALFORMED_JSON", "the request body is not valid JSON")
        fields = [
            {
                "field": ".".join(str(p) for p in e.get("loc", ())[1:]) or "body",
                "reason": e.get("type", "invalid"),
                "message": e.get("msg", ""),
            }
            for e in errors
        ]
        return error_response(400, "VALIDATION_FAILED", "the request is not valid", fields=fields)

    return app


def json_response(status: int, body: Any) -> Response[dict]:
    return Response(status, "application/json", body=body)


def query_params(app: APIGatewayRestResolver, limit: int = 200) -> dict[str, str]:
    """The query string, each value cut to `limit` characters."""
    return {k: v[:limit] for k, v in (app.current_event.query_string_parameters or {}).items()}


def json_object(app: APIGatewayRestResolver) -> dict[str, Any]:
    """The request body as a JSON object ({} when empty); anything else is a clear 400."""
    try:
        body = json.loads(app.current_event.body or "{}")
    except ValueError:
        raise InvalidInput("MALFORMED_JSON", "the request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise InvalidInput("MALFORMED_JSON", "the request body is a JSON object")
    return body


def principal_of(app: APIGatewayRestResolver) -> Principal:
    """The verified caller, from the context the authorizer attached to the request."""
    ctx = app.current_event.request_context.authorizer.raw_event or {}
    if not ctx.get("sub") or not ctx.get("role"):
        raise Unauthenticated("TOKEN_MISSING", "no verified caller on this request")
    return Principal.from_context(ctx)


def idempotency_key(app: APIGatewayRestResolver) -> str | None:
    """The client's Idempotency-Key header, for use cases a retry can send twice."""
    headers = app.current_event.headers or {}
    for name, value in headers.items():
        if name.lower() == "idempotency-key":
            return value or None
    return None
