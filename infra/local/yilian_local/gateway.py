"""The local API Gateway: REST v1 Lambda-proxy semantics, driven by the template's API Body.

moto cannot serve a deployed REST API over HTTP, and chalice's local server lacks v1 event
fields, REQUEST authorizers, Deny and ``{proxy+}`` (facts file), so this small Werkzeug app
reads the expanded template's ``AWS::ApiGateway::RestApi`` ``Body`` (the swagger SAM
generates: paths, methods, integrations, authorizers, CORS mocks, binary media types, gateway
responses) and serves it under ``/<stage>``. Anything else is the web client (``web_root``),
with an SPA fallback to ``index.html``.
"""

from __future__ import annotations

import base64
import json
import logging
import re
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from werkzeug.datastructures import Headers
from werkzeug.security import safe_join
from werkzeug.serving import make_server
from werkzeug.utils import send_file
from werkzeug.wrappers import Request, Response

from yilian_local.authorizer import Authorizer, Invoke
from yilian_local.template import function_logical_ids

MAX_BODY = 10 * 1024 * 1024  # API Gateway's payload limit
INTEGRATION_TIMEOUT = 29.0  # seconds: REST APIs' default integration timeout
ANY = "x-amazon-apigateway-any-method"
_DEFAULT_RESPONSES = {  # gateway response type -> (status, message)
    "UNAUTHORIZED": (401, "Unauthorized"),
    "ACCESS_DENIED": (403, "User is not authorized to access this resource"),
    "MISSING_AUTHENTICATION_TOKEN": (403, "Missing Authentication Token"),
    "REQUEST_TOO_LARGE": (413, "Request Too Long"),
    "INTEGRATION_TIMEOUT": (504, "Endpoint request timed out"),
    "AUTHORIZER_FAILURE": (500, None),
    "AUTHORIZER_CONFIGURATION_ERROR": (500, None),
}
log = logging.getLogger("yilian_local.gateway")


class RestApi:
    """One REST API stage: its route table, authorizers and gateway responses."""

    def __init__(
        self,
        body: dict[str, Any],
        stage: str,
        api_id: str,
        arn_prefix: str,
        functions: dict[str, str],
        invoke: Invoke,
    ) -> None:
        self.stage, self.api_id, self.invoke = stage, api_id, invoke
        self.arn_prefix = arn_prefix  # arn:<partition>:execute-api:<region>:<account>
        self.binary_types = body.get("x-amazon-apigateway-binary-media-types", [])
        self.responses = body.get("x-amazon-apigateway-gateway-responses", {})
        self.functions = functions  # logical id -> deployed function name
        self.authorizers = {
            name: Authorizer(spec["x-amazon-apigateway-authorizer"], self._function(spec), invoke)
            for name, spec in body.get("securityDefinitions", {}).items()
            if "x-amazon-apigateway-authorizer" in spec
        }
        self.default_security = body.get("security", [])
        self.integration_timeout = INTEGRATION_TIMEOUT
        self._pool = ThreadPoolExecutor(max_workers=32, thread_name_prefix="integration")
        self.routes = sorted(
            (_segments(path), path, methods) for path, methods in body.get("paths", {}).items()
        )

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _function(self, node: Any) -> str:
        return self.functions[function_logical_ids(node)[0]]

    def handle(self, request: Request, path: str) -> Response:
        request_id = str(uuid.uuid4())
        if (request.content_length or 0) > MAX_BODY:
            return self.gateway_response("REQUEST_TOO_LARGE", request_id)
        body = request.stream.read(MAX_BODY + 1)
        if len(body) > MAX_BODY:
            return self.gateway_response("REQUEST_TOO_LARGE", request_id)
        route = self._route(path, request.method)
        if route is None:
            return self.gateway_response("MISSING_AUTHENTICATION_TOKEN", request_id)
        resource, params, operation = route
        integration = operation.get("x-amazon-apigateway-integration", {})
        if integration.get("type") == "mock":
            return _mock_response(integration)
        event = self._event(request, path, resource, params, body, request_id)
        authorizer = self._authorizer(operation)
        if authorizer is not None:
            method_arn = f"{self.arn_prefix}:{self.api_id}/{self.stage}/{request.method}{path}"
            decision = authorizer.decide(event, method_arn)
            if decision.denial:
                return self.gateway_response(
                    decision.denial, request_id, decision.message, decision.context
                )
            event["requestContext"]["authorizer"] = decision.context
        call = self._pool.submit(self.invoke, self._function(integration["uri"]), event)
        try:  # the function runs on; API Gateway stops waiting for it
            payload, errored = call.result(timeout=self.integration_timeout)
        except FutureTimeout:
            return self.gateway_response("INTEGRATION_TIMEOUT", request_id)
        return self._proxy_response(payload, errored, request)

    def _route(self, path: str, method: str) -> tuple[str, dict[str, str], dict] | None:
        """The most specific resource matching ``path``, then its method (or ANY) — as API
        Gateway does: a missing method is not looked for on a less specific resource."""
        parts = [p for p in path.split("/") if p]
        for segments, resource, methods in self.routes:
            params = _match(segments, parts)
            if params is not None:
                operation = methods.get(method.lower()) or methods.get(ANY)
                return (resource, params, operation) if operation else None
        return None

    def _authorizer(self, operation: dict[str, Any]) -> Authorizer | None:
        for requirement in operation.get("security", self.default_security):
            for name in requirement:
                if name in self.authorizers:
                    return self.authorizers[name]
        return None

    def _event(
        self,
        request: Request,
        path: str,
        resource: str,
        params: dict[str, str],
        body: bytes,
        request_id: str,
    ) -> dict[str, Any]:
        headers = Headers(request.headers)
        headers.setdefault("X-Forwarded-For", request.remote_addr or "127.0.0.1")
        headers.setdefault("X-Forwarded-Proto", request.scheme)
        binary = bool(body) and _is_binary(request.mimetype, self.binary_types)
        now = datetime.now(UTC)
        return {
            "resource": resource,
            "path": path,
            "httpMethod": request.method,
            "headers": dict(headers.items()) or None,
            "multiValueHeaders": {k: headers.getlist(k) for k in headers.keys()} or None,
            "queryStringParameters": {k: v[-1] for k, v in request.args.lists()} or None,
            "multiValueQueryStringParameters": request.args.to_dict(flat=False) or None,
            "pathParameters": params or None,
            "stageVariables": None,
            "requestContext": {
                "resourcePath": resource,
                "httpMethod": request.method,
                "path": f"/{self.stage}{path}",
                "stage": self.stage,
                "requestId": request_id,
                "extendedRequestId": request_id,
                "apiId": self.api_id,
                "accountId": self.arn_prefix.rsplit(":", 1)[1],
                "protocol": request.environ.get("SERVER_PROTOCOL", "HTTP/1.1"),
                "domainName": request.host,
                "requestTime": now.strftime("%d/%b/%Y:%H:%M:%S +0000"),
                "requestTimeEpoch": int(now.timestamp() * 1000),
                "identity": {
                    "sourceIp": request.remote_addr,
                    "userAgent": request.user_agent.string,
                },
            },
            "body": (base64.b64encode(body).decode() if binary else body.decode("utf-8", "replace"))
            if body
            else None,
            "isBase64Encoded": binary,
        }

    def _proxy_response(self, payload: str, errored: bool, request: Request) -> Response:
        result = None if errored else _json_or_none(payload)
        if not isinstance(result, dict) or not str(result.get("statusCode", "")).isdigit():
            return _json_response(502, {"message": "Internal server error"})
        headers = Headers()
        for name, values in (result.get("multiValueHeaders") or {}).items():
            for value in values:
                headers.add(name, str(value))
        for name, value in (result.get("headers") or {}).items():
            if name not in headers:
                headers.add(name, str(value))
        body = result.get("body") or ""
        accept = request.headers.get("Accept", "").split(",")[0].split(";")[0].strip()
        if result.get("isBase64Encoded") and _is_binary(accept, self.binary_types):
            data = base64.b64decode(body)
        else:
            data = body.encode("utf-8")
        return Response(data, status=int(result["statusCode"]), headers=headers)

    def gateway_response(
        self,
        kind: str,
        request_id: str,
        message: str | None = None,
        authorizer: dict[str, Any] | None = None,
    ) -> Response:
        status, default_message = _DEFAULT_RESPONSES[kind]
        message = message if message is not None else default_message
        spec = self.responses.get(kind) or self.responses.get(f"DEFAULT_{str(status)[0]}XX") or {}
        template = spec.get("responseTemplates", {}).get(
            "application/json", '{"message":$context.error.messageString}'
        )
        values = {
            "requestId": request_id,
            "error.message": message or "",
            "error.messageString": json.dumps(message),
            "error.responseType": kind,
            **{f"authorizer.{k}": str(v) for k, v in (authorizer or {}).items()},
        }
        body = re.sub(
            r"\$context\.([A-Za-z0-9_]+(?:\.[A-Za-z0-9_]+)*)",
            lambda m: values.get(m.group(1), ""),
            template,
        )
        response = Response(body, status=int(spec.get("statusCode", status)))
        response.headers["Content-Type"] = "application/json"
        response.headers["x-amzn-RequestId"] = request_id
        response.headers["x-amzn-ErrorType"] = kind
        for key, value in spec.get("responseParameters", {}).items():
            if key.startswith("gatewayresponse.header."):
                response.headers[key.split(".", 2)[2]] = value.strip("'")
        return response


class Gateway:
    """The WSGI app and its threaded Werkzeug server."""

    def __init__(self, apis: list[RestApi], web_root: Path | None) -> None:
        self.apis = {api.stage: api for api in apis}
        self.web_root = web_root if web_root and web_root.is_dir() else None
        self._server: Any = None
        self._thread: threading.Thread | None = None

    def __call__(self, environ: dict[str, Any], start_response: Callable) -> Any:
        request = Request(environ)
        started = time.monotonic()
        stage, _, rest = request.path.lstrip("/").partition("/")
        if stage in self.apis:
            response = self.apis[stage].handle(request, "/" + rest)
        else:
            response = self._static(request)
        log.info(
            "%s %s %s %.0fms",
            request.method,
            request.full_path.rstrip("?"),
            response.status_code,
            (time.monotonic() - started) * 1000,
        )
        return response(environ, start_response)

    def _static(self, request: Request) -> Response:
        if self.web_root is None or request.method not in ("GET", "HEAD"):
            return _json_response(404, {"message": "Not Found"})
        target = safe_join(str(self.web_root), request.path.lstrip("/") or "index.html")
        if target is None or not Path(target).is_file():
            target = str(self.web_root / "index.html")  # single-page app: the client routes
        return send_file(target, request.environ)

    def start(self, host: str, port: int) -> int:
        self._server = make_server(host, port, self, threaded=True)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self._server.server_port

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join(timeout=5)  # type: ignore[union-attr]
            self._server = None
        for api in self.apis.values():
            api.close()


def _segments(path: str) -> tuple[tuple[int, str], ...]:
    """Sort key and matcher: literal segments before {param} before {greedy+}."""
    kinds = []
    for part in [p for p in path.split("/") if p]:
        kind = 2 if part.endswith("+}") else 1 if part.startswith("{") else 0
        kinds.append((kind, part))
    return tuple(kinds)


def _match(segments: tuple[tuple[int, str], ...], parts: list[str]) -> dict[str, str] | None:
    params: dict[str, str] = {}
    for index, (kind, segment) in enumerate(segments):
        if kind == 2:
            if index >= len(parts):
                return None
            params[segment[1:-2]] = "/".join(parts[index:])
            return params
        if index >= len(parts):
            return None
        if kind == 1:
            params[segment[1:-1]] = parts[index]
        elif segment != parts[index]:
            return None
    return params if len(parts) == len(segments) else None


def _is_binary(mimetype: str, binary_types: list[str]) -> bool:
    mimetype = mimetype.lower()
    return any(
        re.fullmatch(re.escape(t.lower()).replace(r"\*", ".*"), mimetype) for t in binary_types
    )


def _mock_response(integration: dict[str, Any]) -> Response:
    """CORS preflight: SAM's mock integration answers with its response parameters."""
    default = integration.get("responses", {}).get("default", {})
    response = Response(
        default.get("responseTemplates", {}).get("application/json", ""),
        status=int(default.get("statusCode", 200)),
        content_type="application/json",
    )
    for key, value in default.get("responseParameters", {}).items():
        response.headers[key.rsplit(".", 1)[1]] = value.strip("'")
    return response


def _json_response(status: int, body: Any) -> Response:
    return Response(json.dumps(body), status=status, content_type="application/json")


def _json_or_none(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return None
