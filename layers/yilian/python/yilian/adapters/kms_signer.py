"""JWT signing with a KMS asymmetric key (RS256): the private key never leaves KMS.

The public half is published as a JWKS so the authorizer (and any county system) verifies
tokens without calling KMS per request.
"""

from __future__ import annotations

import base64
import json
from typing import Any


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


class KmsJwtSigner:
    def __init__(self, kms: Any, key_arn: str) -> None:
        self._kms = kms
        self._key_arn = key_arn
        self.kid = key_arn.rsplit("/", 1)[-1]

    def sign(self, claims: dict[str, Any]) -> str:
        header = {"alg": "RS256", "typ": "JWT", "kid": self.kid}
        signing_input = (
            _b64url(json.dumps(header, separators=(",", ":")).encode())
            + "."
            + _b64url(json.dumps(claims, separators=(",", ":"), ensure_ascii=False).encode())
        )
        signature = self._kms.sign(
            KeyId=self._key_arn,
            Message=signing_input.encode(),
            MessageType="RAW",
            SigningAlgorithm="RSASSA_PKCS1_V1_5_SHA_256",
        )["Signature"]
        return f"{signing_input}.{_b64url(signature)}"

    def jwks(self) -> dict[str, Any]:
        from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
        from cryptography.hazmat.primitives.serialization import load_der_public_key
        from jwt.algorithms import RSAAlgorithm

        der = self._kms.get_public_key(KeyId=self._key_arn)["PublicKey"]
        public_key = load_der_public_key(der)
        if not isinstance(public_key, RSAPublicKey):
            raise TypeError("the token signing key must be an RSA key")
        jwk = RSAAlgorithm.to_jwk(public_key, as_dict=True)
        jwk.update({"kid": self.kid, "use": "sig", "alg": "RS256"})
        return {"keys": [jwk]}
