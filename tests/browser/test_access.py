"""Who may open what: a resident's token opens no doctor page, a doctor is told clearly what
their role may not do, and an expired session keeps the form being typed."""

from __future__ import annotations

import re
import time

from playwright.sync_api import Page, expect

from tests.browser.ui import sign_in, use_token


def test_a_resident_token_cannot_open_the_doctor_pages(page: Page, console, site, shot):
    # Given the token the mini-program gives a resident
    token = site.seeded["resident_token"]
    for path in ("/patients", "/patients/new", "/reviews", "/admin/institutions"):
        # When they open a doctor page with it
        use_token(page, token, path)
        # Then the client says it is for clinical staff, and shows no patient data
        expect(page).to_have_url(re.compile(r"/staff-only$"))
        expect(page.get_by_text("本客户端仅供医务人员使用")).to_be_visible()
        expect(page.get_by_role("navigation")).to_have_count(0)
    shot("10-resident-staff-only")


def test_a_doctor_is_told_clearly_what_their_role_may_not_do(page: Page, console, shot):
    console.allow_http(403)
    sign_in(page, "lijianguo")

    # The review queue: the API refuses a doctor, and the page shows its code and message
    page.goto("/reviews")
    state = page.locator("[data-state=forbidden]")
    expect(state).to_contain_text("无权访问")
    expect(state).to_contain_text("您的角色无权执行此操作")
    expect(state.get_by_test_id("error-code")).to_have_text("ROLE_NOT_ALLOWED")
    expect(state).to_contain_text("HTTP 403")
    shot("11-forbidden-review-queue")

    # Directory management: the page says which roles may use it
    page.goto("/admin/institutions")
    state = page.locator("[data-state=forbidden]")
    expect(state).to_contain_text("您当前的角色（医生）不能使用此功能")
    expect(state).to_contain_text("机构管理员、医共体管理员")
    expect(page.get_by_test_id("institutions-table")).to_have_count(0)
    shot("12-forbidden-directory")


def test_an_expired_session_returns_to_sign_in_and_keeps_the_draft(page: Page, console, site):
    # Given a doctor whose token runs out in a few seconds, typing a registration
    token = site.token(
        "doctor", "doc-lijianguo", ttl=6, institution_id="qiaotou-lijia", name="李建国"
    )
    started = time.monotonic()
    use_token(page, token, "/patients/new")
    page.get_by_label("姓名").fill("草稿保留")
    page.get_by_label("手机号").fill("13900001111")

    # When the token expires, the screen locks: back to sign-in, told why
    time.sleep(max(0.0, 6.5 - (time.monotonic() - started)))
    expect(page).to_have_url(re.compile(r"/login\?redirect=/patients/new&reason=expired"))
    expect(page.get_by_test_id("login-notice")).to_contain_text("登录已过期")

    # Then signing in again brings the form back as it was
    sign_in(page, "lijianguo", land=r"/patients/new$", here=True)
    expect(page.get_by_test_id("draft-restored")).to_be_visible()
    expect(page.get_by_label("姓名")).to_have_value("草稿保留")
    expect(page.get_by_label("手机号")).to_have_value("13900001111")


def test_another_user_never_sees_someone_elses_draft(page: Page, console, site):
    token = site.token("doctor", "doc-lijianguo", ttl=4, institution_id="qiaotou-lijia")
    use_token(page, token, "/patients/new")
    page.get_by_label("姓名").fill("别人的草稿")
    expect(page).to_have_url(re.compile(r"reason=expired"), timeout=10_000)
    sign_in(page, "wangfang", land=r"/patients/new$", here=True)
    expect(page.get_by_label("姓名")).to_have_value("")
    expect(page.get_by_test_id("draft-restored")).to_have_count(0)
