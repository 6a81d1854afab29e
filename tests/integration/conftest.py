"""Integration fixtures: the small fixture stack (tests/integration/fixtures/stack).

The real template's stack is ``local_stack`` (tests/conftest.py). The fixture stack is a
stand-in with tiny handlers for what the real template does not exercise yet, or cannot
exercise deterministically: gateway semantics, environments, stream triggers, EventBridge.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

FIXTURE = Path(__file__).parent / "fixtures" / "stack"


@pytest.fixture(scope="session")
def web_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("web")
    (root / "index.html").write_text("<!doctype html><title>yilian</title>", encoding="utf-8")
    (root / "assets").mkdir()
    (root / "assets" / "app.js").write_text("console.log('yilian')", encoding="utf-8")
    return root


@pytest.fixture(scope="session")
def fixture_stack(web_root: Path) -> Iterator:
    from yilian_local.stack import LocalStack

    stack = LocalStack(
        {"EnvName": "fixture"},
        web_root=web_root,
        template_path=FIXTURE / "template.yaml",
        root=FIXTURE,
        stack_name="yilian-fixture",
    )
    with stack:
        yield stack
