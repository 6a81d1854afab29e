"""What a person does in the web client, as small steps the browser tests share."""

from __future__ import annotations

import re
from typing import Any

from playwright.sync_api import Page, expect

PASSWORD = "yilian-demo-2026"


def sign_in(
    page: Page, username: str, password: str = PASSWORD, land: str = r"/patients", *, here=False
) -> None:
    """Sign in on the sign-in page (`here`: the one already open, keeping where it leads)."""
    if not here:
        page.goto("/login")
    page.get_by_label("用户名").fill(username)
    page.get_by_label("密码", exact=True).fill(password)
    page.get_by_role("button", name="登录").click()
    expect(page).to_have_url(re.compile(land))


def use_token(page: Page, token: str, path: str) -> None:
    """Open `path` signed in with a bare token (no sign-in profile), as a minted one is."""
    page.goto("/login")
    page.evaluate("t => sessionStorage.setItem('yilian.token', t)", token)
    page.goto(path)


def menu(page: Page) -> Any:
    return page.get_by_role("navigation", name="功能菜单")


def fits_width(page: Page) -> bool:
    """No horizontal scrolling at the viewport's width (1280 px)."""
    return page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
