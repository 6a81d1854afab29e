"""Sign-in, the layout a role gets, the language switch and sign-out."""

from __future__ import annotations

import re

from playwright.sync_api import Page, expect

from tests.browser.ui import PASSWORD, fits_width, menu, sign_in


def test_a_village_doctor_signs_in_with_the_keyboard_and_sees_their_menu(page: Page, console, shot):
    # Given the sign-in page (a wrong password first: the API answers 401 on purpose)
    console.allow_http(401)
    page.goto("/")
    expect(page).to_have_url(re.compile(r"/login"))
    shot("01-sign-in")
    page.get_by_label("用户名").fill("lijianguo")
    page.get_by_label("密码", exact=True).fill("not-the-password")
    page.get_by_role("button", name="登录").click()
    expect(page.get_by_role("alert")).to_contain_text("用户名或密码错误")
    expect(page.get_by_role("alert")).to_contain_text("BAD_CREDENTIALS")
    shot("02-sign-in-failed")

    # When the doctor signs in with the keyboard only
    page.get_by_label("用户名").fill("")
    page.get_by_label("用户名").focus()
    page.keyboard.type("lijianguo")
    page.keyboard.press("Tab")
    page.keyboard.type(PASSWORD)
    page.keyboard.press("Enter")

    # Then the header names them, their clinic and role; the menu is a doctor's
    expect(page).to_have_url(re.compile(r"/patients$"))
    expect(page.get_by_test_id("who-name")).to_have_text("李建国")
    expect(page.get_by_test_id("who-institution")).to_have_text("桥头镇李家村卫生室")
    expect(page.get_by_test_id("who-role")).to_have_text("医生")
    nav = menu(page)
    expect(nav.get_by_text("患者查询")).to_be_visible()
    expect(nav.get_by_text("建档登记")).to_be_visible()
    expect(nav.get_by_text("疑似重复审核")).to_have_count(0)
    expect(nav.get_by_text("系统管理")).to_have_count(0)
    expect(nav.get_by_text("转诊工作台")).to_be_visible()  # referrals are live (issue 4)
    expect(nav.get_by_text("新建转诊")).to_be_visible()
    expect(nav.get_by_text("预约挂号")).to_be_visible()  # booking is live (issue 5)
    expect(nav.get_by_text("当日就诊")).to_be_visible()
    expect(nav.get_by_text("排班管理")).to_have_count(0)  # the institution admin's
    expect(nav.get_by_text("档案调阅")).to_be_visible()  # health records are live (issue 6)
    assert fits_width(page)
    shot("03-patient-search-empty")


def test_english_switch_and_sign_out(page: Page, console, shot):
    sign_in(page, "admin")
    nav = menu(page)
    expect(nav.get_by_text("疑似重复审核")).to_be_visible()
    expect(nav.get_by_text("机构与人员")).to_be_visible()

    page.get_by_test_id("lang-switch").click()
    nav = page.get_by_role("navigation", name="Main menu")
    expect(nav.get_by_text("Patient index")).to_be_visible()
    expect(page.get_by_test_id("who-role")).to_have_text("Consortium admin")
    shot("04-english")
    page.get_by_test_id("lang-switch").click()  # back to Chinese
    expect(menu(page).get_by_text("患者主索引")).to_be_visible()

    page.get_by_test_id("sign-out").click()
    expect(page).to_have_url(re.compile(r"/login\?reason=signed_out"))
    expect(page.get_by_test_id("login-notice")).to_contain_text("已安全退出")
    assert page.evaluate("sessionStorage.getItem('yilian.token')") is None
    # The pages are closed to a signed-out visitor
    page.goto("/patients")
    expect(page).to_have_url(re.compile(r"/login\?redirect=/patients"))
