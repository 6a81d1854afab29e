"""Fixtures shared across test layers (kept minimal: each layer has its own conftest)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest


@pytest.fixture(scope="session")
def local_stack() -> Iterator:
    """The embedded local stack with the demo county: started once per session, then stopped.

    template.yaml deployed into in-process moto, handlers run in-process, the API served over
    HTTP (``local_stack.api_url``). See infra/local/yilian_local/stack.py.
    """
    from yilian_local.stack import LocalStack, load_county_params

    with LocalStack(load_county_params("demo")) as stack:
        yield stack
