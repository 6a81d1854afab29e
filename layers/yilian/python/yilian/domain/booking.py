"""Appointment booking (预约挂号): sessions, time slots, the reserved quota, residents' limits.

An institution publishes sessions (出诊: a doctor's or a department's morning or afternoon);
each session becomes time slots no wider than an hour (分时段预约) with a capacity. At a
county-tier institution a share of each slot is reserved (优先向基层预留号源) for referrals from
the consortium's primary institutions and the green channel; the public sees only the rest
until the reserved places are released, a configurable time before the slot.

The slot is the unit of contention: its counters (booked, booked_public, booked_reserved)
change only in the transaction that writes the appointment, under conditions that encode
these rules, so no slot is ever double-booked however many clients race for it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import date, datetime, time, timedelta
from enum import StrEnum
from typing import Any

from yilian.domain.clock import CHINA_TZ, iso, parse_date, parse_time
from yilian.domain.errors import Conflict, Forbidden, InvalidInput

MAX_SLOT_MINUTES = 60


class Period(StrEnum):
    MORNING = "am"  # 上午
    AFTERNOON = "pm"  # 下午
    EVENING = "evening"  # 晚间


class VisitType(StrEnum):
    GENERAL = "general"  # 普通门诊
    SPECIALIST = "specialist"  # 专家门诊
    SPECIAL_DISEASE = "special_disease"  # 专病门诊


class Quota(StrEnum):
    PUBLIC = "public"
    RESERVED = "reserved"  # referrals from primary institutions, the green channel


class AppointmentStatus(StrEnum):
    BOOKED = "BOOKED"
    CHECKED_IN = "CHECKED_IN"
    CANCELLED = "CANCELLED"
    NO_SHOW = "NO_SHOW"


ACTIVE = frozenset({AppointmentStatus.BOOKED})


@dataclass(frozen=True, slots=True)
class BookingPolicy:
    """The consortium's booking rules (template parameters; defaults from common practice in
    Chinese county hospitals' booking systems)."""

    reserved_share: float = 0.2  # of each county specialist slot, for referrals
    release_hours: int = 48  # reserved places go public this long before the slot
    booking_window_days: int = 14  # a slot opens for booking this long before it starts
    cancel_cutoff_hours: int = 2  # a resident cancels up to this long before the slot
    max_active_bookings: int = 5  # per resident
    no_show_limit: int = 3  # no-shows within the window...
    no_show_window_days: int = 90
    penalty_days: int = 30  # ...suspend booking this long
    check_in_early_minutes: int = 60
    no_show_grace_minutes: int = 30  # after the slot ends

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> BookingPolicy:
        known = {f for f in cls.__dataclass_fields__}
        kwargs = {k: type(getattr(cls(), k))(v) for k, v in data.items() if k in known}
        return cls(**kwargs)


# ---------------------------------------------------------------------------- time
def parse_clock(value: str, what: str) -> time:
    try:
        t = time.fromisoformat(value)
    except (TypeError, ValueError):
        raise InvalidInput("INVALID_CLOCK_TIME", f"{what} is not a time of day (HH:MM)") from None
    if t.tzinfo is not None or t.second or t.microsecond:
        raise InvalidInput("INVALID_CLOCK_TIME", f"{what} is a local time of day, HH:MM")
    return t


# ---------------------------------------------------------------------------- sessions
@dataclass(frozen=True, slots=True)
class SessionSpec:
    """What an institution admin publishes (validated here, shaped at the API edge)."""

    department: str
    date: str
    period: str
    start: str  # HH:MM local
    end: str
    slot_minutes: int
    capacity: int  # per slot
    visit_type: str = VisitType.GENERAL
    fee_cents: int = 0
    doctor_id: str | None = None


@dataclass(frozen=True, slots=True)
class Session:
    session_id: str
    consortium_id: str
    institution_id: str
    department: str
    doctor_id: str | None
    doctor_name: str
    date: str
    period: Period
    start: str
    end: str
    slot_minutes: int
    capacity: int
    visit_type: VisitType
    fee_cents: int
    reserved_share: float
    release_hours: int
    status: str = "OPEN"  # OPEN | CANCELLED
    cancel_reason: str = ""
    created_at: str = ""
    created_by: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "session_id": self.session_id,
            "consortium_id": self.consortium_id,
            "institution_id": self.institution_id,
            "department": self.department,
            "doctor_id": self.doctor_id,
            "doctor_name": self.doctor_name,
            "date": self.date,
            "period": str(self.period),
            "start": self.start,
            "end": self.end,
            "slot_minutes": self.slot_minutes,
            "capacity": self.capacity,
            "visit_type": str(self.visit_type),
            "fee_cents": self.fee_cents,
            "reserved_share": self.reserved_share,
            "release_hours": self.release_hours,
            "status": self.status,
            "cancel_reason": self.cancel_reason,
            "created_at": self.created_at,
            "created_by": self.created_by,
        }

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Session:
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        return cls(
            **{
                **known,
                "doctor_id": d.get("doctor_id"),
                "doctor_name": d.get("doctor_name", ""),
                "period": Period(d["period"]),
                "visit_type": VisitType(d["visit_type"]),
                "capacity": int(d["capacity"]),
                "slot_minutes": int(d["slot_minutes"]),
                "fee_cents": int(d["fee_cents"]),
                "release_hours": int(d["release_hours"]),
                "reserved_share": float(d["reserved_share"]),
            }
        )


def _enum(kind: type[StrEnum], value: str, code: str) -> Any:
    try:
        return kind(value)
    except ValueError:
        allowed = [str(v) for v in kind]
        raise InvalidInput(code, f"{value!r} is not one of {allowed}", allowed=allowed) from None


def new_session(
    spec: SessionSpec,
    *,
    session_id: str,
    consortium_id: str,
    institution_id: str,
    doctor_name: str,
    reserved_share: float,
    release_hours: int,
    created_by: str,
    now: datetime,
) -> Session:
    """A session, checked: a real day not in the past, start before end, slots of at most
    an hour that divide the session, a positive capacity."""
    day = parse_date(spec.date)
    if day < now.astimezone(CHINA_TZ).date():
        raise InvalidInput("SESSION_IN_PAST", "sessions are published for today onwards")
    period = _enum(Period, spec.period, "INVALID_PERIOD")
    visit_type = _enum(VisitType, spec.visit_type, "INVALID_VISIT_TYPE")
    start, end = parse_clock(spec.start, "start"), parse_clock(spec.end, "end")
    if start >= end:
        raise InvalidInput("EMPTY_SESSION", "a session starts before it ends")
    if not 5 <= spec.slot_minutes <= MAX_SLOT_MINUTES:
        raise InvalidInput("SLOT_TOO_WIDE", f"slots are 5 to {MAX_SLOT_MINUTES} minutes wide")
    minutes = (end.hour * 60 + end.minute) - (start.hour * 60 + start.minute)
    if minutes % spec.slot_minutes:
        raise InvalidInput("SLOTS_DO_NOT_FIT", "the session is a whole number of slots")
    if not 1 <= spec.capacity <= 500:
        raise InvalidInput("INVALID_CAPACITY", "a slot holds 1 to 500 patients")
    if spec.fee_cents < 0:
        raise InvalidInput("INVALID_FEE", "the fee is not negative")
    if not spec.department.strip():
        raise InvalidInput("DEPARTMENT_REQUIRED", "a session belongs to a department")
    return Session(
        session_id=session_id,
        consortium_id=consortium_id,
        institution_id=institution_id,
        department=spec.department.strip(),
        doctor_id=spec.doctor_id or None,
        doctor_name=doctor_name,
        date=day.isoformat(),
        period=period,
        start=start.strftime("%H:%M"),
        end=end.strftime("%H:%M"),
        slot_minutes=spec.slot_minutes,
        capacity=spec.capacity,
        visit_type=visit_type,
        fee_cents=spec.fee_cents,
        reserved_share=reserved_share,
        release_hours=release_hours,
        created_at=iso(now),
        created_by=created_by,
    )


# ---------------------------------------------------------------------------- slots
@dataclass(frozen=True, slots=True)
class Slot:
    slot_id: str
    session_id: str
    consortium_id: str
    institution_id: str
    department: str
    doctor_id: str | None
    doctor_name: str
    visit_type: str
    fee_cents: int
    start: str  # ISO with +08:00
    end: str
    capacity: int
    reserved: int
    release_at: str  # when unused reserved places go public
    opens_at: str  # when booking opens
    booked: int = 0
    booked_public: int = 0
    booked_reserved: int = 0
    status: str = "OPEN"  # OPEN | CANCELLED

    @property
    def public_cap(self) -> int:
        """Places the public may take before the release."""
        return self.capacity - self.reserved

    def released(self, now: datetime) -> bool:
        return now >= parse_time(self.release_at)

    def free(self, quota: Quota, now: datetime) -> int:
        """Places still bookable from this quota now."""
        total_free = self.capacity - self.booked
        if quota is Quota.RESERVED or self.released(now):
            return max(0, total_free)
        return max(0, min(total_free, self.public_cap - self.booked_public))

    def view(self, now: datetime, *, sees_reserved: bool) -> dict[str, Any]:
        """The slot as a searcher sees it: the public never sees held reserved places."""
        out = {
            "slot_id": self.slot_id,
            "session_id": self.session_id,
            "institution_id": self.institution_id,
            "department": self.department,
            "doctor_id": self.doctor_id,
            "doctor_name": self.doctor_name,
            "visit_type": self.visit_type,
            "fee_cents": self.fee_cents,
            "start": self.start,
            "end": self.end,
            "status": self.status,
            "opens_at": self.opens_at,
            "free": self.free(Quota.PUBLIC, now) if self.status == "OPEN" else 0,
        }
        if sees_reserved:
            out.update(
                capacity=self.capacity,
                reserved=self.reserved,
                booked=self.booked,
                reserved_free=max(0, self.reserved - self.booked_reserved)
                if not self.released(now)
                else 0,
                release_at=self.release_at,
                released=self.released(now),
                free_for_referral=self.free(Quota.RESERVED, now) if self.status == "OPEN" else 0,
            )
        return out

    def to_json(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Slot:
        ints = ("fee_cents", "capacity", "reserved", "booked", "booked_public", "booked_reserved")
        data: dict[str, Any] = {
            k: (int(v) if k in ints else v) for k, v in d.items() if k in cls.__dataclass_fields__
        }
        data.setdefault("doctor_id", None)
        data.setdefault("doctor_name", "")
        return cls(**data)


def reserved_places(capacity: int, share: float) -> int:
    """Reserved places of a slot: the share rounded half up, at least one when there is a
    share, and never the whole slot unless the share is 1 (a one-place slot stays public)."""
    if share <= 0:
        return 0
    places = math.floor(capacity * share + 0.5)
    if share < 1:
        places = min(places, capacity - 1)
        if capacity > 1:
            places = max(places, 1)
    return max(0, min(capacity, places))


def slots_of(session: Session, policy: BookingPolicy, reserves: bool) -> list[Slot]:
    """The session's time slots; `reserves` (a county-tier institution) holds the share."""
    day = date.fromisoformat(session.date)
    start = datetime.combine(day, time.fromisoformat(session.start), CHINA_TZ)
    end = datetime.combine(day, time.fromisoformat(session.end), CHINA_TZ)
    reserved = reserved_places(session.capacity, session.reserved_share) if reserves else 0
    out = []
    t = start
    while t < end:
        t_end = t + timedelta(minutes=session.slot_minutes)
        out.append(
            Slot(
                slot_id=f"{session.session_id}.{t.strftime('%H%M')}",
                session_id=session.session_id,
                consortium_id=session.consortium_id,
                institution_id=session.institution_id,
                department=session.department,
                doctor_id=session.doctor_id,
                doctor_name=session.doctor_name,
                visit_type=str(session.visit_type),
                fee_cents=session.fee_cents,
                start=iso(t),
                end=iso(t_end),
                capacity=session.capacity,
                reserved=reserved,
                release_at=iso(t - timedelta(hours=session.release_hours)),
                opens_at=iso(t - timedelta(days=policy.booking_window_days)),
            )
        )
        t = t_end
    return out


# ---------------------------------------------------------------------------- booking
@dataclass(frozen=True, slots=True)
class Appointment:
    appointment_id: str
    consortium_id: str
    person_id: str
    patient_name: str
    slot_id: str
    session_id: str
    institution_id: str
    department: str
    doctor_id: str | None
    doctor_name: str
    start: str
    end: str
    quota: Quota
    status: AppointmentStatus
    booked_by: dict[str, str]  # {sub, role, name}
    created_at: str
    updated_at: str
    referral_id: str | None = None
    fee_cents: int = 0
    visit_type: str = VisitType.GENERAL
    history: tuple[dict[str, Any], ...] = field(default_factory=tuple)

    @property
    def day(self) -> str:
        return self.start[:10]

    def to_json(self) -> dict[str, Any]:
        out = {name: getattr(self, name) for name in self.__dataclass_fields__}
        out["quota"], out["status"] = str(self.quota), str(self.status)
        out["history"] = [dict(h) for h in self.history]
        return out

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Appointment:
        data = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        data["quota"], data["status"] = Quota(d["quota"]), AppointmentStatus(d["status"])
        data["history"] = tuple(dict(h) for h in d.get("history") or ())
        data["fee_cents"] = int(d.get("fee_cents", 0))
        return cls(**data)


def check_bookable(slot: Slot, quota: Quota, now: datetime) -> None:
    """Why this slot cannot be booked from this quota now, as a typed error (the
    transaction's conditions check the counters again, atomically)."""
    if slot.status != "OPEN":
        raise Conflict("SESSION_CANCELLED", "this session was cancelled")
    if parse_time(slot.start) <= now:
        raise Conflict("SLOT_IN_PAST", "this slot has started or passed")
    if now < parse_time(slot.opens_at):
        raise Conflict("SLOT_NOT_OPEN", "booking for this slot opens later", opens_at=slot.opens_at)
    if slot.free(quota, now) <= 0:
        raise Conflict("SLOT_FULL", "no place left in this slot")


def choose_quota(slot: Slot, wants_reserved: bool, is_referral: bool, now: datetime) -> Quota:
    """A referral takes a reserved place while there is one, else a public one; anyone
    else takes a public place and may not ask for a reserved one."""
    if wants_reserved and not is_referral:
        raise Forbidden("RESERVED_FOR_REFERRALS", "reserved places are for referred patients")
    if is_referral and not slot.released(now) and slot.booked_reserved < slot.reserved:
        return Quota.RESERVED
    return Quota.PUBLIC


@dataclass(frozen=True, slots=True)
class ResidentStanding:
    """A resident's booking record: active bookings and recent no-shows."""

    person_id: str
    active: int = 0
    no_shows: tuple[str, ...] = ()  # times of recent no-shows
    suspended_until: str | None = None

    def check(self, policy: BookingPolicy, now: datetime) -> None:
        if self.suspended_until and parse_time(self.suspended_until) > now:
            raise Forbidden(
                "BOOKING_SUSPENDED",
                f"booking is suspended after {policy.no_show_limit} no-shows",
                until=self.suspended_until,
            )
        if self.active >= policy.max_active_bookings:
            raise Conflict(
                "TOO_MANY_BOOKINGS",
                f"at most {policy.max_active_bookings} active bookings per resident",
                limit=policy.max_active_bookings,
            )

    def after_no_show(self, policy: BookingPolicy, now: datetime) -> ResidentStanding:
        window_start = now - timedelta(days=policy.no_show_window_days)
        recent = tuple(t for t in self.no_shows if parse_time(t) >= window_start) + (iso(now),)
        suspended = self.suspended_until
        if len(recent) >= policy.no_show_limit:
            suspended = iso(now + timedelta(days=policy.penalty_days))
        return replace(self, no_shows=recent, suspended_until=suspended)


def history_entry(action: str, who: Mapping[str, str], at: datetime, reason: str = "") -> dict:
    entry: dict[str, Any] = {"at": iso(at), "action": action, "by": dict(who)}
    if reason:
        entry["reason"] = reason
    return entry


def check_cancel(
    appt: Appointment, by_institution: bool, policy: BookingPolicy, now: datetime, reason: str
) -> None:
    if appt.status is not AppointmentStatus.BOOKED:
        raise Conflict("NOT_CANCELLABLE", f"this appointment is {appt.status}")
    if by_institution:
        if not reason.strip():
            raise InvalidInput("REASON_REQUIRED", "an institution says why it cancels")
        return
    cutoff = parse_time(appt.start) - timedelta(hours=policy.cancel_cutoff_hours)
    if now > cutoff:
        raise Conflict(
            "CANCEL_CUTOFF_PASSED",
            f"residents cancel up to {policy.cancel_cutoff_hours} h before the visit",
            cutoff=iso(cutoff),
        )


def check_check_in(appt: Appointment, policy: BookingPolicy, now: datetime) -> None:
    if appt.status is not AppointmentStatus.BOOKED:
        raise Conflict("NOT_CHECKABLE", f"this appointment is {appt.status}")
    opens = parse_time(appt.start) - timedelta(minutes=policy.check_in_early_minutes)
    closes = parse_time(appt.end) + timedelta(minutes=policy.no_show_grace_minutes)
    if not opens <= now <= closes:
        raise Conflict(
            "OUTSIDE_CHECK_IN_WINDOW",
            "check-in is around the visit time",
            opens=iso(opens),
            closes=iso(closes),
        )


def is_no_show(appt: Appointment, policy: BookingPolicy, now: datetime) -> bool:
    grace = timedelta(minutes=policy.no_show_grace_minutes)
    return appt.status is AppointmentStatus.BOOKED and parse_time(appt.end) + grace < now
