"""Appointment booking use cases: publish schedules, search, book, cancel, reschedule,
check in, mark no-shows, and book accepted referrals from the reserved quota.

The service explains; the store's transaction decides. Every rule is checked here first for
a clear error, and again atomically in the transaction's conditions (capacity per quota, the
slot open, one active booking per doctor per day, the resident's limits), so concurrent
requests can never overbook. A refused transaction is re-read to say which rule refused it.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, replace
from datetime import date, datetime, timedelta
from typing import Any, Protocol

from yilian.domain.audit import AuditAction, AuditEvent
from yilian.domain.booking import (
    Appointment,
    AppointmentStatus,
    BookingPolicy,
    Quota,
    Session,
    SessionSpec,
    Slot,
    check_bookable,
    check_cancel,
    check_check_in,
    choose_quota,
    history_entry,
    is_no_show,
    iso,
    new_session,
    parse_date,
    parse_time,
    slots_of,
)
from yilian.domain.clock import CHINA_TZ
from yilian.domain.clock import now as china_now
from yilian.domain.directory import Institution, Tier
from yilian.domain.errors import Conflict, Forbidden, InvalidInput, NotFound
from yilian.domain.principal import CLINICAL_ROLES, Principal, Role

MAX_SEARCH_DAYS = 14
MAX_LEAVE_DAYS = 60
REFERRAL_SEARCH_DAYS = 7
ADMIN_ROLES = (Role.INSTITUTION_ADMIN, Role.CONSORTIUM_ADMIN)


class BookingStorePort(Protocol):
    def put_session(self, session: Session, slots: list[Slot]) -> None: ...
    def day(self, institution_id: str, day: str) -> tuple[list[Session], list[Slot]]: ...
    def get_slot(self, slot_id: str) -> Slot | None: ...
    def get_session(self, institution_id: str, day: str, session_id: str) -> Session | None: ...
    def cancel_session(self, session: Session, reason: str) -> None: ...
    def get_appointment(self, appointment_id: str) -> tuple[Appointment, int] | None: ...
    def for_person(self, consortium_id: str, person_id: str) -> list[Appointment]: ...
    def day_list(self, institution_id: str, day: str) -> list[Appointment]: ...
    def in_slot(self, slot_id: str) -> list[Appointment]: ...
    def for_referral(self, referral_id: str) -> list[Appointment]: ...
    def standing(self, consortium_id: str, person_id: str) -> Any: ...
    def book(self, appt: Appointment, slot: Slot, policy: BookingPolicy, now: str) -> None: ...
    def release(
        self, before: Appointment, version: int, after: Appointment, give_back_place: bool
    ) -> None: ...
    def reschedule(
        self,
        before: Appointment,
        version: int,
        cancelled: Appointment,
        new: Appointment,
        new_slot: Slot,
        now: str,
    ) -> None: ...
    def save_no_show(
        self,
        before: Appointment,
        version: int,
        after: Appointment,
        standing: Any,
        standing_version: int,
    ) -> None: ...
    def quota(self, institution_id: str, department: str) -> dict[str, Any] | None: ...
    def set_quota(self, institution_id: str, department: str, share: float, hours: int) -> None: ...
    def quotas(self, institution_id: str) -> list[dict[str, Any]]: ...
    def put_template(
        self, institution_id: str, template_id: str, data: Mapping[str, Any]
    ) -> None: ...
    def templates(self, institution_id: str) -> list[dict[str, Any]]: ...


class Directory(Protocol):
    def get_institution(self, consortium_id: str, institution_id: str) -> Institution | None: ...
    def get_doctor(self, consortium_id: str, doctor_id: str) -> Any: ...
    def list_institutions(self, consortium_id: str, tier: Any = None) -> list[Institution]: ...


class Patients(Protocol):
    def get_person(self, person_id: str) -> Any: ...


class Referrals(Protocol):
    """The referral seam: read a referral, show the booking on it."""

    def get(self, referral_id: str) -> Any: ...
    def attach_appointment(self, referral_id: str, appointment: Mapping[str, Any]) -> None: ...


class Publisher(Protocol):
    def publish(self, events: Sequence[tuple[str, Mapping[str, Any]]]) -> None: ...


class BookingService:
    def __init__(
        self,
        store: BookingStorePort,
        directory: Directory,
        patients: Patients,
        referrals: Referrals,
        audit: Any,
        *,
        policy: BookingPolicy,
        publisher: Publisher | None = None,
        clock: Callable[[], datetime] = china_now,
        idempotency: Any = None,
    ) -> None:
        self.store = store
        self.directory = directory
        self.patients = patients
        self.referrals = referrals
        self.audit = audit
        self.policy = policy
        self.publisher = publisher
        self.clock = clock
        self.idempotency = idempotency

    # ---------------------------------------------------------------- schedules
    def _admin_institution(self, who: Principal, institution_id: str | None) -> Institution:
        """An institution admin manages their own schedules; a consortium admin any."""
        who.require_role(*ADMIN_ROLES)
        inst_id = institution_id or who.institution_id or ""
        if who.role is Role.INSTITUTION_ADMIN and inst_id != who.institution_id:
            raise Forbidden("OTHER_INSTITUTION", "you manage your own institution's schedules")
        inst = self.directory.get_institution(who.consortium_id, inst_id)
        if inst is None:
            raise InvalidInput("UNKNOWN_INSTITUTION", f"no institution {inst_id!r}")
        return inst

    def _doctor_name(self, who: Principal, inst: Institution, doctor_id: str | None) -> str:
        if not doctor_id:
            return ""
        doctor = self.directory.get_doctor(who.consortium_id, doctor_id)
        if doctor is None or doctor.institution_id != inst.institution_id:
            raise InvalidInput("UNKNOWN_DOCTOR", "no such doctor at this institution")
        return str(doctor.name)

    def _reserve_share(self, inst: Institution, department: str) -> tuple[float, int]:
        """County-tier institutions hold a share for referrals (per department, else the
        consortium default); primary institutions hold none."""
        config = self.store.quota(inst.institution_id, department) or {}
        hours = int(config.get("release_hours", self.policy.release_hours))
        if inst.tier is not Tier.COUNTY:
            return 0.0, hours
        return float(config.get("reserved_share", self.policy.reserved_share)), hours

    def publish(
        self,
        who: Principal,
        spec: SessionSpec,
        institution_id: str | None = None,
        session_id: str | None = None,
    ) -> dict:
        inst = self._admin_institution(who, institution_id)
        now = self.clock()
        doctor_name = self._doctor_name(who, inst, spec.doctor_id)
        share, hours = self._reserve_share(inst, spec.department)
        day = parse_date(spec.date)
        session = new_session(
            spec,
            session_id=session_id or f"{inst.institution_id}.{day}.{secrets.token_hex(3)}",
            consortium_id=who.consortium_id,
            institution_id=inst.institution_id,
            doctor_name=doctor_name,
            reserved_share=share,
            release_hours=hours,
            created_by=who.subject,
            now=now,
        )
        slots = slots_of(session, self.policy, reserves=share > 0)
        if all(parse_time(s.start) <= now for s in slots):
            raise InvalidInput("SESSION_IN_PAST", "every slot of this session has passed")
        self.store.put_session(session, slots)
        return {
            "session": session.to_json(),
            "slots": [s.view(now, sees_reserved=True) for s in slots],
        }

    def save_template(self, who: Principal, data: Mapping[str, Any]) -> dict:
        inst = self._admin_institution(who, data.get("institution_id"))
        weekday = int(data.get("weekday", 0))
        if not 1 <= weekday <= 7:
            raise InvalidInput("INVALID_WEEKDAY", "weekday is 1 (Monday) to 7 (Sunday)")
        spec = _spec({**data, "date": self.clock().date().isoformat()})
        # validate the shape once, on a day that is surely not in the past
        new_session(
            spec,
            session_id="check",
            consortium_id=who.consortium_id,
            institution_id=inst.institution_id,
            doctor_name="",
            reserved_share=0,
            release_hours=0,
            created_by=who.subject,
            now=self.clock(),
        )
        self._doctor_name(who, inst, spec.doctor_id)
        template_id = data.get("template_id") or secrets.token_hex(4)
        record = {
            **{k: v for k, v in asdict(spec).items() if k != "date"},
            "weekday": weekday,
            "template_id": template_id,
            "institution_id": inst.institution_id,
        }
        self.store.put_template(inst.institution_id, template_id, record)
        return record

    def templates(self, who: Principal, institution_id: str | None) -> dict:
        inst = self._admin_institution(who, institution_id)
        return {"items": self.store.templates(inst.institution_id)}

    def publish_templates(
        self, who: Principal, first: str, weeks: int, institution_id: str | None = None
    ) -> dict:
        """Sessions from every weekly template for `weeks` weeks from `first`; a day already
        published from a template is skipped, so publishing twice is harmless."""
        from yilian.adapters.booking_store import DuplicateSession

        inst = self._admin_institution(who, institution_id)
        if not 1 <= weeks <= 12:
            raise InvalidInput("INVALID_WEEKS", "publish 1 to 12 weeks at a time")
        start = parse_date(first, "from")
        created, skipped = 0, 0
        for template in self.store.templates(inst.institution_id):
            for n in range(weeks * 7):
                day = start + timedelta(days=n)
                if day.isoweekday() != int(template["weekday"]):
                    continue
                spec = _spec({**template, "date": day.isoformat()})
                sid = f"{inst.institution_id}.{day}.t{template['template_id']}"
                try:
                    self.publish(who, spec, inst.institution_id, session_id=sid)
                    created += 1
                except InvalidInput:
                    skipped += 1  # a day in the past
                except DuplicateSession:
                    skipped += 1  # published from this template before
        return {"created": created, "skipped": skipped}

    def set_quota(
        self,
        who: Principal,
        department: str,
        share: float,
        hours: int,
        institution_id: str | None = None,
    ) -> dict:
        inst = self._admin_institution(who, institution_id)
        if not 0 <= share <= 0.8:
            raise InvalidInput("INVALID_SHARE", "the reserved share is 0 to 0.8 of a slot")
        if not 0 <= hours <= 14 * 24:
            raise InvalidInput("INVALID_RELEASE", "release 0 to 336 hours before the slot")
        self.store.set_quota(inst.institution_id, department.strip(), share, hours)
        return {
            "institution_id": inst.institution_id,
            "department": department.strip(),
            "reserved_share": share,
            "release_hours": hours,
        }

    def quotas(self, who: Principal, institution_id: str | None) -> dict:
        inst_id = institution_id or who.institution_id or ""
        items = [
            {
                "department": q["sk"],
                "reserved_share": q["reserved_share"],
                "release_hours": q["release_hours"],
            }
            for q in self.store.quotas(inst_id)
        ]
        return {
            "institution_id": inst_id,
            "default_share": self.policy.reserved_share,
            "default_release_hours": self.policy.release_hours,
            "items": items,
        }

    def cancel_session(self, who: Principal, session_id: str, reason: str) -> dict:
        """Close a session; every booking in it is cancelled with notice."""
        if not reason.strip():
            raise InvalidInput("REASON_REQUIRED", "say why the session is cancelled")
        try:
            inst_id, day = session_id.split(".")[:2]
        except ValueError:
            raise NotFound("SESSION_NOT_FOUND", f"no session {session_id!r}") from None
        inst = self._admin_institution(who, inst_id)
        session = self.store.get_session(inst.institution_id, day, session_id)
        if session is None:
            raise NotFound("SESSION_NOT_FOUND", f"no session {session_id!r}")
        return self._cancel_session(who, session, reason)

    def _cancel_session(self, who: Principal, session: Session, reason: str) -> dict:
        self.store.cancel_session(session, reason)
        _, slots = self.store.day(session.institution_id, session.date)
        cancelled = 0
        for slot in slots:
            if slot.session_id != session.session_id:
                continue
            for appt in self.store.in_slot(slot.slot_id):
                if appt.status is AppointmentStatus.BOOKED:
                    self._cancel(who, appt.appointment_id, reason, by_institution=True)
                    cancelled += 1
        return {
            "session_id": session.session_id,
            "status": "CANCELLED",
            "bookings_cancelled": cancelled,
        }

    def doctor_leave(
        self, who: Principal, doctor_id: str, first: str, last: str, reason: str
    ) -> dict:
        """A doctor's leave: their sessions in [first, last] are cancelled, and every
        booking in them with notice."""
        doctor = self.directory.get_doctor(who.consortium_id, doctor_id)
        if doctor is None:
            raise InvalidInput("UNKNOWN_DOCTOR", "no such doctor")
        inst = self._admin_institution(who, doctor.institution_id)
        start, end = parse_date(first, "from"), parse_date(last, "to")
        if end < start or (end - start).days > MAX_LEAVE_DAYS:
            raise InvalidInput("INVALID_PERIOD", f"a leave is 1 to {MAX_LEAVE_DAYS + 1} days")
        sessions, bookings = 0, 0
        for n in range((end - start).days + 1):
            day = (start + timedelta(days=n)).isoformat()
            for session in self.store.day(inst.institution_id, day)[0]:
                if session.doctor_id == doctor_id and session.status == "OPEN":
                    out = self._cancel_session(who, session, f"医生停诊: {reason}")
                    sessions += 1
                    bookings += out["bookings_cancelled"]
        return {
            "doctor_id": doctor_id,
            "sessions_cancelled": sessions,
            "bookings_cancelled": bookings,
        }

    # ---------------------------------------------------------------- search
    def search(self, who: Principal, query: Mapping[str, str]) -> dict:
        """Free slots by institution, department, doctor and dates. Clinicians see the
        reserved places (and whether they are released); residents see only what they may
        book."""
        inst_id = query.get("institution_id") or ""
        if not inst_id:
            raise InvalidInput("INSTITUTION_REQUIRED", "search one institution's slots")
        first = parse_date(
            query.get("date") or query.get("from") or self.clock().date().isoformat()
        )
        last = parse_date(query["to"], "to") if query.get("to") else first
        if last < first or (last - first).days >= MAX_SEARCH_DAYS:
            raise InvalidInput("INVALID_PERIOD", f"search 1 to {MAX_SEARCH_DAYS} days")
        now = self.clock()
        sees_reserved = who.role in CLINICAL_ROLES
        items = []
        for n in range((last - first).days + 1):
            _, slots = self.store.day(inst_id, (first + timedelta(days=n)).isoformat())
            for slot in sorted(slots, key=lambda s: (s.start, s.slot_id)):
                if slot.consortium_id != who.consortium_id:
                    continue
                if query.get("department") and slot.department != query["department"]:
                    continue
                if query.get("doctor_id") and slot.doctor_id != query["doctor_id"]:
                    continue
                if parse_time(slot.end) <= now:
                    continue
                items.append(slot.view(now, sees_reserved=sees_reserved))
        return {"items": items, "count": len(items)}

    # ---------------------------------------------------------------- book
    def book(
        self, who: Principal, body: Mapping[str, Any], idempotency_key: str | None = None
    ) -> dict:
        """A confirmed appointment (201); a retry with the same Idempotency-Key returns it."""
        if idempotency_key and self.idempotency is not None:
            payload = {"by": who.subject, **{k: body.get(k) for k in sorted(body)}}
            return self.idempotency.run(
                "booking.book",
                f"{who.subject}#{idempotency_key}",
                payload,
                lambda: self._book(who, body),
            )
        return self._book(who, body)

    def _book(self, who: Principal, body: Mapping[str, Any], system: bool = False) -> dict:
        person_id, person = self._patient_of(who, body.get("person_id"), system)
        slot = self._slot(str(body.get("slot_id") or ""))
        if not system:
            who.require_consortium(slot.consortium_id)
        referral_id = body.get("referral_id") or None
        if referral_id:
            self._check_referral(who, referral_id, person_id, slot, system)
        now = self.clock()
        quota = choose_quota(slot, bool(body.get("reserved")), bool(referral_id), now)
        check_bookable(slot, quota, now)
        standing, _ = self.store.standing(slot.consortium_id, person_id)
        standing.check(self.policy, now)
        at = iso(now)
        by = _by(who)
        appt = Appointment(
            appointment_id=_new_appointment_id(now),
            consortium_id=slot.consortium_id,
            person_id=person_id,
            patient_name=getattr(person, "name", ""),
            **_slot_fields(slot),
            quota=quota,
            status=AppointmentStatus.BOOKED,
            booked_by=by,
            created_at=at,
            updated_at=at,
            referral_id=referral_id,
            history=(history_entry("book", by, now, f"quota {quota}"),),
        )
        self._commit_booking(appt, slot, at)
        if referral_id:
            self.referrals.attach_appointment(referral_id, _summary(appt))
        self._audit(who, AuditAction.CREATE, appt, "book")
        return self.view(appt, who)

    def _commit_booking(self, appt: Appointment, slot: Slot, at: str) -> None:
        from yilian.adapters.booking_store import BookingRefused

        try:
            self.store.book(appt, slot, self.policy, at)
        except BookingRefused as refused:
            self._explain(refused.reason, appt, slot)
            raise

    def _explain(self, reason: str, appt: Appointment, slot: Slot) -> None:
        """Re-read what refused the transaction and raise the rule it broke."""
        now = self.clock()
        if reason == "SLOT":
            fresh = self.store.get_slot(slot.slot_id) or slot
            check_bookable(fresh, appt.quota, now)
            raise Conflict("SLOT_FULL", "no place left in this slot")
        if reason == "DUPLICATE_BOOKING":
            raise Conflict(
                "DUPLICATE_BOOKING", "one active booking per doctor (or department) per day"
            )
        if reason == "STANDING":
            standing, _ = self.store.standing(appt.consortium_id, appt.person_id)
            standing.check(self.policy, now)
        raise Conflict("BOOKING_CONFLICT", "the booking collided with another; retry")

    def _patient_of(self, who: Principal, person_id: Any, system: bool) -> tuple[str, Any]:
        """The patient's id and master-index record (read once: the appointment shows the
        name). A resident books for themselves; clinicians for a person of the index."""
        if who.role is Role.RESIDENT and not system:
            if person_id and person_id != who.person_id:
                raise Forbidden("NOT_YOUR_RECORD", "a resident books for themselves only")
            if not who.person_id:
                raise Forbidden("NO_PERSON", "this account is not linked to a person")
            return who.person_id, self.patients.get_person(who.person_id)
        if system:
            return str(person_id), self.patients.get_person(str(person_id))
        who.require_role(*CLINICAL_ROLES)
        person = self.patients.get_person(str(person_id or ""))
        if person is None or person.consortium_id != who.consortium_id:
            raise InvalidInput("UNKNOWN_PATIENT", "no such person in the master patient index")
        if getattr(person, "merged_into", None):
            raise InvalidInput(
                "PATIENT_MERGED",
                "this person was merged; book the survivor",
                survivor_id=person.merged_into,
            )
        return str(person.person_id), person

    def _slot(self, slot_id: str) -> Slot:
        slot = self.store.get_slot(slot_id) if slot_id else None
        if slot is None:
            raise NotFound("SLOT_NOT_FOUND", f"no slot {slot_id!r}")
        return slot

    def _check_referral(
        self, who: Principal, referral_id: str, person_id: str, slot: Slot, system: bool
    ) -> None:
        """A reserved place is for an accepted upward referral of this patient to this
        institution, booked by its receiver, its referrer or the referral centre."""
        referral = self.referrals.get(referral_id)
        if referral is None or referral.consortium_id != slot.consortium_id:
            raise InvalidInput("UNKNOWN_REFERRAL", f"no referral {referral_id!r}")
        if referral.person_id != person_id:
            raise InvalidInput("REFERRAL_OTHER_PATIENT", "the referral is for another patient")
        if str(referral.status) != "ACCEPTED" or str(referral.direction) != "up":
            raise Conflict(
                "REFERRAL_NOT_ACCEPTED",
                "only an accepted upward referral books from the reserved quota",
                status=str(referral.status),
            )
        if referral.target.institution_id != slot.institution_id:
            raise InvalidInput(
                "REFERRAL_OTHER_INSTITUTION", "the referral goes to another institution"
            )
        if system or who.role in (Role.REFERRAL_CENTRE, Role.CONSORTIUM_ADMIN):
            return
        parties = (referral.source.institution_id, referral.target.institution_id)
        if who.role is Role.RESIDENT or who.institution_id not in parties:
            raise Forbidden("NOT_A_PARTY", "the referral's institutions book its reserved place")

    # ---------------------------------------------------------------- change
    def _load(self, who: Principal | None, appointment_id: str) -> tuple[Appointment, int]:
        found = self.store.get_appointment(appointment_id) if appointment_id else None
        if found is None or (who is not None and found[0].consortium_id != who.consortium_id):
            raise NotFound("APPOINTMENT_NOT_FOUND", f"no appointment {appointment_id!r}")
        return found

    def _is_staff_of(self, who: Principal, appt: Appointment) -> bool:
        if who.role is Role.CONSORTIUM_ADMIN:
            return True
        return who.role in (Role.DOCTOR, Role.INSTITUTION_ADMIN) and (
            who.institution_id == appt.institution_id
        )

    def _check_owner_or_staff(self, who: Principal, appt: Appointment) -> bool:
        """True for the institution's staff, False for the appointment's own resident."""
        if self._is_staff_of(who, appt):
            return True
        if who.role is Role.RESIDENT and who.person_id == appt.person_id:
            return False
        raise Forbidden("NOT_YOUR_APPOINTMENT", "only the resident or the institution may")

    def cancel(self, who: Principal, appointment_id: str, reason: str) -> dict:
        appt, _ = self._load(who, appointment_id)
        staff = self._check_owner_or_staff(who, appt)
        return self.view(self._cancel(who, appointment_id, reason, by_institution=staff), who)

    def _cancel(
        self, who: Principal, appointment_id: str, reason: str, by_institution: bool
    ) -> Appointment:
        from yilian.adapters.booking_store import BookingRefused

        for _ in range(3):
            appt, version = self._load(who, appointment_id)
            now = self.clock()
            check_cancel(appt, by_institution, self.policy, now, reason)
            by = _by(who)
            after = replace(
                appt,
                status=AppointmentStatus.CANCELLED,
                updated_at=iso(now),
                history=(*appt.history, history_entry("cancel", by, now, reason)),
            )
            try:
                self.store.release(appt, version, after, give_back_place=True)
            except BookingRefused:
                continue  # changed meanwhile: the rules decide again
            self._audit(who, AuditAction.UPDATE, after, "cancel")
            self._publish("AppointmentCancelled", after, reason)
            return after
        raise Conflict("APPOINTMENT_CHANGED", "the appointment keeps changing; reload")

    def reschedule(self, who: Principal, appointment_id: str, slot_id: str) -> dict:
        """Move to another slot in one transaction: never both, never neither."""
        from yilian.adapters.booking_store import BookingRefused

        appt, version = self._load(who, appointment_id)
        staff = self._check_owner_or_staff(who, appt)
        now = self.clock()
        check_cancel(appt, staff, self.policy, now, "改约")
        slot = self._slot(slot_id)
        if slot.slot_id == appt.slot_id:
            raise InvalidInput("SAME_SLOT", "that is the current slot")
        if slot.institution_id != appt.institution_id:
            raise InvalidInput("OTHER_INSTITUTION", "reschedule within the same institution")
        # a referred patient keeps a reserved place while the new slot still holds one
        quota = choose_quota(slot, False, appt.quota is Quota.RESERVED, now)
        check_bookable(slot, quota, now)
        by = _by(who)
        at = iso(now)
        new = replace(
            appt,
            appointment_id=_new_appointment_id(now),
            **_slot_fields(slot),
            quota=quota,
            created_at=at,
            updated_at=at,
            history=(history_entry("reschedule", by, now, f"from {appt.appointment_id}"),),
        )
        cancelled = replace(
            appt,
            status=AppointmentStatus.CANCELLED,
            updated_at=at,
            history=(
                *appt.history,
                history_entry("reschedule", by, now, f"to {new.appointment_id}"),
            ),
        )
        try:
            self.store.reschedule(appt, version, cancelled, new, slot, at)
        except BookingRefused as refused:
            if refused.reason == "APPOINTMENT_CHANGED":
                raise Conflict("APPOINTMENT_CHANGED", "the appointment changed; reload") from None
            self._explain(refused.reason, new, slot)
            raise
        if appt.referral_id:
            self.referrals.attach_appointment(appt.referral_id, _summary(new))
        self._audit(who, AuditAction.UPDATE, new, "reschedule")
        return self.view(new, who)

    def check_in(self, who: Principal, appointment_id: str) -> dict:
        appt, version = self._load(who, appointment_id)
        if not self._is_staff_of(who, appt):
            raise Forbidden("NOT_RECEIVING_INSTITUTION", "the institution's staff check in")
        now = self.clock()
        check_check_in(appt, self.policy, now)
        by = _by(who)
        after = replace(
            appt,
            status=AppointmentStatus.CHECKED_IN,
            updated_at=iso(now),
            history=(*appt.history, history_entry("check_in", by, now)),
        )
        self._release_or_conflict(appt, version, after)
        self._audit(who, AuditAction.UPDATE, after, "check_in")
        return self.view(after, who)

    def _release_or_conflict(self, appt: Appointment, version: int, after: Appointment) -> None:
        from yilian.adapters.booking_store import BookingRefused

        try:
            self.store.release(appt, version, after, give_back_place=False)
        except BookingRefused:
            raise Conflict("APPOINTMENT_CHANGED", "the appointment changed; reload") from None

    def mark_no_shows(self, consortium_id: str, days: Sequence[str] | None = None) -> dict:
        """The sweep (scheduled): BOOKED appointments whose slot ended (plus grace) become
        no-shows; repeated no-shows suspend booking for the penalty window."""
        from yilian.adapters.booking_store import BookingRefused

        now = self.clock()
        today = now.astimezone(CHINA_TZ).date()
        days = days or [(today - timedelta(days=1)).isoformat(), today.isoformat()]
        marked = 0
        for inst in self.directory.list_institutions(consortium_id):
            for day in days:
                for appt in self.store.day_list(inst.institution_id, day):
                    if not is_no_show(appt, self.policy, now):
                        continue
                    found = self.store.get_appointment(appt.appointment_id)
                    if found is None or not is_no_show(found[0], self.policy, now):
                        continue
                    appt, version = found
                    standing, standing_version = self.store.standing(consortium_id, appt.person_id)
                    after = replace(
                        appt,
                        status=AppointmentStatus.NO_SHOW,
                        updated_at=iso(now),
                        history=(
                            *appt.history,
                            history_entry(
                                "no_show",
                                {"sub": "system:booking", "role": "system", "name": "预约系统"},
                                now,
                            ),
                        ),
                    )
                    try:
                        self.store.save_no_show(
                            appt,
                            version,
                            after,
                            standing.after_no_show(self.policy, now),
                            standing_version,
                        )
                    except BookingRefused:
                        continue  # changed meanwhile: the next sweep looks again
                    marked += 1
        return {"marked": marked}

    # ---------------------------------------------------------------- the referral seam
    def book_for_referral(self, detail: Mapping[str, Any]) -> dict:
        """ReferralAccepted: the earliest slot a referral may take at the receiving department
        (and doctor, if named), from the proposed time (or now) for a week: a reserved place
        while the slot holds one, else a public one (the patient is seen soonest)."""
        system = Principal(
            "system:booking", Role.CONSORTIUM_ADMIN, str(detail["consortium_id"]), name="预约系统"
        )
        referral_id = str(detail["referral_id"])
        if self.store.for_referral(referral_id):
            return {"status": "already_booked"}
        now = self.clock()
        start = (
            max(now, parse_time(detail["proposed_time"])) if detail.get("proposed_time") else now
        )
        for n in range(REFERRAL_SEARCH_DAYS):
            day = (start.astimezone(CHINA_TZ).date() + timedelta(days=n)).isoformat()
            _, slots = self.store.day(str(detail["to_institution"]), day)
            for slot in sorted(slots, key=lambda s: s.start):
                if (
                    detail.get("target_department")
                    and slot.department != detail["target_department"]
                ):
                    continue
                if detail.get("target_doctor_id") and slot.doctor_id != detail["target_doctor_id"]:
                    continue
                if parse_time(slot.start) < start or slot.free(Quota.RESERVED, now) <= 0:
                    continue
                try:
                    out = self._book(
                        system,
                        {
                            "slot_id": slot.slot_id,
                            "person_id": detail["person_id"],
                            "referral_id": referral_id,
                        },
                        system=True,
                    )
                except (Conflict, Forbidden):
                    continue  # taken meanwhile, or the patient's limits: try the next
                return {"status": "booked", "appointment": out}
        self._publish_raw(
            "ReferralSlotUnavailable",
            {
                "referral_id": referral_id,
                "consortium_id": detail["consortium_id"],
                "to_institution": detail["to_institution"],
                "person_id": detail["person_id"],
                "target_department": detail.get("target_department"),
                "at": iso(now),
            },
        )
        return {"status": "no_slot"}

    # ---------------------------------------------------------------- read
    def get(self, who: Principal, appointment_id: str) -> dict:
        appt, _ = self._load(who, appointment_id)
        self._check_owner_or_staff(who, appt)
        self._audit(who, AuditAction.READ, appt, "read")
        return self.view(appt, who)

    def appointment_for_fhir(self, who: Principal, appointment_id: str) -> Appointment:
        appt, _ = self._load(who, appointment_id)
        self._check_owner_or_staff(who, appt)
        self._audit(who, AuditAction.READ, appt, "fhir")
        return appt

    def slot_for_fhir(self, who: Principal, slot_id: str) -> Slot:
        slot = self._slot(slot_id)
        who.require_consortium(slot.consortium_id)
        return slot

    def mine(self, who: Principal) -> dict:
        if who.role is not Role.RESIDENT or not who.person_id:
            raise Forbidden("RESIDENTS_ONLY", "a resident's own bookings")
        items = sorted(
            self.store.for_person(who.consortium_id, who.person_id),
            key=lambda a: a.start,
            reverse=True,
        )
        return {"items": [self.view(a, who) for a in items], "count": len(items)}

    def day_list(self, who: Principal, institution_id: str | None, day: str) -> dict:
        """The check-in list of an institution's day."""
        who.require_role(*CLINICAL_ROLES)
        inst_id = institution_id or who.institution_id or ""
        if (
            who.role not in (Role.CONSORTIUM_ADMIN, Role.REFERRAL_CENTRE)
            and inst_id != who.institution_id
        ):
            raise Forbidden("OTHER_INSTITUTION", "your own institution's day list")
        parse_date(day)
        items = sorted(self.store.day_list(inst_id, day), key=lambda a: (a.start, a.patient_name))
        if items:
            self.audit.record(
                AuditEvent.by(
                    who,
                    AuditAction.SEARCH,
                    "Appointment.day_list",
                    sorted({a.person_id for a in items}),
                    detail={"day": day},
                )
            )
        return {
            "institution_id": inst_id,
            "date": day,
            "items": [self.view(a, who) for a in items],
            "count": len(items),
        }

    def view(self, appt: Appointment, who: Principal) -> dict:
        out = appt.to_json()
        now = self.clock()
        staff = self._is_staff_of(who, appt)
        actions = []
        if appt.status is AppointmentStatus.BOOKED:
            cutoff = parse_time(appt.start) - timedelta(hours=self.policy.cancel_cutoff_hours)
            if staff or now <= cutoff:
                actions += ["cancel", "reschedule"]
            if staff:
                actions.append("check_in")
        out["actions"] = actions
        return out

    # ---------------------------------------------------------------- events and audit
    def _publish(self, kind: str, appt: Appointment, reason: str) -> None:
        self._publish_raw(
            kind,
            {
                **_summary(appt),
                "consortium_id": appt.consortium_id,
                "person_id": appt.person_id,
                "reason": reason,
                "at": appt.updated_at,
            },
        )

    def _publish_raw(self, kind: str, detail: Mapping[str, Any]) -> None:
        if self.publisher is not None:
            self.publisher.publish([(kind, detail)])

    def _audit(self, who: Principal, action: AuditAction, appt: Appointment, what: str) -> None:
        self.audit.record(
            AuditEvent.by(
                who,
                action,
                "Appointment",
                (appt.person_id,),
                consortium_id=appt.consortium_id,
                detail={"appointment_id": appt.appointment_id, "action": what},
            )
        )


def _by(who: Principal) -> dict[str, str]:
    """Who acted, as an appointment's history and booked_by keep it."""
    return {"sub": who.subject, "role": str(who.role), "name": who.name}


def _new_appointment_id(now: datetime) -> str:
    return f"A{now.strftime('%y%m%d')}{secrets.token_hex(5).upper()}"


def _slot_fields(slot: Slot) -> dict[str, Any]:
    """What an appointment copies from its slot (booking and rescheduling alike)."""
    return {
        "slot_id": slot.slot_id,
        "session_id": slot.session_id,
        "institution_id": slot.institution_id,
        "department": slot.department,
        "doctor_id": slot.doctor_id,
        "doctor_name": slot.doctor_name,
        "start": slot.start,
        "end": slot.end,
        "fee_cents": slot.fee_cents,
        "visit_type": slot.visit_type,
    }


def _summary(appt: Appointment) -> dict[str, Any]:
    """What another service (the referral) shows of an appointment."""
    return {
        "appointment_id": appt.appointment_id,
        "slot_id": appt.slot_id,
        "institution_id": appt.institution_id,
        "department": appt.department,
        "doctor_name": appt.doctor_name,
        "start": appt.start,
        "end": appt.end,
        "quota": str(appt.quota),
        "status": str(appt.status),
    }


def _spec(data: Mapping[str, Any]) -> SessionSpec:
    try:
        return SessionSpec(
            department=str(data["department"]),
            date=str(data["date"]),
            period=str(data["period"]),
            start=str(data["start"]),
            end=str(data["end"]),
            slot_minutes=int(data["slot_minutes"]),
            capacity=int(data["capacity"]),
            visit_type=str(data.get("visit_type") or "general"),
            fee_cents=int(data.get("fee_cents") or 0),
            doctor_id=data.get("doctor_id") or None,
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise InvalidInput(
            "INVALID_SESSION", f"session field missing or malformed: {exc}"
        ) from None


__all__ = ["BookingService", "date"]
