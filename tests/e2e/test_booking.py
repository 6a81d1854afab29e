"""Appointment booking over HTTP against the embedded stack (which serialises DynamoDB
writes), as an institution admin, a county specialist and residents use it: publish, search,
book, reschedule, cancel, check in; bad inputs each refused with their 4xx reason and nothing
changed; concurrent bookings never overbook nor double-book; and the referral seam: an
accepted upward referral takes a reserved place that the public search does not offer."""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from typing import Any

import pytest

from tests.e2e.test_referrals import eventually
from yilian.domain.clock import CHINA_TZ
from yilian.domain.clock import now as china_now
from yilian.domain.principal import Role

COUNTY, TOWN, VILLAGE = "bk-county", "bk-town", "bk-village"
INSTITUTIONS = [
    {"institution_id": COUNTY, "name": "预约测试县医院", "type": "general_hospital"},
    {"institution_id": TOWN, "name": "预约测试镇卫生院", "type": "township_health_centre",
     "parent_id": COUNTY},
    {"institution_id": VILLAGE, "name": "预约测试村卫生室", "type": "village_clinic",
     "parent_id": TOWN},
]  # fmt: skip
DOCTORS = [  # doctor_id, institution, name, department
    ("bk-doc-chen", COUNTY, "陈建国", "神经内科"),
    ("bk-doc-sun", COUNTY, "孙丽", "神经内科"),
    ("bk-doc-heart", COUNTY, "刘心", "心血管内科"),
    ("bk-doc-leave", COUNTY, "赵休", "神经内科"),
    ("bk-doc-town", TOWN, "钱全", "全科"),
]
THREADS = 32


def day(n: int) -> str:
    return (china_now() + timedelta(days=n)).date().isoformat()


class Clinic:
    def __init__(self, api: Any) -> None:
        self.api = api
        self.admin = api.token(Role.CONSORTIUM_ADMIN, "bk-cadmin", institution_id=COUNTY)
        for inst in INSTITUTIONS:
            r = api.call("POST", "/institutions", self.admin, json=inst)
            assert r.status_code in (201, 409), r.text
        for doctor_id, inst, name, dept in DOCTORS:
            body = {"doctor_id": doctor_id, "institution_id": inst, "name": name,
                    "department": dept, "title": "主治医师"}  # fmt: skip
            r = api.call("POST", "/doctors", self.admin, json=body)
            assert r.status_code in (201, 409), r.text
        self.county_admin = api.token(Role.INSTITUTION_ADMIN, "bk-adm-county",
                                      institution_id=COUNTY, name="县医院管理员")  # fmt: skip
        self.town_admin = api.token(Role.INSTITUTION_ADMIN, "bk-adm-town", institution_id=TOWN)
        self.county = api.token(Role.DOCTOR, "bk-doc-chen", institution_id=COUNTY, name="陈建国")
        self.town = api.token(Role.DOCTOR, "bk-doc-town", institution_id=TOWN, name="钱全")
        self.village = api.token(Role.DOCTOR, "bk-dr-village", institution_id=VILLAGE,
                                 name="村医周")  # fmt: skip

    # ---------------------------------------------------------------- calls
    def resident(self, person_id: str | None = None) -> tuple[str, str]:
        person_id = person_id or f"bk-p-{uuid.uuid4().hex[:12]}"
        return person_id, self.api.token(Role.RESIDENT, f"bk-res-{person_id}", person_id=person_id)

    def publish(self, token: str | None = None, **over: Any) -> list[dict[str, Any]]:
        body = {"department": "神经内科", "date": day(4), "period": "am", "start": "08:00",
                "end": "10:00", "slot_minutes": 30, "capacity": 10, "visit_type": "specialist",
                "fee_cents": 5000, "doctor_id": "bk-doc-chen", **over}  # fmt: skip
        r = self.api.call("POST", "/schedules", token or self.county_admin, json=body)
        assert r.status_code == 201, r.text
        return r.json()["slots"]

    def book(self, token: str, slot_id: str, key: str | None = None, **body: Any):
        headers = {"Idempotency-Key": key} if key else {}
        return self.api.call("POST", "/appointments", token, json={"slot_id": slot_id, **body},
                             headers=headers)  # fmt: skip

    def booked(self, token: str, slot_id: str, **body: Any) -> dict[str, Any]:
        r = self.book(token, slot_id, uuid.uuid4().hex, **body)
        assert r.status_code == 201, r.text
        return r.json()

    def act(self, token: str, appointment_id: str, action: str, body: dict | None = None):
        return self.api.call("POST", f"/appointments/{appointment_id}/{action}", token,
                             json=body or {})  # fmt: skip

    def slot(self, slot: dict[str, Any], token: str | None = None) -> dict[str, Any]:
        """The slot as a search shows it (a clinician's view by default: `booked`)."""
        inst = slot["institution_id"]
        token = token or (self.county if inst == COUNTY else self.town)
        r = self.api.call("GET", "/slots", token,
                          params={"institution_id": inst, "date": slot["start"][:10]})  # fmt: skip
        assert r.status_code == 200, r.text
        [found] = [s for s in r.json()["items"] if s["slot_id"] == slot["slot_id"]]
        return found

    def counter(self, slot: dict[str, Any]) -> int:
        return int(self.slot(slot)["booked"])

    def mine(self, token: str) -> list[dict[str, Any]]:
        r = self.api.call("GET", "/appointments", token)
        assert r.status_code == 200, r.text
        return r.json()["items"]

    def rows(self, slot: dict[str, Any], status: str = "BOOKED") -> list[dict[str, Any]]:
        """The slot's appointments in that status, from the institution's day list."""
        inst = slot["institution_id"]
        token = self.county if inst == COUNTY else self.town
        r = self.api.call("GET", "/appointments", token,
                          params={"institution_id": inst, "date": slot["start"][:10]})  # fmt: skip
        assert r.status_code == 200, r.text
        return [a for a in r.json()["items"]
                if a["slot_id"] == slot["slot_id"] and a["status"] == status]  # fmt: skip

    def person(self, name: str = "吴海") -> str:
        body = {"name": name, "sex": "male", "birth_date": "1961-05-06",
                "address": f"预约测试村{uuid.uuid4().hex[:6]}号"}  # fmt: skip
        r = self.api.call("POST", "/persons", self.village, json=body)
        assert r.status_code in (200, 201), r.text
        return r.json()["person"]["person_id"]


@pytest.fixture(scope="module")
def clinic(api) -> Clinic:
    return Clinic(api)


def error(r: Any) -> tuple[int, str]:
    return r.status_code, r.json()["error"]["code"]


def soon_session(minutes: int = 30) -> tuple[str, str, str]:
    """Today's date and a session from the last 5-minute mark before now (its first slot has
    started) over `minutes`, in 5-minute slots; skips the test near midnight."""
    now = china_now().astimezone(CHINA_TZ)
    start = now.replace(minute=now.minute - now.minute % 5, second=0, microsecond=0)
    start -= timedelta(minutes=5)
    end = start + timedelta(minutes=minutes)
    if start.date() != now.date() or end.date() != now.date() or end.hour == 0:
        pytest.skip("too close to midnight in Shanghai for a session today")
    return now.date().isoformat(), f"{start:%H:%M}", f"{end:%H:%M}"


# ------------------------------------------------------------------------------ the journey
def test_publish_search_book_reschedule_cancel(clinic):
    slots = clinic.publish(date=day(4))
    assert len(slots) == 4
    assert {(s["capacity"], s["reserved"], s["free"]) for s in slots} == {(10, 2, 8)}
    person, resident = clinic.resident()
    # the resident's search shows the public places only
    found = clinic.slot(slots[0], resident)
    assert found["free"] == 8 and "reserved" not in found and "booked" not in found
    # book
    appt = clinic.booked(resident, slots[0]["slot_id"])
    assert (appt["status"], appt["quota"], appt["person_id"]) == ("BOOKED", "public", person)
    assert appt["start"] == f"{day(4)}T08:00:00+08:00"
    assert clinic.counter(slots[0]) == 1 and clinic.slot(slots[0], resident)["free"] == 7
    # reschedule
    r = clinic.act(resident, appt["appointment_id"], "reschedule",
                   {"slot_id": slots[2]["slot_id"]})  # fmt: skip
    assert r.status_code == 200, r.text
    moved = r.json()
    assert moved["slot_id"] == slots[2]["slot_id"] and moved["status"] == "BOOKED"
    assert (clinic.counter(slots[0]), clinic.counter(slots[2])) == (0, 1)
    # cancel
    r = clinic.act(resident, moved["appointment_id"], "cancel", {"reason": "出差"})
    assert r.status_code == 200 and r.json()["status"] == "CANCELLED", r.text
    assert clinic.counter(slots[2]) == 0
    statuses = sorted(a["status"] for a in clinic.mine(resident))
    assert statuses == ["CANCELLED", "CANCELLED"]
    r = clinic.api.call("GET", f"/appointments/{moved['appointment_id']}/fhir", resident)
    assert r.status_code == 200 and r.json()["resourceType"] == "Appointment"


def test_check_in_on_arrival(clinic):
    today, start, end = soon_session()
    slots = clinic.publish(date=today, start=start, end=end, slot_minutes=5, period="evening",
                           doctor_id="bk-doc-sun")  # fmt: skip
    _, resident = clinic.resident()
    appt = clinic.booked(resident, slots[3]["slot_id"])
    assert error(clinic.act(resident, appt["appointment_id"], "check-in")) == (
        403, "NOT_RECEIVING_INSTITUTION",
    )  # fmt: skip
    r = clinic.act(clinic.county, appt["appointment_id"], "check-in")
    assert r.status_code == 200 and r.json()["status"] == "CHECKED_IN", r.text
    assert clinic.counter(slots[3]) == 1  # the place stays used
    assert error(clinic.act(clinic.county, appt["appointment_id"], "check-in")) == (
        409, "NOT_CHECKABLE",
    )  # fmt: skip


# ------------------------------------------------------------------------------ bad inputs
def test_a_slot_in_the_past_is_refused(clinic):
    today, start, end = soon_session(15)
    slots = clinic.publish(date=today, start=start, end=end, slot_minutes=5,
                           doctor_id="bk-doc-leave", period="evening")  # fmt: skip
    _, resident = clinic.resident()
    assert error(clinic.book(resident, slots[0]["slot_id"])) == (409, "SLOT_IN_PAST")
    assert clinic.mine(resident) == []
    r = clinic.api.call("GET", "/slots", clinic.county,
                        params={"institution_id": COUNTY, "date": today})  # fmt: skip
    assert slots[0]["slot_id"] not in [s["slot_id"] for s in r.json()["items"]]  # ended


def test_a_slot_not_yet_open_is_refused(clinic):
    slots = clinic.publish(date=day(20), doctor_id="bk-doc-sun")
    _, resident = clinic.resident()
    assert error(clinic.book(resident, slots[0]["slot_id"])) == (409, "SLOT_NOT_OPEN")
    assert clinic.counter(slots[0]) == 0 and clinic.mine(resident) == []


def test_a_full_slot_is_refused(clinic):
    slots = clinic.publish(date=day(3), capacity=2, doctor_id="bk-doc-sun")  # 1 held, 1 public
    _, first = clinic.resident()
    clinic.booked(first, slots[0]["slot_id"])
    _, second = clinic.resident()
    assert error(clinic.book(second, slots[0]["slot_id"])) == (409, "SLOT_FULL")
    assert clinic.counter(slots[0]) == 1 and clinic.mine(second) == []
    assert clinic.slot(slots[0], second)["free"] == 0


def test_a_cancelled_session_is_refused(clinic):
    # the doctor's leave cancels their (empty) session that day
    slots = clinic.publish(date=day(6), doctor_id="bk-doc-leave")
    r = clinic.api.call("POST", "/schedules/leave", clinic.county_admin,
                        json={"doctor_id": "bk-doc-leave", "from": day(6), "to": day(6),
                              "reason": "外出进修"})  # fmt: skip
    assert r.status_code == 200 and r.json()["sessions_cancelled"] == 1, r.text
    _, resident = clinic.resident()
    assert error(clinic.book(resident, slots[1]["slot_id"])) == (409, "SESSION_CANCELLED")
    assert clinic.counter(slots[1]) == 0 and clinic.mine(resident) == []
    shown = clinic.slot(slots[1], resident)
    assert (shown["status"], shown["free"]) == ("CANCELLED", 0)


def test_cancelling_a_session_with_bookings_cancels_them(clinic):
    slots = clinic.publish(date=day(7), doctor_id="bk-doc-leave")
    _, resident = clinic.resident()
    appt = clinic.booked(resident, slots[0]["slot_id"])
    r = clinic.api.call("POST", f"/schedules/{slots[0]['session_id']}/cancel",
                        clinic.county_admin, json={"reason": "设备检修"})  # fmt: skip
    assert r.status_code == 200, r.text
    assert r.json()["bookings_cancelled"] == 1
    [mine] = clinic.mine(resident)
    assert (mine["appointment_id"], mine["status"]) == (appt["appointment_id"], "CANCELLED")


def test_a_reserved_place_without_a_referral_is_refused(clinic):
    slots = clinic.publish(date=day(3), doctor_id="bk-doc-chen", start="14:00", end="15:00",
                           period="pm")  # fmt: skip
    person, resident = clinic.resident()
    assert error(clinic.book(resident, slots[0]["slot_id"], reserved=True)) == (
        403, "RESERVED_FOR_REFERRALS",
    )  # fmt: skip
    r = clinic.book(clinic.county, slots[0]["slot_id"], person_id=clinic.person(), reserved=True)
    assert error(r) == (403, "RESERVED_FOR_REFERRALS")
    assert clinic.counter(slots[0]) == 0 and clinic.mine(resident) == []
    assert clinic.slot(slots[0])["reserved_free"] == 2


def test_over_the_residents_limits(clinic):
    sessions = [clinic.publish(date=day(n), start="16:00", end="16:30", period="pm",
                               doctor_id="bk-doc-heart", department="心血管内科")
                for n in range(1, 7)]  # fmt: skip
    _, resident = clinic.resident()
    for slots in sessions[:5]:
        clinic.booked(resident, slots[0]["slot_id"])
    # the sixth active booking
    assert error(clinic.book(resident, sessions[5][0]["slot_id"])) == (409, "TOO_MANY_BOOKINGS")
    assert clinic.counter(sessions[5][0]) == 0 and len(clinic.mine(resident)) == 5
    # a second booking with the same doctor the same day
    _, other = clinic.resident()
    second = clinic.publish(date=day(1), start="17:00", end="17:30", period="pm",
                            doctor_id="bk-doc-heart", department="心血管内科")  # fmt: skip
    clinic.booked(other, sessions[0][0]["slot_id"])
    assert error(clinic.book(other, second[0]["slot_id"])) == (409, "DUPLICATE_BOOKING")
    assert clinic.counter(second[0]) == 0 and len(clinic.mine(other)) == 1


def test_a_resident_books_for_nobody_else(clinic):
    slots = clinic.publish(date=day(2), doctor_id="bk-doc-sun")
    _, resident = clinic.resident()
    r = clinic.book(resident, slots[0]["slot_id"], person_id="bk-p-somebody-else")
    assert error(r) == (403, "NOT_YOUR_RECORD")
    assert clinic.counter(slots[0]) == 0 and clinic.mine(resident) == []


def test_malformed_dates_and_times_are_refused(clinic):
    _, resident = clinic.resident()
    r = clinic.api.call("GET", "/slots", resident,
                        params={"institution_id": COUNTY, "date": "2026-13-01"})  # fmt: skip
    assert error(r) == (400, "INVALID_DATE")
    r = clinic.api.call("GET", "/appointments", clinic.county,
                        params={"institution_id": COUNTY, "date": "2026-13-01"})  # fmt: skip
    assert error(r) == (400, "INVALID_DATE")
    before = clinic.api.call(
        "GET", "/slots", clinic.county, params={"institution_id": COUNTY, "date": day(9)}
    ).json()["count"]
    for over, code in [({"start": "8am"}, "INVALID_CLOCK_TIME"),
                       ({"date": "2026-13-01"}, "INVALID_DATE"),
                       ({"start": "08:00+08:00"}, "VALIDATION_FAILED"),  # longer than HH:MM
                       ({"slot_minutes": 90, "end": "11:00"}, "SLOT_TOO_WIDE")]:  # fmt: skip
        body = {"department": "神经内科", "date": day(9), "period": "am", "start": "08:00",
                "end": "10:00", "slot_minutes": 30, "capacity": 10, **over}  # fmt: skip
        r = clinic.api.call("POST", "/schedules", clinic.county_admin, json=body)
        assert error(r) == (400, code), (over, r.text)
    after = clinic.api.call(
        "GET", "/slots", clinic.county, params={"institution_id": COUNTY, "date": day(9)}
    ).json()["count"]
    assert after == before
    # a referral's proposed time without an offset
    patient = clinic.person("郑明")
    rid = _apply(clinic, patient)
    r = clinic.api.call("POST", f"/referrals/{rid}/accept", clinic.county,
                        json={"proposed_time": f"{day(5)}T08:00:00"})  # fmt: skip
    assert error(r) == (400, "TIME_WITHOUT_OFFSET")
    got = clinic.api.call("GET", f"/referrals/{rid}", clinic.county).json()
    assert got["status"] == "PENDING_REVIEW" and got.get("appointment") is None


def test_a_cancelled_bookings_key_replayed_with_another_body_is_refused(clinic):
    slots = clinic.publish(date=day(2), doctor_id="bk-doc-chen", start="14:00", end="15:00",
                           period="pm")  # fmt: skip
    _, resident = clinic.resident()
    key = uuid.uuid4().hex
    r = clinic.book(resident, slots[0]["slot_id"], key)
    assert r.status_code == 201, r.text
    appt = r.json()["appointment_id"]
    assert clinic.act(resident, appt, "cancel").status_code == 200
    r = clinic.book(resident, slots[1]["slot_id"], key)
    assert error(r) == (409, "IDEMPOTENCY_KEY_REUSED")
    assert clinic.counter(slots[1]) == 0 and clinic.counter(slots[0]) == 0
    assert [a["status"] for a in clinic.mine(resident)] == ["CANCELLED"]


# ------------------------------------------------------------------------------ concurrency
def _in_parallel(calls: list[Callable[[], Any]]) -> list[Any]:
    with ThreadPoolExecutor(THREADS) as pool:
        return list(pool.map(lambda f: f(), calls))


def _codes(responses: list[Any]) -> Counter:
    return Counter(r.status_code if r.status_code < 300 else r.json()["error"]["code"]
                   for r in responses)  # fmt: skip


@pytest.mark.parametrize("n", [50, 200, 1000])
def test_concurrent_bookings_never_overbook(clinic, n):
    capacity = 20
    day_n = {50: 8, 200: 9, 1000: 10}[n]
    [slot] = clinic.publish(clinic.town_admin, date=day(day_n), start="08:00", end="08:30",
                            capacity=capacity, doctor_id="bk-doc-town", department="全科",
                            visit_type="general")  # fmt: skip
    assert slot["reserved"] == 0  # a township centre holds nothing back
    residents = [clinic.resident() for _ in range(n)]
    started = time.monotonic()
    responses = _in_parallel([
        (lambda token=token: clinic.book(token, slot["slot_id"], uuid.uuid4().hex))
        for _, token in residents
    ])  # fmt: skip
    took = time.monotonic() - started
    codes = _codes(responses)
    confirmed = [r.json() for r in responses if r.status_code == 201]
    assert len(confirmed) == min(n, capacity), codes
    assert set(codes) <= {201, "SLOT_FULL"}, codes
    rows = clinic.rows(slot)
    assert clinic.counter(slot) == len(rows) == len(confirmed)
    assert sorted(a["appointment_id"] for a in rows) == sorted(
        a["appointment_id"] for a in confirmed
    )
    assert len({a["person_id"] for a in rows}) == len(rows)  # nobody holds two
    print(f"\n{n} concurrent bookings for {capacity} places: {dict(codes)} in {took:.1f} s")


def test_one_resident_sending_twenty_identical_requests_gets_one_appointment(clinic):
    slots = clinic.publish(clinic.town_admin, date=day(11), start="08:00", end="09:00",
                           capacity=20, doctor_id="bk-doc-town", department="全科")  # fmt: skip
    _, with_key = clinic.resident()
    key = uuid.uuid4().hex
    responses = _in_parallel([lambda: clinic.book(with_key, slots[0]["slot_id"], key)] * 20)
    codes = _codes(responses)
    assert set(codes) <= {201, "REQUEST_IN_PROGRESS"} and codes[201] >= 1, codes
    assert len({r.json()["appointment_id"] for r in responses if r.status_code == 201}) == 1
    assert len(clinic.mine(with_key)) == 1
    # and without a key: the doctor-day lock lets one through
    _, without_key = clinic.resident()
    responses = _in_parallel([lambda: clinic.book(without_key, slots[1]["slot_id"])] * 20)
    codes = _codes(responses)
    assert codes[201] == 1 and set(codes) <= {201, "DUPLICATE_BOOKING"}, codes
    assert len(clinic.mine(without_key)) == 1
    assert clinic.counter(slots[0]) == clinic.counter(slots[1]) == 1


def test_interleaved_cancels_free_exactly_what_they_cancel(clinic):
    capacity = 20
    [slot] = clinic.publish(clinic.town_admin, date=day(12), start="08:00", end="08:30",
                            capacity=capacity, doctor_id="bk-doc-town",
                            department="全科")  # fmt: skip
    holders = [clinic.resident() for _ in range(capacity)]
    booked = _in_parallel([
        (lambda token=token: clinic.booked(token, slot["slot_id"])) for _, token in holders
    ])  # fmt: skip
    assert clinic.counter(slot) == capacity
    newcomers = [clinic.resident() for _ in range(30)]
    seen: list[int] = []
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            seen.append(clinic.counter(slot))

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        calls: list[Callable[[], Any]] = []
        for i in range(30):
            _, token = newcomers[i]
            calls.append(lambda token=token: clinic.book(token, slot["slot_id"]))
            if i < capacity // 2:
                (_, holder), appt = holders[i], booked[i]["appointment_id"]
                calls.append(lambda holder=holder, appt=appt: clinic.act(holder, appt, "cancel"))
        responses = _in_parallel(calls)
    finally:
        stop.set()
        watcher.join()
    cancels = [r for r in responses if "/cancel" in r.request.url]
    books = [r for r in responses if "/cancel" not in r.request.url]
    assert [r.status_code for r in cancels] == [200] * (capacity // 2)
    new = sum(r.status_code == 201 for r in books)
    assert set(_codes(books)) <= {201, "SLOT_FULL"}
    counter = clinic.counter(slot)
    assert counter == len(clinic.rows(slot)) == capacity - capacity // 2 + new
    assert new <= capacity // 2 and max(seen + [counter]) <= capacity


# ------------------------------------------------------------------------------ the seam
def _apply(clinic: Clinic, patient: str, department: str = "心血管内科") -> str:
    body = {"patient_id": patient, "direction": "up", "urgency": "routine",
            "target_institution_id": COUNTY, "target_department": department,
            "reason": "胸闷待查，基层无法明确诊断",
            "diagnosis": {"code": "I20.9", "text": "心绞痛"},
            "clinical_summary": "活动后胸闷两周"}  # fmt: skip
    r = clinic.api.call("POST", "/referrals", clinic.village, json=body)
    assert r.status_code == 201, r.text
    return r.json()["referral_id"]


def test_an_accepted_referral_books_a_reserved_place_the_public_does_not_see(clinic):
    # a session five days ahead: its reserved places are held for two more days (48 h)
    slots = clinic.publish(date=day(5), start="09:00", end="10:00", doctor_id="bk-doc-heart",
                           department="心血管内科")  # fmt: skip
    assert datetime.fromisoformat(slots[0]["release_at"]) > china_now()
    patient = clinic.person("冯强")
    rid = _apply(clinic, patient)
    heart = clinic.api.token(Role.DOCTOR, "bk-doc-heart", institution_id=COUNTY, name="刘心")
    r = clinic.api.call("POST", f"/referrals/{rid}/accept", heart,
                        json={"proposed_time": slots[1]["start"], "note": "请空腹"})  # fmt: skip
    assert r.status_code == 200 and r.json()["status"] == "ACCEPTED", r.text
    shown = eventually(lambda: clinic.api.call("GET", f"/referrals/{rid}", heart).json().get(
        "appointment"), timeout=10)  # fmt: skip
    assert (shown["quota"], shown["slot_id"], shown["status"]) == (
        "reserved", slots[1]["slot_id"], "BOOKED",
    )  # fmt: skip
    staff = clinic.slot(slots[1])
    assert (staff["booked"], staff["reserved_free"], staff["free_for_referral"]) == (1, 1, 9)
    _, resident = clinic.resident()
    assert clinic.slot(slots[1], resident)["free"] == 8  # the public share, untouched
    [row] = clinic.rows(slots[1])
    assert (row["person_id"], row["referral_id"], row["quota"]) == (patient, rid, "reserved")
