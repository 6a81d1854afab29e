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
    from yilian_local.stack import REPO_ROOT, LocalStack, load_county_params

    # The web client too, when built (tests/browser builds it before this starts).
    web_root = REPO_ROOT / "web" / "dist"
    with LocalStack(load_county_params("demo"), web_root=web_root) as stack:
        yield stack
