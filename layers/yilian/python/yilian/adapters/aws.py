"""boto3 clients built from Settings: the one place endpoints and regions are chosen."""

from __future__ import annotations

from typing import Any

from yilian.settings import Settings


def client(settings: Settings, service: str) -> Any:
    import boto3  # lazy: keeps handler import (cold start) light

    return boto3.session.Session().client(
        service,
        region_name=settings.region or None,
        endpoint_url=settings.aws_endpoint_url,
    )
