"""Two-way referral use cases: apply, decide, follow, count.

The database is the source of truth for a referral's state; Step Functions holds the clock.
A person's action is one conditional transaction (referral + statistics) and then spends the
workflow's task token; exactly one of two concurrent decisions commits, the other gets 409.
When the workflow's time limit fires it asks `on_timeout`, which reconciles with the stored
state (a decision that raced the timer wins). Every read of a referral (person data) is
audited, refusals included.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict, replace
from datetime import date, datetime, timedelta
from typing import Any, Protocol

from yilian.domain.audit import AuditAction, AuditEvent, AuditOutcome
from yilian.domain.clock import CHINA_TZ, parse_date
from yilian.domain.clock import now as china_now
from yilian.domain.directory import Doctor, Institution
from yilian.domain.errors import Conflict, Forbidden, InvalidInput, NotFound
from yilian.domain.person import Person
from yilian.domain.principal import CLINICAL_ROLES, Principal, Role
from yilian.domain.referral import (
    CENTRE_ROLES,
    COUNTERS,
    STATUS_OF_STAGE,
    Action,
    Application,
    Change,
    Referral,
    RollupKey,
    Stage,
    Status,
    TimeLimits,
    allowed_actions,
    new_reference,
    rollup_delta,
    stage_outcome,
    summarise,
    timeout_action,
    transition,
)
from yilian.domain.referral import apply as apply_referral

MAX_ATTEMPTS = 5  # optimistic-lock retries before a 409 VERSION_CONFLICT
MAX_STATS_DAYS = 3 * 366
BOXES = ("to_review", "awaiting_patient", "overdue", "sent", "escalated")


class ReferralStorePort(Protocol):
    def get(self, referral_id: str) -> tuple[Referral, str | None] | None: ...
    def create(self, r: Referral, delta: Mapping[RollupKey, Mapping[str, int]]) -> None: ...
    def save(
        self, before: Referral, after: Referral, token: str | None,
        delta: Mapping[RollupKey, Mapping[str, int]],
    ) -> None: ...  # fmt: skip
    def register_wait(self, referral_id: str, status: Status, stage: str, token: str) -> bool: ...
    def open_for_receiver(self, consortium_id: str, institution_id: str) -> list[Referral]: ...
    def open_for_referrer(self, consortium_id: str, institution_id: str) -> list[Referral]: ...
    def escalated(self, consortium_id: str) -> list[Referral]: ...
    def for_patient(
        self, consortium_id: str, person_id: str, limit: int = 100
    ) -> list[Referral]: ...
    def rollups(self, consortium_id: str, first_day: str, last_day: str) -> Any: ...
    def month_rollups(self, consortium_id: str, first_month: str, last_month: str) -> Any: ...
    def daily_counts(
        self, consortium_id: str, first_day: str, last_day: str, institution_id: str | None = None
    ) -> Any: ...


class PatientIndex(Protocol):
    def get_person(self, person_id: str) -> Person | None: ...


class Directory(Protocol):
    def get_institution(self, consortium_id: str, institution_id: str) -> Institution | None: ...
    def get_doctor(self, consortium_id: str, doctor_id: str) -> Doctor | None: ...
    def list_institutions(self, consortium_id: str, tier: Any = None) -> list[Institution]: ...


class AuditPort(Protocol):
    def record(self, event: AuditEvent) -> None: ...


class Callbacks(Protocol):
    def resume(self, token: str, outcome: Mapping[str, Any]) -> bool: ...


class IdempotencyPort(Protocol):
    def run(
        self, scope: str, key: str, payload: Mapping[str, Any], fn: Callable[[], dict]
    ) -> dict: ...


class ReferralService:
    def __init__(
        self,
        store: ReferralStorePort,
        patients: PatientIndex,
        directory: Directory,
        audit: AuditPort,
        callbacks: Callbacks,
        *,
        limits: TimeLimits,
        clock: Callable[[], datetime] = china_now,
        idempotency: IdempotencyPort | None = None,
        new_id: Callable[[datetime], str] = new_reference,
    ) -> None:
        self.store = store
        self.patients = patients
        self.directory = directory
        self.audit = audit
        self.callbacks = callbacks
        self.limits = limits
        self.clock = clock
        self.idempotency = idempotency
        self.new_id = new_id

    # ---------------------------------------------------------------- apply
    def apply(self, who: Principal, app: Application, idempotency_key: str | None = None) -> dict:
        """A new referral (201); the same Idempotency-Key and body return the same one."""
        if who.role not in (Role.DOCTOR, Role.INSTITUTION_ADMIN):
            raise Forbidden("ROLE_NOT_ALLOWED", "only a doctor of an institution refers patients")
        if idempotency_key and self.idempotency is not None:
            payload = {"by": who.subject, **asdict(app)}
            return self.idempotency.run(
                "referral.apply", f"{who.subject}#{idempotency_key}", _plain(payload),
                lambda: self._apply(who, app),
            )  # fmt: skip
        return self._apply(who, app)

    def _apply(self, who: Principal, app: Application) -> dict:
        person = self._patient(who, app.patient_id)
        source = self._institution(who, who.institution_id or "", "UNKNOWN_INSTITUTION")
        target = self._institution(who, app.target_institution_id, "UNKNOWN_TARGET")
        if not target.active:
            raise InvalidInput("TARGET_INACTIVE", "the target institution is not active")
        doctor = self._target_doctor(who, app.target_doctor_id, target.institution_id)
        patient = {"person_id": person.person_id, "name": person.name, "sex": person.sex,
                   "birth_date": person.birth_date}  # fmt: skip
        for _ in range(MAX_ATTEMPTS):
            now = self.clock()
            referral = apply_referral(
                app, who, referral_id=self.new_id(now), patient=patient, source=source,
                target=target, target_doctor=doctor, now=now, limits=self.limits,
            )  # fmt: skip
            try:
                self.store.create(referral, rollup_delta(None, referral))
            except _duplicate():
                continue  # a reference collision (1 in 32^6 per day): draw another
            self._audit(who, AuditAction.CREATE, "Referral", referral, {"action": "apply"})
            return self.view(referral, who)
        raise RuntimeError("could not draw a free referral reference")

    def _patient(self, who: Principal, person_id: str) -> Person:
        person = self.patients.get_person(person_id)
        if person is None or person.consortium_id != who.consortium_id:
            raise InvalidInput("UNKNOWN_PATIENT", "no such person in the master patient index")
        if person.merged_into:
            raise InvalidInput(
                "PATIENT_MERGED", "this person was merged; refer the surviving record",
                survivor_id=person.merged_into,
            )  # fmt: skip
        return person

    def _institution(self, who: Principal, institution_id: str, code: str) -> Institution:
        inst = self.directory.get_institution(who.consortium_id, institution_id)
        if inst is None:
            raise InvalidInput(code, f"no institution {institution_id!r} in this consortium")
        return inst

    def _target_doctor(
        self, who: Principal, doctor_id: str | None, institution_id: str
    ) -> dict[str, str] | None:
        if not doctor_id:
            return None
        doctor = self.directory.get_doctor(who.consortium_id, doctor_id)
        if doctor is None or doctor.institution_id != institution_id:
            raise InvalidInput("UNKNOWN_DOCTOR", "no such doctor at the target institution")
        return {"doctor_id": doctor.doctor_id, "name": doctor.name}

    # ---------------------------------------------------------------- act
    def act(
        self, who: Principal, referral_id: str, action: Action, data: Mapping[str, Any]
    ) -> dict:
        """A person's transition: committed once, then the workflow is told."""
        change = self._change(who, action, data)
        after = self._transition(referral_id, action, who, change)
        self._audit(who, AuditAction.UPDATE, "Referral", after, {"action": str(action)})
        return self.view(after, who)

    def _change(self, who: Principal, action: Action, data: Mapping[str, Any]) -> Change:
        new_target = None
        doctor = None
        if action is Action.REASSIGN:
            target_id = str(data.get("target_institution_id") or "")
            new_target = self._institution(who, target_id, "UNKNOWN_TARGET") if target_id else None
        if data.get("doctor_id") or data.get("target_doctor_id"):
            doctor_id = str(data.get("doctor_id") or data.get("target_doctor_id"))
            doctor_obj = self.directory.get_doctor(who.consortium_id, doctor_id)
            if doctor_obj is None:
                raise InvalidInput("UNKNOWN_DOCTOR", "no such doctor in this consortium")
            doctor = {"doctor_id": doctor_obj.doctor_id, "name": doctor_obj.name,
                      "institution_id": doctor_obj.institution_id}  # fmt: skip
        reason = data.get("reason") or data.get("note") or data.get("question") or ""
        return Change(
            reason=str(reason),
            reason_code=str(data.get("reason_code") or ""),
            proposed_time=data.get("proposed_time"),
            department=str(data.get("department") or data.get("target_department") or ""),
            target_doctor=doctor,
            new_target=new_target,
            amendment={
                k: data[k] for k in ("clinical_summary", "diagnosis", "attachments") if data.get(k)
            },
        )

    def _transition(
        self,
        referral_id: str,
        action: Action,
        who: Principal | None,
        change: Change,
        timed_out: Stage | None = None,
    ) -> Referral:
        """Read, apply the rules, write if nothing changed meanwhile (else read again and let
        the rules decide again), then spend the workflow's token. For a time limit
        (`timed_out`), every read re-checks it is still due: a person's action that raced the
        timer wins, and the unchanged referral is returned."""
        from yilian.adapters.referral_store import StaleReferral

        for _ in range(MAX_ATTEMPTS):
            before, token = self._load(referral_id, who)
            if timed_out is not None and timeout_action(before, timed_out, self.clock()) != action:
                return before
            change = self._doctor_at_receiver(before, action, change)
            after = transition(before, action, who, change, now=self.clock(), limits=self.limits)
            try:
                self.store.save(before, after, token, rollup_delta(before, after))
            except StaleReferral:
                continue  # changed under us: re-read; the rules decide again
            if token:
                self.callbacks.resume(token, stage_outcome(after, self.clock()))
            return after
        raise Conflict("VERSION_CONFLICT", "the referral keeps changing; reload and retry")

    @staticmethod
    def _doctor_at_receiver(before: Referral, action: Action, change: Change) -> Change:
        """A named doctor must work where the referral goes (its new target on reassign)."""
        if not change.target_doctor:
            return change
        receiver = (
            change.new_target.institution_id
            if action is Action.REASSIGN and change.new_target is not None
            else before.target.institution_id
        )
        doctor = dict(change.target_doctor)
        if doctor.pop("institution_id", receiver) != receiver:
            raise InvalidInput("UNKNOWN_DOCTOR", "no such doctor at the receiving institution")
        return replace(change, target_doctor=doctor)

    def _load(self, referral_id: str, who: Principal | None) -> tuple[Referral, str | None]:
        found = self.store.get(referral_id) if referral_id else None
        if found is None or (who is not None and found[0].consortium_id != who.consortium_id):
            raise NotFound("REFERRAL_NOT_FOUND", f"no referral {referral_id!r}")
        return found

    # ---------------------------------------------------------------- workflow
    def await_stage(self, referral_id: str, stage: Stage, token: str) -> bool:
        """The workflow entered a wait: keep its token. If the referral already left the
        status this wait is for (a decision raced the workflow), complete the wait at once
        with the current state. True when the token was kept."""
        if self.store.register_wait(referral_id, STATUS_OF_STAGE[stage], str(stage), token):
            return True
        current, _ = self._load(referral_id, None)
        self.callbacks.resume(token, stage_outcome(current, self.clock()))
        return False

    def on_timeout(self, referral_id: str, stage: Stage) -> dict[str, Any]:
        """A wait's time limit passed: escalate, expire or mark a no-show, unless the
        referral moved on or its deadline moved; the outcome routes the workflow."""
        for _ in range(MAX_ATTEMPTS):
            current, _ = self._load(referral_id, None)
            action = timeout_action(current, stage, self.clock())
            if action is None:
                return stage_outcome(current, self.clock())
            try:
                after = self._transition(referral_id, action, None, Change(), timed_out=stage)
            except Conflict:
                continue  # a person acted between our read and write: look again
            return stage_outcome(after, self.clock())
        current, _ = self._load(referral_id, None)
        return stage_outcome(current, self.clock())

    # ---------------------------------------------------------------- read
    def get(self, who: Principal, referral_id: str) -> dict:
        referral, _ = self._load(referral_id, who)
        self._check_read(who, referral)
        self._audit(who, AuditAction.READ, "Referral", referral, {})
        return self.view(referral, who)

    def referral_for_fhir(self, who: Principal, referral_id: str) -> Referral:
        referral, _ = self._load(referral_id, who)
        self._check_read(who, referral)
        self._audit(who, AuditAction.READ, "Referral.fhir", referral, {})
        return referral

    def _check_read(self, who: Principal, r: Referral) -> None:
        """The patient, the two institutions' staff, and the referral centre read it."""
        allowed = (
            (who.role is Role.RESIDENT and who.person_id == r.person_id)
            or who.role in CENTRE_ROLES
            or (
                who.role in CLINICAL_ROLES
                and who.institution_id in (r.source.institution_id, r.target.institution_id)
            )
        )
        if not allowed:
            self._audit(who, AuditAction.READ, "Referral", r, {}, outcome=AuditOutcome.DENIED)
            raise Forbidden("NOT_A_PARTY", "only the patient and the institutions involved read it")

    def view(self, r: Referral, who: Principal, *, with_history: bool = True) -> dict:
        out = r.to_json(with_history=with_history)
        out["overdue"] = r.overdue(self.clock())
        out["actions"] = allowed_actions(r, who)
        if who.role is Role.RESIDENT:
            out.pop("clinical_summary", None)  # the resident's view: status, places, times
        return out

    def worklist(self, who: Principal, box: str) -> dict:
        """A clinician's boxes with counts; a resident gets their own referrals."""
        if who.role is Role.RESIDENT:
            return self.mine(who)
        who.require_role(*CLINICAL_ROLES)
        if box not in BOXES:
            raise InvalidInput("UNKNOWN_BOX", f"box is one of {list(BOXES)}", allowed=list(BOXES))
        now = self.clock()
        inst = who.institution_id or ""
        incoming = self.store.open_for_receiver(who.consortium_id, inst) if inst else []
        outgoing = self.store.open_for_referrer(who.consortium_id, inst) if inst else []
        if who.role is Role.DOCTOR:
            outgoing = [r for r in outgoing if r.referring_doctor["sub"] == who.subject]
        boxes: dict[str, list[Referral]] = {
            "to_review": [
                r for r in incoming if r.status in (Status.PENDING_REVIEW, Status.ESCALATED)
            ],
            "awaiting_patient": [r for r in incoming if r.status is Status.ACCEPTED],
            "overdue": [r for r in incoming if r.overdue(now)],
            "sent": outgoing,
        }
        if who.role in CENTRE_ROLES:
            boxes["escalated"] = self.store.escalated(who.consortium_id)
        elif box == "escalated":
            raise Forbidden("NOT_REFERRAL_CENTRE", "the escalated box is the referral centre's")
        items = boxes.get(box, [])
        self._audit_list(who, items, box)
        return {
            "box": box,
            "items": [self.view(r, who, with_history=False) for r in items],
            "count": len(items),
            "counts": {name: len(rs) for name, rs in boxes.items()},
        }

    def mine(self, who: Principal) -> dict:
        if not who.person_id:
            raise Forbidden("NO_PERSON", "this account is not linked to a person")
        items = self.store.for_patient(who.consortium_id, who.person_id)
        self._audit_list(who, items, "mine")
        return {"items": [self.view(r, who, with_history=True) for r in items], "count": len(items)}

    # ---------------------------------------------------------------- statistics
    def stats(self, who: Principal, first: str, last: str, institution_id: str | None) -> dict:
        """Counts per institution and for the consortium over [first, last] (application
        days, Asia/Shanghai). A doctor sees their own institution only. Whole months are read
        from the month rollups, the days of partial months from the day rollups, the daily
        counts from the chart items."""
        who.require_role(*CLINICAL_ROLES)
        first_day, last_day = _period(first, last, self.clock())
        if who.role not in (Role.CONSORTIUM_ADMIN, Role.REFERRAL_CENTRE):
            if institution_id and institution_id != who.institution_id:
                raise Forbidden("OTHER_INSTITUTION", "you see your own institution's figures")
            institution_id = who.institution_id
        c = who.consortium_id
        edges, months = _split(first_day, last_day)
        rows = [row for a, b in edges for row in self.store.rollups(c, a, b)]
        if months:
            rows.extend(self.store.month_rollups(c, *months))
        totals: dict[str, int] = {}
        sent: dict[str, dict[str, int]] = {}
        received: dict[str, dict[str, int]] = {}
        for row in rows:
            counters = {k: int(v) for k, v in row.items() if k in COUNTERS or k.startswith("dm_")}
            src, dst = row["source"], row["target"]
            if institution_id and institution_id not in (src, dst):
                continue
            _add(totals, counters)
            _add(sent.setdefault(src, {}), counters)
            _add(received.setdefault(dst, {}), counters)
        daily = {
            d["day"]: {"up": int(d["up"]), "down": int(d["down"])}
            for d in self.store.daily_counts(c, first_day, last_day, institution_id)
        }
        names = {
            i.institution_id: i.name for i in self.directory.list_institutions(who.consortium_id)
        }
        ids = sorted(set(sent) | set(received))
        if institution_id:
            ids = [institution_id]
        return {
            "period": {"from": first_day, "to": last_day},
            "institution_id": institution_id,
            "totals": summarise(totals),
            "by_institution": [
                {
                    "institution_id": i,
                    "name": names.get(i, i),
                    "sent": summarise(sent.get(i, {})),
                    "received": summarise(received.get(i, {})),
                }
                for i in ids
            ],  # fmt: skip
            "daily": [{"day": d, **daily[d]} for d in sorted(daily)],
        }

    # ---------------------------------------------------------------- audit
    def _audit(
        self, who: Principal, action: AuditAction, what: str, r: Referral, detail: dict[str, str],
        outcome: AuditOutcome = AuditOutcome.SUCCESS,
    ) -> None:  # fmt: skip
        self.audit.record(
            AuditEvent.by(
                who,
                action,
                what,
                (r.person_id,),
                outcome=outcome,
                consortium_id=r.consortium_id,
                detail={"referral_id": r.referral_id, **detail},
            )
        )

    def _audit_list(self, who: Principal, items: list[Referral], box: str) -> None:
        """A worklist shows names: one search event per person listed."""
        persons = tuple(sorted({r.person_id for r in items}))
        if persons:
            self.audit.record(
                AuditEvent.by(
                    who, AuditAction.SEARCH, "Referral.worklist", persons, detail={"box": box}
                )
            )


def _duplicate() -> type[Exception]:
    from yilian.adapters.referral_store import DuplicateReferral

    return DuplicateReferral


def _add(into: dict[str, int], counters: Mapping[str, int]) -> None:
    for k, v in counters.items():
        into[k] = into.get(k, 0) + v


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _split(first_day: str, last_day: str) -> tuple[list[tuple[str, str]], tuple[str, str] | None]:
    """[first_day, last_day] as the day ranges of its partial months (at most two: its head
    and its tail) and the first and last of its whole months (YYYY-MM), if any."""
    first, last = date.fromisoformat(first_day), date.fromisoformat(last_day)
    start = first if first.day == 1 else _next_month(first)  # the first whole month's 1st
    end = last + timedelta(days=1)  # the day after the last whole month
    end = (end if end.day == 1 else last.replace(day=1)) - timedelta(days=1)
    if start > end:
        return [(first_day, last_day)], None
    edges = []
    if first < start:
        edges.append((first_day, (start - timedelta(days=1)).isoformat()))
    if end < last:
        edges.append(((end + timedelta(days=1)).isoformat(), last_day))
    return edges, (start.isoformat()[:7], end.isoformat()[:7])


def _next_month(d: date) -> date:
    """The first day of the month after d's."""
    return date(d.year + d.month // 12, d.month % 12 + 1, 1)


def _period(first: str, last: str, now: datetime) -> tuple[str, str]:
    today = now.astimezone(CHINA_TZ).date()
    last_day = parse_date(last, "to") if last else today
    first_day = parse_date(first, "from") if first else last_day - timedelta(days=29)
    if first_day > last_day:
        raise InvalidInput("EMPTY_PERIOD", "from is after to")
    if (last_day - first_day).days > MAX_STATS_DAYS:
        raise InvalidInput("PERIOD_TOO_LONG", f"at most {MAX_STATS_DAYS} days per query")
    return first_day.isoformat(), last_day.isoformat()
