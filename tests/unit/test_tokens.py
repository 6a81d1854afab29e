import time

import jwt
import pytest

from tests.support.rsa_signer import RsaSigner
from yilian.domain.errors import Forbidden, Unauthenticated
from yilian.domain.principal import Principal, Role
from yilian.services.tokens import TokenIssuer, TokenVerifier

ISS = "https://auth.test"
DOCTOR = Principal("doc-1", Role.DOCTOR, "demo-county", institution_id="th-1", name="李医生")


@pytest.fixture
def setup():
    signer = RsaSigner()
    issuer = TokenIssuer(signer, ISS, "yilian", time.time)
    verifier = TokenVerifier({ISS: signer.jwks}, "yilian", frozenset({"demo-county"}))
    return signer, issuer, verifier


def test_issued_token_verifies_to_the_same_principal(setup):
    # Given a token issued for a doctor
    _, issuer, verifier = setup
    token = issuer.issue(DOCTOR)
    # When it is verified
    principal = verifier.verify(token["access_token"])
    # Then the claims survive the round trip
    assert principal == DOCTOR
    assert token["expires_in"] == 8 * 3600


def test_expired_token_is_refused_with_its_reason(setup):
    signer, _, verifier = setup
    old = TokenIssuer(signer, ISS, "yilian", lambda: 1_000_000).issue(DOCTOR)
    with pytest.raises(Unauthenticated) as exc:
        verifier.verify(old["access_token"])
    assert exc.value.code == "TOKEN_EXPIRED"


def test_tampered_token_is_refused(setup):
    _, issuer, verifier = setup
    token = issuer.issue(DOCTOR)
    header, payload, sig = token["access_token"].split(".")
    forged = jwt.utils.base64url_encode(
        jwt.utils.base64url_decode(payload).replace(b'"doctor"', b'"consortium_admin"')
    ).decode()
    with pytest.raises(Unauthenticated) as exc:
        verifier.verify(f"{header}.{forged}.{sig}")
    assert exc.value.code == "TOKEN_INVALID"


def test_token_signed_by_another_key_is_refused(setup):
    *_, verifier = setup
    stranger = TokenIssuer(RsaSigner(), ISS, "yilian", time.time).issue(DOCTOR)
    with pytest.raises(Unauthenticated) as exc:
        verifier.verify(stranger["access_token"])
    assert exc.value.code == "TOKEN_INVALID"


def test_untrusted_issuer_and_wrong_audience_are_refused(setup):
    signer, *_, verifier = setup
    now = time.time
    other_iss = TokenIssuer(signer, "https://evil", "yilian", now).issue(DOCTOR)
    other_aud = TokenIssuer(signer, ISS, "someone-else", now).issue(DOCTOR)
    with pytest.raises(Unauthenticated) as exc:
        verifier.verify(other_iss["access_token"])
    assert exc.value.code == "TOKEN_ISSUER"
    with pytest.raises(Unauthenticated) as exc:
        verifier.verify(other_aud["access_token"])
    assert exc.value.code == "TOKEN_AUDIENCE"


def test_token_for_another_consortium_is_forbidden(setup):
    signer, *_, verifier = setup
    elsewhere = Principal("doc-9", Role.DOCTOR, "other-county", institution_id="x")
    token = TokenIssuer(signer, ISS, "yilian", time.time).issue(elsewhere)
    with pytest.raises(Forbidden) as exc:
        verifier.verify(token["access_token"])
    assert exc.value.code == "CONSORTIUM_NOT_SERVED"


@pytest.mark.parametrize("garbage", ["", "abc", "a.b.c", "Bearer x"])
def test_garbage_is_refused(setup, garbage):
    *_, verifier = setup
    with pytest.raises(Unauthenticated):
        verifier.verify(garbage)
