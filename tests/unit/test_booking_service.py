"""The booking use cases against in-memory fakes: publishing schedules (the reserved share at
county tier, per department), templates, search as a resident and as a clinician, booking
with its limits and idempotency, the referral checks, cancel / reschedule / check-in,
session cancels and a doctor's leave with notice, the no-show sweep and the referral seam.
Every refusal leaves the store as it was."""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass
from datetime import timedelta
from typing import Any

import pytest

from tests.fakes import FakeAuditSink, FakeIdempotency
from tests.support.fake_booking import (
    COUNTY_ADMIN,
    DOCTOR_ID,
    NEURO,
    SESSION_DAY,
    TOWNSHIP_ADMIN,
    FakeBookingStore,
    FakePublisher,
    FakeReferralSeam,
    at,
    referral,
    spec,
)
from tests.support.fake_referrals import (
    CONSORTIUM_ADMIN,
    COUNTY,
    COUNTY_DOCTOR,
    OTHER_RESIDENT,
    OTHER_TOWNSHIP,
    PATIENT_ID,
    RECEIVER,
    REFERRER,
    RESIDENT,
    T0,
    TCM,
    TOWNSHIP,
    C,
    Clock,
    FakePatients,
    county_directory,
    person,
)
from yilian.domain.audit import AuditAction
from yilian.domain.booking import BookingPolicy, iso, parse_time
from yilian.domain.directory import Doctor
from yilian.domain.errors import Conflict, DomainError, Forbidden, InvalidInput, NotFound
from yilian.domain.person import PersonStatus
from yilian.domain.principal import Principal, Role
from yilian.domain.referral import Direction, Status
from yilian.services.booking import BookingService

DAY = SESSION_DAY  # Friday 2026-06-05; T0 is Monday 09:00, release 48 h before each slot
NEXT_DAY = (parse_time(f"{DAY}T00:00:00+08:00") + timedelta(days=1)).date().isoformat()
TCM_ADMIN = Principal("adm-tcm", Role.INSTITUTION_ADMIN, C, TCM.institution_id, name="中医院管理员")
REFERRAL_ID = "ZZ2606010000001"


@dataclass
class World:
    service: BookingService
    store: FakeBookingStore
    seam: FakeReferralSeam
    publisher: FakePublisher
    audit: FakeAuditSink
    clock: Clock

    def publish(self, who: Principal = COUNTY_ADMIN, **kw: Any) -> list[str]:
        """A session published; its slot ids, in time order."""
        out = self.service.publish(who, spec(**kw))
        return [s["slot_id"] for s in out["slots"]]

    def book(self, slot_id: str, who: Principal = RESIDENT, key: str | None = None, **body):
        return self.service.book(who, {"slot_id": slot_id, **body}, key)

    def slot(self, slot_id: str) -> tuple[int, int, int]:
        s = self.store.get_slot(slot_id)
        assert s is not None
        return s.booked, s.booked_public, s.booked_reserved

    def active(self, person_id: str = PATIENT_ID) -> int:
        return self.store.standing(C, person_id)[0].active

    def status(self, appointment_id: str) -> str:
        found = self.store.get_appointment(appointment_id)
        assert found is not None
        return str(found[0].status)

    def snapshot(self) -> Any:
        s = self.store
        return copy.deepcopy((s.slots, s.appointments, s.locks, s.standings, s.sessions))

    def later(self, **delta: float) -> None:
        self.clock.t += timedelta(**delta)


@pytest.fixture
def w() -> World:
    store, seam, publisher, audit, clock = (
        FakeBookingStore(), FakeReferralSeam(), FakePublisher(), FakeAuditSink(), Clock(T0)
    )  # fmt: skip
    directory = county_directory()
    directory.add_doctor(Doctor("doc-sun", C, COUNTY.institution_id, "孙医生", NEURO, "副主任医师"),
                         None)  # fmt: skip
    patients = FakePatients(
        person(),
        person("p-other", name="李娜", sex="female"),
        person("p-old", status=PersonStatus.MERGED, merged_into=PATIENT_ID),
        person("p-elsewhere", consortium_id="other-county"),
    )
    service = BookingService(
        store, directory, patients, seam, audit, policy=BookingPolicy(), publisher=publisher,
        clock=clock, idempotency=FakeIdempotency(),
    )  # fmt: skip
    return World(service, store, seam, publisher, audit, clock)


def refused(fn, *args, **kw) -> tuple[type, str]:
    with pytest.raises(DomainError) as err:
        fn(*args, **kw)
    return type(err.value), err.value.code


# ------------------------------------------------------------------------------ publish
def test_a_county_session_holds_the_default_share_of_each_slot_for_referrals(w):
    out = w.service.publish(COUNTY_ADMIN, spec())
    session = out["session"]
    assert (session["institution_id"], session["doctor_name"]) == ("county-hospital", "陈医生")
    assert (session["reserved_share"], session["release_hours"]) == (0.2, 48)
    assert session["created_by"] == COUNTY_ADMIN.subject and session["status"] == "OPEN"
    assert len(out["slots"]) == 4
    for view in out["slots"]:
        assert (view["capacity"], view["reserved"], view["free"]) == (10, 2, 8)
        assert (view["reserved_free"], view["released"], view["free_for_referral"]) == (
            2, False, 10,
        )  # fmt: skip
    sessions, slots = w.store.day("county-hospital", DAY)
    assert [s.session_id for s in sessions] == [session["session_id"]]
    assert sorted(s.slot_id for s in slots) == sorted(v["slot_id"] for v in out["slots"])


def test_a_primary_institution_holds_nothing_back(w):
    w.service.directory.add_doctor(
        Doctor("doc-qt", C, TOWNSHIP.institution_id, "钱医生", "全科", "主治医师"), None
    )
    out = w.service.publish(TOWNSHIP_ADMIN, spec(doctor_id="doc-qt", department="全科"))
    assert out["session"]["reserved_share"] == 0
    assert {(v["reserved"], v["free"]) for v in out["slots"]} == {(0, 10)}


def test_a_department_quota_sets_its_own_share_and_release(w):
    w.service.set_quota(COUNTY_ADMIN, NEURO, 0.5, 24)
    neuro = w.service.publish(COUNTY_ADMIN, spec())
    other = w.service.publish(COUNTY_ADMIN, spec(department="心血管内科", doctor_id=None))
    first = neuro["slots"][0]
    assert (first["reserved"], first["free"]) == (5, 5)
    assert parse_time(first["start"]) - parse_time(first["release_at"]) == timedelta(hours=24)
    assert (other["slots"][0]["reserved"], other["session"]["release_hours"]) == (2, 48)
    assert w.service.quotas(COUNTY_DOCTOR, None)["items"] == [
        {"department": NEURO, "reserved_share": 0.5, "release_hours": 24}
    ]


@pytest.mark.parametrize(
    ("share", "hours", "code"), [(0.9, 48, "INVALID_SHARE"), (-0.1, 48, "INVALID_SHARE"),
                                 (0.2, 400, "INVALID_RELEASE"), (0.2, -1, "INVALID_RELEASE")],
)  # fmt: skip
def test_a_bad_quota_is_refused(w, share, hours, code):
    assert refused(w.service.set_quota, COUNTY_ADMIN, NEURO, share, hours) == (InvalidInput, code)
    assert w.store.quota_rows == {}


BAD_PUBLISH = [
    (COUNTY_DOCTOR, {}, None, Forbidden, "ROLE_NOT_ALLOWED"),
    (RESIDENT, {}, None, Forbidden, "ROLE_NOT_ALLOWED"),
    (COUNTY_ADMIN, {}, "qiaotou", Forbidden, "OTHER_INSTITUTION"),
    (CONSORTIUM_ADMIN, {}, "no-such-hospital", InvalidInput, "UNKNOWN_INSTITUTION"),
    (COUNTY_ADMIN, {"doctor_id": "doc-nobody"}, None, InvalidInput, "UNKNOWN_DOCTOR"),
    (COUNTY_ADMIN, {"doctor_id": "doc-wang"}, None, InvalidInput, "UNKNOWN_DOCTOR"),  # township
    (COUNTY_ADMIN, {"date": "2026-05-31"}, None, InvalidInput, "SESSION_IN_PAST"),
    (COUNTY_ADMIN, {"date": T0.date().isoformat(), "end": "09:00"}, None, InvalidInput,
     "SESSION_IN_PAST"),  # today, but every slot has passed
    (COUNTY_ADMIN, {"slot_minutes": 90}, None, InvalidInput, "SLOT_TOO_WIDE"),
    (COUNTY_ADMIN, {"date": "2026-13-01"}, None, InvalidInput, "INVALID_DATE"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("who", "over", "inst", "kind", "code"), BAD_PUBLISH, ids=[b[-1] for b in BAD_PUBLISH]
)
def test_a_bad_publish_is_refused_and_stores_nothing(w, who, over, inst, kind, code):
    assert refused(w.service.publish, who, spec(**over), inst) == (kind, code)
    assert w.store.sessions == {} and w.store.slots == {}


def test_a_consortium_admin_publishes_for_an_institution_it_names(w):
    out = w.service.publish(CONSORTIUM_ADMIN, spec(), "county-hospital")
    assert out["session"]["institution_id"] == "county-hospital"


def test_a_session_of_today_keeps_its_past_slots_unbookable(w):
    [past, now_on, *_] = w.publish(date=T0.date().isoformat(), start="08:00", end="12:00",
                                   slot_minutes=60)  # fmt: skip
    assert refused(w.book, past) == (Conflict, "SLOT_IN_PAST")
    w.book(now_on.replace("0900", "1000"))


def test_templates_publish_weeks_of_sessions_once(w):
    body = {"weekday": 5, **{k: v for k, v in asdict(spec()).items() if k != "date"}}
    template = w.service.save_template(COUNTY_ADMIN, {**body, "template_id": "fri-am"})
    assert (template["weekday"], template["template_id"]) == (5, "fri-am")
    assert w.service.templates(COUNTY_ADMIN, None)["items"] == [template]
    first = w.service.publish_templates(COUNTY_ADMIN, T0.date().isoformat(), 2)
    assert first == {"created": 2, "skipped": 0}
    again = w.service.publish_templates(COUNTY_ADMIN, T0.date().isoformat(), 3)
    assert again == {"created": 1, "skipped": 2}  # the two Fridays published already
    fridays = [DAY, "2026-06-12", "2026-06-19"]
    for day in fridays:
        [session] = w.store.day("county-hospital", day)[0]
        assert session.session_id == f"county-hospital.{day}.tfri-am"
    assert len(w.store.slots) == 3 * 4


@pytest.mark.parametrize(
    ("over", "code"), [({"weekday": 0}, "INVALID_WEEKDAY"), ({"weekday": 8}, "INVALID_WEEKDAY"),
                       ({"slot_minutes": 45}, "SLOTS_DO_NOT_FIT"),
                       ({"start": "8am"}, "INVALID_CLOCK_TIME"),
                       ({"doctor_id": "doc-nobody"}, "UNKNOWN_DOCTOR")],
)  # fmt: skip
def test_a_bad_template_is_refused(w, over, code):
    body = {"weekday": 5, **{k: v for k, v in asdict(spec()).items() if k != "date"}, **over}
    assert refused(w.service.save_template, COUNTY_ADMIN, body)[1] == code
    assert w.store.template_rows == {}


def test_publishing_templates_wants_one_to_twelve_weeks(w):
    for weeks in (0, 13):
        assert refused(w.service.publish_templates, COUNTY_ADMIN, "2026-06-01", weeks)[1] == (
            "INVALID_WEEKS"
        )


# ------------------------------------------------------------------------------ search
def test_a_resident_sees_public_places_and_a_clinician_also_the_reserved_ones(w):
    slots = w.publish()
    w.book(slots[0])
    q = {"institution_id": "county-hospital", "date": DAY}
    public = w.service.search(RESIDENT, q)
    assert public["count"] == 4 and [s["slot_id"] for s in public["items"]] == slots
    assert [s["free"] for s in public["items"]] == [7, 8, 8, 8]
    assert "reserved" not in public["items"][0] and "booked" not in public["items"][0]
    staff = w.service.search(COUNTY_DOCTOR, q)["items"][0]
    assert (staff["booked"], staff["reserved"], staff["reserved_free"], staff["free"]) == (
        1, 2, 2, 7,
    )  # fmt: skip
    assert staff["free_for_referral"] == 9


def test_search_filters_by_department_doctor_and_days_and_drops_ended_slots(w):
    w.publish()
    w.publish(doctor_id="doc-sun", start="14:00", end="15:00", period="pm")
    w.publish(date=NEXT_DAY)
    q = {"institution_id": "county-hospital", "from": DAY, "to": NEXT_DAY}
    assert w.service.search(RESIDENT, q)["count"] == 4 + 2 + 4
    assert w.service.search(RESIDENT, {**q, "doctor_id": "doc-sun"})["count"] == 2
    assert w.service.search(RESIDENT, {**q, "department": "心血管内科"})["count"] == 0
    assert w.service.search(RESIDENT, {**q, "to": DAY})["count"] == 6
    w.clock.t = at(DAY, "09:00")  # the first two slots have ended
    assert w.service.search(RESIDENT, {**q, "to": DAY})["count"] == 4


@pytest.mark.parametrize(
    ("query", "code"),
    [({}, "INSTITUTION_REQUIRED"), ({"date": "2026-13-01"}, "INVALID_DATE"),
     ({"from": "2026-06-05", "to": "2026-06-04"}, "INVALID_PERIOD"),
     ({"from": "2026-06-01", "to": "2026-06-15"}, "INVALID_PERIOD"),
     ({"from": "2026-06-01", "to": "6/15"}, "INVALID_DATE")],
)  # fmt: skip
def test_a_bad_search_says_why(w, query, code):
    q = {"institution_id": "county-hospital", **query} if query else {}
    assert refused(w.service.search, RESIDENT, q) == (InvalidInput, code)


# ------------------------------------------------------------------------------ book
def test_a_resident_books_a_public_place(w):
    slot = w.publish()[0]
    out = w.book(slot)
    assert (out["status"], out["quota"], out["person_id"]) == ("BOOKED", "public", PATIENT_ID)
    assert (out["patient_name"], out["doctor_name"], out["fee_cents"]) == ("张伟", "陈医生", 5000)
    assert out["start"] == f"{DAY}T08:00:00+08:00" and out["booked_by"]["sub"] == "res-zw"
    assert out["actions"] == ["cancel", "reschedule"]
    assert [h["action"] for h in out["history"]] == ["book"]
    assert w.slot(slot) == (1, 1, 0) and w.active() == 1
    assert w.store.locks == {f"LOCK#{C}#{PATIENT_ID}#{DOCTOR_ID}#{DAY}": out["appointment_id"]}
    [event] = [e for e in w.audit.events if e.what == "Appointment"]
    assert (event.action, event.person_ids) == (AuditAction.CREATE, (PATIENT_ID,))


def test_a_doctor_books_for_a_patient_of_the_index(w):
    out = w.book(w.publish()[0], who=COUNTY_DOCTOR, person_id="p-other")
    assert (out["person_id"], out["patient_name"]) == ("p-other", "李娜")
    assert out["booked_by"] == {"sub": "doc-chen", "role": "doctor", "name": "陈医生"}
    assert "check_in" in out["actions"]


def test_a_retry_with_the_same_key_returns_the_same_appointment(w):
    slot = w.publish()[0]
    first = w.book(slot, key="k1")
    again = w.book(slot, key="k1")
    assert again["appointment_id"] == first["appointment_id"]
    assert len(w.store.appointments) == 1 and w.slot(slot) == (1, 1, 0)
    before = w.snapshot()
    assert refused(w.book, slot.replace("0800", "0830"), key="k1") == (
        Conflict, "IDEMPOTENCY_KEY_REUSED",
    )  # fmt: skip
    assert w.snapshot() == before


def test_without_a_key_a_second_booking_with_the_doctor_that_day_is_a_duplicate(w):
    slots = w.publish()
    w.book(slots[0])
    before = w.snapshot()
    assert refused(w.book, slots[0]) == (Conflict, "DUPLICATE_BOOKING")
    assert refused(w.book, slots[2]) == (Conflict, "DUPLICATE_BOOKING")
    assert w.snapshot() == before
    other_doctor = w.publish(doctor_id="doc-sun")[0]
    next_day = w.publish(date=NEXT_DAY)[0]
    w.book(other_doctor)
    w.book(next_day)
    assert w.active() == 3


def test_a_department_session_locks_per_department_and_day(w):
    slots = w.publish(doctor_id=None)
    w.book(slots[0])
    assert refused(w.book, slots[1]) == (Conflict, "DUPLICATE_BOOKING")
    w.book(w.publish(doctor_id=None, department="心血管内科")[0])


def test_the_sixth_active_booking_is_refused(w):
    days = [(T0 + timedelta(days=n)).date().isoformat() for n in range(1, 7)]
    slots = [w.publish(date=d)[0] for d in days]
    for slot in slots[:5]:
        w.book(slot)
    before = w.snapshot()
    with pytest.raises(Conflict) as err:
        w.book(slots[5])
    assert (err.value.code, err.value.details) == ("TOO_MANY_BOOKINGS", {"limit": 5})
    assert w.snapshot() == before and w.active() == 5


def test_a_suspended_resident_may_not_book(w):
    slot = w.publish()[0]
    until = iso(T0 + timedelta(days=20))
    w.store.standings[(C, PATIENT_ID)] = {"active": 0, "no_shows": [], "suspended_until": until}
    assert refused(w.book, slot) == (Forbidden, "BOOKING_SUSPENDED")
    assert w.slot(slot) == (0, 0, 0)
    w.book(slot, who=OTHER_RESIDENT)  # someone else may


BAD_PATIENTS = [
    (RESIDENT, {"person_id": "p-other"}, Forbidden, "NOT_YOUR_RECORD"),
    (Principal("res-none", Role.RESIDENT, C), {}, Forbidden, "NO_PERSON"),
    (COUNTY_DOCTOR, {"person_id": "p-nobody"}, InvalidInput, "UNKNOWN_PATIENT"),
    (COUNTY_DOCTOR, {}, InvalidInput, "UNKNOWN_PATIENT"),
    (COUNTY_DOCTOR, {"person_id": "p-elsewhere"}, InvalidInput, "UNKNOWN_PATIENT"),
    (COUNTY_DOCTOR, {"person_id": "p-old"}, InvalidInput, "PATIENT_MERGED"),
]


@pytest.mark.parametrize(("who", "body", "kind", "code"), BAD_PATIENTS,
                         ids=[b[-1] for b in BAD_PATIENTS])  # fmt: skip
def test_booking_for_someone_one_may_not_is_refused(w, who, body, kind, code):
    slot = w.publish()[0]
    assert refused(w.book, slot, who=who, **body) == (kind, code)
    assert w.slot(slot) == (0, 0, 0) and w.store.appointments == {}


def test_slot_states_refuse_a_booking_with_their_reason(w):
    slot = w.publish()[0]
    assert refused(w.book, "county-hospital.2026-06-05.nope.0800") == (NotFound, "SLOT_NOT_FOUND")
    assert refused(w.book, "garbage") == (NotFound, "SLOT_NOT_FOUND")
    far = w.publish(date=(T0 + timedelta(days=20)).date().isoformat())[0]
    assert refused(w.book, far) == (Conflict, "SLOT_NOT_OPEN")
    w.clock.t = at(DAY, "08:00")
    assert refused(w.book, slot) == (Conflict, "SLOT_IN_PAST")
    assert w.store.appointments == {}


def test_a_full_public_share_refuses_the_public_and_still_takes_a_referral(w):
    slot = w.publish(capacity=5)[0]  # 1 reserved, 4 public
    for n in range(4):
        w.book(slot, who=COUNTY_DOCTOR, person_id=_patient(w, f"p-{n}"))
    assert refused(w.book, slot) == (Conflict, "SLOT_FULL")
    w.seam.add(referral(REFERRAL_ID))
    out = w.book(slot, who=COUNTY_DOCTOR, person_id=PATIENT_ID, referral_id=REFERRAL_ID)
    assert out["quota"] == "reserved" and w.slot(slot) == (5, 4, 1)
    assert refused(w.book, slot, who=OTHER_RESIDENT) == (Conflict, "SLOT_FULL")


def test_asking_for_a_reserved_place_without_a_referral_is_refused(w):
    slot = w.publish()[0]
    assert refused(w.book, slot, reserved=True) == (Forbidden, "RESERVED_FOR_REFERRALS")
    assert refused(w.book, slot, who=COUNTY_DOCTOR, person_id=PATIENT_ID, reserved=True) == (
        Forbidden, "RESERVED_FOR_REFERRALS",
    )  # fmt: skip
    assert w.slot(slot) == (0, 0, 0)


def test_a_referral_booked_by_its_receiver_takes_a_reserved_place_and_shows_on_it(w):
    slot = w.publish()[0]
    w.seam.add(referral(REFERRAL_ID))
    out = w.book(slot, who=COUNTY_DOCTOR, person_id=PATIENT_ID, referral_id=REFERRAL_ID,
                 reserved=True)  # fmt: skip
    assert (out["quota"], out["referral_id"]) == ("reserved", REFERRAL_ID)
    assert w.slot(slot) == (1, 0, 1)
    shown = w.seam.get(REFERRAL_ID).appointment
    assert shown["appointment_id"] == out["appointment_id"]
    assert (shown["quota"], shown["status"], shown["slot_id"]) == ("reserved", "BOOKED", slot)
    # the referrer (the village doctor) may book it too; a resident may not use it
    assert w.service.search(RESIDENT, {"institution_id": "county-hospital", "date": DAY})[
        "items"][0]["free"] == 8  # fmt: skip


def test_the_referring_doctor_may_book_the_reserved_place(w):
    slot = w.publish()[0]
    w.seam.add(referral(REFERRAL_ID))
    assert w.book(slot, who=REFERRER, person_id=PATIENT_ID, referral_id=REFERRAL_ID)["quota"] == (
        "reserved"
    )


REFERRAL_CASES = [
    ({}, "nope", COUNTY_DOCTOR, PATIENT_ID, InvalidInput, "UNKNOWN_REFERRAL"),
    ({"status": Status.PENDING_REVIEW}, REFERRAL_ID, COUNTY_DOCTOR, PATIENT_ID, Conflict,
     "REFERRAL_NOT_ACCEPTED"),
    ({"status": Status.REJECTED}, REFERRAL_ID, COUNTY_DOCTOR, PATIENT_ID, Conflict,
     "REFERRAL_NOT_ACCEPTED"),
    ({"direction": Direction.DOWN}, REFERRAL_ID, COUNTY_DOCTOR, PATIENT_ID, Conflict,
     "REFERRAL_NOT_ACCEPTED"),
    ({"target": TCM}, REFERRAL_ID, COUNTY_DOCTOR, PATIENT_ID, InvalidInput,
     "REFERRAL_OTHER_INSTITUTION"),
    ({"person": "p-other"}, REFERRAL_ID, COUNTY_DOCTOR, PATIENT_ID, InvalidInput,
     "REFERRAL_OTHER_PATIENT"),
    ({}, REFERRAL_ID, OTHER_TOWNSHIP, PATIENT_ID, Forbidden, "NOT_A_PARTY"),
    ({}, REFERRAL_ID, RESIDENT, None, Forbidden, "NOT_A_PARTY"),
]  # fmt: skip


@pytest.mark.parametrize(("over", "rid", "who", "person_id", "kind", "code"), REFERRAL_CASES,
                         ids=[f"{c[-1]}-{n}" for n, c in enumerate(REFERRAL_CASES)])  # fmt: skip
def test_a_referral_that_does_not_fit_is_refused(w, over, rid, who, person_id, kind, code):
    slot = w.publish()[0]
    w.seam.add(referral(REFERRAL_ID, **over))
    body = {"referral_id": rid, **({"person_id": person_id} if person_id else {})}
    assert refused(w.book, slot, who=who, **body) == (kind, code)
    assert w.slot(slot) == (0, 0, 0) and w.seam.attached == []


def test_a_place_taken_between_the_check_and_the_write_is_explained_as_full(w):
    slot = w.publish(TOWNSHIP_ADMIN, doctor_id=None, department="全科", capacity=1)[0]
    w.store.before_next_write(lambda: w.book(slot, who=OTHER_RESIDENT))
    assert refused(w.book, slot) == (Conflict, "SLOT_FULL")
    assert w.slot(slot) == (1, 1, 0) and len(w.store.appointments) == 1
    assert w.active() == 0 and w.active("p-other") == 1


def test_a_limit_reached_between_the_check_and_the_write_is_explained(w):
    days = [(T0 + timedelta(days=n)).date().isoformat() for n in range(1, 7)]
    slots = [w.publish(date=d)[0] for d in days]
    for slot in slots[:4]:
        w.book(slot)
    w.store.before_next_write(lambda: w.book(slots[4]))
    assert refused(w.book, slots[5]) == (Conflict, "TOO_MANY_BOOKINGS")
    assert w.slot(slots[5]) == (0, 0, 0) and w.active() == 5


# ------------------------------------------------------------------------------ cancel
def test_a_resident_cancels_before_the_cutoff_and_the_place_comes_back(w):
    slot = w.publish()[0]
    appt = w.book(slot)["appointment_id"]
    out = w.service.cancel(RESIDENT, appt, "有事")
    assert (out["status"], out["actions"]) == ("CANCELLED", [])
    assert out["history"][-1]["action"] == "cancel" and out["history"][-1]["reason"] == "有事"
    assert w.slot(slot) == (0, 0, 0) and w.active() == 0 and w.store.locks == {}
    [(kind, detail)] = w.publisher.events
    assert kind == "AppointmentCancelled"
    assert (detail["appointment_id"], detail["person_id"], detail["reason"]) == (
        appt, PATIENT_ID, "有事",
    )  # fmt: skip
    assert w.book(slot)["status"] == "BOOKED"  # the lock is free again


def test_cancel_rules(w):
    slot = w.publish()[0]
    appt = w.book(slot)["appointment_id"]
    assert refused(w.service.cancel, OTHER_RESIDENT, appt, "") == (
        Forbidden,
        "NOT_YOUR_APPOINTMENT",
    )
    assert refused(w.service.cancel, OTHER_TOWNSHIP, appt, "x") == (
        Forbidden,
        "NOT_YOUR_APPOINTMENT",
    )
    assert refused(w.service.cancel, RESIDENT, "A-nope", "") == (NotFound, "APPOINTMENT_NOT_FOUND")
    w.clock.t = at(DAY, "06:30")  # 1.5 h before: past the resident's cutoff
    assert refused(w.service.cancel, RESIDENT, appt, "") == (Conflict, "CANCEL_CUTOFF_PASSED")
    assert refused(w.service.cancel, COUNTY_DOCTOR, appt, " ") == (InvalidInput, "REASON_REQUIRED")
    assert w.status(appt) == "BOOKED" and w.slot(slot) == (1, 1, 0) and w.publisher.events == []
    out = w.service.cancel(COUNTY_DOCTOR, appt, "医生急诊手术")
    assert out["status"] == "CANCELLED" and w.slot(slot) == (0, 0, 0)
    assert refused(w.service.cancel, COUNTY_DOCTOR, appt, "again") == (Conflict, "NOT_CANCELLABLE")


def test_a_cancel_racing_another_change_decides_again_on_the_fresh_state(w):
    slot = w.publish()[0]
    appt = w.book(slot)["appointment_id"]
    w.store.before_next_write(lambda: w.service.cancel(COUNTY_DOCTOR, appt, "停诊"))
    assert refused(w.service.cancel, RESIDENT, appt, "") == (Conflict, "NOT_CANCELLABLE")
    assert w.slot(slot) == (0, 0, 0) and w.active() == 0
    assert w.publisher.kinds() == ["AppointmentCancelled"]


# ------------------------------------------------------------------------------ reschedule
def test_reschedule_moves_the_booking_in_one_step(w):
    slots = w.publish()
    appt = w.book(slots[0])["appointment_id"]
    new = w.service.reschedule(RESIDENT, appt, slots[2])
    assert new["appointment_id"] != appt and new["status"] == "BOOKED"
    assert (new["slot_id"], new["start"]) == (slots[2], f"{DAY}T09:00:00+08:00")
    assert new["history"][0]["reason"] == f"from {appt}"
    assert w.status(appt) == "CANCELLED"
    assert w.slot(slots[0]) == (0, 0, 0) and w.slot(slots[2]) == (1, 1, 0) and w.active() == 1
    assert list(w.store.locks.values()) == [new["appointment_id"]]


def test_reschedule_to_another_doctor_moves_the_lock(w):
    appt = w.book(w.publish()[0])["appointment_id"]
    other = w.publish(doctor_id="doc-sun")[1]
    new = w.service.reschedule(RESIDENT, appt, other)
    assert new["doctor_name"] == "孙医生"
    assert w.store.locks == {f"LOCK#{C}#{PATIENT_ID}#doc-sun#{DAY}": new["appointment_id"]}
    w.book(w.publish(date=DAY, start="14:00", end="15:00", period="pm")[0])  # Dr Chen again


def test_a_refused_reschedule_keeps_the_first_booking(w):
    slots = w.publish(capacity=5)
    appt = w.book(slots[0])["appointment_id"]
    for n in range(4):
        w.book(slots[1], who=COUNTY_DOCTOR, person_id=_patient(w, f"p-{n}"))
    tcm = w.publish(who=TCM_ADMIN, doctor_id=None)[0]
    before = w.snapshot()
    assert refused(w.service.reschedule, RESIDENT, appt, slots[1]) == (Conflict, "SLOT_FULL")
    assert refused(w.service.reschedule, RESIDENT, appt, slots[0]) == (InvalidInput, "SAME_SLOT")
    assert refused(w.service.reschedule, RESIDENT, appt, tcm) == (InvalidInput, "OTHER_INSTITUTION")
    assert refused(w.service.reschedule, RESIDENT, appt, "nope.x") == (NotFound, "SLOT_NOT_FOUND")
    assert refused(w.service.reschedule, OTHER_RESIDENT, appt, slots[2]) == (
        Forbidden, "NOT_YOUR_APPOINTMENT",
    )  # fmt: skip
    w.clock.t = at(DAY, "06:30")
    assert refused(w.service.reschedule, RESIDENT, appt, slots[2]) == (
        Conflict,
        "CANCEL_CUTOFF_PASSED",
    )
    assert w.snapshot() == before


def test_a_reschedule_racing_a_cancel_is_refused_and_changes_nothing_more(w):
    slots = w.publish()
    appt = w.book(slots[0])["appointment_id"]
    w.store.before_next_write(lambda: w.service.cancel(COUNTY_DOCTOR, appt, "停诊"))
    assert refused(w.service.reschedule, RESIDENT, appt, slots[1]) == (
        Conflict,
        "APPOINTMENT_CHANGED",
    )
    assert w.slot(slots[0]) == w.slot(slots[1]) == (0, 0, 0) and w.active() == 0


def test_a_referred_booking_rescheduled_keeps_its_reserved_place_and_the_referral_follows(w):
    slots = w.publish()
    w.seam.add(referral(REFERRAL_ID))
    appt = w.book(slots[0], who=COUNTY_DOCTOR, person_id=PATIENT_ID, referral_id=REFERRAL_ID)
    new = w.service.reschedule(COUNTY_DOCTOR, appt["appointment_id"], slots[1])
    assert new["quota"] == "reserved" and w.slot(slots[1]) == (1, 0, 1)
    assert w.seam.get(REFERRAL_ID).appointment["appointment_id"] == new["appointment_id"]


def test_a_referred_booking_may_move_to_a_slot_whose_reserved_places_were_released(w):
    # Friday's slots were booked from the reserved quota on Monday; on Thursday morning the
    # patient asks to come on Friday afternoon instead: that slot released its reserved
    # places at 14:00 on Wednesday, and has plenty of public room.
    morning = w.publish()[0]
    afternoon = w.publish(start="14:00", end="15:00", period="pm")[0]
    w.seam.add(referral(REFERRAL_ID))
    appt = w.book(morning, who=COUNTY_DOCTOR, person_id=PATIENT_ID, referral_id=REFERRAL_ID)
    assert appt["quota"] == "reserved"
    w.clock.t = at((T0 + timedelta(days=3)).date().isoformat(), "09:00")
    new = w.service.reschedule(COUNTY_DOCTOR, appt["appointment_id"], afternoon)
    assert new["status"] == "BOOKED" and new["slot_id"] == afternoon
    assert w.slot(morning) == (0, 0, 0) and w.slot(afternoon)[0] == 1


# ------------------------------------------------------------------------------ check-in
def test_the_institution_checks_the_patient_in_and_the_place_stays_taken(w):
    slot = w.publish()[0]
    appt = w.book(slot)["appointment_id"]
    assert refused(w.service.check_in, RESIDENT, appt) == (Forbidden, "NOT_RECEIVING_INSTITUTION")
    assert refused(w.service.check_in, RECEIVER, appt) == (Forbidden, "NOT_RECEIVING_INSTITUTION")
    assert refused(w.service.check_in, COUNTY_DOCTOR, appt) == (Conflict, "OUTSIDE_CHECK_IN_WINDOW")
    w.clock.t = at(DAY, "07:30")
    out = w.service.check_in(COUNTY_DOCTOR, appt)
    assert (out["status"], out["history"][-1]["action"]) == ("CHECKED_IN", "check_in")
    assert w.slot(slot) == (1, 1, 0) and w.active() == 0 and w.store.locks == {}
    assert refused(w.service.check_in, COUNTY_DOCTOR, appt) == (Conflict, "NOT_CHECKABLE")
    assert refused(w.service.cancel, COUNTY_DOCTOR, appt, "x") == (Conflict, "NOT_CANCELLABLE")


# ------------------------------------------------------------------------------ sessions
def test_cancelling_a_session_cancels_its_bookings_with_notice(w):
    slots = w.publish()
    mine = w.book(slots[0])["appointment_id"]
    theirs = w.book(slots[1], who=OTHER_RESIDENT)["appointment_id"]
    session_id = slots[0].rsplit(".", 1)[0]
    out = w.service.cancel_session(COUNTY_ADMIN, session_id, "设备检修")
    assert out == {"session_id": session_id, "status": "CANCELLED", "bookings_cancelled": 2}
    assert w.status(mine) == w.status(theirs) == "CANCELLED"
    assert w.publisher.kinds() == ["AppointmentCancelled"] * 2
    assert {d["reason"] for _, d in w.publisher.events} == {"设备检修"}
    assert w.active() == w.active("p-other") == 0
    views = w.service.search(RESIDENT, {"institution_id": "county-hospital", "date": DAY})
    assert {(s["status"], s["free"]) for s in views["items"]} == {("CANCELLED", 0)}
    assert refused(w.book, slots[2]) == (Conflict, "SESSION_CANCELLED")


def test_a_session_cancel_needs_a_reason_an_admin_and_a_known_session(w):
    slots = w.publish()
    session_id = slots[0].rsplit(".", 1)[0]
    cancel = w.service.cancel_session
    assert refused(cancel, COUNTY_ADMIN, session_id, "") == (InvalidInput, "REASON_REQUIRED")
    assert refused(cancel, COUNTY_DOCTOR, session_id, "x") == (Forbidden, "ROLE_NOT_ALLOWED")
    assert refused(cancel, TOWNSHIP_ADMIN, session_id, "x") == (Forbidden, "OTHER_INSTITUTION")
    assert refused(cancel, COUNTY_ADMIN, "county-hospital.2026-06-05.zz", "x") == (
        NotFound, "SESSION_NOT_FOUND",
    )  # fmt: skip
    assert refused(cancel, COUNTY_ADMIN, "nonsense", "x") == (NotFound, "SESSION_NOT_FOUND")
    assert {s["status"] for s in w.store.slots.values()} == {"OPEN"}


def test_a_doctors_leave_cancels_their_sessions_in_the_period_only(w):
    chen_fri = w.publish()
    chen_sat = w.publish(date=NEXT_DAY)
    chen_later = w.publish(date=(T0 + timedelta(days=8)).date().isoformat())
    sun_fri = w.publish(doctor_id="doc-sun")
    booked = [w.book(s, who=COUNTY_DOCTOR, person_id=p)["appointment_id"]
              for s, p in ((chen_fri[0], PATIENT_ID), (chen_sat[0], "p-other"),
                           (sun_fri[1], "p-other"), (chen_later[0], PATIENT_ID))]  # fmt: skip
    out = w.service.doctor_leave(COUNTY_ADMIN, DOCTOR_ID, DAY, NEXT_DAY, "外出进修")
    assert out == {"doctor_id": DOCTOR_ID, "sessions_cancelled": 2, "bookings_cancelled": 2}
    assert [w.status(a) for a in booked] == ["CANCELLED", "CANCELLED", "BOOKED", "BOOKED"]
    reasons = {d["reason"] for _, d in w.publisher.events}
    assert reasons == {"医生停诊: 外出进修"}
    assert w.store.get_slot(sun_fri[0]).status == "OPEN"
    assert refused(w.service.doctor_leave, COUNTY_ADMIN, "doc-nobody", DAY, DAY, "x")[1] == (
        "UNKNOWN_DOCTOR"
    )
    assert refused(w.service.doctor_leave, COUNTY_ADMIN, DOCTOR_ID, NEXT_DAY, DAY, "x")[1] == (
        "INVALID_PERIOD"
    )


# ------------------------------------------------------------------------------ no-shows
def test_the_sweep_marks_no_shows_after_the_grace_and_only_them(w):
    slots = w.publish()
    gone = w.book(slots[0])["appointment_id"]
    came = w.book(slots[1], who=OTHER_RESIDENT)["appointment_id"]
    later = w.book(slots[3], who=COUNTY_DOCTOR, person_id=_patient(w, "p-late"))["appointment_id"]
    w.clock.t = at(DAY, "08:45")
    w.service.check_in(COUNTY_DOCTOR, came)
    assert w.service.mark_no_shows(C) == {"marked": 0}  # 08:30 + 30 min grace not passed
    w.clock.t = at(DAY, "09:01")
    assert w.service.mark_no_shows(C) == {"marked": 1}
    assert [w.status(a) for a in (gone, came, later)] == ["NO_SHOW", "CHECKED_IN", "BOOKED"]
    standing, version = w.store.standing(C, PATIENT_ID)
    assert (standing.active, standing.no_shows, version) == (0, (iso(w.clock.t),), 2)
    assert w.slot(slots[0]) == (1, 1, 0)  # the place stays used
    assert w.service.mark_no_shows(C) == {"marked": 0}  # a second sweep changes nothing


def test_three_no_shows_suspend_booking(w):
    days = [(T0 + timedelta(days=n)).date().isoformat() for n in range(1, 5)]
    slots = [w.publish(date=d)[0] for d in days]
    for slot in slots[:3]:
        w.book(slot)
    w.clock.t = at(days[2], "12:00")
    assert w.service.mark_no_shows(C, days[:3]) == {"marked": 3}
    standing, _ = w.store.standing(C, PATIENT_ID)
    assert standing.active == 0 and len(standing.no_shows) == 3
    assert standing.suspended_until == iso(w.clock.t + timedelta(days=30))
    assert refused(w.book, slots[3]) == (Forbidden, "BOOKING_SUSPENDED")


# ------------------------------------------------------------------------------ the seam
def accepted(proposed: str | None = None, **over: Any) -> dict[str, Any]:
    detail = {
        "referral_id": REFERRAL_ID, "consortium_id": C, "status": "ACCEPTED",
        "direction": "up", "person_id": PATIENT_ID, "from_institution": "qiaotou-lijia",
        "to_institution": "county-hospital", "target_department": NEURO,
        "target_doctor_id": None,
    }  # fmt: skip
    if proposed:
        detail["proposed_time"] = proposed
    return {**detail, **over}


def test_an_accepted_referral_books_the_first_reserved_place_from_the_proposed_time(w):
    slots = w.publish()
    w.seam.add(referral(REFERRAL_ID))
    out = w.service.book_for_referral(accepted(f"{DAY}T08:20:00+08:00"))
    assert out["status"] == "booked"
    appt = out["appointment"]
    assert (appt["slot_id"], appt["quota"], appt["referral_id"]) == (
        slots[1], "reserved", REFERRAL_ID,
    )  # fmt: skip
    assert appt["booked_by"]["sub"] == "system:booking"
    assert w.slot(slots[1]) == (1, 0, 1)
    assert w.seam.get(REFERRAL_ID).appointment["appointment_id"] == appt["appointment_id"]
    assert w.service.book_for_referral(accepted(f"{DAY}T08:20:00+08:00")) == {
        "status": "already_booked"
    }
    assert len(w.store.appointments) == 1


def test_the_seam_skips_full_slots_other_departments_and_other_doctors(w):
    slots = w.publish(capacity=1)  # one place each, held for referrals
    w.publish(department="心血管内科", doctor_id=None, start="07:00", end="08:00")
    w.seam.add(referral("R-FIRST"))
    w.book(slots[0], who=COUNTY_DOCTOR, person_id=PATIENT_ID, referral_id="R-FIRST")
    w.seam.add(referral(REFERRAL_ID, person="p-other"))
    out = w.service.book_for_referral(accepted(None, person_id="p-other"))
    assert out["appointment"]["slot_id"] == slots[1]
    sun = w.publish(doctor_id="doc-sun", start="10:00", end="11:00")
    w.seam.add(referral("R-SUN", person="p-other"))
    out = w.service.book_for_referral(
        accepted(None, referral_id="R-SUN", person_id="p-other", target_doctor_id="doc-sun")
    )
    assert out["appointment"]["slot_id"] == sun[0]


def test_no_reserved_place_in_a_week_publishes_slot_unavailable(w):
    w.publish()
    w.seam.add(referral(REFERRAL_ID))
    out = w.service.book_for_referral(accepted(f"{NEXT_DAY}T08:00:00+08:00"))
    assert out == {"status": "no_slot"}
    [(kind, detail)] = w.publisher.events
    assert kind == "ReferralSlotUnavailable"
    assert (detail["referral_id"], detail["to_institution"], detail["target_department"]) == (
        REFERRAL_ID, "county-hospital", NEURO,
    )  # fmt: skip
    assert w.store.appointments == {} and w.seam.attached == []


def test_a_proposed_time_in_the_past_books_from_now(w):
    slots = w.publish()
    w.seam.add(referral(REFERRAL_ID))
    w.clock.t = at(DAY, "08:10")
    out = w.service.book_for_referral(accepted(f"{DAY}T07:00:00+08:00"))
    assert out["appointment"]["slot_id"] == slots[1]


# ------------------------------------------------------------------------------ reading
def test_a_resident_lists_their_own_and_staff_read_the_day_list(w):
    slots = w.publish()
    mine = w.book(slots[0])["appointment_id"]
    w.book(slots[1], who=OTHER_RESIDENT)
    assert [a["appointment_id"] for a in w.service.mine(RESIDENT)["items"]] == [mine]
    assert refused(w.service.mine, COUNTY_DOCTOR) == (Forbidden, "RESIDENTS_ONLY")
    day = w.service.day_list(COUNTY_DOCTOR, None, DAY)
    assert day["count"] == 2 and [a["slot_id"] for a in day["items"]] == slots[:2]
    assert w.audit.events[-1].action is AuditAction.SEARCH
    assert refused(w.service.day_list, RECEIVER, "county-hospital", DAY) == (
        Forbidden, "OTHER_INSTITUTION",
    )  # fmt: skip
    assert refused(w.service.day_list, RESIDENT, None, DAY) == (Forbidden, "ROLE_NOT_ALLOWED")
    assert refused(w.service.day_list, COUNTY_DOCTOR, None, "2026-13-01") == (
        InvalidInput, "INVALID_DATE",
    )  # fmt: skip
    assert w.service.get(RESIDENT, mine)["appointment_id"] == mine
    assert refused(w.service.get, OTHER_RESIDENT, mine) == (Forbidden, "NOT_YOUR_APPOINTMENT")


def test_a_resident_past_the_cutoff_is_offered_no_change(w):
    appt = w.book(w.publish()[0])["appointment_id"]
    w.clock.t = at(DAY, "06:30")
    assert w.service.get(RESIDENT, appt)["actions"] == []
    assert w.service.get(COUNTY_DOCTOR, appt)["actions"] == ["cancel", "reschedule", "check_in"]


# ------------------------------------------------------------------------------ helpers
def _patient(w: World, person_id: str) -> str:
    w.service.patients.persons[person_id] = person(person_id, name=f"患者{person_id}")
    return person_id
