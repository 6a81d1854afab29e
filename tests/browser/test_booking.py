"""Appointment booking in a browser: the county hospital's admin publishes a specialist session
for cardiology five days ahead (its slots hold reserved places for referrals, released 48 h
before); a county doctor books a referred patient into a reserved place; the public (a
resident, over HTTP) never sees that place until its release, while the clinicians' schedule
shows it with its release time; the referral shows its booking; the day list checks in."""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import Any

import pytest
import requests
from playwright.sync_api import Page, expect

from tests.browser.ui import PASSWORD, fits_width, menu, sign_in
from yilian.domain.clock import now as china_now
from yilian_local.demo_county import residents

APPOINTMENT = re.compile(r"/appointments/(A[0-9A-F]{16})$")
CLINICIAN_FIELDS = {"capacity", "reserved", "booked", "reserved_free", "release_at", "released",
                    "free_for_referral"}  # fmt: skip


class Api:
    """The API over HTTP, as the demo county's users (signed in with their passwords)."""

    def __init__(self, site: Any) -> None:
        self.base = site.stack.api_url
        self.tokens: dict[str, str] = {}

    def token(self, username: str) -> str:
        if username not in self.tokens:
            r = requests.post(
                f"{self.base}/auth/login",
                json={"username": username, "password": PASSWORD},
                timeout=30,
            )
            assert r.status_code == 200, r.text
            self.tokens[username] = r.json()["access_token"]
        return self.tokens[username]

    def call(self, method: str, path: str, token: str, **kw: Any) -> requests.Response:
        headers = {"Authorization": f"Bearer {token}"}
        return requests.request(method, f"{self.base}{path}", headers=headers, timeout=30, **kw)


def referral_of(body: dict) -> dict:
    return body.get("referral") or body


def slot_at(items: list[dict], hhmm: str) -> dict:
    found = [s for s in items if s["start"][11:16] == hhmm]
    assert len(found) == 1, f"one slot at {hhmm}: {found}"
    return found[0]


def test_a_doctor_books_a_referred_patient_into_a_reserved_place(
    page: Page, console, shot, site, new_context
):
    api = Api(site)
    today = china_now().date()
    day = (today + timedelta(days=5)).isoformat()  # the 48 h release is still ahead
    release_day = (today + timedelta(days=3)).isoformat()

    # --- the county hospital's admin publishes a specialist session for 陈明 (心血管内科)
    sign_in(page, "hospadmin")
    menu(page).get_by_text("排班管理").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("排班管理")
    expect(page.get_by_test_id("week-grid")).to_be_visible()
    page.get_by_test_id("publish-session").click()
    dialog = page.get_by_role("dialog", name="发布出诊")
    doctor = dialog.get_by_role("combobox", name="医生")
    doctor.click()
    page.get_by_role("option", name=re.compile("陈明（心血管内科")).click()
    expect(dialog.get_by_role("textbox", name="科室")).to_have_value("心血管内科")
    date = dialog.get_by_label("日期", exact=True)
    date.fill(day)
    date.press("Enter")
    dialog.get_by_role("radiogroup", name="时段").get_by_text("下午").click()
    dialog.get_by_role("combobox", name="结束时间").click()
    page.get_by_role("option", name="16:00", exact=True).click()
    minutes = dialog.get_by_label("每时段（分钟）")
    minutes.fill("60")
    minutes.press("Tab")
    capacity = dialog.get_by_label("每时段人数")
    capacity.fill("5")
    capacity.press("Tab")
    dialog.get_by_test_id("session-visit-type").click()
    page.get_by_role("option", name="专家门诊").click()
    fee = dialog.get_by_label("挂号费（元）")
    fee.fill("25")
    fee.press("Tab")
    # the cardiology department holds 40% for referrals, released 48 h before (demo quota)
    preview = dialog.get_by_test_id("session-preview")
    expect(preview).to_contain_text("将生成 2 个时段，每时段 5 人")
    expect(preview).to_contain_text("每时段为基层转诊预留 2 个（40%，开诊前 48 小时未用则释放）")
    shot("60-schedule-publish-dialog")
    dialog.get_by_test_id("publish-save").click()
    expect(dialog).to_be_hidden()

    # the week of that day opens on the new session: its slots with the reserved places
    detail = page.get_by_test_id("session-detail")
    expect(detail).to_contain_text(f"{day} 下午 14:00–16:00")
    expect(detail).to_contain_text("陈明")
    expect(detail).to_contain_text("专家门诊")
    slots = detail.get_by_test_id("slot-table")
    expect(slots.get_by_test_id("slot-reserved")).to_have_count(2)
    expect(slots.get_by_test_id("slot-reserved").first).to_have_text("预留 2/2 · 48h 前释放")
    expect(slots.get_by_test_id("slot-release").first).to_have_text(f"{release_day} 14:00 释放")
    expect(slots.get_by_test_id("slot-free").first).to_have_text("3")
    assert fits_width(page)
    shot("61-schedule-week-reserved")

    chenming = api.token("chenming")
    clinician = api.call(
        "GET",
        "/slots",
        chenming,
        params={"institution_id": "county-hospital", "date": day, "doctor_id": "doc-chenming"},
    ).json()["items"]
    slot = slot_at(clinician, "14:00")
    assert (slot["capacity"], slot["reserved"], slot["released"]) == (5, 2, False)
    assert slot["release_at"] == f"{release_day}T14:00:00+08:00"

    # --- an upward referral from 李家村卫生室 to 陈明, accepted (for later than any schedule:
    # the booking seam finds no slot, so the doctor books it by hand)
    patient = residents()[18]
    assert patient.registered_at == "qiaotou-lijia"
    village = api.token("lijianguo")
    found = api.call("GET", "/persons", village, params={"id_card": patient.id_card}).json()
    person_id = found["items"][0]["person_id"]
    r = api.call(
        "POST",
        "/referrals",
        village,
        json={
            "patient_id": person_id,
            "direction": "up",
            "urgency": "urgent",
            "target_institution_id": "county-hospital",
            "target_department": "心血管内科",
            "target_doctor_id": "doc-chenming",
            "reason": "活动后胸闷胸痛加重，需心内科专家评估",
            "diagnosis": {"code": "I20.0", "text": "不稳定型心绞痛"},
            "clinical_summary": "近两周胸闷胸痛发作 3 次，心电图 ST 段压低",
        },
    )
    assert r.status_code == 201, r.text
    reference = referral_of(r.json())["referral_id"]
    later = datetime.combine(today + timedelta(days=20), datetime.min.time()) + timedelta(hours=9)
    r = api.call(
        "POST",
        f"/referrals/{reference}/accept",
        chenming,
        json={"proposed_time": later.isoformat() + "+08:00", "note": "专家门诊面诊"},
    )
    assert r.status_code == 200, r.text
    accepted = referral_of(api.call("GET", f"/referrals/{reference}", chenming).json())
    assert accepted["status"] == "ACCEPTED"
    assert not accepted.get("appointment"), "the seam booked it already"

    # --- 陈明 books the referred patient from the referral
    doctor_page = new_context().new_page()
    console.watch(doctor_page)
    sign_in(doctor_page, "chenming")
    doctor_page.goto(f"/referrals/{reference}")
    booking_card = doctor_page.get_by_test_id("referral-appointment")
    expect(booking_card).to_contain_text("尚未预约号源")
    booking_card.get_by_test_id("book-referral").click()
    expect(doctor_page.get_by_role("heading", level=1)).to_have_text("预约挂号")
    form = doctor_page.get_by_test_id("booking-form")
    expect(form.get_by_test_id("patient-select")).to_contain_text(patient.name)
    expect(form.get_by_test_id("referral-chosen")).to_contain_text("将优先使用预留号源")
    expect(form.get_by_test_id("booking-department")).to_contain_text("心血管内科")
    expect(form.get_by_test_id("booking-doctor")).to_contain_text("陈明")
    day_field = form.get_by_label("日期", exact=True)
    day_field.fill(day)
    day_field.press("Enter")
    table = form.get_by_test_id("slot-table")
    row = table.locator(f"[data-slot='{slot['slot_id']}']").locator("xpath=ancestor::tr")
    expect(row.get_by_test_id("slot-reserved")).to_have_text("预留 2/2 · 48h 前释放")
    expect(row.get_by_test_id("slot-free")).to_have_text("3")
    expect(row.get_by_test_id("slot-free-referral")).to_have_text("5")
    row.get_by_text("14:00–15:00").click()
    summary = form.get_by_test_id("booking-summary")
    expect(summary).to_contain_text(f"{day} 14:00–15:00 · 心血管内科 · 陈明 · 挂号费 ¥25.00")
    expect(summary.get_by_test_id("summary-quota")).to_have_text("预留号源（转诊）")
    assert fits_width(doctor_page)
    shot("62-booking-form-referral", doctor_page)

    # a double click still books once (one Idempotency-Key per form)
    form.get_by_test_id("booking-submit").dblclick()
    expect(doctor_page).to_have_url(APPOINTMENT)
    appointment_id = APPOINTMENT.search(doctor_page.url).group(1)
    expect(doctor_page.get_by_test_id("appointment-status")).to_have_text("已预约")
    expect(doctor_page.get_by_test_id("appointment-quota")).to_have_text("预留号源（转诊）")
    info = doctor_page.get_by_test_id("appointment-info")
    expect(info).to_contain_text(patient.name)
    expect(info).to_contain_text(f"{day} 14:00–15:00")
    expect(info.get_by_test_id("appointment-referral")).to_have_text(reference)
    actions = doctor_page.get_by_test_id("appointment-actions")
    for action in ("签到", "改约", "取消预约"):
        expect(actions).to_contain_text(action)
    expect(doctor_page.get_by_test_id("appointment-history")).to_contain_text("预约")
    shot("63-appointment-reserved", doctor_page)

    listed = api.call(
        "GET", "/appointments", chenming, params={"date": day, "institution_id": "county-hospital"}
    ).json()["items"]
    mine = [a for a in listed if a["person_id"] == person_id and a["status"] == "BOOKED"]
    assert [a["appointment_id"] for a in mine] == [appointment_id]  # one, however many clicks
    assert mine[0]["quota"] == "reserved" and mine[0]["referral_id"] == reference

    # --- the public cannot see the reserved place until its release
    resident = site.seeded["resident_token"]
    public = api.call(
        "GET",
        "/slots",
        resident,
        params={"institution_id": "county-hospital", "date": day, "doctor_id": "doc-chenming"},
    )
    assert public.status_code == 200, public.text
    seen = slot_at(public.json()["items"], "14:00")
    assert not CLINICIAN_FIELDS & set(seen), f"the public sees clinicians' fields: {seen}"
    assert seen["free"] == 3  # 5 places - 2 reserved; the referral took a reserved one
    clinician = api.call(
        "GET",
        "/slots",
        chenming,
        params={"institution_id": "county-hospital", "date": day, "doctor_id": "doc-chenming"},
    ).json()["items"]
    held = slot_at(clinician, "14:00")
    assert (held["booked"], held["reserved_free"], held["free_for_referral"]) == (1, 1, 4)
    assert held["free"] == seen["free"] == 3  # one reserved place still held from the public
    refused = api.call(
        "POST", "/appointments", resident, json={"slot_id": slot["slot_id"], "reserved": True}
    )
    assert (refused.status_code, refused.json()["error"]["code"]) == (
        403,
        "RESERVED_FOR_REFERRALS",
    )

    # while the clinicians' schedule shows it, with its release time
    page.reload()
    if datetime.fromisoformat(day).isocalendar()[:2] != today.isocalendar()[:2]:
        page.get_by_test_id("next-week").click()
    page.get_by_test_id(f"session-{slot['session_id']}").click()
    detail = page.get_by_test_id("session-detail")
    row = detail.locator(f"[data-slot='{slot['slot_id']}']").locator("xpath=ancestor::tr")
    expect(row.get_by_test_id("slot-booked")).to_have_text("1/5")
    expect(row.get_by_test_id("slot-reserved")).to_have_text("预留 1/2 · 48h 前释放")
    expect(row.get_by_test_id("slot-release")).to_have_text(f"{release_day} 14:00 释放")
    expect(row.get_by_test_id("slot-free-referral")).to_have_text("4")
    shot("64-schedule-reserved-booked")

    # --- the referral shows its booking, for both sides
    doctor_page.goto(f"/referrals/{reference}")
    booking_card = doctor_page.get_by_test_id("referral-appointment")
    expect(booking_card.get_by_test_id("referral-appointment-time")).to_have_text(
        f"{day} 14:00–15:00"
    )
    expect(booking_card).to_contain_text("心血管内科")
    expect(booking_card).to_contain_text("陈明")
    expect(booking_card.get_by_test_id("referral-appointment-quota")).to_have_text(
        "预留号源（转诊）"
    )
    expect(booking_card.get_by_test_id("referral-appointment-status")).to_have_text("已预约")
    expect(booking_card.get_by_test_id("book-referral")).to_have_count(0)
    shot("65-referral-with-appointment", doctor_page)

    # --- on the day list of that day, check-in is offered but not yet open
    console.allow_http(409)
    doctor_page.goto("/booking/day")
    expect(doctor_page.get_by_role("heading", level=1)).to_have_text("当日就诊")
    day_field = doctor_page.get_by_label("日期", exact=True)
    day_field.fill(day)
    day_field.press("Enter")
    day_row = doctor_page.get_by_test_id("day-table").get_by_role(
        "row", name=re.compile(patient.name)
    )
    expect(day_row.get_by_test_id("day-quota")).to_have_text("预留号源（转诊）")
    expect(day_row.get_by_test_id("day-status")).to_have_text("已预约")
    expect(day_row).to_contain_text(reference)
    day_row.get_by_test_id(f"check-in-{appointment_id}").click()
    alert = doctor_page.get_by_role("alert").filter(has=doctor_page.get_by_test_id("error-code"))
    expect(alert.get_by_test_id("error-code")).to_have_text("OUTSIDE_CHECK_IN_WINDOW")
    expect(alert).to_contain_text("不在签到时间内")
    shot("66-day-list-too-early", doctor_page)
    doctor_page.close()


def test_the_day_list_checks_a_patient_in(page: Page, console, shot, site):
    """A session starting shortly: a patient booked into it is checked in from the day list."""
    now = china_now()
    start = (now + timedelta(minutes=10 - now.minute % 5)).replace(second=0, microsecond=0)
    end = start + timedelta(minutes=30)
    if end.date() != now.date():
        pytest.skip("too close to midnight (Beijing time) for a session today")
    api = Api(site)
    admin = api.token("hospadmin")
    r = api.call(
        "POST",
        "/schedules",
        admin,
        json={
            "department": "儿科",
            "doctor_id": "doc-zhengjie",
            "date": now.date().isoformat(),
            "period": "am" if start.hour < 12 else "pm" if start.hour < 18 else "evening",
            "start": start.strftime("%H:%M"),
            "end": end.strftime("%H:%M"),
            "slot_minutes": 30,
            "capacity": 4,
        },
    )
    assert r.status_code == 201, r.text
    slot_id = r.json()["slots"][0]["slot_id"]
    patient = residents()[24]
    doctor = api.token("zhengjie")
    found = api.call("GET", "/persons", doctor, params={"id_card": patient.id_card}).json()
    person_id = found["items"][0]["person_id"]
    r = api.call("POST", "/appointments", doctor, json={"slot_id": slot_id, "person_id": person_id})
    assert r.status_code == 201, r.text
    appointment_id = r.json()["appointment_id"]
    assert r.json()["quota"] == "public"

    sign_in(page, "zhengjie")
    menu(page).get_by_text("当日就诊").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("当日就诊")
    row = page.get_by_test_id("day-table").get_by_role("row", name=re.compile(patient.name))
    expect(row.get_by_test_id("day-status")).to_have_text("已预约")
    expect(row.get_by_test_id("day-quota")).to_have_text("普通号源")
    expect(row).to_contain_text(f"{start:%H:%M}–{end:%H:%M}")
    assert fits_width(page)
    shot("67-day-list")
    row.get_by_test_id(f"check-in-{appointment_id}").click()
    expect(row.get_by_test_id("day-status")).to_have_text("已签到")
    expect(row.get_by_test_id(f"check-in-{appointment_id}")).to_have_count(0)
    expect(page.get_by_test_id("day-counts")).to_contain_text("已签到 1")
    shot("68-day-list-checked-in")

    # the appointment says who checked the patient in
    row.get_by_text(patient.name).click()
    expect(page).to_have_url(re.compile(f"/appointments/{appointment_id}$"))
    expect(page.get_by_test_id("appointment-status")).to_have_text("已签到")
    expect(page.get_by_test_id("appointment-history")).to_contain_text("签到")
    expect(page.get_by_test_id("appointment-actions")).to_have_count(0)
