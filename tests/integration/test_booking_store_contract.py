"""One contract, two implementations: the in-memory fake and DynamoBookingStore (moto, the
BookingsTable from template.yaml) keep sessions, slots and appointments alike, and each
write is one all-or-nothing transaction whose conditions carry the rules: capacity, the
public share before the release, reserved places only while held, the doctor-day lock,
the resident's limit and suspension, the appointment's version. A refused transaction
names its rule and changes nothing at all (the whole table is compared)."""

from __future__ import annotations

import copy
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

import pytest

from tests.support.fake_booking import (
    DOCTOR_ID,
    NEURO,
    SESSION_DAY,
    FakeBookingStore,
    at,
    spec,
)
from tests.support.fake_referrals import T0, C
from tests.support.store_contract import fake_and_dynamodb_store
from yilian.adapters.booking_store import BookingRefused, DuplicateSession, DynamoBookingStore
from yilian.domain.booking import (
    Appointment,
    AppointmentStatus,
    BookingPolicy,
    Quota,
    ResidentStanding,
    Session,
    Slot,
    iso,
    new_session,
    parse_time,
    slots_of,
)

POLICY = BookingPolicy()
NOW = iso(T0)
INST = "county-hospital"


store = fake_and_dynamodb_store(
    FakeBookingStore,
    lambda db, names: DynamoBookingStore(db, names["BookingsTable"]),
)


def everything(store: Any) -> Any:
    """All the store holds, to compare before and after a refused write."""
    if isinstance(store, FakeBookingStore):
        return copy.deepcopy(
            (store.sessions, store.slots, store.appointments, store.locks, store.standings)
        )
    items = store._db.scan(TableName=store._table)["Items"]
    return sorted(repr(sorted(i.items())) for i in items)


def published(
    store: Any, session_id: str = "s1", day: str = SESSION_DAY, reserves: bool = True, **kw
) -> tuple[Session, list[Slot]]:
    session = new_session(
        spec(date=day, **kw), session_id=f"{INST}.{day}.{session_id}", consortium_id=C,
        institution_id=INST, doctor_name="陈医生", reserved_share=0.2, release_hours=48,
        created_by="adm", now=T0,
    )  # fmt: skip
    slots = slots_of(session, POLICY, reserves)
    store.put_session(session, slots)
    return session, slots


_seq = iter(range(10**6))


def appointment(
    slot: Slot, person: str = "p1", quota: Quota = Quota.PUBLIC, **kw: Any
) -> Appointment:
    by = {"sub": person, "role": "resident", "name": "张伟"}
    return Appointment(
        appointment_id=kw.pop("appointment_id", f"A{next(_seq):08d}"), consortium_id=C,
        person_id=person, patient_name="张伟", slot_id=slot.slot_id, session_id=slot.session_id,
        institution_id=slot.institution_id, department=slot.department,
        doctor_id=kw.pop("doctor_id", slot.doctor_id), doctor_name=slot.doctor_name,
        start=slot.start, end=slot.end, quota=quota, status=AppointmentStatus.BOOKED,
        booked_by=by, created_at=NOW, updated_at=NOW, **kw,
    )  # fmt: skip


def book(store, slot: Slot, person: str = "p1", quota=Quota.PUBLIC, now=NOW, **kw):
    appt = appointment(slot, person, quota, **kw)
    store.book(appt, slot, POLICY, now)
    return appt


def refused(store, write, *args) -> str:
    before = everything(store)
    with pytest.raises(BookingRefused) as err:
        write(*args)
    assert everything(store) == before, "a refused transaction changed something"
    return err.value.reason


def counters(store, slot: Slot) -> tuple[int, int, int]:
    s = store.get_slot(slot.slot_id)
    return s.booked, s.booked_public, s.booked_reserved


def moved(appt: Appointment, status: str, at_: datetime = T0) -> Appointment:
    return replace(appt, status=AppointmentStatus(status), updated_at=iso(at_))


class TestBookingStoreContract:
    # ------------------------------------------------------------ sessions and slots
    def test_a_session_and_its_slots_round_trip_and_a_day_is_one_read(self, store):
        session, slots = published(store)
        published(store, "s2", day=(T0 + timedelta(days=6)).date().isoformat())
        sessions, day_slots = store.day(INST, SESSION_DAY)
        assert sessions == [session]
        assert sorted(day_slots, key=lambda s: s.start) == slots
        assert store.get_slot(slots[1].slot_id) == slots[1]
        assert store.day(INST, "2026-06-06") == ([], [])
        assert store.day("qiaotou", SESSION_DAY) == ([], [])

    def test_get_session_returns_the_session(self, store):
        session, _ = published(store)
        assert store.get_session(INST, SESSION_DAY, session.session_id) == session
        assert store.get_session(INST, SESSION_DAY, f"{INST}.{SESSION_DAY}.zz") is None

    def test_a_department_session_without_a_doctor_round_trips_and_is_booked(self, store):
        session, slots = published(store, doctor_id=None)
        assert session.doctor_id is None
        assert store.day(INST, SESSION_DAY) == ([session], slots)
        assert store.get_slot(slots[0].slot_id) == slots[0]
        appt = book(store, slots[0])
        assert store.for_person(C, "p1") == [appt] and appt.doctor_id is None
        assert refused(store, book, store, slots[1]) == "DUPLICATE_BOOKING"  # per department

    @pytest.mark.parametrize("slot_id", ["nope", f"{INST}.{SESSION_DAY}.s1.0700", "a.b", ""])
    def test_an_unknown_slot_is_none(self, store, slot_id):
        published(store)
        assert store.get_slot(slot_id) is None

    def test_a_session_published_twice_is_a_duplicate_and_changes_nothing(self, store):
        session, slots = published(store)
        store.book(appointment(slots[0]), slots[0], POLICY, NOW)
        before = everything(store)
        with pytest.raises(DuplicateSession):
            store.put_session(session, slots_of(session, POLICY, True))
        assert everything(store) == before

    def test_a_cancelled_session_closes_its_slots_only(self, store):
        session, slots = published(store)
        _, others = published(store, "s2", start="14:00", end="15:00", period="pm")
        store.cancel_session(session, "设备检修")
        sessions, day_slots = store.day(INST, SESSION_DAY)
        status = {s.session_id: s.status for s in sessions}
        assert status == {session.session_id: "CANCELLED", others[0].session_id: "OPEN"}
        assert {s.slot_id: s.status for s in day_slots} == {
            **{s.slot_id: "CANCELLED" for s in slots}, **{s.slot_id: "OPEN" for s in others},
        }  # fmt: skip
        assert refused(store, book, store, slots[0]) == "SLOT"

    # ------------------------------------------------------------ book
    def test_a_booking_writes_the_appointment_the_counter_the_lock_and_the_count(self, store):
        _, slots = published(store)
        appt = book(store, slots[0], referral_id="R1")
        assert store.get_appointment(appt.appointment_id) == (appt, 1)
        assert counters(store, slots[0]) == (1, 1, 0)
        assert store.standing(C, "p1") == (ResidentStanding("p1", active=1), 1)
        assert store.for_person(C, "p1") == [appt]
        assert store.day_list(INST, SESSION_DAY) == [appt]
        assert store.for_referral("R1") == [appt]
        assert store.for_referral("R2") == []
        # the doctor-day lock: no second active booking with Dr Chen that day
        assert refused(store, book, store, slots[2]) == "DUPLICATE_BOOKING"
        assert refused(store, book, store, slots[0], "p1", Quota.PUBLIC, NOW,
                       ) == "DUPLICATE_BOOKING"  # fmt: skip

    def test_a_slots_appointments_are_listed_whole(self, store):
        # what a session cancel and a doctor's leave read to cancel each booking
        _, slots = published(store)
        first, second = book(store, slots[0], "p1"), book(store, slots[0], "p2")
        book(store, slots[1], "p3")
        assert store.in_slot(slots[0].slot_id) == [first, second]
        assert store.in_slot(slots[2].slot_id) == []

    def test_the_same_appointment_id_is_never_written_twice(self, store):
        _, slots = published(store)
        appt = book(store, slots[0])
        again = appointment(slots[1], "p2", appointment_id=appt.appointment_id)
        assert refused(store, store.book, again, slots[1], POLICY, NOW) == "APPOINTMENT_EXISTS"

    def test_capacity_and_the_public_share_before_the_release(self, store):
        _, slots = published(store, capacity=5)  # 1 reserved, 4 public
        slot = slots[0]
        for n in range(4):
            book(store, slot, f"p{n}")
        assert refused(store, book, store, slot, "p9") == "SLOT"  # the public share is full
        book(store, slot, "p5", Quota.RESERVED)  # the held place
        assert counters(store, slot) == (5, 4, 1)
        assert refused(store, book, store, slot, "p6", Quota.RESERVED) == "SLOT"
        assert refused(store, book, store, slot, "p7") == "SLOT"

    def test_reserved_places_only_while_held_and_the_rest_public_after_the_release(self, store):
        _, slots = published(store, capacity=5)
        slot = slots[0]
        release = slot.release_at
        for n in range(4):
            book(store, slot, f"p{n}")
        # at the release, reserved places are no more; the public may take the last one
        assert refused(store, book, store, slot, "p5", Quota.RESERVED, release) == "SLOT"
        book(store, slot, "p5", Quota.PUBLIC, release)
        assert counters(store, slot) == (5, 5, 0)
        assert refused(store, book, store, slot, "p6", Quota.PUBLIC, release) == "SLOT"

    def test_a_reserving_slot_fills_to_capacity_whichever_mix(self, store):
        _, slots = published(store, capacity=10)  # 2 reserved
        slot = slots[0]
        book(store, slot, "r1", Quota.RESERVED)
        for n in range(8):
            book(store, slot, f"p{n}")
        later = iso(parse_time(slot.release_at) + timedelta(hours=1))
        book(store, slot, "p8", Quota.PUBLIC, later)
        assert counters(store, slot) == (10, 9, 1)
        assert refused(store, book, store, slot, "p9", Quota.PUBLIC, later) == "SLOT"

    def test_a_slot_is_bookable_only_between_its_opening_and_its_start(self, store):
        _, slots = published(store)
        slot = slots[0]
        just_before_open = iso(parse_time(slot.opens_at) - timedelta(seconds=1))
        assert refused(store, book, store, slot, "p1", Quota.PUBLIC, just_before_open) == "SLOT"
        assert refused(store, book, store, slot, "p1", Quota.PUBLIC, slot.start) == "SLOT"
        book(store, slot, "p1", Quota.PUBLIC, slot.opens_at)
        book(store, slots[1], "p2", Quota.PUBLIC, iso(parse_time(slots[1].start) - timedelta(
            seconds=1)))  # fmt: skip

    def test_a_primary_institutions_slot_is_all_public(self, store):
        _, slots = published(store, reserves=False, capacity=2)
        book(store, slots[0], "p1")
        book(store, slots[0], "p2")
        assert refused(store, book, store, slots[0], "p3", Quota.RESERVED) == "SLOT"
        assert refused(store, book, store, slots[0], "p3") == "SLOT"

    def test_the_residents_limit_and_suspension(self, store):
        days = [(T0 + timedelta(days=n)).date().isoformat() for n in range(1, 8)]
        slots = [published(store, f"d{n}", day=d)[1][0] for n, d in enumerate(days)]
        for slot in slots[:5]:
            book(store, slot)
        assert refused(store, book, store, slots[5]) == "STANDING"
        assert store.standing(C, "p1")[0].active == 5
        # a suspended resident (the no-show sweep's record) is refused until it ends
        until = T0 + timedelta(days=2)
        first = book(store, slots[6], "p2")
        standing, version = store.standing(C, "p2")
        store.save_no_show(
            first,
            1,
            moved(first, "NO_SHOW"),
            replace(standing, active=1, suspended_until=iso(until)),
            version,
        )
        assert refused(store, book, store, slots[5], "p2") == "STANDING"
        assert refused(store, book, store, slots[5], "p2", Quota.PUBLIC, iso(until - timedelta(
            seconds=1))) == "STANDING"  # fmt: skip
        book(store, slots[5], "p2", Quota.PUBLIC, iso(until))

    # ------------------------------------------------------------ release
    def test_a_cancel_gives_the_place_back_and_frees_the_lock_and_the_count(self, store):
        _, slots = published(store)
        appt = book(store, slots[0], "p1", Quota.RESERVED)
        store.release(appt, 1, moved(appt, "CANCELLED"), give_back_place=True)
        assert store.get_appointment(appt.appointment_id) == (moved(appt, "CANCELLED"), 2)
        assert counters(store, slots[0]) == (0, 0, 0)
        assert store.standing(C, "p1")[0].active == 0
        again = book(store, slots[1])  # the lock is free
        assert store.for_person(C, "p1") == [moved(appt, "CANCELLED"), again]

    def test_a_check_in_keeps_the_place(self, store):
        _, slots = published(store)
        appt = book(store, slots[0])
        store.release(appt, 1, moved(appt, "CHECKED_IN"), give_back_place=False)
        assert counters(store, slots[0]) == (1, 1, 0)
        assert store.standing(C, "p1")[0].active == 0
        assert store.get_appointment(appt.appointment_id)[0].status is AppointmentStatus.CHECKED_IN

    def test_a_stale_release_is_refused_whole(self, store):
        _, slots = published(store)
        appt = book(store, slots[0])
        cancelled = moved(appt, "CANCELLED")
        store.release(appt, 1, cancelled, give_back_place=True)
        assert refused(store, store.release, appt, 1, cancelled, True) == "APPOINTMENT_CHANGED"
        assert refused(store, store.release, cancelled, 2, moved(appt, "CHECKED_IN"),
                       False) == "LOCK"  # fmt: skip
        assert counters(store, slots[0]) == (0, 0, 0)

    # ------------------------------------------------------------ reschedule
    def test_reschedule_with_the_same_doctor_moves_everything_at_once(self, store):
        _, slots = published(store)
        appt = book(store, slots[0])
        new = appointment(slots[2])
        store.reschedule(appt, 1, moved(appt, "CANCELLED"), new, slots[2], NOW)
        assert store.get_appointment(appt.appointment_id)[0].status is AppointmentStatus.CANCELLED
        assert store.get_appointment(new.appointment_id) == (new, 1)
        assert counters(store, slots[0]) == (0, 0, 0) and counters(store, slots[2]) == (1, 1, 0)
        assert store.standing(C, "p1")[0].active == 1
        assert refused(store, book, store, slots[1]) == "DUPLICATE_BOOKING"  # the lock moved
        store.release(new, 1, moved(new, "CANCELLED"), give_back_place=True)
        book(store, slots[1])

    def test_reschedule_to_another_doctor_moves_the_lock(self, store):
        _, slots = published(store)
        _, sun = published(store, "s2", doctor_id="doc-sun", start="14:00", end="15:00")
        appt = book(store, slots[0])
        new = appointment(sun[0])
        store.reschedule(appt, 1, moved(appt, "CANCELLED"), new, sun[0], NOW)
        book(store, slots[1])  # Dr Chen's lock is free
        assert refused(store, book, store, sun[1]) == "DUPLICATE_BOOKING"

    def test_a_refused_reschedule_leaves_the_first_booking_whole(self, store):
        _, slots = published(store, capacity=1, reserves=False)
        _, sun = published(store, "s2", doctor_id="doc-sun", reserves=False, capacity=1)
        appt = book(store, slots[0])
        book(store, slots[1], "p2")  # the target is full
        cancelled = moved(appt, "CANCELLED")
        assert refused(store, store.reschedule, appt, 1, cancelled, appointment(slots[1]),
                       slots[1], NOW) == "SLOT"  # fmt: skip
        assert refused(store, store.reschedule, appt, 7, cancelled, appointment(slots[2]),
                       slots[2], NOW) == "APPOINTMENT_CHANGED"  # fmt: skip
        assert refused(store, store.reschedule, appt, 1, cancelled, appointment(slots[2]),
                       slots[2], slots[2].start) == "SLOT"  # started  # fmt: skip
        # the resident's own booking with Dr Sun that day holds the lock moved to
        book(store, sun[0])
        assert refused(store, store.reschedule, appt, 1, cancelled, appointment(sun[1]), sun[1],
                       NOW) == "DUPLICATE_BOOKING"  # fmt: skip
        assert counters(store, slots[0]) == (1, 1, 0)

    def test_a_reserved_place_moves_only_to_a_slot_still_holding_one(self, store):
        _, slots = published(store)
        appt = book(store, slots[0], "p1", Quota.RESERVED)
        new = appointment(slots[1], quota=Quota.RESERVED)
        release = slots[1].release_at
        assert refused(store, store.reschedule, appt, 1, moved(appt, "CANCELLED"), new,
                       slots[1], release) == "SLOT"  # fmt: skip
        store.reschedule(appt, 1, moved(appt, "CANCELLED"), new, slots[1], NOW)
        assert counters(store, slots[1]) == (1, 0, 1) and counters(store, slots[0]) == (0, 0, 0)

    # ------------------------------------------------------------ no-shows
    def test_a_no_show_frees_the_lock_and_records_the_residents_standing(self, store):
        _, slots = published(store)
        appt = book(store, slots[0])
        standing, version = store.standing(C, "p1")
        after_at = at(SESSION_DAY, "09:01")
        record = standing.after_no_show(POLICY, after_at)
        store.save_no_show(appt, 1, moved(appt, "NO_SHOW", after_at), record, version)
        assert store.get_appointment(appt.appointment_id)[1] == 2
        assert counters(store, slots[0]) == (1, 1, 0)  # the place stays used
        got, v = store.standing(C, "p1")
        assert (got.active, got.no_shows, got.suspended_until, v) == (
            0, (iso(after_at),), None, 2,
        )  # fmt: skip
        book(store, slots[1])  # the lock is free

    def test_a_no_show_over_a_stale_standing_is_refused_whole(self, store):
        days = [(T0 + timedelta(days=n)).date().isoformat() for n in (1, 2)]
        a = book(store, published(store, "d1", day=days[0])[1][0])
        b = book(store, published(store, "d2", day=days[1])[1][0])
        standing, version = store.standing(C, "p1")
        store.save_no_show(a, 1, moved(a, "NO_SHOW"), standing.after_no_show(POLICY, T0),
                           version)  # fmt: skip
        stale = standing.after_no_show(POLICY, T0)
        assert refused(store, store.save_no_show, b, 1, moved(b, "NO_SHOW"), stale,
                       version) == "STANDING"  # fmt: skip
        assert refused(store, store.save_no_show, a, 1, moved(a, "NO_SHOW"), stale,
                       version + 1) == "APPOINTMENT_CHANGED"  # fmt: skip

    def test_a_no_show_keeps_a_booking_made_after_the_standing_was_read(self, store):
        # The sweep reads the resident's standing (1 active), then the resident books again
        # (2 active), then the sweep writes the no-show: one booking is still active.
        days = [(T0 + timedelta(days=n)).date().isoformat() for n in (1, 2)]
        first = book(store, published(store, "d1", day=days[0])[1][0])
        standing, version = store.standing(C, "p1")
        book(store, published(store, "d2", day=days[1])[1][0])
        record = standing.after_no_show(POLICY, T0)
        try:
            store.save_no_show(first, 1, moved(first, "NO_SHOW"), record, version)
        except BookingRefused:
            pass  # refusing the stale record is as good: the next sweep reads afresh
        assert store.standing(C, "p1")[0].active == len(
            [a for a in store.for_person(C, "p1") if a.status is AppointmentStatus.BOOKED]
        )

    # ------------------------------------------------------------ queries and configuration
    def test_queries_order_by_start_and_keep_people_and_days_apart(self, store):
        _, slots = published(store)
        _, next_day = published(store, "s2", day="2026-06-06")
        late = book(store, slots[3], "p1", doctor_id="x1")
        early = book(store, slots[0], "p1", doctor_id="x2")
        other = book(store, slots[1], "p2")
        tomorrow = book(store, next_day[0], "p1")
        assert store.for_person(C, "p1") == [early, late, tomorrow]
        assert store.for_person(C, "p2") == [other] and store.for_person("x", "p1") == []
        assert store.day_list(INST, SESSION_DAY) == [early, other, late]
        assert store.day_list(INST, "2026-06-06") == [tomorrow]
        assert store.day_list("qiaotou", SESSION_DAY) == []

    def test_quotas_and_templates_round_trip(self, store):
        assert store.quota(INST, NEURO) is None and store.quotas(INST) == []
        store.set_quota(INST, NEURO, 0.3, 24)
        store.set_quota(INST, NEURO, 0.25, 36)
        store.set_quota(INST, "心血管内科", 0.1, 48)
        got = store.quota(INST, NEURO)
        assert (got["reserved_share"], got["release_hours"]) == (0.25, 36)
        assert sorted(q["sk"] for q in store.quotas(INST)) == sorted([NEURO, "心血管内科"])
        assert store.quotas("qiaotou") == []
        template = {"weekday": 5, "department": NEURO, "doctor_id": DOCTOR_ID, "capacity": 10,
                    "template_id": "t1", "fee_cents": 0}  # fmt: skip
        store.put_template(INST, "t1", template)
        store.put_template(INST, "t1", {**template, "capacity": 12})
        assert store.templates(INST) == [{**template, "capacity": 12}]
        assert store.templates("qiaotou") == []
