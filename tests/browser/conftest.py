"""Browser tests: the web client (web/dist) in Debian's Chromium, headless, driven by
Playwright against the embedded local stack with the demo county seeded.

The only reason to skip is a missing Chromium (scripts/test installs it with apt where it
can). Each test collects the page's console: an error, a Vue warning or an uncaught
exception fails the test, except the browser's own "Failed to load resource" line for an HTTP
status the test expects (a wrong password is a 401 on purpose).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
WEB = ROOT / "web"
DIST = WEB / "dist"
SCREENSHOTS = ROOT / "test-artifacts" / "screenshots"
PASSWORD = "yilian-demo-2026"
VIEWPORT = {"width": 1280, "height": 720}  # a clinic screen: the smallest we support
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
FAILED_LOAD = re.compile(r"Failed to load resource: the server responded with a status of (\d+)")
WEB_SOURCES = ("src", "public", "index.html", "package.json", "package-lock.json", "vite.config.ts")


def chromium_path() -> str | None:
    for candidate in (os.environ.get("YILIAN_CHROMIUM"), "chromium", "chromium-browser"):
        found = candidate and shutil.which(candidate)
        if found:
            return found
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if chromium_path():
        return
    skip = pytest.mark.skip(
        reason="Chromium is not installed (apt-get install chromium; scripts/test does it)"
    )
    for item in items:
        if item.path.is_relative_to(Path(__file__).parent):
            item.add_marker(skip)


def _stale() -> bool:
    index = DIST / "index.html"
    if not index.is_file():
        return True
    built = index.stat().st_mtime
    for name in WEB_SOURCES:
        path = WEB / name
        files = path.rglob("*") if path.is_dir() else [path]
        if any(f.is_file() and f.stat().st_mtime > built for f in files):
            return True
    return False


@pytest.fixture(scope="session")
def web_dist() -> Path:
    """web/dist, built now if missing or older than its sources."""
    if _stale():
        npm = shutil.which("npm")
        assert npm, "npm is needed to build the web client (web/dist is missing or stale)"
        if not (WEB / "node_modules").is_dir():
            subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=WEB, check=True)
        subprocess.run([npm, "run", "build"], cwd=WEB, check=True, capture_output=True)
    return DIST


@dataclass
class Site:
    """The running stack as the browser sees it, plus a way to mint tokens for edge cases."""

    stack: Any
    url: str
    seeded: dict[str, Any]

    def token(self, role: str, subject: str, ttl: int | None = None, **claims: Any) -> str:
        from yilian.domain.principal import Principal, Role
        from yilian_local.issuer import mint

        who = Principal(subject, Role(role), self.stack.params["ConsortiumId"], **claims)
        kms = self.stack.client("kms")
        return mint(kms, self.stack.outputs["TokenSigningKeyArn"], self.stack.params, who, ttl)


@pytest.fixture(scope="session")
def site(web_dist: Path, local_stack: Any) -> Site:
    import requests

    from yilian_local.seed import seed_demo

    index = requests.get(local_stack.gateway_url + "/", timeout=10)
    assert '<div id="app">' in index.text, (
        "the local stack does not serve web/dist: it must be started with "
        "web_root=web/dist after the web client is built (tests/conftest.py local_stack)"
    )
    return Site(local_stack, local_stack.gateway_url, seed_demo(local_stack))


@pytest.fixture(scope="session")
def browser_type_launch_args() -> dict[str, Any]:
    return {"executable_path": chromium_path(), "args": CHROMIUM_ARGS, "headless": True}


@pytest.fixture(scope="session")
def browser_context_args(site: Site) -> dict[str, Any]:
    return {"base_url": site.url, "viewport": VIEWPORT, "locale": "zh-CN"}


@dataclass
class Console:
    """What the pages said on their console, and which HTTP failures the test expects."""

    messages: list[str] = field(default_factory=list)
    allowed_statuses: set[int] = field(default_factory=set)

    def watch(self, page: Any) -> None:
        def on_console(msg: Any) -> None:
            if msg.type == "error" or (msg.type == "warning" and "[Vue warn]" in msg.text):
                self.messages.append(f"{msg.type}: {msg.text}")

        page.on("console", on_console)
        page.on("pageerror", lambda error: self.messages.append(f"pageerror: {error}"))

    def allow_http(self, *statuses: int) -> None:
        self.allowed_statuses.update(statuses)

    def problems(self) -> list[str]:
        out = []
        for text in self.messages:
            m = FAILED_LOAD.search(text)
            if m and int(m.group(1)) in self.allowed_statuses:
                continue
            out.append(text)
        return out


@pytest.fixture
def console(page: Any) -> Iterator[Console]:
    seen = Console()
    seen.watch(page)
    yield seen
    assert seen.problems() == [], "the page logged errors"


@pytest.fixture
def shot(page: Any) -> Callable[[str], Path]:
    """Saves a full-page screenshot of the current screen as test-artifacts/screenshots/NAME.png."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)

    def take(name: str, target: Any = None) -> Path:
        path = SCREENSHOTS / f"{name}.png"
        (target or page).screenshot(path=str(path), full_page=True)
        return path

    return take
