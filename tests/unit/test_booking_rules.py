"""The booking rules as plain Python (yilian.domain.booking), table-driven: a session's
checks, its slots (widths, +08:00 times, the reserved share, release and opening times),
free places per quota before and after the release, which quota a booking takes, why a slot
is not bookable, a resident's standing and no-show penalty, cancel / check-in windows,
no-shows and the time parsers."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from tests.support.fake_booking import DOCTOR_ID, NEURO, SESSION_DAY, at, spec
from tests.support.fake_referrals import COUNTY, T0, C
from yilian.domain.booking import (
    MAX_SLOT_MINUTES,
    Appointment,
    AppointmentStatus,
    BookingPolicy,
    Period,
    Quota,
    ResidentStanding,
    Session,
    Slot,
    VisitType,
    check_bookable,
    check_cancel,
    check_check_in,
    choose_quota,
    history_entry,
    is_no_show,
    iso,
    new_session,
    parse_clock,
    parse_date,
    parse_time,
    reserved_places,
    slots_of,
)
from yilian.domain.errors import Conflict, DomainError, Forbidden, InvalidInput

POLICY = BookingPolicy()
SID = f"{COUNTY.institution_id}.{SESSION_DAY}.s1"


def session(now: datetime = T0, share: float = 0.2, hours: int = 48, **kw) -> Session:
    return new_session(
        spec(**kw), session_id=SID, consortium_id=C, institution_id=COUNTY.institution_id,
        doctor_name="陈医生", reserved_share=share, release_hours=hours, created_by="adm",
        now=now,
    )  # fmt: skip


def first_slot(reserves: bool = True, **kw) -> Slot:
    return slots_of(session(**kw), POLICY, reserves)[0]


def booked(slot: Slot, public: int = 0, reserved: int = 0) -> Slot:
    return replace(slot, booked=public + reserved, booked_public=public, booked_reserved=reserved)


def code_of(fn, *args, **kw) -> tuple[type, str]:
    with pytest.raises(DomainError) as err:
        fn(*args, **kw)
    return type(err.value), err.value.code


# ------------------------------------------------------------------------------ sessions
def test_a_valid_session_is_normalised_and_keeps_what_was_published():
    s = session(start="08:00", end="11:30", slot_minutes=15)
    assert (s.session_id, s.consortium_id, s.institution_id) == (SID, C, COUNTY.institution_id)
    assert (s.date, s.period, s.start, s.end) == (SESSION_DAY, Period.MORNING, "08:00", "11:30")
    assert (s.slot_minutes, s.capacity, s.visit_type) == (15, 10, VisitType.SPECIALIST)
    assert (s.doctor_id, s.doctor_name, s.fee_cents) == (DOCTOR_ID, "陈医生", 5000)
    assert (s.reserved_share, s.release_hours, s.status) == (0.2, 48, "OPEN")
    assert s.created_at == iso(T0) and s.created_at.endswith("+08:00")
    assert Session.from_json(s.to_json()) == s


def test_a_department_session_names_no_doctor_and_trims_the_department():
    s = session(doctor_id="", department=f"  {NEURO} ")
    assert (s.doctor_id, s.department) == (None, NEURO)


BAD_SESSIONS = [
    ("SESSION_IN_PAST", {"date": (T0 - timedelta(days=1)).date().isoformat()}),
    ("INVALID_DATE", {"date": "2026-13-01"}),
    ("INVALID_DATE", {"date": "2026-02-30"}),
    ("INVALID_DATE", {"date": "next friday"}),
    ("INVALID_PERIOD", {"period": "night"}),
    ("INVALID_PERIOD", {"period": "AM"}),
    ("INVALID_VISIT_TYPE", {"visit_type": "vip"}),
    ("INVALID_CLOCK_TIME", {"start": "8am"}),
    ("INVALID_CLOCK_TIME", {"start": "8:00"}),
    ("INVALID_CLOCK_TIME", {"end": "25:00"}),
    ("INVALID_CLOCK_TIME", {"start": "08:00+08:00"}),  # a local time of day, no offset
    ("INVALID_CLOCK_TIME", {"start": "08:00:30"}),
    ("EMPTY_SESSION", {"start": "10:00", "end": "10:00"}),
    ("EMPTY_SESSION", {"start": "11:00", "end": "10:00"}),
    ("SLOT_TOO_WIDE", {"slot_minutes": MAX_SLOT_MINUTES + 1, "end": "12:00"}),
    ("SLOT_TOO_WIDE", {"slot_minutes": 120}),
    ("SLOT_TOO_WIDE", {"slot_minutes": 4}),  # and not narrower than 5 minutes
    ("SLOTS_DO_NOT_FIT", {"slot_minutes": 45}),  # 120 minutes are not whole 45s
    ("SLOTS_DO_NOT_FIT", {"end": "10:10", "slot_minutes": 20}),
    ("INVALID_CAPACITY", {"capacity": 0}),
    ("INVALID_CAPACITY", {"capacity": -3}),
    ("INVALID_CAPACITY", {"capacity": 501}),
    ("INVALID_FEE", {"fee_cents": -1}),
    ("DEPARTMENT_REQUIRED", {"department": "   "}),
]


@pytest.mark.parametrize(("code", "over"), BAD_SESSIONS, ids=[f"{c}-{o}" for c, o in BAD_SESSIONS])
def test_a_bad_session_is_refused_with_its_reason(code, over):
    assert code_of(session, **over) == (InvalidInput, code)


@pytest.mark.parametrize(
    ("minutes", "end"), [(5, "08:05"), (10, "09:00"), (20, "09:00"), (60, "12:00"), (30, "08:30")]
)
def test_slots_of_five_to_sixty_minutes_that_divide_the_session_are_accepted(minutes, end):
    s = session(slot_minutes=minutes, end=end)
    assert s.slot_minutes == minutes


def test_a_session_today_is_accepted_even_late_in_the_day_and_yesterday_is_not():
    late = at(SESSION_DAY, "23:30")
    assert session(now=late).date == SESSION_DAY
    after_midnight = at(SESSION_DAY, "00:00") + timedelta(days=1)
    assert code_of(session, now=after_midnight) == (InvalidInput, "SESSION_IN_PAST")


def test_the_day_in_the_past_is_judged_in_china_not_utc():
    # 2026-06-05 07:00 in Shanghai is still 06-04 in UTC: the session of 06-05 is today
    utc = at(SESSION_DAY, "07:00").astimezone(UTC)
    assert utc.date().isoformat() < SESSION_DAY
    assert session(now=utc).date == SESSION_DAY


# ------------------------------------------------------------------------------ slots
def test_slots_cover_the_session_in_steps_of_slot_minutes_with_offset_times():
    slots = slots_of(session(start="08:00", end="10:00", slot_minutes=30), POLICY, True)
    assert [(s.start, s.end) for s in slots] == [
        (f"{SESSION_DAY}T08:00:00+08:00", f"{SESSION_DAY}T08:30:00+08:00"),
        (f"{SESSION_DAY}T08:30:00+08:00", f"{SESSION_DAY}T09:00:00+08:00"),
        (f"{SESSION_DAY}T09:00:00+08:00", f"{SESSION_DAY}T09:30:00+08:00"),
        (f"{SESSION_DAY}T09:30:00+08:00", f"{SESSION_DAY}T10:00:00+08:00"),
    ]
    assert [s.slot_id for s in slots] == [
        f"{SID}.{hhmm}" for hhmm in ("0800", "0830", "0900", "0930")
    ]
    for s in slots:
        assert (s.session_id, s.consortium_id, s.institution_id) == (SID, C, "county-hospital")
        assert (s.department, s.doctor_id, s.doctor_name) == (NEURO, DOCTOR_ID, "陈医生")
        assert (s.visit_type, s.fee_cents, s.capacity, s.status) == ("specialist", 5000, 10, "OPEN")
        assert (s.booked, s.booked_public, s.booked_reserved) == (0, 0, 0)
        assert parse_time(s.end) - parse_time(s.start) == timedelta(minutes=30)
        assert Slot.from_json(s.to_json()) == s


@pytest.mark.parametrize(
    ("start", "end", "minutes", "count"),
    [("08:00", "12:00", 60, 4), ("14:00", "17:30", 15, 14), ("18:00", "18:05", 5, 1),
     ("08:00", "08:30", 30, 1), ("13:30", "17:30", 20, 12)],
)  # fmt: skip
def test_slot_counts_follow_the_width(start, end, minutes, count):
    slots = slots_of(session(start=start, end=end, slot_minutes=minutes), POLICY, True)
    assert len(slots) == count
    assert slots[0].start == f"{SESSION_DAY}T{start}:00+08:00"
    assert slots[-1].end == f"{SESSION_DAY}T{end}:00+08:00"
    assert all(parse_time(s.end) - parse_time(s.start) <= timedelta(hours=1) for s in slots)


def test_the_release_and_opening_times_are_set_back_from_each_slot_start():
    slots = slots_of(session(hours=48), POLICY, True)
    for s in slots:
        start = parse_time(s.start)
        assert parse_time(s.release_at) == start - timedelta(hours=48)
        assert parse_time(s.opens_at) == start - timedelta(days=POLICY.booking_window_days)
        assert s.release_at.endswith("+08:00") and s.opens_at.endswith("+08:00")
    assert slots[0].release_at == f"{(T0 + timedelta(days=2)).date()}T08:00:00+08:00"
    short = slots_of(session(hours=6), BookingPolicy(booking_window_days=3), True)[0]
    assert short.release_at == f"{SESSION_DAY}T02:00:00+08:00"
    assert short.opens_at == f"{(T0 + timedelta(days=1)).date()}T08:00:00+08:00"


RESERVED = [  # capacity, share, reserved places
    (10, 0.2, 2), (20, 0.2, 4), (5, 0.2, 1), (7, 0.25, 2), (6, 0.25, 2), (3, 0.5, 2),
    (100, 0.15, 15), (9, 0.05, 1), (10, 0.0, 0), (10, 1.0, 10), (4, 0.1, 1),
]  # fmt: skip


@pytest.mark.parametrize(("capacity", "share", "places"), RESERVED)
def test_the_reserved_share_rounds_half_up_and_holds_at_least_one_place(capacity, share, places):
    assert reserved_places(capacity, share) == places


@pytest.mark.parametrize(("capacity", "share"), [(1, 0.2), (1, 0.5), (2, 0.8), (4, 0.8)])
def test_a_share_below_one_never_reserves_the_whole_slot(capacity, share):
    # reserved_places' own rule: "never the whole slot unless the share is 1". A county
    # specialist's one-patient slots (分时段, capacity 1) must not vanish from the public.
    assert reserved_places(capacity, share) < capacity


def test_only_a_reserving_institution_holds_places_and_the_public_cap_is_the_rest():
    county = first_slot(reserves=True, capacity=10)
    assert (county.reserved, county.public_cap) == (2, 8)
    township = first_slot(reserves=False, capacity=10)
    assert (township.reserved, township.public_cap) == (0, 10)


# ------------------------------------------------------------------------------ free places
def test_before_the_release_the_public_sees_only_its_share_and_a_referral_the_rest():
    s = first_slot(capacity=10)  # 2 reserved, releases two days before
    now = T0
    assert not s.released(now)
    assert (s.free(Quota.PUBLIC, now), s.free(Quota.RESERVED, now)) == (8, 10)
    assert (booked(s, public=5).free(Quota.PUBLIC, now)) == 3
    assert booked(s, public=8).free(Quota.PUBLIC, now) == 0
    assert booked(s, public=8).free(Quota.RESERVED, now) == 2
    assert booked(s, public=7, reserved=2).free(Quota.PUBLIC, now) == 1
    assert booked(s, public=8, reserved=2).free(Quota.RESERVED, now) == 0


def test_after_the_release_every_free_place_is_public():
    s = first_slot(capacity=10)
    release = parse_time(s.release_at)
    for now in (release, release + timedelta(hours=1)):
        assert s.released(now)
        assert booked(s, public=8).free(Quota.PUBLIC, now) == 2
        assert booked(s, public=8, reserved=1).free(Quota.PUBLIC, now) == 1
        assert booked(s, public=9, reserved=1).free(Quota.PUBLIC, now) == 0
    assert booked(s, public=8).free(Quota.PUBLIC, release - timedelta(seconds=1)) == 0


def test_free_is_never_negative_even_when_counters_overshoot():
    s = booked(first_slot(capacity=10), public=11)
    assert s.free(Quota.PUBLIC, T0) == s.free(Quota.RESERVED, T0) == 0


def test_the_public_view_hides_held_places_and_a_clinician_sees_them():
    s = booked(first_slot(capacity=10), public=3, reserved=1)
    public = s.view(T0, sees_reserved=False)
    assert public["free"] == 5
    assert not {"capacity", "reserved", "booked", "reserved_free", "release_at"} & set(public)
    assert public["start"].endswith("+08:00") and public["opens_at"] == s.opens_at
    staff = s.view(T0, sees_reserved=True)
    assert (staff["free"], staff["capacity"], staff["reserved"], staff["booked"]) == (5, 10, 2, 4)
    assert (staff["reserved_free"], staff["released"], staff["free_for_referral"]) == (1, False, 6)
    later = s.view(parse_time(s.release_at), sees_reserved=True)
    assert (later["free"], later["reserved_free"], later["released"]) == (6, 0, True)


def test_a_cancelled_slot_shows_nothing_free():
    s = replace(first_slot(), status="CANCELLED")
    assert s.view(T0, sees_reserved=False)["free"] == 0
    assert s.view(T0, sees_reserved=True)["free_for_referral"] == 0


# ------------------------------------------------------------------------------ quota
QUOTAS = [  # wants_reserved, is_referral, public, reserved booked, released?, quota or error
    (False, False, 0, 0, False, Quota.PUBLIC),
    (False, True, 0, 0, False, Quota.RESERVED),
    (True, True, 0, 0, False, Quota.RESERVED),
    (False, True, 0, 1, False, Quota.RESERVED),
    (False, True, 0, 2, False, Quota.PUBLIC),  # reserved places used up: a public one
    (False, True, 0, 0, True, Quota.PUBLIC),  # released: everything is public
    (True, False, 0, 0, False, "RESERVED_FOR_REFERRALS"),
    (True, False, 0, 0, True, "RESERVED_FOR_REFERRALS"),
]  # fmt: skip


@pytest.mark.parametrize(("wants", "referral", "pub", "res", "released", "expected"), QUOTAS)
def test_choose_quota(wants, referral, pub, res, released, expected):
    s = booked(first_slot(capacity=10), public=pub, reserved=res)
    now = parse_time(s.release_at) if released else T0
    if not isinstance(expected, Quota):
        assert code_of(choose_quota, s, wants, referral, now) == (Forbidden, expected)
    else:
        assert choose_quota(s, wants, referral, now) is expected


def test_a_referral_to_an_institution_holding_nothing_takes_a_public_place():
    s = first_slot(reserves=False)
    assert choose_quota(s, False, True, T0) is Quota.PUBLIC


# ------------------------------------------------------------------------------ bookable
def _bookable(slot: Slot, quota: Quota, now: datetime) -> str:
    try:
        check_bookable(slot, quota, now)
    except Conflict as err:
        return err.code
    return "ok"


def test_check_bookable_says_why_not():
    s = first_slot(capacity=10)
    start, opens = parse_time(s.start), parse_time(s.opens_at)
    cases = [
        (s, Quota.PUBLIC, T0, "ok"),
        (s, Quota.PUBLIC, opens, "ok"),  # the moment it opens
        (s, Quota.PUBLIC, opens - timedelta(seconds=1), "SLOT_NOT_OPEN"),
        (s, Quota.PUBLIC, start - timedelta(seconds=1), "ok"),
        (s, Quota.PUBLIC, start, "SLOT_IN_PAST"),  # started: too late
        (s, Quota.PUBLIC, start + timedelta(days=1), "SLOT_IN_PAST"),
        (replace(s, status="CANCELLED"), Quota.PUBLIC, T0, "SESSION_CANCELLED"),
        (replace(s, status="CANCELLED"), Quota.PUBLIC, start, "SESSION_CANCELLED"),
        (booked(s, public=8), Quota.PUBLIC, T0, "SLOT_FULL"),
        (booked(s, public=8), Quota.RESERVED, T0, "ok"),
        (booked(s, public=8, reserved=2), Quota.RESERVED, T0, "SLOT_FULL"),
        (booked(s, public=8), Quota.PUBLIC, parse_time(s.release_at), "ok"),
        (booked(s, public=10), Quota.PUBLIC, parse_time(s.release_at), "SLOT_FULL"),
    ]
    for slot, quota, now, expected in cases:
        assert _bookable(slot, quota, now) == expected, (slot.booked, quota, now)


def test_a_slot_not_yet_open_says_when_it_opens():
    s = first_slot()
    with pytest.raises(Conflict) as err:
        check_bookable(s, Quota.PUBLIC, parse_time(s.opens_at) - timedelta(hours=1))
    assert err.value.details == {"opens_at": s.opens_at}


# ------------------------------------------------------------------------------ standing
def test_a_resident_with_room_and_no_suspension_may_book():
    ResidentStanding("p1").check(POLICY, T0)
    ResidentStanding("p1", active=POLICY.max_active_bookings - 1).check(POLICY, T0)
    ResidentStanding("p1", suspended_until=iso(T0)).check(POLICY, T0)  # ended just now


def test_the_active_bookings_limit():
    full = ResidentStanding("p1", active=POLICY.max_active_bookings)
    assert code_of(full.check, POLICY, T0) == (Conflict, "TOO_MANY_BOOKINGS")
    assert code_of(full.check, BookingPolicy(max_active_bookings=5), T0)[1] == "TOO_MANY_BOOKINGS"
    ResidentStanding("p1", active=5).check(BookingPolicy(max_active_bookings=6), T0)


def test_a_suspension_refuses_until_it_ends_and_says_until_when():
    until = iso(T0 + timedelta(days=3))
    suspended = ResidentStanding("p1", suspended_until=until)
    with pytest.raises(Forbidden) as err:
        suspended.check(POLICY, T0)
    assert (err.value.code, err.value.details) == ("BOOKING_SUSPENDED", {"until": until})
    suspended.check(POLICY, T0 + timedelta(days=3, seconds=1))


def test_the_third_no_show_within_ninety_days_suspends_for_thirty():
    s = ResidentStanding("p1", active=1)
    first = s.after_no_show(POLICY, T0)
    second = first.after_no_show(POLICY, T0 + timedelta(days=10))
    assert (len(second.no_shows), second.suspended_until) == (2, None)
    third_at = T0 + timedelta(days=80)
    third = second.after_no_show(POLICY, third_at)
    assert third.no_shows == (iso(T0), iso(T0 + timedelta(days=10)), iso(third_at))
    assert third.suspended_until == iso(third_at + timedelta(days=POLICY.penalty_days))
    assert code_of(third.check, POLICY, third_at + timedelta(days=29))[1] == "BOOKING_SUSPENDED"
    third.check(POLICY, third_at + timedelta(days=31))


def test_no_shows_older_than_the_window_are_forgotten_and_do_not_count():
    s = ResidentStanding("p1", no_shows=(iso(T0), iso(T0 + timedelta(days=5))))
    later = T0 + timedelta(days=96)
    after = s.after_no_show(POLICY, later)
    assert after.no_shows == (iso(later),) and after.suspended_until is None
    edge = T0 + timedelta(days=90)  # the first is exactly 90 days old: still in the window
    assert s.after_no_show(POLICY, edge).suspended_until == iso(edge + timedelta(days=30))


def test_a_stricter_policy_suspends_sooner():
    policy = BookingPolicy(no_show_limit=1, penalty_days=7)
    after = ResidentStanding("p1").after_no_show(policy, T0)
    assert after.suspended_until == iso(T0 + timedelta(days=7))


# ------------------------------------------------------------------------------ appointments
def appointment(status=AppointmentStatus.BOOKED, start="10:00", end="10:30", **kw) -> Appointment:
    by = {"sub": "res", "role": "resident", "name": "张伟"}
    return Appointment(
        appointment_id="A1", consortium_id=C, person_id="p1", patient_name="张伟",
        slot_id=f"{SID}.{start.replace(':', '')}", session_id=SID,
        institution_id=COUNTY.institution_id, department=NEURO, doctor_id=DOCTOR_ID,
        doctor_name="陈医生", start=iso(at(SESSION_DAY, start)), end=iso(at(SESSION_DAY, end)),
        quota=Quota.PUBLIC, status=status, booked_by=by, created_at=iso(T0),
        updated_at=iso(T0), history=(history_entry("book", by, T0),), **kw,
    )  # fmt: skip


def test_an_appointment_round_trips_through_json():
    a = appointment(referral_id="R1", fee_cents=500)
    assert Appointment.from_json(a.to_json()) == a
    assert a.to_json()["quota"] == "public" and a.to_json()["status"] == "BOOKED"
    assert a.day == SESSION_DAY


def _cancel(appt: Appointment, by_institution: bool, now: datetime, reason: str = "") -> str:
    try:
        check_cancel(appt, by_institution, POLICY, now, reason)
    except DomainError as err:
        return err.code
    return "ok"


def test_a_resident_cancels_up_to_the_cutoff_and_the_institution_any_time_with_a_reason():
    a = appointment(start="10:00")
    cutoff = at(SESSION_DAY, "08:00")  # two hours before
    assert _cancel(a, False, cutoff) == "ok"
    assert _cancel(a, False, cutoff + timedelta(seconds=1)) == "CANCEL_CUTOFF_PASSED"
    assert _cancel(a, False, at(SESSION_DAY, "11:00")) == "CANCEL_CUTOFF_PASSED"
    assert _cancel(a, True, at(SESSION_DAY, "09:59"), "医生临时停诊") == "ok"
    assert _cancel(a, True, at(SESSION_DAY, "11:00"), "医生临时停诊") == "ok"
    assert _cancel(a, True, T0, "  ") == "REASON_REQUIRED"
    for status in ("CANCELLED", "CHECKED_IN", "NO_SHOW"):
        done = appointment(status=AppointmentStatus(status))
        assert _cancel(done, False, T0) == _cancel(done, True, T0, "x") == "NOT_CANCELLABLE"


def test_a_cutoff_refusal_says_when_the_cutoff_was():
    with pytest.raises(Conflict) as err:
        check_cancel(appointment(start="10:00"), False, POLICY, at(SESSION_DAY, "09:00"), "")
    assert err.value.details == {"cutoff": f"{SESSION_DAY}T08:00:00+08:00"}


def test_check_in_opens_an_hour_early_and_closes_half_an_hour_after_the_slot():
    a = appointment(start="10:00", end="10:30")

    def check(now: datetime) -> str:
        try:
            check_check_in(a, POLICY, now)
        except Conflict as err:
            return err.code
        return "ok"

    assert check(at(SESSION_DAY, "09:00")) == "ok"
    assert check(at(SESSION_DAY, "08:59")) == "OUTSIDE_CHECK_IN_WINDOW"
    assert check(at(SESSION_DAY, "10:15")) == "ok"
    assert check(at(SESSION_DAY, "11:00")) == "ok"
    assert check(at(SESSION_DAY, "11:01")) == "OUTSIDE_CHECK_IN_WINDOW"
    cancelled = appointment(status=AppointmentStatus.CANCELLED)
    assert code_of(check_check_in, cancelled, POLICY, at(SESSION_DAY, "10:00"))[1] == (
        "NOT_CHECKABLE"
    )


def test_a_booked_appointment_is_a_no_show_once_the_grace_after_its_slot_has_passed():
    a = appointment(start="10:00", end="10:30")
    assert not is_no_show(a, POLICY, at(SESSION_DAY, "10:30"))
    assert not is_no_show(a, POLICY, at(SESSION_DAY, "11:00"))
    assert is_no_show(a, POLICY, at(SESSION_DAY, "11:01"))
    for status in ("CANCELLED", "CHECKED_IN", "NO_SHOW"):
        done = appointment(status=AppointmentStatus(status))
        assert not is_no_show(done, POLICY, at(SESSION_DAY, "23:00"))


# ------------------------------------------------------------------------------ time
TIMES = [
    ("2026-06-05T10:00:00+08:00", "ok"),
    ("2026-06-05T02:00:00Z", "ok"),
    ("2026-06-05T10:00+08:00", "ok"),
    ("2026-06-05T10:00:00", "TIME_WITHOUT_OFFSET"),
    ("2026-06-05", "TIME_WITHOUT_OFFSET"),
    ("2026-06-05 10:00", "TIME_WITHOUT_OFFSET"),
    ("10:00+08:00", "INVALID_TIME"),
    ("tomorrow 8am", "INVALID_TIME"),
    ("2026-13-05T10:00:00+08:00", "INVALID_TIME"),
    ("", "INVALID_TIME"),
]


@pytest.mark.parametrize(("value", "expected"), TIMES)
def test_parse_time_wants_an_iso_time_with_its_offset(value, expected):
    if expected == "ok":
        t = parse_time(value)
        assert t.tzinfo is not None and iso(t) == "2026-06-05T10:00:00+08:00"
    else:
        assert code_of(parse_time, value) == (InvalidInput, expected)


def test_iso_writes_shanghai_time_to_the_second():
    utc = datetime.fromisoformat("2026-06-05T02:00:00.123456+00:00")
    assert iso(utc) == "2026-06-05T10:00:00+08:00"


@pytest.mark.parametrize("value", ["2026-13-01", "2026-02-29", "01/06/2026", "", "2026-6-1"])
def test_parse_date_refuses_what_is_not_a_date(value):
    assert code_of(parse_date, value) == (InvalidInput, "INVALID_DATE")


@pytest.mark.parametrize("value", ["8am", "8:00", "24:00", "08:00Z", "08:00:01", "noon"])
def test_parse_clock_refuses_what_is_not_a_local_hh_mm(value):
    assert code_of(parse_clock, value, "start") == (InvalidInput, "INVALID_CLOCK_TIME")


# ------------------------------------------------------------------------------ policy
def test_the_policy_from_json_converts_types_and_ignores_unknown_keys():
    p = BookingPolicy.from_mapping(
        {"reserved_share": "0.3", "release_hours": "24", "max_active_bookings": 3, "x": 1}
    )
    assert (p.reserved_share, p.release_hours, p.max_active_bookings) == (0.3, 24, 3)
    assert p.booking_window_days == BookingPolicy().booking_window_days
    assert BookingPolicy.from_mapping({}) == BookingPolicy()
