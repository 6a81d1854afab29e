"""Institution directory management: an institution admin runs their own staff list; the
consortium admin adds institutions."""

from __future__ import annotations

import re

from playwright.sync_api import Page, expect

from tests.browser.ui import fits_width, menu, sign_in


def test_an_institution_admin_adds_a_doctor_to_their_own_centre(page: Page, console, shot):
    sign_in(page, "qiaotouadmin")
    menu(page).get_by_text("机构与人员").click()
    expect(page).to_have_url(re.compile(r"/admin/institutions$"))
    table = page.get_by_test_id("institutions-table")
    expect(table).to_contain_text("示范县人民医院")
    expect(table).to_contain_text("桥头镇李家村卫生室")
    # Only their own institution can be edited
    expect(page.get_by_test_id("edit-qiaotou")).to_be_visible()
    expect(page.get_by_test_id("edit-shimen")).to_have_count(0)
    expect(page.get_by_test_id("new-institution")).to_have_count(0)
    assert fits_width(page)
    shot("20-directory-institutions")

    # Contact details of their own centre
    page.get_by_test_id("edit-qiaotou").click()
    dialog = page.get_by_role("dialog", name="编辑机构")
    dialog.get_by_label("电话").fill("0571-88881234")
    dialog.get_by_role("button", name="保存").click()
    expect(dialog).to_be_hidden()
    own_link = page.get_by_role("link", name="桥头镇卫生院", exact=True)
    own = table.get_by_role("row").filter(has=own_link)
    expect(own).to_contain_text("0571-88881234")

    # Their staff list, and a new doctor with a sign-in account
    table.get_by_role("link", name="桥头镇卫生院").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("桥头镇卫生院 · 医务人员")
    staff = page.get_by_test_id("doctors-table")
    expect(staff).to_contain_text("wangfang")
    page.get_by_test_id("new-doctor").click()
    dialog = page.get_by_role("dialog", name="添加人员")
    dialog.get_by_label("姓名").fill("林晓")
    dialog.get_by_label("科室").fill("全科")
    dialog.get_by_label("职称").fill("医师")
    dialog.get_by_label("登录用户名").fill("browser.linxiao")
    dialog.get_by_label("初始密码").fill("short")
    dialog.get_by_role("button", name="保存").click()
    expect(dialog).to_contain_text("至少 8 位")  # checked before anything is sent
    dialog.get_by_label("初始密码").fill("linxiao-2026-pass")
    shot("21-directory-new-doctor")
    dialog.get_by_role("button", name="保存").click()
    expect(dialog).to_be_hidden()
    row = staff.get_by_role("row", name=re.compile("林晓"))
    expect(row).to_contain_text("browser.linxiao")
    expect(row).to_contain_text("医生")
    shot("22-directory-staff")


def test_the_consortium_admin_adds_a_village_clinic(page: Page, console, shot):
    sign_in(page, "admin")
    page.goto("/admin/institutions")
    page.get_by_test_id("new-institution").click()
    dialog = page.get_by_role("dialog", name="新建机构")
    dialog.get_by_label("机构名称").fill("桥头镇南湾村卫生室")
    # type: village clinic is the default; the parent must be of a higher tier
    parent = dialog.get_by_role("combobox", name="上级机构")
    parent.focus()
    parent.press("Enter")  # the select opens from the keyboard
    page.get_by_role("option", name="桥头镇卫生院").click()
    expect(dialog).to_contain_text("桥头镇卫生院")
    dialog.get_by_label("机构编号").fill("browser-nanwan")
    dialog.get_by_role("button", name="保存").click()
    expect(dialog).to_be_hidden()
    row = page.get_by_test_id("institutions-table").get_by_role("row", name=re.compile("南湾村"))
    expect(row).to_contain_text("村级")
    expect(row).to_contain_text("桥头镇卫生院")

    # Filter by tier
    page.get_by_role("radio", name="乡镇级").check(force=True)
    table = page.get_by_test_id("institutions-table")
    expect(table).to_contain_text("石门镇卫生院")
    expect(table).not_to_contain_text("南湾村")
