"""Issuing and verifying the platform's bearer tokens.

Tokens are short-lived RS256 JWTs. Claims carry the caller's role and consortium so every
function can scope a request without a directory lookup; the authorizer verifies issuer,
audience, expiry and signature against a JWKS, and refuses consortia the stack does not serve.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from yilian.domain.errors import Forbidden, Unauthenticated
from yilian.domain.principal import Principal, Role

DEFAULT_TTL_SECONDS = {
    Role.RESIDENT: 7 * 24 * 3600,  # the mini-program keeps a resident signed in for a week
    Role.DOCTOR: 8 * 3600,  # one clinic shift
    Role.INSTITUTION_ADMIN: 2 * 3600,
    Role.CONSORTIUM_ADMIN: 2 * 3600,
    Role.REFERRAL_CENTRE: 8 * 3600,  # a duty shift at the referral centre
}
CLOCK_SKEW_SECONDS = 30


class JwtSigner(Protocol):
    def sign(self, claims: dict[str, Any]) -> str: ...


@dataclass
class TokenIssuer:
    signer: JwtSigner
    issuer: str
    audience: str
    clock: Callable[[], float]

    def issue(self, principal: Principal, ttl_seconds: int | None = None) -> dict[str, Any]:
        now = int(self.clock())
        ttl = ttl_seconds or DEFAULT_TTL_SECONDS[principal.role]
        claims = {
            "iss": self.issuer,
            "aud": self.audience,
            "sub": principal.subject,
            "iat": now,
            "nbf": now - CLOCK_SKEW_SECONDS,
            "exp": now + ttl,
            "jti": uuid.uuid4().hex,
            "role": str(principal.role),
            "consortium_id": principal.consortium_id,
            "institution_id": principal.institution_id or "",
            "person_id": principal.person_id or "",
            "name": principal.name,
        }
        return {"access_token": self.signer.sign(claims), "token_type": "Bearer", "expires_in": ttl}


@dataclass
class TokenVerifier:
    """Verifies a bearer token against JWKS keys of trusted issuers.

    `jwks_by_issuer` maps each trusted issuer to a callable returning its JWKS dict (cached
    by the caller); `served_consortia` are the consortia this stack serves.
    """

    jwks_by_issuer: dict[str, Callable[[], dict[str, Any]]]
    audience: str
    served_consortia: frozenset[str]

    def verify(self, token: str) -> Principal:
        import jwt

        try:
            unverified = jwt.decode(token, options={"verify_signature": False})
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise Unauthenticated("TOKEN_INVALID", "the token is not a valid JWT") from exc
        fetch = self.jwks_by_issuer.get(str(unverified.get("iss", "")))
        if fetch is None:
            raise Unauthenticated("TOKEN_ISSUER", "the token's issuer is not trusted")
        key = self._key_for(fetch(), header.get("kid"))
        try:
            claims = jwt.decode(
                token,
                key=key,
                algorithms=["RS256"],
                audience=self.audience,
                issuer=unverified["iss"],
                leeway=CLOCK_SKEW_SECONDS,
                options={"require": ["exp", "iat", "sub", "iss", "aud"]},
            )
        except jwt.ExpiredSignatureError as exc:
            raise Unauthenticated("TOKEN_EXPIRED", "the token has expired") from exc
        except jwt.InvalidAudienceError as exc:
            raise Unauthenticated("TOKEN_AUDIENCE", "the token is for another audience") from exc
        except jwt.PyJWTError as exc:
            raise Unauthenticated("TOKEN_INVALID", "the token failed verification") from exc
        return self._principal(claims)

    def _principal(self, claims: dict[str, Any]) -> Principal:
        try:
            role = Role(claims.get("role", ""))
        except ValueError as exc:
            raise Unauthenticated("TOKEN_INVALID", "the token carries no known role") from exc
        consortium = str(claims.get("consortium_id", ""))
        if consortium not in self.served_consortia:
            raise Forbidden("CONSORTIUM_NOT_SERVED", "the token is for another consortium")
        return Principal(
            subject=str(claims["sub"]),
            role=role,
            consortium_id=consortium,
            institution_id=claims.get("institution_id") or None,
            person_id=claims.get("person_id") or None,
            name=str(claims.get("name", "")),
        )

    @staticmethod
    def _key_for(jwks: dict[str, Any], kid: str | None) -> Any:
        import jwt

        try:
            key_set = jwt.PyJWKSet.from_dict(jwks)
        except jwt.PyJWTError as exc:
            raise Unauthenticated("TOKEN_INVALID", "no usable signing keys") from exc
        for jwk in key_set.keys:
            if kid is None or jwk.key_id == kid:
                return jwk.key
        raise Unauthenticated("TOKEN_INVALID", "the token's signing key is unknown")
