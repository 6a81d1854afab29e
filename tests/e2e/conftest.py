"""e2e: HTTP against the running embedded local stack, as the web client calls it."""

from __future__ import annotations

import pytest
import requests

from yilian.domain.principal import Principal, Role
from yilian_local.issuer import mint


class Api:
    """A thin HTTP client bound to the stack's API base URL."""

    def __init__(self, stack) -> None:
        self.stack = stack
        self.base = stack.api_url
        self.consortium = stack.params["ConsortiumId"]

    def token(self, role: Role, subject: str = "tester", ttl: int | None = None, **kw) -> str:
        who = Principal(subject, role, kw.pop("consortium", self.consortium), **kw)
        kms = self.stack.client("kms")
        return mint(kms, self.stack.outputs["TokenSigningKeyArn"], self.stack.params, who, ttl)

    def call(self, method: str, path: str, token: str | None = None, **kw) -> requests.Response:
        headers = kw.pop("headers", {})
        if token:
            headers["Authorization"] = f"Bearer {token}"
        return requests.request(method, self.base + path, headers=headers, timeout=30, **kw)


@pytest.fixture(scope="session")
def api(local_stack) -> Api:
    return Api(local_stack)
