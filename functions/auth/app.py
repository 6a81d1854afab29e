"""The platform's token issuer: clinicians sign in here; the JWKS is published here.

POST /auth/login             {username, password} -> {access_token, token_type, expires_in, user}
GET  /.well-known/jwks.json  public keys of the KMS signing key, for any verifier
Both are public routes (no authorizer). A failed sign-in says only BAD_CREDENTIALS, whether
the username exists or not. Abuse limits and a second factor arrive with security hardening.
"""

from __future__ import annotations

import functools
import os
import time
from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.logging import correlation_paths
from pydantic import BaseModel, Field

from yilian.api.http import create_app
from yilian.settings import Settings

logger = Logger(service="auth")
app = create_app()


class Login(BaseModel):
    username: str = Field(min_length=1, max_length=40)
    password: str = Field(min_length=1, max_length=200)


@functools.cache
def wiring() -> Any:
    from yilian.adapters.aws import client
    from yilian.adapters.directory_store import DirectoryStore
    from yilian.adapters.kms_signer import KmsJwtSigner
    from yilian.services.sign_in import SignInService
    from yilian.services.tokens import TokenIssuer

    s = Settings.from_env(os.environ).require(
        "directory_table", "token_issuer", "token_audience", "token_signing_key"
    )
    signer = KmsJwtSigner(client(s, "kms"), s.token_signing_key)
    issuer = TokenIssuer(signer, s.token_issuer, s.token_audience, time.time)
    store = DirectoryStore(s.directory_table, s.aws_endpoint_url, s.region)
    return SignInService(store, issuer), signer


@app.post("/auth/login")
def login(body: Login) -> dict:
    sign_in, _ = wiring()
    return sign_in.sign_in(body.username, body.password)


@app.get("/.well-known/jwks.json")
def jwks() -> dict:
    _, signer = wiring()
    return signer.jwks()


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST)
def lambda_handler(event: dict, context: Any) -> dict:
    return app.resolve(event, context)
