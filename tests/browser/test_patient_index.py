"""The patient index end to end in a browser: a village doctor registers a resident and finds
them by pinyin; the township centre registers them again with a homophone name; the
consortium admin sees the pair side by side in the review queue, merges it, and undoes it."""

from __future__ import annotations

import random
import re
from datetime import date, timedelta

from playwright.sync_api import Page, expect

from tests.browser.ui import fits_width, menu, sign_in
from yilian.domain.identity import id_check_digit


def resident_id(birth: date, female: bool) -> str:
    order = random.randrange(300, 499) * 2 + (0 if female else 1)  # even: female
    body = f"330122{birth:%Y%m%d}{order:03d}"
    return body + id_check_digit(body)


def wrong_check_digit(id_number: str) -> str:
    return id_number[:17] + ("0" if id_number[17] != "0" else "1")


def test_register_find_review_merge_and_unmerge(page: Page, console, shot, new_context):
    birth = date(1986, 3, 1) + timedelta(days=random.randrange(0, 300))
    id_number = resident_id(birth, female=True)

    # --- a village doctor registers 欧阳晓燕, the ID number checked as it is typed
    sign_in(page, "lijianguo")
    menu(page).get_by_text("建档登记").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("建档登记")
    id_input = page.get_by_role("textbox", name="身份证号")
    status = page.get_by_test_id("id-status")
    id_input.fill(id_number[:10])
    expect(status).to_have_text("还差 8 位")
    id_input.fill(wrong_check_digit(id_number))
    expect(status).to_contain_text(f"最后一位应为 {id_number[17]}")
    id_input.fill(id_number)
    expect(status).to_contain_text("身份证号校验通过")
    expect(status).to_contain_text(f"出生日期 {birth.isoformat()}")
    expect(status).to_contain_text("性别 女")
    expect(page.get_by_role("radio", name="女")).to_be_checked()  # derived and filled in
    expect(page.get_by_label("出生日期")).to_have_value(birth.isoformat())
    page.get_by_label("姓名").fill("欧阳晓燕")
    page.get_by_label("手机号").fill("13712345678")
    page.get_by_label("住址").fill("示范县桥头镇李家村88号")
    page.get_by_label("本院门诊号").fill("V-BROWSER-1")
    assert fits_width(page)
    shot("30-register-validated")
    page.get_by_role("button", name="提交建档").click()
    result = page.get_by_test_id("register-result")
    expect(result).to_have_attribute("data-outcome", "NO_MATCH")
    expect(result).to_contain_text("已建立新的主索引")
    shot("31-register-new-person")

    # --- and finds her by pinyin
    menu(page).get_by_text("患者查询").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("患者查询")
    page.get_by_label("查询内容").fill("ouyang xiaoyan")
    page.get_by_label("查询内容").press("Enter")
    results = page.get_by_test_id("search-results")
    row = results.get_by_role("row", name=re.compile("欧阳晓燕"))
    expect(row).to_be_visible()
    expect(row).to_contain_text(birth.isoformat())
    expect(row).to_contain_text(id_number[:4] + "**********" + id_number[-4:])  # masked
    expect(results).not_to_contain_text(id_number)
    shot("32-search-by-pinyin")
    row.get_by_role("link", name="欧阳晓燕").click()
    expect(page.get_by_test_id("person-name")).to_contain_text("欧阳晓燕")
    identifiers = page.get_by_test_id("identifiers-table")
    expect(identifiers).to_contain_text("居民身份证")
    expect(identifiers).to_contain_text("桥头镇李家村卫生室")  # the local number's assigner
    expect(page.locator("main")).not_to_contain_text(id_number)
    expect(page.get_by_test_id("history")).to_contain_text("建档")
    original = page.url.rsplit("/", 1)[1]
    shot("33-person-page")

    # --- the township centre registers her again: homophone name, no ID card, no phone
    township = new_context().new_page()
    console.watch(township)
    sign_in(township, "wangfang")
    township.goto("/patients/new")
    township.get_by_text("无身份证（如新生儿）").click()
    township.get_by_label("姓名").fill("欧阳小燕")
    township.get_by_role("radio", name="女").check(force=True)
    township.get_by_label("出生日期").fill(birth.isoformat())
    township.get_by_label("出生日期").press("Enter")
    township.get_by_label("住址").fill("示范县桥头镇李家村88号")
    township.get_by_role("button", name="提交建档").click()
    result = township.get_by_test_id("register-result")
    expect(result).to_have_attribute("data-outcome", "POSSIBLE_MATCH")
    expect(result).to_contain_text("已提交医共体管理员审核")
    shot("34-register-possible-duplicate", township)
    township.close()

    # --- the consortium admin compares the two side by side
    admin = new_context().new_page()
    console.watch(admin)
    sign_in(admin, "admin")
    menu(admin).get_by_text("疑似重复审核").click()
    admin.get_by_role("button", name=re.compile("欧阳晓燕 ↔ 欧阳小燕")).click()
    compare = admin.get_by_test_id("review-compare")
    expect(compare.get_by_role("heading")).to_have_text("欧阳晓燕 ↔ 欧阳小燕")
    table = admin.get_by_test_id("compare-table")
    expect(table.locator("tr[data-field=name]")).to_have_attribute("data-agreement", "partial")
    expect(table.locator("tr[data-field=name]")).to_contain_text("同音字")
    expect(table.locator("tr[data-field=birthDate]")).to_have_attribute("data-agreement", "agree")
    expect(table.locator("tr[data-field=sex]")).to_have_attribute("data-agreement", "agree")
    expect(table.locator("tr[data-field=address]")).to_have_attribute("data-agreement", "agree")
    expect(table.locator("tr[data-field=phone]")).to_have_attribute("data-agreement", "missing")
    assert fits_width(admin)
    shot("35-review-side-by-side", admin)

    # --- merges them, keeping the existing record; a reason is required
    admin.get_by_role("radio", name="保留已有档案").check(force=True)
    admin.get_by_test_id("decide-merge").click()
    dialog = admin.get_by_role("dialog", name="审核决定：合并")
    dialog.get_by_role("button", name="确认").click()
    expect(dialog).to_contain_text("请填写原因")
    dialog.get_by_label("原因").fill("出生日期与住址一致，姓名为同音字录入，同一人")
    dialog.get_by_role("button", name="确认").click()
    expect(dialog).to_be_hidden()
    expect(admin.get_by_test_id("last-decision")).to_contain_text("已提交：合并")
    expect(admin.get_by_role("button", name=re.compile("欧阳晓燕 ↔ 欧阳小燕"))).to_have_count(0)
    shot("36-review-merged", admin)

    # --- the surviving record shows the merge, with its reason, and can undo it
    admin.get_by_test_id("last-decision").get_by_role("link", name="欧阳晓燕").click()
    expect(admin).to_have_url(re.compile(f"/patients/{original}$"))
    links = admin.get_by_test_id("links-card")
    expect(links).to_contain_text("已并入")
    expect(links).to_contain_text("欧阳小燕")
    history = admin.get_by_test_id("history")
    expect(history).to_contain_text("合并入档")
    expect(history).to_contain_text("姓名为同音字录入")
    shot("37-person-merged", admin)
    links.get_by_role("button", name="撤销合并").click()
    dialog = admin.get_by_role("dialog", name=re.compile("撤销合并"))
    dialog.get_by_label("原因").fill("核实后为两位不同居民（母女同名同音）")
    dialog.get_by_role("button", name="确认").click()
    expect(dialog).to_be_hidden()
    expect(links).not_to_contain_text("已并入")
    expect(history).to_contain_text("撤销合并")
    expect(history).to_contain_text("母女同名同音")
    shot("38-person-unmerged", admin)
    admin.close()


def test_the_admin_links_one_pair_and_tells_another_apart(page: Page, console, shot):
    # Given the demo county's near-duplicates waiting in the queue
    sign_in(page, "admin")
    page.goto("/reviews")
    items = page.get_by_test_id("review-list").get_by_role("button")
    expect(items.first).to_be_visible()
    before = items.count()
    assert before >= 2

    def decide(action: str, label: str, reason: str) -> None:
        items.first.click()
        pair = page.get_by_test_id("review-compare").get_by_role("heading").inner_text()
        page.get_by_test_id(action).click()
        dialog = page.get_by_role("dialog", name=f"审核决定：{label}")
        dialog.get_by_label("原因").fill(reason)
        dialog.get_by_role("button", name="确认").click()
        expect(dialog).to_be_hidden()
        expect(page.get_by_test_id("last-decision")).to_contain_text(f"已提交：{label}")
        expect(page.get_by_role("button", name=pair)).to_have_count(0)

    # When one pair is linked (both records kept) ...
    decide("decide-link", "关联", "身份证号与户号一致，保留两份档案并关联")
    page.get_by_test_id("last-decision").get_by_role("link").first.click()
    links = page.get_by_test_id("links-card")
    expect(links).to_contain_text("已关联")
    shot("39-person-linked")
    # ... which the person page can undo, with a reason too
    links.get_by_role("button", name="解除关联").click()
    dialog = page.get_by_role("dialog", name=re.compile("解除与"))
    dialog.get_by_label("原因").fill("户号录入错误，并非同一人")
    dialog.get_by_role("button", name="确认").click()
    expect(dialog).to_be_hidden()
    expect(links).to_contain_text("暂无关联或合并的档案")
    expect(page.get_by_test_id("history")).to_contain_text("解除关联")

    # ... and another pair is marked as two different people
    page.goto("/reviews")
    decide("decide-not-match", "不是同一人", "电话核实：同村同名的两位居民")

    # Then the queue is shorter, and the person's history says what was decided and why
    expect(items).to_have_count(before - 2)
    page.get_by_test_id("last-decision").get_by_role("link").first.click()
    history = page.get_by_test_id("history")
    expect(history).to_contain_text("确认非同一人")
    expect(history).to_contain_text("同村同名的两位居民")
    shot("40-person-not-a-match")
