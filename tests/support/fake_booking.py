"""In-memory fakes for the booking service, behaving like DynamoBookingStore: every write is
all or nothing under the same conditions (the slot open, started neither too early nor too
late, below capacity, the public below its share until the release, a reserved place only
while one is held; the appointment's version and status; the doctor-day lock; the
resident's active count and suspension), a refused write raising BookingRefused with the
role of the first failing condition, in the adapter's order. Times in conditions are
compared as the ISO strings the table keeps, as DynamoDB compares them.

Plus what booking tests share: the county (from fake_referrals), its booking staff, a
session spec, a referral seam and a publisher.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from tests.support.fake_referrals import (
    COUNTY,
    LIMITS,
    PATIENT_ID,
    REFERRER,
    T0,
    TOWNSHIP,
    VILLAGE,
    C,
    application,
)
from yilian.adapters.booking_store import (
    BookingRefused,
    DuplicateSession,
    DynamoBookingStore,
    slot_partition,
)
from yilian.domain.booking import (
    Appointment,
    BookingPolicy,
    Quota,
    ResidentStanding,
    Session,
    SessionSpec,
    Slot,
)
from yilian.domain.directory import Institution
from yilian.domain.principal import Principal, Role
from yilian.domain.referral import Referral, Status, apply

lock_key = DynamoBookingStore.lock_key


class FakeBookingStore:
    """The BookingStorePort in memory; records are kept as JSON, as the table keeps them."""

    def __init__(self) -> None:
        self.sessions: dict[str, dict[str, dict[str, Any]]] = {}  # partition -> id -> json
        self.slots: dict[str, dict[str, Any]] = {}  # slot_id -> json (+ public_cap)
        self.appointments: dict[str, tuple[dict[str, Any], int]] = {}  # id -> (json, version)
        self.locks: dict[str, str] = {}  # lock key -> appointment id
        self.standings: dict[tuple[str, str], dict[str, Any]] = {}
        self.quota_rows: dict[tuple[str, str], dict[str, Any]] = {}
        self.template_rows: dict[tuple[str, str], dict[str, Any]] = {}
        self.writes = 0  # transactions attempted
        self._before_write: list[Callable[[], None]] = []

    # ---------------------------------------------------------------- test helpers
    def before_next_write(self, fn: Callable[[], None]) -> None:
        """Run `fn` at the start of the next transaction, before its conditions are checked:
        a concurrent writer landing between the service's read and its write."""
        self._before_write.append(fn)

    def _begin(self) -> None:
        self.writes += 1
        if self._before_write:
            self._before_write.pop(0)()

    # ---------------------------------------------------------------- sessions and slots
    def put_session(self, session: Session, slots: list[Slot]) -> None:
        part = f"SLOTS#{session.institution_id}#{session.date}"
        if session.session_id in self.sessions.get(part, {}):
            raise DuplicateSession(session.session_id)
        if any(s.slot_id in self.slots for s in slots):
            raise RuntimeError("a slot of this session exists already")
        self.sessions.setdefault(part, {})[session.session_id] = session.to_json()
        for s in slots:
            self.slots[s.slot_id] = {**s.to_json(), "public_cap": s.public_cap}

    def day(self, institution_id: str, day: str) -> tuple[list[Session], list[Slot]]:
        part = f"SLOTS#{institution_id}#{day}"
        sessions = [
            Session.from_json(copy.deepcopy(d)) for d in self.sessions.get(part, {}).values()
        ]
        slots = [
            Slot.from_json(copy.deepcopy(d))
            for sid, d in sorted(self.slots.items())
            if _partition(sid) == part
        ]
        return sessions, slots

    def get_slot(self, slot_id: str) -> Slot | None:
        d = self.slots.get(slot_id)
        return Slot.from_json(copy.deepcopy(d)) if d else None

    def get_session(self, institution_id: str, day: str, session_id: str) -> Session | None:
        d = self.sessions.get(f"SLOTS#{institution_id}#{day}", {}).get(session_id)
        return Session.from_json(copy.deepcopy(d)) if d else None

    def cancel_session(self, session: Session, reason: str) -> None:
        part = f"SLOTS#{session.institution_id}#{session.date}"
        self.sessions[part][session.session_id].update(status="CANCELLED", cancel_reason=reason)
        for d in self.slots.values():
            if d["session_id"] == session.session_id:
                d.update(status="CANCELLED", cancel_reason=reason)

    # ---------------------------------------------------------------- appointments
    def get_appointment(self, appointment_id: str) -> tuple[Appointment, int] | None:
        found = self.appointments.get(appointment_id)
        if found is None:
            return None
        return Appointment.from_json(copy.deepcopy(found[0])), found[1]

    def _where(self, keep: Callable[[Appointment], bool], order: Callable[[Appointment], str]):
        appts = [Appointment.from_json(copy.deepcopy(d)) for d, _ in self.appointments.values()]
        return sorted((a for a in appts if keep(a)), key=order)[:500]

    def for_person(self, consortium_id: str, person_id: str) -> list[Appointment]:
        return self._where(
            lambda a: (a.consortium_id, a.person_id) == (consortium_id, person_id), _by_start
        )

    def day_list(self, institution_id: str, day: str) -> list[Appointment]:
        return self._where(lambda a: (a.institution_id, a.day) == (institution_id, day), _by_start)

    def in_slot(self, slot_id: str) -> list[Appointment]:
        return self._where(lambda a: a.slot_id == slot_id, _by_id)

    def for_referral(self, referral_id: str) -> list[Appointment]:
        return self._where(lambda a: a.referral_id == referral_id, _by_id)

    def standing(self, consortium_id: str, person_id: str) -> tuple[ResidentStanding, int]:
        row = self.standings.get((consortium_id, person_id))
        if row is None:
            return ResidentStanding(person_id), 0
        standing = ResidentStanding(
            person_id,
            int(row.get("active", 0)),
            tuple(row.get("no_shows") or ()),
            row.get("suspended_until"),
        )
        return standing, int(row.get("version", 0))

    # ---------------------------------------------------------------- transactions
    def book(self, appt: Appointment, slot: Slot, policy: BookingPolicy, now: str) -> None:
        self._begin()
        self._check(
            ("SLOT", self._can_take(slot.slot_id, appt.quota, now)),
            ("APPOINTMENT_EXISTS", appt.appointment_id not in self.appointments),
            ("DUPLICATE_BOOKING", lock_key(appt) not in self.locks),
            ("STANDING", self._can_count(appt, policy, now)),
        )
        self._take(slot.slot_id, appt.quota)
        self.appointments[appt.appointment_id] = (appt.to_json(), 1)
        self.locks[lock_key(appt)] = appt.appointment_id
        row = self._standing_row(appt)
        row["active"] = row.get("active", 0) + 1
        row["version"] = row.get("version", 0) + 1  # every change of the count bumps it

    def release(
        self, before: Appointment, version: int, after: Appointment, give_back_place: bool
    ) -> None:
        self._begin()
        checks = [
            ("APPOINTMENT_CHANGED", self._unchanged(before, version)),
            ("LOCK", self.locks.get(lock_key(before)) == before.appointment_id),
            ("STANDING", self._can_uncount(before)),
        ]
        if give_back_place:
            checks.append(("SLOT", self._can_give_back(before)))
        self._check(*checks)
        self.appointments[after.appointment_id] = (after.to_json(), version + 1)
        del self.locks[lock_key(before)]
        row = self._standing_row(before)
        row["active"] -= 1
        row["version"] = row.get("version", 0) + 1
        if give_back_place:
            self._take(before.slot_id, before.quota, -1)

    def reschedule(
        self,
        before: Appointment,
        version: int,
        cancelled: Appointment,
        new: Appointment,
        new_slot: Slot,
        now: str,
    ) -> None:
        self._begin()
        checks = [
            ("APPOINTMENT_CHANGED", self._unchanged(before, version)),
            ("OLD_SLOT", self._can_give_back(before)),
            ("SLOT", self._can_take(new_slot.slot_id, new.quota, now)),
            ("APPOINTMENT_EXISTS", new.appointment_id not in self.appointments),
        ]
        same_lock = lock_key(before) == lock_key(new)
        checks.append(("LOCK", self.locks.get(lock_key(before)) == before.appointment_id))
        if not same_lock:
            checks.append(("DUPLICATE_BOOKING", lock_key(new) not in self.locks))
        self._check(*checks)
        self.appointments[cancelled.appointment_id] = (cancelled.to_json(), version + 1)
        self._take(before.slot_id, before.quota, -1)
        self._take(new_slot.slot_id, new.quota)
        self.appointments[new.appointment_id] = (new.to_json(), 1)
        del self.locks[lock_key(before)]
        self.locks[lock_key(new)] = new.appointment_id

    def save_no_show(
        self,
        before: Appointment,
        version: int,
        after: Appointment,
        standing: ResidentStanding,
        standing_version: int,
    ) -> None:
        self._begin()
        row = self.standings.get((before.consortium_id, before.person_id))
        if row is None:
            fresh = True
        elif standing_version == 0:
            fresh = "version" not in row
        else:
            fresh = row.get("version") == standing_version
        self._check(
            ("APPOINTMENT_CHANGED", self._unchanged(before, version)),
            ("LOCK", self.locks.get(lock_key(before)) == before.appointment_id),
            ("STANDING", fresh),
        )
        self.appointments[after.appointment_id] = (after.to_json(), version + 1)
        del self.locks[lock_key(before)]
        record: dict[str, Any] = {
            "active": max(0, standing.active - 1),
            "no_shows": list(standing.no_shows),
            "version": standing_version + 1,
        }
        if standing.suspended_until:
            record["suspended_until"] = standing.suspended_until
        self.standings[(before.consortium_id, before.person_id)] = record

    # ---------------------------------------------------------------- the conditions
    @staticmethod
    def _check(*conditions: tuple[str, bool]) -> None:
        for role, ok in conditions:
            if not ok:
                raise BookingRefused(role)

    def _can_take(self, slot_id: str, quota: Quota, now: str) -> bool:
        s = self.slots.get(slot_id)
        if s is None:
            return False  # DynamoDB compares absent attributes as false
        ok = (
            s["status"] == "OPEN"
            and s["start"] > now
            and s["opens_at"] <= now
            and s["booked"] < s["capacity"]
        )
        if quota is Quota.RESERVED:
            return ok and s["booked_reserved"] < s["reserved"] and s["release_at"] > now
        return ok and (s["booked_public"] < s["public_cap"] or s["release_at"] <= now)

    def _take(self, slot_id: str, quota: Quota, delta: int = 1) -> None:
        s = self.slots[slot_id]
        s["booked"] += delta
        s[f"booked_{quota}"] += delta

    def _can_give_back(self, appt: Appointment) -> bool:
        s = self.slots.get(appt.slot_id)
        return s is not None and s["booked"] >= 1 and s[f"booked_{appt.quota}"] >= 1

    def _unchanged(self, before: Appointment, version: int) -> bool:
        found = self.appointments.get(before.appointment_id)
        return found is not None and found[1] == version and found[0]["status"] == before.status

    def _standing_row(self, appt: Appointment) -> dict[str, Any]:
        return self.standings.setdefault((appt.consortium_id, appt.person_id), {})

    def _can_count(self, appt: Appointment, policy: BookingPolicy, now: str) -> bool:
        row = self.standings.get((appt.consortium_id, appt.person_id), {})
        below = "active" not in row or row["active"] < policy.max_active_bookings
        free = not row.get("suspended_until") or row["suspended_until"] <= now
        return below and free

    def _can_uncount(self, appt: Appointment) -> bool:
        row = self.standings.get((appt.consortium_id, appt.person_id))
        return row is not None and row.get("active", 0) >= 1

    # ---------------------------------------------------------------- configuration
    def quota(self, institution_id: str, department: str) -> dict[str, Any] | None:
        row = self.quota_rows.get((institution_id, department))
        return dict(row) if row else None

    def set_quota(self, institution_id: str, department: str, share: float, hours: int) -> None:
        self.quota_rows[(institution_id, department)] = {
            "pk": f"QUOTA#{institution_id}",
            "sk": department,
            "reserved_share": share,
            "release_hours": hours,
        }

    def quotas(self, institution_id: str) -> list[dict[str, Any]]:
        return [dict(r) for (i, _), r in sorted(self.quota_rows.items()) if i == institution_id]

    def put_template(self, institution_id: str, template_id: str, data: Mapping[str, Any]) -> None:
        self.template_rows[(institution_id, template_id)] = copy.deepcopy(dict(data))

    def templates(self, institution_id: str) -> list[dict[str, Any]]:
        return [
            copy.deepcopy(d)
            for (i, _), d in sorted(self.template_rows.items())
            if i == institution_id
        ]


def _partition(slot_id: str) -> str:
    try:
        return slot_partition(slot_id)
    except ValueError:
        return ""


def _by_start(a: Appointment) -> str:  # the gsi1 / gsi2 sort key
    return f"{a.start}#{a.appointment_id}"


def _by_id(a: Appointment) -> str:  # the gsi3 / gsi4 sort key
    return a.appointment_id


# ------------------------------------------------------------------------ the referral seam
class FakeReferralSeam:
    """What booking reads of referrals and writes onto them (the appointment shown)."""

    def __init__(self, *referrals: Referral) -> None:
        self.referrals = {r.referral_id: r for r in referrals}
        self.attached: list[tuple[str, dict[str, Any]]] = []

    def add(self, referral: Referral) -> Referral:
        self.referrals[referral.referral_id] = referral
        return referral

    def get(self, referral_id: str) -> Referral | None:
        return self.referrals.get(referral_id)

    def attach_appointment(self, referral_id: str, appointment: Mapping[str, Any]) -> None:
        r = self.referrals[referral_id]
        self.referrals[referral_id] = replace(
            r, appointment=dict(appointment), version=r.version + 1
        )
        self.attached.append((referral_id, dict(appointment)))


def referral(
    referral_id: str = "ZZ2606010000001",
    *,
    status: Status = Status.ACCEPTED,
    person: str = PATIENT_ID,
    source: Institution = VILLAGE,
    target: Institution = COUNTY,
    department: str = "神经内科",
    **kw: Any,
) -> Referral:
    """An upward referral of the patient to the county hospital, accepted by default."""
    app = application(target_institution_id=target.institution_id, target_department=department)
    r = apply(
        app, REFERRER, referral_id=referral_id, patient={"person_id": person, "name": "张伟"},
        source=source, target=target, target_doctor=None, now=T0, limits=LIMITS,
    )  # fmt: skip
    return replace(r, status=status, **kw)


# ------------------------------------------------------------------------ booking people
COUNTY_ADMIN = Principal("adm-county", Role.INSTITUTION_ADMIN, C, COUNTY.institution_id,
                         name="县医院管理员")  # fmt: skip
TOWNSHIP_ADMIN = Principal("adm-qiaotou", Role.INSTITUTION_ADMIN, C, TOWNSHIP.institution_id,
                           name="桥头管理员")  # fmt: skip
NEURO = "神经内科"
DOCTOR_ID = "doc-chen"  # 陈医生, 神经内科, the county hospital (fake_referrals.DOCTORS)
SESSION_DAY = (T0 + timedelta(days=4)).date().isoformat()  # Friday: open, not yet released


def spec(**kw: Any) -> SessionSpec:
    """Dr Chen's Friday morning at the county hospital: four half-hour slots of 10."""
    body: dict[str, Any] = {
        "department": NEURO, "date": SESSION_DAY, "period": "am", "start": "08:00",
        "end": "10:00", "slot_minutes": 30, "capacity": 10, "visit_type": "specialist",
        "fee_cents": 5000, "doctor_id": DOCTOR_ID,
    }  # fmt: skip
    body.update(kw)
    return SessionSpec(**body)


def at(day: str, clock: str) -> datetime:
    """A local (Asia/Shanghai) time on a day."""
    return datetime.fromisoformat(f"{day}T{clock}:00+08:00")


class FakePublisher:
    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []

    def publish(self, events: Any) -> None:
        self.events.extend((t, dict(d)) for t, d in events)

    def kinds(self) -> list[str]:
        return [t for t, _ in self.events]
