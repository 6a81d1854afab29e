"""Remote consultation (远程会诊) in a browser: a township doctor asks the county hospital for a
written multidisciplinary opinion on a patient; the consultation centre accepts it with two
experts from the candidates list (one leads); both accept in their worklists; one files an
opinion; the lead signs the report (after being told that the consultation moved on under
them); the requester reads the signed report and acknowledges it; the centre's accounting
shows the fees."""

from __future__ import annotations

import re

from playwright.sync_api import Page, expect

from tests.browser.ui import fits_width, menu, sign_in
from yilian_local.demo_county import residents

REFERENCE = re.compile(r"/consultations/(HZ[0-9A-F]{14})$")


def accounting(site) -> dict:
    """This month's accounting as the centre sees it (other tests may have reported some)."""
    import requests

    token = site.token("referral_centre", "doc-zhuanzhen", institution_id="county-hospital")
    answer = requests.get(
        f"{site.stack.api_url}/consultations/accounting",
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )
    answer.raise_for_status()
    body = answer.json()
    return {
        "experts": {e["doctor_id"]: e for e in body["experts"]},
        "institutions": {i["institution_id"]: i for i in body["institutions"]},
    }


def yuan(x: float) -> str:
    return f"¥{x:.2f}"


def test_written_mdt_consultation_requested_assigned_reported_and_accounted(
    page: Page, console, shot, new_context, site
):
    # wangfang (桥头镇卫生院) referred this resident up to the county hospital: she treats them
    patient = residents()[2]
    console.allow_http(409)  # the lead signs on a page the other expert's opinion outdated
    before = accounting(site)

    def fee(kind: str, key: str, field: str) -> float:
        return before[kind].get(key, {}).get(field, 0)

    # --- the township doctor requests a written MDT consultation
    sign_in(page, "wangfang")
    expect(menu(page).get_by_text("远程会诊")).to_be_visible()
    menu(page).get_by_text("会诊申请").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("会诊申请")
    form = page.get_by_test_id("consultation-form")
    page.get_by_test_id("consultation-submit").click()  # nothing is sent before it is complete
    expect(form).to_contain_text("请选择患者")
    expect(form).to_contain_text("请选择会诊机构")

    who = page.get_by_role("combobox", name="患者")
    who.click()
    who.fill(patient.name)
    page.get_by_role("option", name=re.compile(re.escape(patient.birth_date))).first.click()
    expect(page.get_by_test_id("materials")).to_contain_text("档案文档")

    centre = page.get_by_role("combobox", name="会诊机构")
    centre.click()
    expect(page.get_by_role("option", name=re.compile("桥头镇卫生院"))).to_have_count(0)  # own
    page.get_by_role("option", name=re.compile("示范县人民医院")).click()
    page.get_by_role("radiogroup", name="会诊类型").get_by_text("多学科会诊").click()
    page.get_by_role("radiogroup", name="会诊方式").get_by_text("书面会诊").click()
    expect(page.get_by_role("combobox", name="会诊科室")).to_be_enabled()
    page.get_by_test_id("specialty-select").click()
    page.get_by_role("option", name="心血管内科").click()
    page.get_by_role("option", name="神经内科").click()
    page.keyboard.press("Escape")
    page.get_by_role("textbox", name="会诊目的").fill("胸痛伴头晕待查，请心内科、神经内科共同评估")
    page.get_by_role("textbox", name="病情摘要").fill(
        "65岁，反复胸痛两周，伴阵发性头晕；血压 160/95 mmHg，心电图 ST 段压低。"
    )
    assert fits_width(page)
    shot("80-consultation-form")
    page.get_by_test_id("consultation-submit").click()
    expect(page).to_have_url(REFERENCE)
    cid = REFERENCE.search(page.url).group(1)
    expect(page.get_by_test_id("consultation-status")).to_have_text("待审核")
    expect(page.get_by_test_id("consultation-kind")).to_contain_text("多学科会诊")
    expect(page.get_by_test_id("consultation-mode")).to_have_text("书面会诊")
    expect(page.get_by_test_id("consultation-materials")).to_contain_text(patient.name)
    expect(page.get_by_test_id("consultation-history")).to_contain_text("提交会诊申请")
    expect(page.get_by_test_id("action-cancel")).to_be_visible()  # the requester may withdraw
    expect(page.get_by_test_id("action-accept")).to_have_count(0)  # but not accept

    # --- the centre finds it on the board and accepts it with two experts
    centre_page = new_context().new_page()
    console.watch(centre_page)
    sign_in(centre_page, "zhuanzhen", land=r"/referrals")
    menu(centre_page).get_by_text("会诊中心").click()
    expect(centre_page.get_by_role("heading", level=1)).to_have_text("会诊中心")
    card = centre_page.get_by_test_id("column-REQUESTED").get_by_test_id(f"board-item-{cid}")
    expect(card).to_contain_text("心血管内科,神经内科")
    expect(card).to_contain_text("MDT")
    expect(card).to_contain_text("王芳")
    assert fits_width(centre_page)
    shot("81-consultation-board", centre_page)
    card.click()
    expect(centre_page).to_have_url(re.compile(f"/consultations/{cid}$"))
    centre_page.get_by_test_id("action-accept").click()
    dialog = centre_page.get_by_role("dialog", name="受理并邀请专家")
    candidates = dialog.get_by_test_id("candidates-table")
    expect(candidates.get_by_role("row", name=re.compile("陈明"))).to_contain_text("心血管内科")
    expect(candidates.get_by_role("row", name=re.compile("陈明"))).to_contain_text("主任医师")
    expect(candidates.get_by_role("row", name=re.compile("刘艳"))).to_contain_text("神经内科")
    dialog.get_by_test_id("pick-doc-chenming").click()
    dialog.get_by_test_id("pick-doc-liuyan").click()
    dialog.get_by_test_id("lead-doc-chenming").click()
    for doctor in ("doc-chenming", "doc-liuyan"):
        expect(dialog.get_by_test_id(f"pick-{doctor}")).to_have_class(re.compile("is-checked"))
    expect(dialog.get_by_role("spinbutton", name="需接受的专家数")).to_have_value("2")
    shot("82-consultation-accept", centre_page)
    dialog.get_by_test_id("accept-confirm").click()
    expect(dialog).to_be_hidden()
    expect(centre_page.get_by_test_id("consultation-status")).to_have_text("专家邀请中")
    parties = centre_page.get_by_test_id("participants-table")
    chenming_row = parties.get_by_role("row", name=re.compile("陈明"))
    expect(chenming_row.get_by_test_id("lead-mark")).to_be_visible()
    expect(chenming_row.get_by_test_id("invite-state")).to_have_text("待确认")
    expect(
        parties.get_by_role("row", name=re.compile("刘艳")).get_by_test_id("lead-mark")
    ).to_have_count(0)

    # --- both experts accept the invitation in their worklists
    experts = {}
    for username, name in (("chenming", "陈明"), ("liuyan", "刘艳")):
        p = new_context().new_page()
        console.watch(p)
        sign_in(p, username)
        menu(p).get_by_text("我的会诊").click()
        row = p.get_by_test_id("consultation-table").get_by_role("row", name=re.compile(cid))
        expect(row.get_by_test_id("my-state")).to_have_text("待确认")
        row.get_by_test_id("respond-accept").click()
        expect(row.get_by_test_id("my-state")).to_have_text("已接受")
        experts[name] = p
    shot("83-consultation-worklist", experts["刘艳"])
    expect(
        experts["刘艳"]
        .get_by_test_id("consultation-table")
        .get_by_role("row", name=re.compile(cid))
        .get_by_test_id("row-status")
    ).to_have_text("会诊中")

    # the lead opens the consultation now: no opinion yet
    lead = experts["陈明"]
    lead.get_by_test_id("consultation-table").get_by_role("link", name=cid).click()
    expect(lead.get_by_test_id("consultation-status")).to_have_text("会诊中")
    expect(lead.get_by_test_id("report-editor")).to_be_visible()

    # --- liuyan files her opinion
    other = experts["刘艳"]
    other.get_by_test_id("consultation-table").get_by_role("link", name=cid).click()
    expect(other.get_by_test_id("report-editor")).to_have_count(0)  # not the lead
    other.get_by_role("textbox", name="意见-所见与分析").fill(
        "神经系统查体未见定位体征，头晕考虑血压波动所致"
    )
    other.get_by_role("textbox", name="意见-建议").fill("控制血压，必要时头颅 MRI")
    other.get_by_test_id("action-opinion").click()
    expect(other.get_by_test_id("consultation-opinions")).to_contain_text("血压波动")

    # --- the lead signs on the page loaded before that opinion: told it moved on, then signs
    lead.get_by_role("textbox", name="报告-会诊意见").fill(
        "考虑不稳定型心绞痛；头晕与血压控制不佳相关"
    )
    lead.get_by_role("textbox", name="报告-建议").fill("冠脉 CTA，调整降压方案，两周后复诊")
    lead.get_by_test_id("action-sign").click()
    conflict = lead.get_by_test_id("conflict")
    expect(conflict).to_contain_text("签发会诊报告")
    expect(conflict.get_by_test_id("error-code")).to_have_text("REPLAYED")
    expect(lead.get_by_test_id("consultation-opinions")).to_contain_text("血压波动")  # reloaded
    shot("84-consultation-replayed", lead)
    lead.get_by_test_id("action-sign").click()
    report = lead.get_by_test_id("consultation-report")
    expect(report).to_contain_text("不稳定型心绞痛")
    expect(report.get_by_test_id("report-signed-by")).to_contain_text("陈明")
    expect(lead.get_by_test_id("consultation-status")).to_have_text("报告已签发")
    expect(lead.get_by_test_id("report-editor")).to_have_count(0)

    # --- the requester reads the signed report and acknowledges it
    page.reload()
    expect(page.get_by_test_id("consultation-status")).to_have_text("报告已签发")
    report = page.get_by_test_id("consultation-report")
    expect(report).to_contain_text("冠脉 CTA")
    expect(report).to_contain_text("陈明 主任医师")
    shot("85-consultation-report", page)
    page.get_by_test_id("action-acknowledge").click()
    expect(page.get_by_test_id("consultation-status")).to_have_text("已完成")
    history = page.get_by_test_id("consultation-history")
    for event in ("受理并邀请专家", "提交会诊意见", "签发会诊报告", "申请医生确认报告"):
        expect(history).to_contain_text(event)
    expect(page.get_by_test_id("consultation-actions")).to_have_count(0)

    # --- the centre's accounting: the MDT tariff by title, split 70 / 30
    menu(centre_page).get_by_text("会诊统计").click()
    expect(centre_page.get_by_role("heading", level=1)).to_have_text("会诊工作量与费用")
    table = centre_page.get_by_test_id("experts-table")
    chenming = table.get_by_role("row", name=re.compile("陈明"))
    expect(chenming).to_contain_text(yuan(fee("experts", "doc-chenming", "fee_yuan") + 400))
    mdt = before["experts"].get("doc-chenming", {}).get("by_kind", {}).get("mdt", 0) + 1
    expect(chenming).to_contain_text(f"MDT {mdt}")
    liuyan = table.get_by_role("row", name=re.compile("刘艳"))
    expect(liuyan).to_contain_text(yuan(fee("experts", "doc-liuyan", "fee_yuan") + 300))
    insts = centre_page.get_by_test_id("institutions-table")
    county = insts.get_by_role("row", name=re.compile("示范县人民医院"))
    received = fee("institutions", "county-hospital", "fee_received_yuan") + 490
    expect(county).to_contain_text(yuan(received))
    qiaotou = insts.get_by_role("row", name=re.compile("桥头镇卫生院"))
    retained = fee("institutions", "qiaotou", "fee_retained_yuan") + 210
    expect(qiaotou).to_contain_text(yuan(retained))
    expect(centre_page.get_by_test_id("chart-experts").locator("canvas")).to_have_count(1)
    assert fits_width(centre_page)
    shot("86-consultation-accounting", centre_page)


class Api:
    """The consultation API over HTTP with minted tokens, to set a scene quickly."""

    def __init__(self, site) -> None:
        self.site = site
        self.tokens = {
            "wangfang": site.token("doctor", "doc-wangfang", institution_id="qiaotou", name="王芳"),
            "zhuanzhen": site.token(
                "referral_centre", "doc-zhuanzhen", institution_id="county-hospital", name="蒋慧"
            ),
            "chenming": site.token(
                "doctor", "doc-chenming", institution_id="county-hospital", name="陈明"
            ),
        }

    def call(self, who: str, method: str, path: str, body: dict | None = None) -> dict:
        import requests

        answer = requests.request(
            method,
            f"{self.site.stack.api_url}{path}",
            headers={"Authorization": f"Bearer {self.tokens[who]}"},
            json=body,
            timeout=30,
        )
        assert answer.status_code < 300, answer.text
        return answer.json()

    def video_consultation_to_schedule(self, person_id: str, preferred: str) -> str:
        """A routine video consultation with 陈明 accepted: the centre schedules it next."""
        c = self.call("wangfang", "POST", "/consultations", {
            "person_id": person_id, "centre_institution_id": "county-hospital",
            "kind": "routine", "mode": "video", "specialty": "心血管内科",
            "question": "血压控制不佳，调整方案", "summary": "高血压三年，近期头晕",
            "preferred_times": [preferred],
        })  # fmt: skip
        cid = c["consultation_id"]
        c = self.call("zhuanzhen", "POST", f"/consultations/{cid}/accept", {
            "version": c["version"], "experts": [{"doctor_id": "doc-chenming", "lead": True}],
        })  # fmt: skip
        c = self.call("chenming", "GET", f"/consultations/{cid}")
        c = self.call("chenming", "POST", f"/consultations/{cid}/respond", {
            "version": c["version"], "answer": "accept",
        })  # fmt: skip
        assert c["status"] == "SCHEDULED", c["status"]
        return cid


def test_a_video_session_clashing_with_the_experts_other_session_is_refused_clearly(
    page: Page, console, shot, site, new_context
):
    # Given 陈明 already has a video session at 14:00 in four days, and a second consultation
    # of his asks for that very time
    from datetime import timedelta

    from yilian.domain.clock import now

    console.allow_http(409)
    api = Api(site)
    person_id = api.call("wangfang", "GET", "/persons?name=" + residents()[5].name)["items"][0][
        "person_id"
    ]
    day = (now() + timedelta(days=4)).date().isoformat()
    clash = f"{day}T14:00:00+08:00"
    first = api.video_consultation_to_schedule(person_id, clash)
    c = api.call("zhuanzhen", "GET", f"/consultations/{first}")
    api.call("zhuanzhen", "POST", f"/consultations/{first}/schedule", {
        "version": c["version"], "start": clash, "minutes": 30,
    })  # fmt: skip
    second = api.video_consultation_to_schedule(person_id, clash)

    # When the centre schedules the second one at the time it asks for
    sign_in(page, "zhuanzhen", land=r"/referrals")
    menu(page).get_by_text("会诊中心").click()
    page.get_by_test_id("column-SCHEDULED").get_by_test_id(f"board-item-{second}").click()
    expect(page.get_by_test_id("consultation-status")).to_have_text("待会诊")
    page.get_by_test_id("action-schedule").click()
    dialog = page.get_by_role("dialog", name="安排视频会诊")
    expect(dialog.get_by_role("combobox", name="会诊时间")).to_have_value(f"{day} 14:00")
    dialog.get_by_test_id("schedule-confirm").click()

    # Then it is refused, saying whose other session is in the way; nothing changed
    busy = dialog.get_by_test_id("expert-busy")
    expect(busy).to_contain_text("专家该时段已有其他会诊")
    expect(busy).to_contain_text("陈明")
    expect(busy.get_by_role("link", name=first)).to_be_visible()
    shot("87-consultation-expert-busy")

    # an hour later suits everyone: the session is set, and the lead has his own join link
    when = dialog.get_by_role("combobox", name="会诊时间")
    when.fill(f"{day} 15:00")
    when.press("Enter")
    dialog.get_by_test_id("schedule-confirm").click()
    expect(dialog).to_be_hidden()
    session = page.get_by_test_id("consultation-session")
    expect(session).to_contain_text(f"{day} 15:00")
    expect(session.get_by_test_id("join-link")).to_have_count(0)  # the centre does not join

    lead = new_context().new_page()
    console.watch(lead)
    sign_in(lead, "chenming")
    menu(lead).get_by_text("我的会诊").click()
    lead.get_by_role("tab", name="会诊日程").click()
    calendar = lead.get_by_test_id("consultation-calendar")
    expect(calendar).to_contain_text(f"{day} 15:00")
    expect(calendar).to_contain_text(second)
    calendar.get_by_role("link", name=second).click()
    join = lead.get_by_test_id("join-link")
    expect(join).to_have_attribute("href", re.compile(rf"{second}-.*p=doc-chenming&sig="))
