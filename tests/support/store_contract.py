"""The `store` fixture of the store contract tests: each test runs against the in-memory fake
and against the DynamoDB store (moto, with the tables from template.yaml)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest


def fake_and_dynamodb_store(
    fake: Callable[[], Any], dynamodb: Callable[[Any, dict[str, str]], Any]
) -> Any:
    """A `store` fixture, parametrised "fake" (`fake()`) and "dynamodb" (`dynamodb(client,
    names)`, names being the template's logical table id -> table name)."""

    @pytest.fixture(params=["fake", "dynamodb"], name="store")
    def store(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
        if request.param == "fake":
            yield fake()
            return
        from moto import mock_aws

        monkeypatch.setenv("AWS_DEFAULT_REGION", "cn-northwest-1")
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
        with mock_aws():
            import boto3

            from tests.support.template_tables import create_tables

            db = boto3.client("dynamodb")
            names = create_tables(db)
            yield dynamodb(db, names)

    return store
