"""Health records in a browser (issue 6): a doctor with no care relationship opens a person's
record, is refused, uses 紧急调阅 (break-glass) with a reason and reads the record and one of
its documents; the resident's access log shows that read with the reason, and the consortium
admin finds it among the flagged events of the audit log."""

from __future__ import annotations

import re
from datetime import date, datetime, timedelta
from typing import Any

import requests
from playwright.sync_api import Page, expect

from tests.browser.ui import fits_width, menu, sign_in
from yilian.domain.clock import CHINA_TZ
from yilian_local.demo_county import make_id_number
from yilian_local.sample_records import outpatient_visit

REASON = "患者昏迷由120送入急诊，需了解既往病史和用药"


def _call(site: Any, method: str, path: str, token: str, **kw: Any) -> requests.Response:
    headers = {"Authorization": f"Bearer {token}"}
    return requests.request(method, site.stack.api_url + path, headers=headers, timeout=30, **kw)


def _person_with_a_visit(site: Any) -> dict[str, Any]:
    """A person only the county hospital has seen: registered there, one outpatient visit
    (hypertension, a referral letter to 桥头镇卫生院) submitted by its doctor."""
    county = site.token("doctor", "doc-chenming", institution_id="county-hospital", name="陈明")
    born = date(1949, 10, 1)
    registration = {
        "name": "司马档案", "sex": "male", "birth_date": born.isoformat(),
        "phone": "13900006060", "address": "示范县城关镇人民路9号",
        "identifiers": [{"type": "id_card", "value": make_id_number(born, "male", 499)}],
    }  # fmt: skip
    created = _call(site, "POST", "/persons", county, json=registration)
    assert created.status_code in (200, 201), created.text
    person = created.json()["person"]
    when = datetime.now(CHINA_TZ).replace(microsecond=0) - timedelta(days=2)
    bundle = outpatient_visit(
        person["person_id"], "county-hospital", seed="browser-records", when=when,
        diagnoses=["I10"], referral_to="桥头镇卫生院", document=True, doctor="陈明",
    )  # fmt: skip
    submitted = _call(site, "POST", "/records/documents", county, json=bundle)
    assert submitted.status_code in (200, 201), submitted.text
    return person


def test_break_glass_opens_the_record_and_the_resident_sees_it(
    page: Page, console, site, shot, new_context
):
    person = _person_with_a_visit(site)
    pid = person["person_id"]
    console.allow_http(403)  # the first read is refused, on purpose

    # --- a township doctor, with no referral, booking or consent for this person
    sign_in(page, "wangfang")
    expect(menu(page).get_by_text("档案调阅")).to_be_visible()
    expect(menu(page).get_by_text("审计日志")).to_have_count(0)  # the admins'
    page.goto(f"/patients/{pid}")
    page.get_by_test_id("open-record").click()
    expect(page).to_have_url(re.compile(f"/records/persons/{pid}$"))

    # --- refused, told why, and offered break-glass
    refused = page.get_by_test_id("record-refused")
    expect(refused).to_contain_text("无权调阅此健康档案")
    expect(refused).to_contain_text("没有诊疗关系")
    expect(refused.get_by_test_id("error-code")).to_have_text("NO_CARE_RELATIONSHIP")
    expect(page.get_by_test_id("record-summary")).to_have_count(0)
    expect(page.get_by_test_id("record-person")).to_contain_text("司马档案")
    shot("60-record-refused")

    # --- the dialog demands a reason of at least 10 characters
    refused.get_by_test_id("break-glass-open").click()
    dialog = page.get_by_role("dialog", name="紧急调阅健康档案")
    submit = dialog.get_by_test_id("break-glass-submit")
    expect(submit).to_be_disabled()
    dialog.get_by_test_id("break-glass-reason").fill("急诊")
    expect(submit).to_be_disabled()
    dialog.get_by_test_id("break-glass-reason").fill(REASON)
    expect(submit).to_be_enabled()
    shot("61-break-glass-dialog")
    submit.click()
    expect(dialog).to_be_hidden()

    # --- the record, its basis shown: summary and timeline
    expect(page.get_by_test_id("access-basis")).to_have_text("紧急调阅")
    expect(page.get_by_test_id("emergency-banner")).to_be_visible()
    problems = page.get_by_test_id("summary-problems")
    expect(problems).to_contain_text("I10")
    expect(problems).to_contain_text("原发性高血压")
    expect(page.get_by_test_id("summary-medications")).not_to_contain_text("无")
    expect(page.get_by_test_id("summary-vitals")).to_contain_text("血压")
    timeline = page.get_by_test_id("record-timeline")
    row = timeline.get_by_role("row", name=re.compile("门诊摘要"))
    expect(row).to_contain_text("示范县人民医院")
    expect(row).to_contain_text("原发性高血压")
    assert fits_width(page)
    shot("62-record-summary")

    # the kind filter narrows the timeline
    page.get_by_test_id("filter-kind").click()
    page.get_by_role("option", name="检验报告").click()
    expect(page.get_by_text("暂无符合条件的文档")).to_be_visible()
    page.get_by_test_id("filter-kind").click()
    page.get_by_role("option", name="门诊摘要").click()
    expect(row).to_be_visible()

    # --- the document, readable
    row.get_by_role("link").click()
    expect(page).to_have_url(re.compile(r"/records/documents/d\w+"))
    expect(page.get_by_test_id("document-kind")).to_contain_text("门诊摘要")
    expect(page.get_by_test_id("document-spec")).to_have_text("WS/T 500.2 门(急)诊病历")
    header = page.get_by_test_id("document-header")
    expect(header).to_contain_text("示范县人民医院")
    expect(header).to_contain_text("陈明")
    expect(page.get_by_test_id("version-picker")).to_contain_text("v1")
    expect(page.get_by_test_id("section-encounter")).to_contain_text("门诊")
    expect(page.get_by_test_id("section-diagnoses")).to_contain_text("I10")
    expect(page.get_by_test_id("section-vitals")).to_contain_text("mmHg")
    expect(page.get_by_test_id("section-medications")).to_contain_text("口服")
    letter = page.get_by_test_id("letter-text")
    expect(letter).to_contain_text("转入机构：桥头镇卫生院")  # the base64 text, decoded
    expect(page.get_by_text('"resourceType"')).to_have_count(0)  # not raw JSON
    assert fits_width(page)
    shot("63-record-document")

    # --- the resident's access log shows the break-glass read and its reason
    resident = site.token("resident", f"resident-{pid}", person_id=pid, name="司马档案")
    log = _call(site, "GET", "/me/access-log", resident)
    assert log.status_code == 200, log.text
    reads = [e for e in log.json()["items"] if e["break_glass"] and e["outcome"] == "allowed"]
    assert reads, log.json()
    assert {e["reason"] for e in reads} == {REASON}
    assert {e["who"] for e in reads} == {"王芳"}
    assert {e["institution_name"] for e in reads} == {"桥头镇卫生院"}
    assert any(e["what"] == "Record.document" for e in reads)
    denied = [e for e in log.json()["items"] if e["outcome"] == "denied"]
    assert denied and denied[-1]["who"] == "王芳"  # the refused attempt is there too

    # --- the consortium admin finds it among the flagged events
    admin_page = new_context().new_page()
    console.watch(admin_page)
    sign_in(admin_page, "admin")
    menu(admin_page).get_by_text("审计日志").click()
    expect(admin_page.get_by_role("heading", level=1)).to_have_text("审计日志")
    admin_page.get_by_test_id("audit-search").click()
    table = admin_page.get_by_test_id("audit-table")
    flagged = table.get_by_role("row", name=re.compile(re.escape(REASON))).first
    expect(flagged).to_contain_text("王芳")
    expect(flagged).to_contain_text("桥头镇卫生院")
    expect(flagged).to_contain_text("紧急调阅")
    expect(table).to_contain_text("就诊时间轴")  # what was read, named in Chinese
    expect(table).not_to_contain_text("Record.timeline")
    admin_page.get_by_test_id("by-actor").click()
    admin_page.get_by_test_id("audit-value").fill("wangfang")
    admin_page.get_by_test_id("audit-search").click()
    expect(admin_page.get_by_text("操作人工号：doc-wangfang")).to_be_visible()
    expect(table.get_by_role("row", name=re.compile("拒绝")).first).to_contain_text("王芳")
    shot("64-audit-log", admin_page)
    admin_page.close()
