"""The local API Gateway: REST v1 proxy events and API Gateway's edge semantics.

Driven by the fixture stack's API (tiny echo handler and a REQUEST authorizer whose answer the
Authorization header chooses), so each rule is checked alone: routing, CORS preflight, binary
bodies, the 10 MB limit, authorizer outcomes and caching, integration errors, static files.
"""

from __future__ import annotations

import os

import pytest
import requests

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def api(fixture_stack):
    def call(method: str, path: str, auth: str | None = "allow bob", **kw) -> requests.Response:
        headers = kw.pop("headers", {})
        if auth:
            headers["Authorization"] = auth
        return requests.request(
            method, fixture_stack.api_url + path, headers=headers, timeout=30, **kw
        )

    return call


@pytest.fixture
def authorizer_calls(fixture_stack):
    """The fixture authorizer's record of the headers it was called with."""
    from yilian_local.runner import REGISTRY

    def calls() -> list[str]:
        container = REGISTRY._containers.get(fixture_stack.physical_id("AuthorizerFunction"))
        return list(container.module.CALLS) if container else []

    return calls


def test_path_parameters_and_query_strings_reach_the_handler_as_a_v1_event(api, fixture_stack):
    response = api("GET", "/items/42?x=1&x=2&y=3", headers={"X-Trace": "t1"})
    assert response.status_code == 200
    assert response.headers["X-Echo"] == "a, b"  # multiValueHeaders come back as one header
    event = response.json()["event"]
    assert event["resource"] == "/items/{id}"
    assert event["path"] == "/items/42"
    assert event["httpMethod"] == "GET"
    assert event["pathParameters"] == {"id": "42"}
    assert event["queryStringParameters"] == {"x": "2", "y": "3"}
    assert event["multiValueQueryStringParameters"] == {"x": ["1", "2"], "y": ["3"]}
    assert event["headers"]["X-Trace"] == "t1"
    assert event["multiValueHeaders"]["X-Trace"] == ["t1"]
    assert event["body"] is None and event["isBase64Encoded"] is False
    context = event["requestContext"]
    assert (context["stage"], context["resourcePath"], context["path"]) == (
        "api", "/items/{id}", "/api/items/42",
    )  # fmt: skip
    assert context["requestId"] and context["identity"]["sourceIp"] == "127.0.0.1"
    assert response.json()["greeting"] == "echo"


def test_a_greedy_path_captures_the_rest_of_the_path(api):
    event = api("DELETE", "/files/reports/2026/q3.pdf").json()["event"]
    assert event["resource"] == "/files/{proxy+}"
    assert event["pathParameters"] == {"proxy": "reports/2026/q3.pdf"}
    assert event["httpMethod"] == "DELETE"  # ANY


def test_an_unknown_route_or_method_is_missing_authentication_token(api):
    for method, path in (("GET", "/nowhere"), ("POST", "/items/1"), ("GET", "/files")):
        response = api(method, path)
        assert response.status_code == 403, (method, path)
        assert response.json() == {"message": "Missing Authentication Token"}


def test_cors_preflight_is_answered_by_the_mock_without_authorization(api, authorizer_calls):
    before = len(authorizer_calls())
    response = api(
        "OPTIONS", "/items/42", auth=None,
        headers={"Origin": "http://localhost:5173", "Access-Control-Request-Method": "GET"},
    )  # fmt: skip
    assert response.status_code == 200
    assert response.headers["Access-Control-Allow-Origin"] == "*"
    assert response.headers["Access-Control-Allow-Methods"] == "GET,POST,OPTIONS"
    assert response.headers["Access-Control-Allow-Headers"] == "Authorization,Content-Type"
    assert len(authorizer_calls()) == before


def test_a_binary_body_round_trips_base64_encoded(api):
    data = bytes(range(256)) * 64
    binary = {"Content-Type": "application/octet-stream", "Accept": "application/octet-stream"}
    response = api("POST", "/binary", data=data, headers=binary)
    assert response.status_code == 200
    assert response.content == data


def test_a_binary_response_stays_base64_text_unless_accept_asks_for_binary(api):
    """API Gateway decides by the request's first Accept type (AWS docs, binary media types)."""
    data = os.urandom(64)
    response = api("POST", "/binary", data=data, headers={"Content-Type": "image/png"})
    import base64

    assert base64.b64decode(response.content) == data


def test_a_body_over_ten_megabytes_is_refused_with_413(api):
    response = api("POST", "/binary", data=b"x" * (10 * 1024 * 1024 + 1),
                   headers={"Content-Type": "application/octet-stream"})  # fmt: skip
    assert response.status_code == 413
    assert response.json() == {"message": "Request Too Long"}


def test_a_missing_identity_source_is_401_without_calling_the_authorizer(api, authorizer_calls):
    before = len(authorizer_calls())
    response = api("GET", "/items/1", auth=None)
    assert response.status_code == 401
    assert response.json() == {"error": {"code": "TOKEN_MISSING"}}
    assert response.headers["Access-Control-Allow-Origin"] == "*"
    assert len(authorizer_calls()) == before


def test_unauthorized_from_the_authorizer_is_the_unauthorized_gateway_response(api):
    response = api("GET", "/items/1", auth="raise")
    assert response.status_code == 401
    assert response.json() == {"error": {"code": "TOKEN_MISSING"}}


def test_a_deny_uses_the_access_denied_template_with_the_authorizer_context(api):
    response = api("GET", "/items/1", auth="deny TOKEN_EXPIRED")
    assert response.status_code == 401  # the template overrides ACCESS_DENIED's 403
    error = response.json()["error"]
    assert error["code"] == "TOKEN_EXPIRED"  # $context.authorizer.reason
    assert error["request_id"] == response.headers["x-amzn-RequestId"]  # $context.requestId
    assert response.headers["Access-Control-Allow-Origin"] == "*"


def test_an_allow_passes_the_context_and_principal_to_the_handler(api):
    authorizer = api("GET", "/items/7", auth="allow carol").json()["event"]["requestContext"][
        "authorizer"
    ]
    assert authorizer["principalId"] == "carol"
    assert authorizer["who"] == "carol"
    assert (authorizer["n"], authorizer["ok"]) == ("1", "true")  # API Gateway sends strings


def test_the_authorizer_result_is_cached_per_token_and_checked_per_method_arn(
    api, authorizer_calls
):
    token = f"scoped dave-{os.getpid()}"
    assert api("GET", "/items/1", auth=token).status_code == 200
    assert api("GET", "/items/2", auth=token).status_code == 200
    denied = api("GET", "/files/x", auth=token)  # cached policy allows GET /items/* only
    assert denied.status_code == 401
    assert authorizer_calls().count(token) == 1


def test_authorizer_errors_are_500s(api):
    for token in ("crash", "bad"):
        response = api("GET", "/items/1", auth=token)
        assert response.status_code == 500, token


def test_a_route_without_authorizer_needs_no_token(api):
    assert api("GET", "/public", auth=None).status_code == 200


def test_a_failing_integration_is_502_internal_server_error(api):
    response = api("GET", "/boom")
    assert response.status_code == 502
    assert response.json() == {"message": "Internal server error"}


def test_an_integration_slower_than_the_timeout_is_504(api, fixture_stack, monkeypatch):
    """API Gateway stops waiting after 29 s (shortened here); the function runs on."""
    monkeypatch.setattr(fixture_stack._gateway.apis["api"], "integration_timeout", 0.3)
    response = api("GET", "/files/slow?s=1")
    assert response.status_code == 504
    assert response.json() == {"message": "Endpoint request timed out"}


def test_the_web_client_is_served_with_a_single_page_fallback(fixture_stack):
    root = fixture_stack.gateway_url
    assert "<title>yilian</title>" in requests.get(root + "/", timeout=10).text
    assert requests.get(root + "/assets/app.js", timeout=10).text == "console.log('yilian')"
    deep_link = requests.get(root + "/persons/123/edit", timeout=10)
    assert deep_link.status_code == 200 and "<title>yilian</title>" in deep_link.text
