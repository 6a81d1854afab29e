"""Two-way referral in a browser: a village doctor refers a resident up to the county
hospital's cardiology department; the county specialist finds it under 待审核, accepts it and
confirms the patient's arrival; the village doctor sees where it went."""

from __future__ import annotations

import re

from playwright.sync_api import Page, expect

from tests.browser.ui import fits_width, menu, sign_in
from yilian_local.demo_county import residents

REFERENCE = re.compile(r"/referrals/([A-Z0-9]{8,})$")


def test_upward_referral_applied_accepted_and_arrived(page: Page, console, shot, new_context):
    # registered at 桥头镇李家村卫生室 (lijianguo's clinic), in none of the demo referrals
    resident = residents()[12]
    assert resident.registered_at == "qiaotou-lijia"

    # --- the village doctor opens the referral worklist and starts a new referral
    sign_in(page, "lijianguo")
    menu(page).get_by_text("转诊工作台").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("转诊工作台")
    expect(page.get_by_role("tab", name=re.compile("待审核"))).to_be_visible()
    expect(page.get_by_role("tab", name=re.compile("转诊中心"))).to_have_count(0)  # not theirs
    page.get_by_test_id("new-referral").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("新建转诊")

    # nothing is sent before the required fields are there
    page.get_by_test_id("referral-submit").click()
    form = page.get_by_test_id("referral-form")
    expect(form).to_contain_text("请选择患者")
    expect(form).to_contain_text("请选择接收机构")
    page.get_by_role("button", name="清空").click()
    expect(form).not_to_contain_text("请选择患者")

    # the patient, from the master index (name, sex and birth date to tell namesakes apart)
    patient = page.get_by_role("combobox", name="患者")
    patient.click()
    patient.fill(resident.name)
    page.get_by_role("option", name=re.compile(re.escape(resident.birth_date))).first.click()
    expect(form.get_by_test_id("patient-select")).to_contain_text(resident.name)

    page.get_by_role("radiogroup", name="紧急程度").get_by_text("加急").click()

    # upward: only institutions of a higher tier are offered, with their tier
    target = page.get_by_role("combobox", name="接收机构")
    target.click()
    county = page.get_by_role("option", name=re.compile("示范县人民医院"))
    expect(county).to_contain_text("县级")
    expect(page.get_by_role("option", name=re.compile("桥头镇卫生院"))).to_contain_text("乡镇级")
    expect(page.get_by_role("option", name=re.compile("桥头镇东岭村卫生室"))).to_have_count(0)
    county.click()

    # the department from the county hospital's own departments
    department = page.get_by_role("textbox", name="接收科室")
    department.click()
    department.fill("心血管")
    page.get_by_role("option", name="心血管内科").click()
    expect(department).to_have_value("心血管内科")

    page.get_by_role("textbox", name="转诊原因").fill(
        "反复胸闷胸痛一周，村卫生室无法明确诊断，需心内科评估"
    )
    diagnosis = page.get_by_role("combobox", name="初步诊断")
    diagnosis.click()
    diagnosis.fill("I20")
    page.get_by_role("option", name=re.compile(r"I20\.0")).click()
    expect(page.get_by_role("textbox", name="诊断描述")).to_have_value("不稳定型心绞痛")
    page.get_by_role("textbox", name="病情摘要").fill(
        "近一周活动后胸闷胸痛，每次持续约 5 分钟，休息后缓解。血压 150/95 mmHg，心率 88 次/分。"
    )
    assert fits_width(page)
    shot("50-referral-form")

    # a double click still makes one referral (one Idempotency-Key per form)
    page.get_by_test_id("referral-submit").dblclick()
    expect(page).to_have_url(REFERENCE)
    reference = REFERENCE.search(page.url).group(1)
    expect(page.get_by_test_id("referral-id")).to_have_text(reference)
    expect(page.get_by_test_id("referral-status")).to_have_text("待审核")
    expect(page.get_by_test_id("referral-urgency")).to_have_text("加急")
    expect(page.get_by_test_id("referral-direction")).to_contain_text("上转")
    info = page.get_by_test_id("referral-info")
    expect(info).to_contain_text(resident.name)
    expect(info).to_contain_text("示范县人民医院")
    expect(info).to_contain_text("心血管内科")
    expect(info).to_contain_text("I20.0")
    expect(page.get_by_test_id("referral-history")).to_contain_text("提交转诊申请")
    expect(page.get_by_test_id("action-cancel")).to_be_visible()  # the referrer may withdraw it
    expect(page.get_by_test_id("action-accept")).to_have_count(0)  # but not accept it
    shot("51-referral-applied")

    menu(page).get_by_text("转诊工作台").click()
    page.get_by_role("tab", name=re.compile("我发出的")).click()
    sent = page.get_by_test_id("referral-table")
    expect(sent.get_by_role("row", name=re.compile(reference))).to_have_count(1)
    expect(sent.get_by_role("row", name=re.compile(resident.name))).to_have_count(1)

    # --- the county cardiologist finds it under 待审核 and opens it
    county_page = new_context().new_page()
    console.watch(county_page)
    sign_in(county_page, "chenming")
    menu(county_page).get_by_text("转诊工作台").click()
    tab = county_page.get_by_role("tab", name=re.compile("待审核"))
    expect(tab).to_have_attribute("aria-selected", "true")
    table = county_page.get_by_test_id("referral-table")
    row = table.get_by_role("row", name=re.compile(reference))
    expect(row).to_contain_text(resident.name)
    expect(row).to_contain_text("↑ 上转")
    expect(row).to_contain_text("加急")
    expect(row).to_contain_text("桥头镇李家村卫生室")
    expect(row).to_contain_text("待审核")
    assert fits_width(county_page)
    shot("52-referral-worklist-to-review", county_page)
    row.get_by_text(resident.name).click()  # the whole row opens the referral
    expect(county_page).to_have_url(re.compile(f"/referrals/{reference}$"))
    status = county_page.get_by_test_id("referral-status")
    expect(status).to_have_text("待审核")
    expect(county_page.get_by_test_id("referral-summary")).to_contain_text("血压 150/95 mmHg")

    # --- accepts it
    county_page.get_by_test_id("action-accept").click()
    dialog = county_page.get_by_role("dialog", name="接收转诊")
    expect(dialog.get_by_role("textbox", name="接收科室")).to_have_value("心血管内科")
    dialog.get_by_role("textbox", name="备注").fill("请明早空腹到心内科门诊，携带既往心电图")
    shot("53-referral-accept-dialog", county_page)
    dialog.get_by_test_id("action-confirm").click()
    expect(dialog).to_be_hidden()
    expect(status).to_have_text("已接收待到院")
    decision = county_page.get_by_test_id("referral-decision")
    expect(decision).to_contain_text("已接收")
    expect(decision).to_contain_text("陈明")
    history = county_page.get_by_test_id("referral-history")
    expect(history).to_contain_text("接收")
    expect(history).to_contain_text("陈明")
    expect(county_page.get_by_test_id("action-accept")).to_have_count(0)
    shot("54-referral-accepted", county_page)

    # it now waits in 待到院
    menu(county_page).get_by_text("转诊工作台").click()
    county_page.get_by_role("tab", name=re.compile("待到院")).click()
    waiting = table.get_by_role("row", name=re.compile(reference))
    expect(waiting).to_contain_text("已接收待到院")
    waiting.get_by_role("link", name=reference).click()

    # --- the patient comes: arrival confirmed
    county_page.get_by_test_id("action-arrive").click()
    dialog = county_page.get_by_role("dialog", name="确认患者已到院")
    dialog.get_by_test_id("action-confirm").click()
    expect(dialog).to_be_hidden()
    expect(county_page.get_by_test_id("referral-status")).to_have_text("已到院")
    expect(county_page.get_by_test_id("referral-history")).to_contain_text("到院确认")
    expect(county_page.get_by_test_id("referral-actions")).to_have_count(0)  # nothing left to do
    shot("55-referral-arrived", county_page)
    county_page.close()

    # --- the village doctor sees where their referral went
    page.goto(f"/referrals/{reference}")
    expect(page.get_by_test_id("referral-status")).to_have_text("已到院")
    history = page.get_by_test_id("referral-history")
    for event in ("提交转诊申请", "接收", "到院确认"):
        expect(history).to_contain_text(event)
    shot("56-referral-referrer-view")


def test_the_referral_centre_has_the_escalated_box_and_consortium_statistics(
    page: Page, console, shot
):
    # the referral centre's staff start at the worklist, with the escalated box
    sign_in(page, "zhuanzhen", land=r"/referrals")
    expect(page.get_by_test_id("who-role")).to_have_text("转诊中心")
    expect(page.get_by_role("heading", level=1)).to_have_text("转诊工作台")
    page.get_by_role("tab", name=re.compile("转诊中心")).click()
    expect(page).to_have_url(re.compile(r"box=escalated"))
    expect(page.get_by_test_id("new-referral")).to_have_count(0)  # they do not refer patients
    expect(menu(page).get_by_text("新建转诊")).to_have_count(0)

    # statistics for the whole consortium or one institution, last 30 days by default
    menu(page).get_by_text("转诊统计").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("转诊统计")
    kpis = page.get_by_test_id("stats-kpis")
    for label in ("转诊申请", "上转 / 下转", "接收率", "决定用时中位数", "超时", "未到院"):
        expect(kpis).to_contain_text(label)
    expect(kpis).to_contain_text("县域外转诊占比")
    expect(page.get_by_test_id("chart-daily").locator("canvas")).to_have_count(1)
    expect(page.get_by_test_id("chart-institutions").locator("canvas")).to_have_count(1)
    institution = page.get_by_role("combobox", name="机构")
    expect(institution).to_be_visible()
    assert fits_width(page)
    shot("57-referral-statistics")
