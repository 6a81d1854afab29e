"""The local issuer: mints tokens with the deployed stack's own KMS signing key.

For development, tests and first-admin bootstrap only: it needs AWS credentials allowed to
kms:Sign, which no end user has. Tokens it mints are exactly what the API's authorizer
accepts in production, because they are signed by the same key the sign-in function uses.
"""

from __future__ import annotations

import time
from typing import Any

from yilian.adapters.kms_signer import KmsJwtSigner
from yilian.domain.principal import Principal
from yilian.services.tokens import TokenIssuer


def mint(
    kms: Any, key_arn: str, params: dict[str, str], who: Principal, ttl: int | None = None
) -> str:
    issuer = TokenIssuer(
        KmsJwtSigner(kms, key_arn), params["TokenIssuer"], params["TokenAudience"], time.time
    )
    return issuer.issue(who, ttl)["access_token"]
