"""Sign-in, token checks at the gateway, and the institution directory, over HTTP."""

import jwt
import pytest

from yilian.domain.principal import Role

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def admin(api):
    return api.token(Role.CONSORTIUM_ADMIN, "e2e-admin", institution_id="e2e-county")


@pytest.fixture(scope="module")
def county(api, admin):
    body = {"institution_id": "e2e-county", "name": "测试县人民医院", "type": "general_hospital"}
    resp = api.call("POST", "/institutions", admin, json=body)
    assert resp.status_code in (201, 409), resp.text
    return "e2e-county"


def _error(resp):
    return resp.json()["error"]["code"]


def test_jwks_is_public_and_verifies_a_minted_token(api, admin):
    resp = api.call("GET", "/.well-known/jwks.json")
    assert resp.status_code == 200
    [key] = resp.json()["keys"]
    claims = jwt.decode(
        admin,
        jwt.PyJWK(key).key,
        algorithms=["RS256"],
        audience=api.stack.params["TokenAudience"],
    )
    assert claims["role"] == "consortium_admin"


@pytest.mark.parametrize(
    ("header", "code"),
    [
        (None, "TOKEN_MISSING"),
        ("Basic abc", "TOKEN_MISSING"),
        ("Bearer not.a.jwt", "TOKEN_INVALID"),
    ],
)
def test_requests_without_a_valid_token_get_401_with_a_reason(api, header, code):
    headers = {"Authorization": header} if header else {}
    resp = api.call("GET", "/institutions", headers=headers)
    assert resp.status_code == 401
    assert _error(resp) == code


def test_expired_tampered_and_foreign_tokens_are_refused(api, admin):
    expired = api.token(Role.CONSORTIUM_ADMIN, ttl=-120)
    head, payload, sig = admin.split(".")
    tampered = f"{head}.{payload[:-4]}AAAA.{sig}"
    foreign = api.token(Role.CONSORTIUM_ADMIN, consortium="another-county")
    for token, code in [
        (expired, "TOKEN_EXPIRED"),
        (tampered, "TOKEN_INVALID"),
        (foreign, "CONSORTIUM_NOT_SERVED"),
    ]:
        resp = api.call("GET", "/institutions", token)
        assert resp.status_code == 401, (code, resp.text)
        assert _error(resp) == code


def test_admin_builds_the_directory_and_doctor_signs_in(api, admin, county):
    township = {
        "institution_id": "e2e-township",
        "name": "测试镇卫生院",
        "type": "township_health_centre",
        "parent_id": county,
    }
    assert api.call("POST", "/institutions", admin, json=township).status_code in (201, 409)
    doctor = {
        "doctor_id": "doc-e2e-wang",
        "institution_id": "e2e-township",
        "name": "王医生",
        "department": "全科",
        "title": "主治医师",
        "username": "e2e.wang",
        "password": "e2e-password-1",
    }
    assert api.call("POST", "/doctors", admin, json=doctor).status_code in (201, 409)
    login = api.call(
        "POST", "/auth/login", json={"username": "e2e.wang", "password": "e2e-password-1"}
    )
    assert login.status_code == 200, login.text
    token = login.json()["access_token"]
    listing = api.call("GET", "/institutions?tier=township", token)
    assert listing.status_code == 200
    assert "e2e-township" in [i["institution_id"] for i in listing.json()["items"]]
    # a doctor may not add institutions: 403, and nothing was stored
    resp = api.call("POST", "/institutions", token, json={"name": "X", "type": "village_clinic"})
    assert resp.status_code == 403 and _error(resp) == "ROLE_NOT_ALLOWED"


def test_bad_directory_input_is_refused_and_stores_nothing(api, admin, county):
    before = api.call("GET", "/institutions", admin).json()["items"]
    cases = [
        ({"name": "X", "type": "village_clinic", "parent_id": "nowhere"}, 400, "UNKNOWN_PARENT"),
        ({"name": "X", "type": "spaceport"}, 400, "VALIDATION_FAILED"),
        ({"type": "village_clinic"}, 400, "VALIDATION_FAILED"),
    ]
    for body, status, code in cases:
        resp = api.call("POST", "/institutions", admin, json=body)
        assert (resp.status_code, _error(resp)) == (status, code), resp.text
    malformed = api.call(
        "POST",
        "/institutions",
        admin,
        data="{not json",
        headers={"Content-Type": "application/json"},
    )
    assert (malformed.status_code, _error(malformed)) == (400, "MALFORMED_JSON")
    huge = api.call(
        "POST", "/institutions", admin, json={"name": "X" * 300_000, "type": "village_clinic"}
    )
    assert (huge.status_code, _error(huge)) == (413, "PAYLOAD_TOO_LARGE")
    assert api.call("GET", "/institutions", admin).json()["items"] == before


def test_wrong_password_says_only_bad_credentials(api):
    resp = api.call(
        "POST", "/auth/login", json={"username": "e2e.wang", "password": "nope-nope-nope"}
    )
    assert resp.status_code == 401 and _error(resp) == "BAD_CREDENTIALS"


def test_cors_preflight_is_answered(api):
    resp = api.call(
        "OPTIONS",
        "/institutions",
        headers={"Origin": "http://localhost:5173", "Access-Control-Request-Method": "POST"},
    )
    assert resp.status_code == 200
    assert "Authorization" in resp.headers.get("Access-Control-Allow-Headers", "")
