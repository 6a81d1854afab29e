"""API Gateway REQUEST authorizer: verifies the JWT bearer token of every API call.

Allow: an IAM policy for the whole API (so API Gateway may cache it per token for
ReauthorizeEvery seconds) and the caller's claims as context. Deny: the reason code as
context, which the template's ACCESS_DENIED gateway response renders as a JSON error.
"""

from __future__ import annotations

import functools
import os
import time
from typing import Any

from aws_lambda_powertools import Logger

from yilian.domain.errors import DomainError
from yilian.settings import Settings

logger = Logger(service="authorizer")


@functools.cache
def build_verifier() -> Any:
    from yilian.adapters.aws import client
    from yilian.adapters.jwks import cached_jwks, kms_jwks, url_jwks
    from yilian.services.tokens import TokenVerifier

    settings = Settings.from_env(os.environ).require(
        "token_issuer", "token_audience", "token_signing_key", "consortium_id"
    )
    kms = client(settings, "kms")
    trusted = {settings.token_issuer: cached_jwks(kms_jwks(kms, settings.token_signing_key))}
    if settings.external_jwks_url and settings.external_issuer:
        trusted[settings.external_issuer] = cached_jwks(url_jwks(settings.external_jwks_url))
    return TokenVerifier(trusted, settings.token_audience, frozenset({settings.consortium_id}))


@logger.inject_lambda_context(clear_state=True)
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    api_arn = "/".join(event["methodArn"].split("/")[:2]) + "/*/*"
    token = _bearer(event.get("headers") or {})
    try:
        if not token:
            from yilian.domain.errors import Unauthenticated

            raise Unauthenticated("TOKEN_MISSING", "send 'Authorization: Bearer <token>'")
        principal = build_verifier().verify(token)
    except DomainError as exc:
        logger.info("token refused", extra={"reason": exc.code})
        return _policy("anonymous", "Deny", api_arn, {"reason": exc.code, "message": exc.message})
    logger.append_keys(role=str(principal.role), consortium=principal.consortium_id)
    return _policy(principal.subject, "Allow", api_arn, principal.to_context())


def _bearer(headers: dict[str, str]) -> str | None:
    value = next((v for k, v in headers.items() if k.lower() == "authorization"), "") or ""
    scheme, _, token = value.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def _policy(principal_id: str, effect: str, resource: str, ctx: dict[str, str]) -> dict[str, Any]:
    return {
        "principalId": principal_id,
        "policyDocument": {
            "Version": "2012-10-17",
            "Statement": [{"Action": "execute-api:Invoke", "Effect": effect, "Resource": resource}],
        },
        "context": {**ctx, "authorized_at": str(int(time.time()))},
    }
