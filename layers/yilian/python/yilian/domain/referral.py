"""Two-way referral (双向转诊): the rules, as plain Python.

A referral goes up (village → township → county → out of county) or down (county →
township → village, for rehabilitation and chronic follow-up). Its life:

    apply ─► PENDING_REVIEW ─accept──► ACCEPTED ─arrive──► ARRIVED
                │   ▲   │    └─acknowledge (downward) ─► ACKNOWLEDGED
                │   │   ├─reject──► REJECTED
                │ amend └─request_info─► MORE_INFO ─(time limit)─► EXPIRED
                │   └──────────────────────┘
                ├─(time limit)─► ESCALATED (referral centre: decide or reassign)
                │                   └─(time limit)─► EXPIRED
                └─cancel (referrer, before a decision) ─► CANCELLED
    ACCEPTED ─(arrival limit)─► NO_SHOW

`transition` is the only way a referral changes: it checks the action is allowed from the
current status and by this actor, and appends who/when/why to the history (nothing is ever
deleted). Deadlines (`due_at`) are decided here; the state machine only waits for them.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta
from enum import StrEnum
from typing import Any

from yilian.domain.clock import CHINA_TZ, iso, parse_time
from yilian.domain.directory import TIER_RANK, Institution, Tier
from yilian.domain.errors import Conflict, Forbidden, InvalidInput
from yilian.domain.principal import Principal, Role


class Direction(StrEnum):
    UP = "up"  # 上转
    DOWN = "down"  # 下转


class Urgency(StrEnum):
    ROUTINE = "routine"  # 普通
    URGENT = "urgent"  # 急
    EMERGENCY = "emergency"  # 急危重症, 绿色通道


class Status(StrEnum):
    PENDING_REVIEW = "PENDING_REVIEW"  # 待审核
    MORE_INFO = "MORE_INFO"  # 待补充资料
    ESCALATED = "ESCALATED"  # 已上报转诊中心
    ACCEPTED = "ACCEPTED"  # 已接收, 待到院
    ARRIVED = "ARRIVED"  # 已到院
    NO_SHOW = "NO_SHOW"  # 未到院
    ACKNOWLEDGED = "ACKNOWLEDGED"  # 下转已接收
    REJECTED = "REJECTED"  # 已拒绝
    CANCELLED = "CANCELLED"  # 已撤销
    EXPIRED = "EXPIRED"  # 已超时


TERMINAL = frozenset(
    {Status.ARRIVED, Status.NO_SHOW, Status.ACKNOWLEDGED, Status.REJECTED, Status.CANCELLED,
     Status.EXPIRED}
)  # fmt: skip
AWAITING_DECISION = frozenset({Status.PENDING_REVIEW, Status.ESCALATED})


class Action(StrEnum):
    APPLY = "apply"
    ACCEPT = "accept"
    ACKNOWLEDGE = "acknowledge"
    REJECT = "reject"
    REQUEST_INFO = "request_info"
    AMEND = "amend"
    CANCEL = "cancel"
    REASSIGN = "reassign"
    ARRIVE = "arrive"
    ESCALATE = "escalate"  # the workflow, when the review limit passes
    EXPIRE = "expire"  # the workflow, when the escalation or amendment limit passes
    NO_SHOW = "no_show"  # the workflow, when the arrival limit passes


class RejectReason(StrEnum):
    NO_CAPACITY = "NO_CAPACITY"  # 床位/号源不足
    OUT_OF_SCOPE = "OUT_OF_SCOPE"  # 超出本院诊疗范围
    NOT_INDICATED = "NOT_INDICATED"  # 无转诊指征
    PATIENT_DECLINED = "PATIENT_DECLINED"  # 患者拒绝
    OTHER = "OTHER"


class Stage(StrEnum):
    """What the workflow waits for in each open status (a task token per wait)."""

    REVIEW = "review"
    ESCALATED = "escalated"
    MORE_INFO = "more_info"
    ARRIVAL = "arrival"


STAGE_OF_STATUS = {
    Status.PENDING_REVIEW: Stage.REVIEW,
    Status.ESCALATED: Stage.ESCALATED,
    Status.MORE_INFO: Stage.MORE_INFO,
    Status.ACCEPTED: Stage.ARRIVAL,
}
STATUS_OF_STAGE = {stage: status for status, stage in STAGE_OF_STATUS.items()}
# The system action taken when a stage's time limit passes.
TIMEOUT_ACTION = {
    Stage.REVIEW: Action.ESCALATE,
    Stage.ESCALATED: Action.EXPIRE,
    Stage.MORE_INFO: Action.EXPIRE,
    Stage.ARRIVAL: Action.NO_SHOW,
}

# (action, statuses it may start from, status it leads to; None = depends on the referral)
RULES: dict[Action, tuple[frozenset[Status], Status | None]] = {
    Action.ACCEPT: (AWAITING_DECISION, Status.ACCEPTED),
    Action.ACKNOWLEDGE: (AWAITING_DECISION, Status.ACKNOWLEDGED),
    Action.REJECT: (AWAITING_DECISION, Status.REJECTED),
    Action.REQUEST_INFO: (AWAITING_DECISION, Status.MORE_INFO),
    Action.AMEND: (frozenset({Status.MORE_INFO}), Status.PENDING_REVIEW),
    Action.CANCEL: (AWAITING_DECISION | {Status.MORE_INFO}, Status.CANCELLED),
    Action.REASSIGN: (AWAITING_DECISION, Status.PENDING_REVIEW),
    Action.ARRIVE: (frozenset({Status.ACCEPTED}), Status.ARRIVED),
    Action.ESCALATE: (frozenset({Status.PENDING_REVIEW}), Status.ESCALATED),
    Action.EXPIRE: (frozenset({Status.ESCALATED, Status.MORE_INFO}), Status.EXPIRED),
    Action.NO_SHOW: (frozenset({Status.ACCEPTED}), Status.NO_SHOW),
}
RECEIVER_ACTIONS = frozenset(
    {Action.ACCEPT, Action.ACKNOWLEDGE, Action.REJECT, Action.REQUEST_INFO, Action.ARRIVE}
)
CENTRE_ACTIONS = frozenset(
    {Action.ACCEPT, Action.ACKNOWLEDGE, Action.REJECT, Action.REQUEST_INFO, Action.REASSIGN}
)
REFERRER_ACTIONS = frozenset({Action.AMEND, Action.CANCEL})
SYSTEM_ACTIONS = frozenset({Action.ESCALATE, Action.EXPIRE, Action.NO_SHOW})
CENTRE_ROLES = frozenset({Role.REFERRAL_CENTRE, Role.CONSORTIUM_ADMIN})
STAFF_ROLES = frozenset({Role.DOCTOR, Role.INSTITUTION_ADMIN})

SYSTEM_SUBJECT = "system:referral-workflow"
REFERENCE_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"  # Crockford base32: no I, L, O, U


@dataclass(frozen=True, slots=True)
class TimeLimits:
    """Seconds each wait may last, per urgency. Configurable per county (template parameter
    ReferralLimits, JSON); tests use seconds-long limits."""

    review: Mapping[Urgency, int]
    escalation: Mapping[Urgency, int]
    amendment: int
    arrival: Mapping[Urgency, int]  # after acceptance, or after the proposed time if given

    @classmethod
    def from_json(cls, raw: str | None) -> TimeLimits:
        data = json.loads(raw) if raw else {}
        base = DEFAULT_LIMITS

        def per_urgency(name: str, default: Mapping[Urgency, int]) -> dict[Urgency, int]:
            given = data.get(name) or {}
            return {u: int(given.get(str(u), default[u])) for u in Urgency}

        return cls(
            review=per_urgency("review", base.review),
            escalation=per_urgency("escalation", base.escalation),
            amendment=int(data.get("amendment", base.amendment)),
            arrival=per_urgency("arrival", base.arrival),
        )


HOUR, DAY = 3600, 86400
DEFAULT_LIMITS = TimeLimits(
    review={Urgency.EMERGENCY: 30 * 60, Urgency.URGENT: 4 * HOUR, Urgency.ROUTINE: 3 * DAY},
    escalation={Urgency.EMERGENCY: 30 * 60, Urgency.URGENT: 4 * HOUR, Urgency.ROUTINE: 1 * DAY},
    amendment=3 * DAY,
    arrival={Urgency.EMERGENCY: 6 * HOUR, Urgency.URGENT: 2 * DAY, Urgency.ROUTINE: 7 * DAY},
)


@dataclass(frozen=True, slots=True)
class Actor:
    """Who did something, as the history keeps it."""

    sub: str
    name: str
    role: str
    institution_id: str | None = None

    @classmethod
    def of(cls, who: Principal) -> Actor:
        return cls(who.subject, who.name, str(who.role), who.institution_id)

    def to_json(self) -> dict[str, Any]:
        return {"sub": self.sub, "name": self.name, "role": self.role,
                "institution_id": self.institution_id}  # fmt: skip


SYSTEM = Actor(SYSTEM_SUBJECT, "转诊流程", "system")


@dataclass(frozen=True, slots=True)
class Party:
    """An institution as the referral remembers it (name and tier at the time)."""

    institution_id: str
    name: str
    tier: str
    in_county: bool = True

    @classmethod
    def of(cls, inst: Institution) -> Party:
        return cls(inst.institution_id, inst.name, str(inst.tier), inst.in_county)

    def to_json(self) -> dict[str, Any]:
        return {"institution_id": self.institution_id, "name": self.name, "tier": self.tier,
                "in_county": self.in_county}  # fmt: skip


@dataclass(frozen=True, slots=True)
class Referral:
    referral_id: str
    consortium_id: str
    status: Status
    direction: Direction
    urgency: Urgency
    patient: dict[str, Any]  # {person_id, name, sex, birth_date}
    source: Party
    target: Party
    referring_doctor: dict[str, str]  # {sub, name}
    reason: str
    diagnosis: dict[str, str]  # {code (ICD-10), text}
    clinical_summary: str
    created_at: str
    updated_at: str
    due_at: str | None
    target_department: str = ""
    target_doctor: dict[str, str] | None = None  # {doctor_id, name}
    attachments: tuple[dict[str, str], ...] = ()
    discharge_summary: str = ""
    follow_up_plan: tuple[dict[str, str], ...] = ()
    decision: dict[str, Any] | None = None
    escalated: bool = False
    history: tuple[dict[str, Any], ...] = ()
    version: int = 1
    # The booking from the reserved quota (written by the booking service: the seam).
    appointment: dict[str, Any] | None = None

    @property
    def person_id(self) -> str:
        return str(self.patient["person_id"])

    @property
    def is_open(self) -> bool:
        return self.status not in TERMINAL

    def overdue(self, now: datetime) -> bool:
        return self.is_open and self.due_at is not None and parse_time(self.due_at) <= now

    def to_json(self, *, with_history: bool = True) -> dict[str, Any]:
        out: dict[str, Any] = {
            "referral_id": self.referral_id,
            "consortium_id": self.consortium_id,
            "status": str(self.status),
            "direction": str(self.direction),
            "urgency": str(self.urgency),
            "patient": dict(self.patient),
            "from": self.source.to_json(),
            "to": self.target.to_json(),
            "referring_doctor": dict(self.referring_doctor),
            "target_department": self.target_department,
            "target_doctor": dict(self.target_doctor) if self.target_doctor else None,
            "reason": self.reason,
            "diagnosis": dict(self.diagnosis),
            "clinical_summary": self.clinical_summary,
            "attachments": [dict(a) for a in self.attachments],
            "discharge_summary": self.discharge_summary,
            "follow_up_plan": [dict(f) for f in self.follow_up_plan],
            "decision": dict(self.decision) if self.decision else None,
            "escalated": self.escalated,
            "appointment": dict(self.appointment) if self.appointment else None,
            "due_at": self.due_at,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "version": self.version,
        }
        if with_history:
            out["history"] = [dict(h) for h in self.history]
        return out

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Referral:
        def party(p: Mapping[str, Any]) -> Party:
            return Party(p["institution_id"], p["name"], p["tier"], bool(p.get("in_county", True)))

        return cls(
            referral_id=d["referral_id"],
            consortium_id=d["consortium_id"],
            status=Status(d["status"]),
            direction=Direction(d["direction"]),
            urgency=Urgency(d["urgency"]),
            patient=dict(d["patient"]),
            source=party(d["from"]),
            target=party(d["to"]),
            referring_doctor=dict(d["referring_doctor"]),
            reason=d.get("reason", ""),
            diagnosis=dict(d.get("diagnosis") or {}),
            clinical_summary=d.get("clinical_summary", ""),
            created_at=d["created_at"],
            updated_at=d["updated_at"],
            due_at=d.get("due_at"),
            target_department=d.get("target_department", ""),
            target_doctor=dict(d["target_doctor"]) if d.get("target_doctor") else None,
            attachments=tuple(dict(a) for a in d.get("attachments") or ()),
            discharge_summary=d.get("discharge_summary", ""),
            follow_up_plan=tuple(dict(f) for f in d.get("follow_up_plan") or ()),
            decision=dict(d["decision"]) if d.get("decision") else None,
            escalated=bool(d.get("escalated", False)),
            appointment=dict(d["appointment"]) if d.get("appointment") else None,
            history=tuple(dict(h) for h in d.get("history") or ()),
            version=int(d.get("version", 1)),
        )


# ------------------------------------------------------------------------------- time
def new_reference(now: datetime, rand: Any = secrets) -> str:
    """A human reference like NHS e-RS's UBRN: ZZ + date + 6 random base32 + a check char,
    so a mistyped reference is caught before any lookup."""
    body = "ZZ" + now.astimezone(CHINA_TZ).strftime("%y%m%d")
    body += "".join(rand.choice(REFERENCE_ALPHABET) for _ in range(6))
    return body + _check_char(body)


def _check_char(body: str) -> str:
    """Weighted sum mod 32 with odd weights: odd weights are coprime with 32, so any single
    wrong character changes the check character."""
    total = sum((2 * i + 1) * REFERENCE_ALPHABET.index(c) for i, c in enumerate(body))
    return REFERENCE_ALPHABET[total % 32]


def is_reference(value: str) -> bool:
    return (
        len(value) == 15
        and value.startswith("ZZ")
        and value[2:8].isascii()
        and value[2:8].isdigit()
        and all(c in REFERENCE_ALPHABET for c in value[2:])
        and value[-1] == _check_char(value[:-1])
    )


# ------------------------------------------------------------------------------- apply
@dataclass(frozen=True, slots=True)
class Application:
    """What the referring doctor sends (validated for shape at the API edge)."""

    patient_id: str
    direction: str
    urgency: str
    target_institution_id: str
    reason: str
    diagnosis: Mapping[str, str]
    clinical_summary: str
    target_department: str = ""
    target_doctor_id: str | None = None
    attachments: Sequence[Mapping[str, str]] = ()
    discharge_summary: str = ""
    follow_up_plan: Sequence[Mapping[str, str]] = ()


def check_route(direction: Direction, source: Institution | Party, target: Institution) -> None:
    """Upward goes to a higher tier, downward to a lower one, never to oneself."""
    if source.institution_id == target.institution_id:
        raise InvalidInput("REFERRAL_TO_SELF", "a referral must go to another institution")
    up = TIER_RANK[Tier(target.tier)] > TIER_RANK[Tier(source.tier)]
    down = TIER_RANK[Tier(target.tier)] < TIER_RANK[Tier(source.tier)]
    if direction is Direction.UP and not up:
        raise InvalidInput(
            "UPWARD_TO_LOWER_TIER",
            f"an upward referral goes to a higher tier than {source.tier}",
            source_tier=str(source.tier), target_tier=str(target.tier),
        )  # fmt: skip
    if direction is Direction.DOWN and not down:
        raise InvalidInput(
            "DOWNWARD_TO_HIGHER_TIER",
            f"a downward referral goes to a lower tier than {source.tier}",
            source_tier=str(source.tier), target_tier=str(target.tier),
        )  # fmt: skip


def _enum(kind: type[StrEnum], value: str, code: str) -> Any:
    try:
        return kind(value)
    except ValueError:
        allowed = [str(v) for v in kind]
        raise InvalidInput(code, f"{value!r} is not one of {allowed}", allowed=allowed) from None


def check_diagnosis(diagnosis: Mapping[str, str]) -> dict[str, str]:
    """An ICD-10 code (the terminology's own normalisation: case, full-width characters)."""
    from yilian.domain.terminology.icd10 import is_valid_icd10_format, normalise_code

    code = normalise_code(diagnosis.get("code") or "")
    text = (diagnosis.get("text") or "").strip()
    if not is_valid_icd10_format(code):
        raise InvalidInput("INVALID_ICD10", f"{code!r} is not an ICD-10 code (e.g. I63.9)")
    if not text:
        raise InvalidInput("DIAGNOSIS_TEXT_REQUIRED", "the diagnosis needs its text")
    return {"code": code, "text": text}


def _follow_up(items: Sequence[Mapping[str, str]], today: date) -> tuple[dict[str, str], ...]:
    out = []
    for item in items:
        try:
            due = date.fromisoformat(item.get("due_date", ""))
        except ValueError:
            raise InvalidInput("INVALID_DATE", "follow-up due dates are YYYY-MM-DD") from None
        if due < today:
            raise InvalidInput("FOLLOW_UP_IN_PAST", "a follow-up item cannot be due in the past")
        if not (item.get("item") or "").strip():
            raise InvalidInput("FOLLOW_UP_ITEM_REQUIRED", "each follow-up item needs a text")
        out.append({"item": item["item"].strip(), "due_date": due.isoformat()})
    return tuple(out)


def apply(
    app: Application,
    who: Principal,
    *,
    referral_id: str,
    patient: Mapping[str, Any],
    source: Institution,
    target: Institution,
    target_doctor: Mapping[str, str] | None,
    now: datetime,
    limits: TimeLimits,
) -> Referral:
    """A new referral, PENDING_REVIEW, with the review deadline of its urgency."""
    if who.role not in STAFF_ROLES:
        raise Forbidden("ROLE_NOT_ALLOWED", "only a doctor of an institution refers patients")
    direction = _enum(Direction, app.direction, "INVALID_DIRECTION")
    urgency = _enum(Urgency, app.urgency, "INVALID_URGENCY")
    check_route(direction, source, target)
    if not app.reason.strip():
        raise InvalidInput("REASON_REQUIRED", "a referral needs a reason")
    diagnosis = check_diagnosis(app.diagnosis)
    if direction is Direction.UP and (app.discharge_summary or app.follow_up_plan):
        raise InvalidInput(
            "NOT_A_DOWNWARD_REFERRAL", "discharge summaries and follow-up plans go downward"
        )
    follow_up = _follow_up(app.follow_up_plan, now.astimezone(CHINA_TZ).date())
    actor = Actor.of(who)
    at = iso(now)
    referral = Referral(
        referral_id=referral_id,
        consortium_id=who.consortium_id,
        status=Status.PENDING_REVIEW,
        direction=direction,
        urgency=urgency,
        patient=dict(patient),
        source=Party.of(source),
        target=Party.of(target),
        referring_doctor={"sub": who.subject, "name": who.name},
        reason=app.reason.strip(),
        diagnosis=diagnosis,
        clinical_summary=app.clinical_summary.strip(),
        created_at=at,
        updated_at=at,
        due_at=iso(now + timedelta(seconds=limits.review[urgency])),
        target_department=app.target_department.strip(),
        target_doctor=dict(target_doctor) if target_doctor else None,
        attachments=tuple(dict(a) for a in app.attachments),
        discharge_summary=app.discharge_summary.strip(),
        follow_up_plan=follow_up,
    )
    entry = _history(Action.APPLY, None, Status.PENDING_REVIEW, actor, at, "", {})
    return replace(referral, history=(entry,))


# ------------------------------------------------------------------------------- transitions
def _history(
    action: Action, before: Status | None, after: Status, actor: Actor, at: str, reason: str,
    details: Mapping[str, Any],
) -> dict[str, Any]:  # fmt: skip
    entry: dict[str, Any] = {
        "at": at,
        "action": str(action),
        "from_status": str(before) if before else None,
        "to_status": str(after),
        "by": actor.to_json(),
    }
    if reason:
        entry["reason"] = reason
    if details:
        entry["details"] = dict(details)
    return entry


def role_for(referral: Referral, who: Principal) -> frozenset[Action]:
    """The actions this caller's position lets them take on this referral (any status)."""
    if who.consortium_id != referral.consortium_id or who.role is Role.RESIDENT:
        return frozenset()
    actions: set[Action] = set()
    staff = who.role in STAFF_ROLES
    if staff and who.institution_id == referral.target.institution_id:
        actions |= RECEIVER_ACTIONS
    if staff and who.institution_id == referral.source.institution_id:
        if who.role is Role.INSTITUTION_ADMIN or who.subject == referral.referring_doctor["sub"]:
            actions |= REFERRER_ACTIONS
    if who.role in CENTRE_ROLES:
        actions |= CENTRE_ACTIONS
    return frozenset(actions)


def _direction_fits(referral: Referral, action: Action) -> bool:
    if action is Action.ACCEPT or action is Action.ARRIVE:
        return referral.direction is Direction.UP
    if action is Action.ACKNOWLEDGE:
        return referral.direction is Direction.DOWN
    return True


def allowed_actions(referral: Referral, who: Principal) -> list[str]:
    """What the web client offers this caller now (the same checks `transition` makes)."""
    return sorted(
        str(a)
        for a in role_for(referral, who)
        if referral.status in RULES[a][0] and _direction_fits(referral, a)
    )


def check_actor(referral: Referral, action: Action, who: Principal | None) -> Actor:
    """The actor for this action, or a 403 with the reason."""
    if who is None:
        if action not in SYSTEM_ACTIONS:
            raise Forbidden("SYSTEM_ONLY", f"{action} is taken by people, not the workflow")
        return SYSTEM
    if action in SYSTEM_ACTIONS:
        raise Forbidden("SYSTEM_ONLY", f"{action} is taken by the workflow when a limit passes")
    if who.role is Role.RESIDENT:
        raise Forbidden("RESIDENT_CANNOT_ACT", "residents follow their referrals; doctors act")
    who.require_consortium(referral.consortium_id)
    if action not in role_for(referral, who):
        if action in RECEIVER_ACTIONS:
            raise Forbidden(
                "NOT_RECEIVING_INSTITUTION",
                "only the receiving institution (or the referral centre) may do this",
            )
        if action in REFERRER_ACTIONS:
            raise Forbidden("NOT_REFERRER", "only the referring doctor may do this")
        raise Forbidden("NOT_REFERRAL_CENTRE", "only the referral centre may do this")
    return Actor.of(who)


@dataclass(frozen=True, slots=True)
class Change:
    """What an action carries besides the action itself."""

    reason: str = ""  # free text: why (cancel, reassign, request_info's question, notes)
    reason_code: str = ""  # reject
    proposed_time: str | None = None  # accept: when the patient should come
    department: str = ""  # accept / reassign
    target_doctor: Mapping[str, str] | None = None  # accept / reassign
    new_target: Institution | None = None  # reassign
    amendment: Mapping[str, Any] = field(default_factory=dict)  # amend: summary, diagnosis...


def transition(
    referral: Referral,
    action: Action,
    who: Principal | None,
    change: Change,
    *,
    now: datetime,
    limits: TimeLimits,
) -> Referral:
    """The referral after `action`, or a typed error (403 who, 409 state, 400 input)."""
    actor = check_actor(referral, action, who)
    allowed_from, after = RULES[action]
    if referral.status not in allowed_from:
        raise Conflict(
            "INVALID_TRANSITION",
            f"cannot {action} a referral that is {referral.status}",
            status=str(referral.status), action=str(action),
        )  # fmt: skip
    if not _direction_fits(referral, action):
        code = "USE_ACKNOWLEDGE" if action is Action.ACCEPT else "NOT_FOR_DOWNWARD"
        if action is Action.ACKNOWLEDGE:
            code = "USE_ACCEPT"
        raise Conflict(code, f"{action} does not apply to a {referral.direction}ward referral")
    assert after is not None
    effects = EFFECTS.get(action, _close)(referral, actor, change, now, limits)
    at = iso(now)
    updates: dict[str, Any] = {"status": after, "updated_at": at, **effects.updates}
    entry = _history(action, referral.status, after, actor, at, change.reason.strip(),
                     effects.details)  # fmt: skip
    return replace(
        referral, **updates, history=(*referral.history, entry), version=referral.version + 1
    )


@dataclass(frozen=True, slots=True)
class Effects:
    updates: dict[str, Any]
    details: dict[str, Any] = field(default_factory=dict)


def _deadline(now: datetime, seconds: int) -> str:
    return iso(now + timedelta(seconds=seconds))


def _decide(outcome: str, actor: Actor, change: Change, now: datetime) -> dict[str, Any]:
    decision: dict[str, Any] = {
        "outcome": outcome, "at": iso(now), "by": {"sub": actor.sub, "name": actor.name},
    }  # fmt: skip
    if change.reason.strip():
        decision["note"] = change.reason.strip()
    return decision


def _accept(
    r: Referral, actor: Actor, change: Change, now: datetime, limits: TimeLimits
) -> Effects:
    decision = _decide("accepted", actor, change, now)
    details: dict[str, Any] = {}
    arrival_from = now
    if change.proposed_time:
        proposed = parse_time(change.proposed_time)
        if proposed < now - timedelta(minutes=5):
            raise InvalidInput("PROPOSED_TIME_IN_PAST", "propose a time from now on")
        decision["proposed_time"] = details["proposed_time"] = iso(proposed)
        arrival_from = max(now, proposed)
    updates: dict[str, Any] = {
        "decision": decision,
        "due_at": _deadline(arrival_from, limits.arrival[r.urgency]),
    }
    if change.department.strip():
        updates["target_department"] = change.department.strip()
    if change.target_doctor:
        updates["target_doctor"] = dict(change.target_doctor)
    return Effects(updates, details)


def _acknowledge(
    r: Referral, actor: Actor, change: Change, now: datetime, _: TimeLimits
) -> Effects:
    return Effects({"decision": _decide("acknowledged", actor, change, now), "due_at": None})


def _reject(r: Referral, actor: Actor, change: Change, now: datetime, _: TimeLimits) -> Effects:
    decision = _decide("rejected", actor, change, now)
    code = str(_enum(RejectReason, change.reason_code or "", "INVALID_REASON_CODE"))
    decision["reason_code"] = code
    return Effects({"decision": decision, "due_at": None}, {"reason_code": code})


def _request_info(
    r: Referral, actor: Actor, change: Change, now: datetime, limits: TimeLimits
) -> Effects:
    if not change.reason.strip():
        raise InvalidInput("QUESTION_REQUIRED", "say what information is missing")
    return Effects({"due_at": _deadline(now, limits.amendment)})


def _amend(r: Referral, actor: Actor, change: Change, now: datetime, limits: TimeLimits) -> Effects:
    updates = _amendment(change.amendment)
    updates["due_at"] = _deadline(now, limits.review[r.urgency])
    return Effects(updates, {"changed": sorted(k for k, v in change.amendment.items() if v)})


def _cancel(r: Referral, actor: Actor, change: Change, now: datetime, _: TimeLimits) -> Effects:
    if not change.reason.strip():
        raise InvalidInput("REASON_REQUIRED", "say why the referral is cancelled")
    return Effects({"due_at": None})


def _reassign(
    r: Referral, actor: Actor, change: Change, now: datetime, limits: TimeLimits
) -> Effects:
    target = change.new_target
    if target is None:
        raise InvalidInput("TARGET_REQUIRED", "name the institution to reassign to")
    if not change.reason.strip():
        raise InvalidInput("REASON_REQUIRED", "say why the referral is reassigned")
    if target.institution_id == r.target.institution_id:
        raise InvalidInput("SAME_TARGET", "the referral already goes there")
    check_route(r.direction, r.source, target)
    updates = {
        "target": Party.of(target),
        "target_department": change.department.strip(),
        "target_doctor": dict(change.target_doctor) if change.target_doctor else None,
        "due_at": _deadline(now, limits.review[r.urgency]),
    }
    details = {"from_institution": r.target.institution_id, "to_institution": target.institution_id}
    return Effects(updates, details)


def _escalate(
    r: Referral, actor: Actor, change: Change, now: datetime, limits: TimeLimits
) -> Effects:
    return Effects({"escalated": True, "due_at": _deadline(now, limits.escalation[r.urgency])})


def _close(r: Referral, actor: Actor, change: Change, now: datetime, _: TimeLimits) -> Effects:
    """ARRIVE, EXPIRE and NO_SHOW close the referral; nothing else changes."""
    return Effects({"due_at": None})


EFFECTS = {
    Action.ACCEPT: _accept,
    Action.ACKNOWLEDGE: _acknowledge,
    Action.REJECT: _reject,
    Action.REQUEST_INFO: _request_info,
    Action.AMEND: _amend,
    Action.CANCEL: _cancel,
    Action.REASSIGN: _reassign,
    Action.ESCALATE: _escalate,
}


def _amendment(data: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if data.get("clinical_summary"):
        out["clinical_summary"] = str(data["clinical_summary"]).strip()
    if data.get("diagnosis"):
        out["diagnosis"] = check_diagnosis(data["diagnosis"])
    if data.get("attachments"):
        out["attachments"] = tuple(dict(a) for a in data["attachments"])
    return out


# ------------------------------------------------------------------------------- workflow
def stage_outcome(referral: Referral, now: datetime) -> dict[str, Any]:
    """What the state machine needs to route and wait: the status and, for an open one,
    how long its current wait may last (at least one second)."""
    out: dict[str, Any] = {"status": str(referral.status), "direction": str(referral.direction)}
    if referral.is_open and referral.due_at:
        remaining = (parse_time(referral.due_at) - now).total_seconds()
        out["wait_seconds"] = max(1, int(remaining + 0.999))
    else:
        out["wait_seconds"] = 1
    return out


def timeout_action(referral: Referral, stage: Stage, now: datetime) -> Action | None:
    """The system action a passed time limit calls for, or None when the referral has moved
    on (another stage) or its deadline moved (an amendment or reassignment reset it)."""
    if referral.status is not STATUS_OF_STAGE[stage]:
        return None
    if referral.due_at and parse_time(referral.due_at) > now + timedelta(seconds=1):
        return None
    return TIMEOUT_ACTION[stage]


# ------------------------------------------------------------------------------- statistics
COUNTERS = ("applied", "up", "down", "accepted", "rejected", "acknowledged", "cancelled",
            "expired", "no_show", "arrived", "escalated", "decided", "in_county",
            "out_of_county")  # fmt: skip
FINAL_COUNTER = {
    Status.CANCELLED: "cancelled",
    Status.EXPIRED: "expired",
    Status.NO_SHOW: "no_show",
    Status.ARRIVED: "arrived",
}


@dataclass(frozen=True, slots=True)
class RollupKey:
    """Statistics are kept per application day (Asia/Shanghai), referring institution,
    receiving institution and direction: a period's figures read a few hundred counters,
    never the referrals themselves."""

    day: str
    source: str
    target: str
    direction: str
    in_county: bool


def rollup_key(r: Referral) -> RollupKey:
    day = parse_time(r.created_at).astimezone(CHINA_TZ).date().isoformat()
    return RollupKey(day, r.source.institution_id, r.target.institution_id, str(r.direction),
                     r.target.in_county)  # fmt: skip


def decision_minutes(r: Referral) -> int | None:
    if not r.decision:
        return None
    spent = parse_time(r.decision["at"]) - parse_time(r.created_at)
    return max(0, int(spent.total_seconds() // 60))


def contribution(r: Referral) -> dict[str, int]:
    """The counters this referral adds to its rollup in its current state. A transition's
    change to the statistics is contribution(after) - contribution(before), written in the
    same transaction as the referral: counted exactly once, whatever happens."""
    c = {
        "applied": 1,
        str(r.direction): 1,
        "in_county" if r.target.in_county else "out_of_county": 1,
    }
    if r.escalated:
        c["escalated"] = 1
    if r.decision:
        c[r.decision["outcome"]] = 1
        c["decided"] = 1
        c[f"dm_{decision_minutes(r)}"] = 1
    final = FINAL_COUNTER.get(r.status)
    if final:
        c[final] = 1
    return c


def rollup_delta(before: Referral | None, after: Referral) -> dict[RollupKey, dict[str, int]]:
    """Counter changes per rollup key (a reassignment moves the referral to another key)."""
    delta: dict[RollupKey, dict[str, int]] = {}
    for referral, sign in ((before, -1), (after, 1)):
        if referral is None:
            continue
        bucket = delta.setdefault(rollup_key(referral), {})
        for name, n in contribution(referral).items():
            bucket[name] = bucket.get(name, 0) + sign * n
    return {
        key: {k: v for k, v in counters.items() if v}
        for key, counters in delta.items()
        if any(counters.values())
    }


def summarise(counters: Mapping[str, int]) -> dict[str, Any]:
    """Rates and the exact median time to decision (to the minute) from summed counters."""
    out: dict[str, Any] = {name: int(counters.get(name, 0)) for name in COUNTERS}
    decided = out["accepted"] + out["rejected"] + out["acknowledged"]
    out["acceptance_rate"] = (
        round((out["accepted"] + out["acknowledged"]) / decided, 4) if decided else None
    )
    total = out["in_county"] + out["out_of_county"]
    out["out_of_county_share"] = round(out["out_of_county"] / total, 4) if total else None
    out["median_decision_minutes"] = median_from_histogram(
        {int(k[3:]): int(v) for k, v in counters.items() if k.startswith("dm_") and v}
    )
    return out


def median_from_histogram(histogram: Mapping[int, int]) -> float | None:
    n = sum(histogram.values())
    if n <= 0:
        return None
    lower_rank, upper_rank = (n - 1) // 2, n // 2
    seen, lower = 0, None
    for value in sorted(histogram):
        seen += histogram[value]
        if lower is None and seen > lower_rank:
            lower = value
        if seen > upper_rank:
            return (float(lower) + value) / 2 if lower is not None else float(value)
    return None
