"""Where JWKS come from: the platform's KMS signing key, or a county IdP's JWKS URL.

Each source is wrapped in a time-based cache so a warm authorizer verifies tokens without
any network call; keys are re-read after the TTL, which is how a rotated key is picked up.
"""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Callable
from typing import Any

JWKS_TTL_SECONDS = 600

Jwks = dict[str, Any]


def kms_jwks(kms: Any, key_arn: str) -> Callable[[], Jwks]:
    def fetch() -> Jwks:
        from yilian.adapters.kms_signer import KmsJwtSigner

        return KmsJwtSigner(kms, key_arn).jwks()

    return fetch


def url_jwks(url: str, timeout: float = 3.0) -> Callable[[], Jwks]:
    if not url.startswith(("https://", "http://")):
        raise ValueError("a JWKS URL must be http(s)")

    def fetch() -> Jwks:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 (scheme checked)
            return json.loads(resp.read())

    return fetch


def cached_jwks(fetch: Callable[[], Jwks], ttl: float = JWKS_TTL_SECONDS) -> Callable[[], Jwks]:
    state: dict[str, Any] = {"at": 0.0, "jwks": None}

    def get() -> Jwks:
        if state["jwks"] is None or time.monotonic() - state["at"] > ttl:
            state["jwks"] = fetch()
            state["at"] = time.monotonic()
        return state["jwks"]

    return get
